"""Pixels (and scores) for people: window/level, thumbnails, localisation overlays, score text.

Qt-free numpy.  The viewers turn these uint8 arrays into images; the scans themselves come from
the one decoding path, :func:`~.preprocess.load_grey` (float32 grey in [0, 1], DICOM already
through the file's own window/level), so "window/level" here is the reader's adjustment on top.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
from PIL import Image

__all__ = ["DEFAULT_WINDOW", "DEFAULT_LEVEL", "window_level", "thumbnail", "heat_rgba", "map_to_image",
           "format_score", "threshold_fraction"]

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


SMALLEST_SHOWN = 1e-6


def format_score(value: Optional[float], significant: int = 3) -> str:
    """A gate's score or threshold as plain decimal text with ``significant`` digits that mean
    something: ``0.853``, ``0.0123``, ``0.000376``.

    Fixed decimals would print a calibrated threshold of 0.000376 and a clean scan's 0.0000123 both
    as ``0.000`` - the shipped detector's threshold is that small (docs/detector.md) - so the
    number of decimals grows with the value's order of magnitude (at least ``significant``).
    Below 1e-6, ``< 0.000001``; ``None`` gives ``""``; NaN and infinities as Python writes them."""
    if value is None:
        return ""
    v = float(value)
    if not math.isfinite(v) or v == 0:
        return "0" if v == 0 else str(v)
    if abs(v) < SMALLEST_SHOWN:
        return ("> -" if v < 0 else "< ") + f"{SMALLEST_SHOWN:.6f}"
    decimals = max(significant, significant - 1 - math.floor(math.log10(abs(v))))
    return f"{v:.{decimals}f}"


def threshold_fraction(score: float, threshold: Optional[float]) -> float:
    """Where ``score`` sits on a gauge whose middle is the gate's ``threshold``: 0 at 0, 0.5 at the
    threshold, 1 at the top (score 1); linear on each side.  A threshold of 0.000376 next to a
    score bar from 0 to 1 would leave every clean scan and every flagged one looking empty; on this
    gauge a bar past half way means *flagged*, whatever the threshold.  Without a threshold (or
    with one outside (0, 1)) it is the score itself, clipped to [0, 1]."""
    s = min(max(float(score), 0.0), 1.0) if math.isfinite(float(score)) else 1.0
    if threshold is None or not 0.0 < float(threshold) < 1.0:
        return s
    t = float(threshold)
    return 0.5 * s / t if s < t else 0.5 + 0.5 * (s - t) / (1.0 - t)
