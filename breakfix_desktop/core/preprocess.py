"""The ONE preprocessing path: an image file becomes the model input.

Both the training backend (``training.data``) and the desktop app call
:func:`preprocess_file`; nothing else decodes scans.  This module is torch-free and Qt-free:
it needs only numpy, Pillow and (for DICOM, imported lazily) pydicom, so screening installs
(onnxruntime only) can use it.

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

Only regular files are read (a pipe or device named ``scan.png`` would block or never end).

DICOM (a ``.dcm``/``.dicom`` name, or the ``DICM`` marker at byte 128 whatever the name) is
decoded with pydicom instead of Pillow (see :func:`load_grey`):

1. No pixel data, an unsupported or not-installed compression (transfer syntax), a pixel
   count above :data:`MAX_PIXELS` per frame, or a file pydicom cannot parse raise
   :class:`PreprocessError` naming the file.
2. Monochrome images get the Modality LUT (Rescale Slope/Intercept) and then the file's own
   Window Center/Width (or VOI LUT), whose output range is mapped to [0, 1]; without a window
   the rescaled values are stretched from their minimum to maximum.  ``MONOCHROME1`` (white is
   zero) is inverted.  Colour (RGB, YBR, palette) uses the ITU-R 601 luma.
3. A multi-frame file is a stack of scans: :func:`preprocess_file` refuses it without a
   ``frame=`` index, :func:`load_frames` / :func:`preprocess_frames` yield every frame and
   :func:`frame_count` says how many there are.  The screening inputs give one item per frame.
4. Patient identifiers (PatientName, PatientID, PatientBirthDate) are never part of the pixels;
   :func:`read_patient_identifiers` returns them separately for reports that opt in.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .labels import DICOM_EXTENSIONS

__all__ = [
    "IMAGE_SIZE",
    "MAX_PIXELS",
    "NORM_MEAN",
    "NORM_STD",
    "PreprocessError",
    "DICOM_EXTENSIONS",
    "check_regular_file",
    "is_dicom",
    "has_dicom_magic",
    "frame_count",
    "load_grey",
    "load_frames",
    "to_model_input",
    "preprocess_file",
    "preprocess_frames",
    "preprocess_image",
    "read_patient_identifiers",
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


def check_regular_file(path: PathLike) -> None:
    """Raise :class:`PreprocessError` unless ``path`` is a non-empty regular file (never opens it)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise PreprocessError(p, f"cannot read file ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise PreprocessError(p, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise PreprocessError(p, "is not a regular file (a pipe, socket or device); not read")
    if st.st_size == 0:
        raise PreprocessError(p, "file is empty (0 bytes)")


def load_grey(path: PathLike, *, frame: Optional[int] = None) -> np.ndarray:
    """Decode ``path`` into a float32 H x W array in [0, 1] (full resolution, unresized).

    ``frame`` selects one frame of a multi-frame DICOM file (a multi-frame file without it is
    refused: use :func:`load_frames`); for any other file only ``None`` or ``0`` is valid.
    Raises :class:`PreprocessError` (naming the file) for anything that is not a readable image.
    """
    p = Path(path)
    check_regular_file(p)
    if is_dicom(p):
        ds = _read_dicom(p)
        n = _dicom_frames(ds)
        if frame is None:
            if n > 1:
                raise PreprocessError(p, f"multi-frame DICOM with {n} frames; decode its frames one by one "
                                         "(load_frames / preprocess_frames, or frame=index)")
            frame = 0
        return _dicom_frame_grey(p, ds, frame, n)
    if frame not in (None, 0):
        raise PreprocessError(p, f"has a single frame; frame {frame} does not exist")
    return _load_pillow_grey(p)


def _load_pillow_grey(p: Path) -> np.ndarray:
    """The Pillow path of :func:`load_grey` (``p`` is a non-empty regular file)."""
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


def preprocess_file(path: PathLike, size: int = IMAGE_SIZE, *, frame: Optional[int] = None) -> np.ndarray:
    """File -> float32 array of shape (3, size, size), values in [0, 1].

    The single entry point used by training, evaluation, export parity checks and the app.
    ``frame`` picks one frame of a multi-frame DICOM file (see :func:`load_grey`).
    Raises :class:`PreprocessError` naming the file on any bad input.
    """
    return to_model_input(load_grey(path, frame=frame), size)


def load_frames(path: PathLike) -> Iterator[np.ndarray]:
    """Every frame of ``path`` as a float32 H x W grey array in [0, 1] (one for ordinary images).

    The header is parsed once; frames are read and decoded lazily, one at a time.
    """
    p = Path(path)
    check_regular_file(p)
    if not is_dicom(p):
        yield _load_pillow_grey(p)
        return
    ds = _read_dicom(p)
    n = _dicom_frames(ds)
    for i in range(n):
        yield _dicom_frame_grey(p, ds, i, n)


def preprocess_frames(path: PathLike, size: int = IMAGE_SIZE) -> Iterator[np.ndarray]:
    """:func:`preprocess_file` for every frame of ``path`` (multi-frame DICOM), in frame order."""
    for grey in load_frames(path):
        yield to_model_input(grey, size)


def frame_count(path: PathLike) -> int:
    """Number of frames: ``NumberOfFrames`` of a DICOM file (header only), 1 for other images."""
    p = Path(path)
    check_regular_file(p)
    if not is_dicom(p):
        return 1
    return _dicom_frames(_read_dicom(p, pixels=False))


# --------------------------------------------------------------------------- DICOM
#: The Patient module attributes reports may show (only when the user opts in); never logged.
PATIENT_TAGS = {"patient_name": "PatientName", "patient_id": "PatientID", "patient_birth_date": "PatientBirthDate"}


def has_dicom_magic(path: PathLike) -> bool:
    """``True`` when the file has the DICOM Part 10 marker ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom(path: PathLike) -> bool:
    """A ``.dcm``/``.dicom`` name, or the ``DICM`` marker (any name, e.g. extensionless)."""
    return Path(path).suffix.lower() in DICOM_EXTENSIONS or has_dicom_magic(path)


def read_patient_identifiers(path: PathLike) -> Dict[str, Optional[str]]:
    """Patient identifiers of a DICOM file (header only), ``{}`` for other images.

    Keys: ``patient_name``, ``patient_id``, ``patient_birth_date`` (``None`` when absent).  These
    are for reports that explicitly opt in; callers must never log them.
    """
    p = Path(path)
    check_regular_file(p)
    if not is_dicom(p):
        return {}
    ds = _read_dicom(p, pixels=False)
    out: Dict[str, Optional[str]] = {}
    for key, keyword in PATIENT_TAGS.items():
        value = ds.get(keyword)
        out[key] = str(value) if value not in (None, "") else None
    return out


def _read_dicom(p: Path, *, pixels: bool = True) -> Any:
    """Parse a DICOM file with pydicom (``force`` only for marker-less ``.dcm`` files)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    magic = has_dicom_magic(p)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about many harmless oddities
            # pixel data is deferred (read later, one frame at a time), never loaded here
            ds = pydicom.dcmread(p, force=not magic, stop_before_pixels=not pixels,
                                 defer_size="256 KB" if pixels else None)
    except InvalidDicomError as exc:
        raise PreprocessError(p, f"not a valid DICOM file ({exc})") from exc
    except OSError as exc:
        raise PreprocessError(p, f"cannot read file ({exc.strerror or exc})") from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed input
        raise PreprocessError(p, f"cannot parse DICOM file ({exc.__class__.__name__}: {exc})") from exc
    if not magic and "Rows" not in ds and not any(k in ds for k in _PIXEL_KEYWORDS):
        raise PreprocessError(p, "not a DICOM file (no 'DICM' marker at byte 128 and no image attributes)")
    return ds


_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _dicom_frames(ds: Any) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _transfer_syntax(ds: Any) -> Any:
    """The dataset's transfer syntax UID (guessed for marker-less files without file meta)."""
    from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if uid:
        return UID(str(uid))
    guessed = ImplicitVRLittleEndian if getattr(ds, "original_encoding", (True, True))[0] else ExplicitVRLittleEndian
    if meta is None:
        from pydicom.dataset import FileMetaDataset

        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = guessed
    return guessed


def _check_decodable(p: Path, ds: Any) -> None:
    """Pixel data present, sane size, and a transfer syntax we can actually decode."""
    from pydicom.pixels import get_decoder

    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise PreprocessError(p, "DICOM file has no pixel data (not an image, e.g. a report or a header-only file)")
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except (TypeError, ValueError):
        rows = cols = 0
    if rows <= 0 or cols <= 0:
        raise PreprocessError(p, f"DICOM image has no pixels ({rows}x{cols})")
    if rows * cols > MAX_PIXELS:
        raise PreprocessError(p, f"DICOM frame is {cols}x{rows} = {rows * cols:,} pixels, above the "
                                 f"{MAX_PIXELS:,}-pixel safety limit (possible decompression bomb); not decoded")
    if "PixelData" not in ds:
        return  # float pixel data is never compressed
    uid = _transfer_syntax(ds)
    name = getattr(uid, "name", str(uid))
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        raise PreprocessError(p, f"unsupported DICOM transfer syntax {name} ({uid}); cannot decode its pixels") from exc
    if not decoder.is_available:
        raise PreprocessError(p, f"DICOM pixels are compressed with {name} ({uid}) and no decoder for it is "
                                 "installed; convert the file (e.g. to Explicit VR Little Endian) or install one")


def _dicom_frame_grey(p: Path, ds: Any, index: int, n: int) -> np.ndarray:
    """Frame ``index`` of a parsed DICOM dataset -> float32 H x W in [0, 1]."""
    from pydicom.pixels import pixel_array

    if not 0 <= int(index) < n:
        raise PreprocessError(p, f"frame {index} does not exist (the file has {n} frame{'s' if n != 1 else ''})")
    _check_decodable(p, ds)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = int(index) if n > 1 else None
            # From the path, pydicom reads only the requested frame's bytes (a 500-frame file is
            # not re-read 500 times); marker-less legacy files need the parsed dataset instead.
            arr = pixel_array(os.fspath(p), index=frame) if has_dicom_magic(p) else pixel_array(ds, index=frame)
            if n > 1 and arr.ndim >= 3 and arr.shape[0] == 1 and int(ds.get("SamplesPerPixel", 1) or 1) == 1:
                arr = arr[0]
            return _dicom_to_grey(ds, arr)
    except PreprocessError:
        raise
    except MemoryError as exc:
        raise PreprocessError(p, "not enough memory to decode the DICOM pixel data") from exc
    except Exception as exc:  # noqa: BLE001 - malformed pixel data surfaces as many exception types
        msg = str(exc) or exc.__class__.__name__
        if "less than expected" in msg or "truncat" in msg.lower():
            raise PreprocessError(p, f"DICOM pixel data is truncated ({msg})") from exc
        raise PreprocessError(p, f"cannot decode DICOM pixel data ({exc.__class__.__name__}: {msg})") from exc


def _stretch(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - lo) / (hi - lo)).astype(np.float32)


