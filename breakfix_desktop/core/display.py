"""Pixels for people: window/level, thumbnails and localisation overlays.

Qt-free numpy.  The viewers turn these uint8 arrays into images; the scans themselves come from
the one decoding path, :func:`~.preprocess.load_grey` (float32 grey in [0, 1], DICOM already
through the file's own window/level), so "window/level" here is the reader's adjustment on top.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from PIL import Image

__all__ = ["DEFAULT_WINDOW", "DEFAULT_LEVEL", "window_level", "thumbnail", "heat_rgba", "map_to_image"]

DEFAULT_WINDOW = 1.0
DEFAULT_LEVEL = 0.5
MIN_WINDOW = 0.01


def window_level(grey: np.ndarray, window: float = DEFAULT_WINDOW, level: float = DEFAULT_LEVEL) -> np.ndarray:
    """uint8 H x W: values from ``level - window/2`` (black) to ``level + window/2`` (white)."""
    window = max(float(window), MIN_WINDOW)
    low = float(level) - window / 2
    out = (np.asarray(grey, dtype=np.float32) - low) * (255.0 / window)
    return np.clip(out, 0, 255).astype(np.uint8)


def thumbnail(grey: np.ndarray, size: int = 160) -> np.ndarray:
    """uint8 grey thumbnail whose longer side is ``size`` (aspect kept; never enlarged)."""
    h, w = grey.shape
    scale = min(1.0, size / max(h, w))
    img = Image.fromarray(window_level(grey))
    if scale < 1.0:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def heat_rgba(heat: np.ndarray, opacity: float = 0.6, floor: float = 0.05) -> np.ndarray:
    """RGBA uint8 H x W x 4 of a [0, 1] map: transparent below ``floor``, then red -> yellow with
    alpha rising with the value (times ``opacity``)."""
    v = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0.0, 1.0)
    rgba = np.zeros(v.shape + (4,), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 1] = np.clip(v * 2 - 0.6, 0, 1) * 230
    rgba[..., 2] = np.clip(v * 3 - 2.2, 0, 1) * 120
    alpha = np.where(v >= floor, 0.35 + 0.65 * v, 0.0) * float(np.clip(opacity, 0.0, 1.0))
    rgba[..., 3] = (alpha * 255).astype(np.uint8)
    return rgba


def map_to_image(heat: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """A map in model-input space (square, e.g. 224 x 224) brought back onto the original scan of
    ``shape`` (H, W): the inverse of the preprocessing's centred square padding and resize."""
    h, w = shape
    side = max(h, w)
    img = Image.fromarray(np.ascontiguousarray(heat, dtype=np.float32))
    square = np.asarray(img.resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    return np.ascontiguousarray(square[top:top + h, left:left + w])


def normalise_map(heat: np.ndarray) -> Optional[np.ndarray]:
    """A 2-D float map scaled to [0, 1] (``None`` when it is empty or all zero)."""
    arr = np.nan_to_num(np.asarray(heat, dtype=np.float32))
    arr = np.squeeze(arr)
    if arr.ndim != 2 or arr.size == 0:
        return None
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= 0:
        return None
    if lo >= 0 and hi <= 1:
        return arr
    return (arr - min(lo, 0.0)) / (hi - min(lo, 0.0))
