"""The ONE preprocessing path: an image file becomes the model input.

Both the training backend (``training.data``) and the desktop app call
:func:`preprocess_file`; nothing else decodes scans.  This module is torch-free and Qt-free:
it needs only numpy and Pillow, so screening installs (onnxruntime only) can use it.

Contract of every exported model (see ``docs/architecture.md``):

* input ``pixels``: float32, N x 3 x 224 x 224, values in [0, 1];
* the grey-scale scan is replicated into the three channels;
* normalisation (mean 0.1855, std 0.1813, paper §5.1) happens *inside* the model graph.

Decoding rules, in order:

1. The file is opened with Pillow; anything Pillow cannot identify, a 0-byte file, a truncated
   file or an image above :data:`MAX_PIXELS` raises :class:`PreprocessError` naming the file.
2. EXIF orientation is applied.
3. The image becomes one grey channel in [0, 1]:
   8-bit ``L``/``RGB``/palette/``LA``/``RGBA`` use the ITU-R 601 luma of the colour, alpha
   composited over black (the MRI background); 16-bit and 32-bit integer and float images are
   stretched from their own minimum to maximum (a constant image becomes all zeros).
4. Non-square images are padded with black to a square (centred), then resized to 224 x 224 with
   a bilinear filter (antialiased), so anatomy is never stretched.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_SIZE",
    "MAX_PIXELS",
    "NORM_MEAN",
    "NORM_STD",
    "PreprocessError",
    "load_grey",
    "to_model_input",
    "preprocess_file",
    "preprocess_image",
]

IMAGE_SIZE = 224
#: Paper §5.1 data-set statistics; applied inside every exported graph, never here.
NORM_MEAN = 0.1855
NORM_STD = 0.1813
#: Largest image we agree to decode (decompression-bomb guard): 64 megapixels.
MAX_PIXELS = 64_000_000

PathLike = Union[str, os.PathLike]

_HIGH_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


class PreprocessError(ValueError):
    """A file could not be turned into a model input.  ``str(err)`` names the file."""

    def __init__(self, path: PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _to_grey_float(img: Image.Image) -> np.ndarray:
    """One channel, float32 in [0, 1], from any Pillow mode."""
    mode = img.mode
    if mode in _HIGH_DEPTH_MODES:
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all():
            arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(arr.min()), float(arr.max())
        if hi <= lo:
            return np.zeros(arr.shape, dtype=np.float32)
        return ((arr - lo) / (hi - lo)).astype(np.float32)
    if mode == "1":
        img = img.convert("L")
    elif mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("LA", "RGBA", "PA"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, rgba).convert("L")
    elif mode != "L":
        # RGB, CMYK, YCbCr, LAB, HSV ...: luma (ITU-R 601-2), as Pillow defines "L".
        img = img.convert("RGB").convert("L")
    return np.asarray(img, dtype=np.float32) / 255.0


def load_grey(path: PathLike) -> np.ndarray:
    """Decode ``path`` into a float32 H x W array in [0, 1] (full resolution, unresized).

    Raises :class:`PreprocessError` (naming the file) for anything that is not a readable image.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise PreprocessError(p, f"cannot read file ({exc.strerror or exc})") from exc
    if p.is_dir():
        raise PreprocessError(p, "is a directory, not an image file")
    if size == 0:
        raise PreprocessError(p, "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns (not raises) between MAX_IMAGE_PIXELS and 2x; we check ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                w, h = img.size
                if w <= 0 or h <= 0:
                    raise PreprocessError(p, f"image has no pixels ({w}x{h})")
                if w * h > MAX_PIXELS:
                    raise PreprocessError(
                        p,
                        f"image is {w}x{h} = {w * h:,} pixels, above the {MAX_PIXELS:,}-pixel "
                        "safety limit (possible decompression bomb); not decoded",
                    )
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_grey_float(img)
    except PreprocessError:
        raise
    except Image.DecompressionBombError as exc:
        raise PreprocessError(p, f"refused as a possible decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise PreprocessError(p, "not an image Pillow can identify (wrong extension or corrupt header)") from exc
    except OSError as exc:
        msg = str(exc) or exc.__class__.__name__
        if "truncated" in msg.lower():
            raise PreprocessError(p, f"image file is truncated ({msg})") from exc
        raise PreprocessError(p, f"cannot decode image ({msg})") from exc
    except (ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise PreprocessError(p, f"cannot decode image ({exc.__class__.__name__}: {exc})") from exc


def to_model_input(grey: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Square-pad, resize and replicate a float grey image into float32 3 x size x size in [0, 1]."""
    if grey.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {grey.shape}")
    h, w = grey.shape
    if h != w:
        side = max(h, w)
        padded = np.zeros((side, side), dtype=np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        padded[top : top + h, left : left + w] = grey
        grey = padded
    if grey.shape[0] != size:
        img = Image.fromarray(np.ascontiguousarray(grey, dtype=np.float32))  # mode "F"
        img = img.resize((size, size), Image.Resampling.BILINEAR)
        grey = np.asarray(img, dtype=np.float32)
    grey = np.clip(grey, 0.0, 1.0, dtype=np.float32)
    return np.ascontiguousarray(np.broadcast_to(grey, (3, size, size)), dtype=np.float32)


def preprocess_image(img: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
    """Same as :func:`preprocess_file` for an already-open Pillow image (e.g. generated probes)."""
    return to_model_input(_to_grey_float(ImageOps.exif_transpose(img)), size)


def preprocess_file(path: PathLike, size: int = IMAGE_SIZE) -> np.ndarray:
    """File -> float32 array of shape (3, size, size), values in [0, 1].

    The single entry point used by training, evaluation, export parity checks and the app.
    Raises :class:`PreprocessError` naming the file on any bad input.
    """
    return to_model_input(load_grey(path), size)