def _luma(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _dicom_to_grey(ds: Any, arr: np.ndarray) -> np.ndarray:
    """Modality LUT, then the file's window (VOI), then [0, 1]; MONOCHROME1 inverted."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        top = float(np.iinfo(rgb.dtype).max) if np.issubdtype(rgb.dtype, np.integer) else float(rgb.max() or 1.0)
        return np.clip(_luma(rgb) / top, 0.0, 1.0).astype(np.float32)
    if arr.ndim == 3:  # RGB (YBR is converted to RGB by pydicom)
        bits = int(ds.get("BitsStored", 8) or 8)
        return np.clip(_luma(arr) / float(2**bits - 1), 0.0, 1.0).astype(np.float32)
    if arr.ndim != 2:
        raise ValueError(f"unexpected pixel array shape {arr.shape}")
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    grey: Optional[np.ndarray] = None
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    voi_seq = ds.get("VOILUTSequence")
    has_voi_lut = bool(voi_seq) and voi_seq[0].get("LUTDescriptor") is not None and voi_seq[0].get("LUTData") is not None
    try:
        if has_window:
            out = apply_voi_lut(values, ds, index=0, prefer_lut=False)
            with np.errstate(over="ignore"):
                lo, hi = apply_voi_lut(np.array([-1e30, 1e30]), ds, index=0, prefer_lut=False).astype(np.float64)
            if hi > lo:
                grey = np.clip((np.asarray(out, np.float64) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
        elif has_voi_lut:
            out = apply_voi_lut(np.round(values).astype(np.int64), ds, index=0)
            top = float(2 ** int(voi_seq[0].LUTDescriptor[2]) - 1)
            top = max(top, float(np.max(out)))
            grey = np.clip(np.asarray(out, np.float64) / (top or 1.0), 0.0, 1.0).astype(np.float32)
    except ValueError:
        grey = None  # an invalid window (e.g. width < 1): fall back to the data's own range
    if grey is None:
        grey = _stretch(values)
    if photometric == "MONOCHROME1":
        grey = (1.0 - grey).astype(np.float32)
    return grey
