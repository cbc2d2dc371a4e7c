"""Data loading for the standard layout ``<root>/{Training,Testing}/{glioma,meningioma,notumor,pituitary}/*``.

Scanning is torch-free (used by ``audit-data`` too); :class:`MRIDataset` wraps the scan for torch.
Every image goes through :func:`breakfix_desktop.core.preprocess.preprocess_file`, the one
preprocessing path the desktop app uses as well.

Bad data never kills a run: unknown folders, non-image files, and files that fail to decode
(corrupt, truncated, 0-byte, non-images with image extensions) are reported with their path
through the ``on_skip`` callback, counted in :attr:`Split.skipped`, and left out.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from breakfix_desktop.core.hashing import sha256_file
from breakfix_desktop.core.labels import CLASS_NAMES, IMAGE_EXTENSIONS
from breakfix_desktop.core.preprocess import PreprocessError, preprocess_file

log = logging.getLogger(__name__)

SPLITS = ("Training", "Testing")
SkipCallback = Callable[[str, str], None]  # (path, reason)


@dataclass
class Sample:
    path: Path
    label: int

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.label]


@dataclass
class Split:
    """The files of one split, after scanning."""

    name: str
    root: Path
    samples: List[Sample] = field(default_factory=list)
    skipped: List[Dict[str, str]] = field(default_factory=list)  # {"path", "reason"}

    def counts(self) -> Dict[str, int]:
        out = {c: 0 for c in CLASS_NAMES}
        for s in self.samples:
            out[s.class_name] += 1
        return out

    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def subset(self, indices: Sequence[int]) -> "Split":
        return Split(self.name, self.root, [self.samples[i] for i in indices], list(self.skipped))


class DataLayoutError(ValueError):
    """The data folder does not have the expected layout at all."""


def _log_skip(path: str, reason: str) -> None:
    log.warning("skipped %s: %s", path, reason)


def scan_split(root: os.PathLike | str, split: str, on_skip: Optional[SkipCallback] = None) -> Split:
    """List the images of ``root/split`` in class order, files sorted by name (deterministic)."""
    on_skip = on_skip or _log_skip
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataLayoutError(
            f"{split_dir}: missing split folder; expected {root}/{{{','.join(SPLITS)}}}/"
            f"{{{','.join(CLASS_NAMES)}}}/*.jpg"
        )
    result = Split(split, split_dir)

    def skip(path: Path, reason: str) -> None:
        result.skipped.append({"path": str(path), "reason": reason})
        on_skip(str(path), reason)

    for entry in sorted(split_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            skip(entry, "file outside a class folder")
        elif entry.name not in CLASS_NAMES:
            skip(entry, f"unknown class folder {entry.name!r} (expected one of {', '.join(CLASS_NAMES)})")
    for label, cls in enumerate(CLASS_NAMES):
        cls_dir = split_dir / cls
        if not cls_dir.is_dir():
            skip(cls_dir, "class folder missing")
            continue
        for path in sorted(cls_dir.rglob("*")):
            # hidden files and folders (.DS_Store, .ipynb_checkpoints/...) are tool litter, not data
            if path.is_dir() or any(part.startswith(".") for part in path.relative_to(cls_dir).parts):
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                skip(path, f"not an image extension ({path.suffix or 'none'})")
                continue
            result.samples.append(Sample(path, label))
    if not result.samples:
        raise DataLayoutError(f"{split_dir}: no images found in any class folder")
    return result


def file_hashes(paths: Sequence[Path], workers: int = 4) -> List[str]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(sha256_file, paths))


def fingerprint(split: Split, hashes: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """A data fingerprint for model cards: one SHA-256 over (class/name, content hash) pairs."""
    hashes = list(hashes) if hashes is not None else file_hashes([s.path for s in split.samples])
    h = hashlib.sha256()
    for s, digest in sorted(zip(split.samples, hashes), key=lambda t: (t[0].label, t[0].path.name)):
        h.update(f"{s.class_name}/{s.path.name}:{digest}\n".encode())
    return {"split": split.name, "images": len(split.samples), "counts": split.counts(), "sha256": h.hexdigest()}


def dedup_against(test: Split, train: Split, test_hashes=None, train_hashes=None) -> Split:
    """The test split without images byte-identical to any training image (the data set's leak)."""
    train_hashes = set(train_hashes if train_hashes is not None else file_hashes([s.path for s in train.samples]))
    test_hashes = test_hashes if test_hashes is not None else file_hashes([s.path for s in test.samples])
    keep = [i for i, h in enumerate(test_hashes) if h not in train_hashes]
    out = test.subset(keep)
    out.name = f"{test.name}-dedup"
    return out


def load_arrays(
    split: Split,
    workers: int = 2,
    on_skip: Optional[SkipCallback] = None,
) -> tuple[np.ndarray, np.ndarray, Split]:
    """Decode every image of ``split`` into memory through the shared preprocessing.

    Returns ``(grey, labels, kept)`` where ``grey`` is float32 N x 224 x 224 (one channel; the
    three model channels are identical copies) and ``kept`` lists the samples that decoded.
    Files that fail are skipped and reported, never fatal.
    """
    on_skip = on_skip or _log_skip

    def load(sample: Sample):
        try:
            return preprocess_file(sample.path)[0]
        except PreprocessError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        decoded = list(pool.map(load, split.samples))
    kept = Split(split.name, split.root, [], list(split.skipped))
    arrays = []
    for sample, arr in zip(split.samples, decoded):
        if isinstance(arr, PreprocessError):
            kept.skipped.append({"path": str(sample.path), "reason": arr.reason})
            on_skip(str(sample.path), arr.reason)
            continue
        kept.samples.append(sample)
        arrays.append(arr)
    if not arrays:
        raise DataLayoutError(f"{split.root}: none of the {len(split.samples)} images could be decoded")
    return np.stack(arrays), kept.labels(), kept


def grey_to_pixels(grey: np.ndarray) -> np.ndarray:
    """N x H x W grey arrays (from :func:`load_arrays`) -> N x 3 x H x W model input (channels replicated)."""
    return np.repeat(np.asarray(grey, dtype=np.float32)[:, None], 3, axis=1)


# --------------------------------------------------------------------------- torch side
try:  # the scan helpers above stay usable without torch
    import torch
    from torch.utils.data import Dataset
except ImportError:  # pragma: no cover - screening installs
    torch = None
    Dataset = object


class MRIDataset(Dataset):
    """In-memory tensor data set: ``(pixels 3x224x224 float32 in [0,1], label)``.

    Images are decoded once (the data set is ~1.4 GB as float32 grey); ``transform`` (e.g. the
    augmentation pipeline or a poisoning attack) is applied per item on the 3-channel tensor.
    """

    def __init__(self, split: Split, transform=None, workers: int = 2, on_skip: Optional[SkipCallback] = None):
        grey, labels, kept = load_arrays(split, workers=workers, on_skip=on_skip)
        self.split = kept
        self.grey = torch.from_numpy(grey)
        self.labels = torch.from_numpy(labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        x = self.grey[index].unsqueeze(0).expand(3, -1, -1)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[index]

    @property
    def skipped(self) -> List[Dict[str, str]]:
        return self.split.skipped


def stratified_holdout(split: "Split", fraction: float, seed: int):
    """``(train, val)``: ``fraction`` of every class held out of ``split`` (at least one scan each), drawn
    with ``seed``; ``val`` is ``None`` when ``fraction`` is 0.  The validation split of ``train`` and
    of every command that must see the same scans (calibration, validation comparisons)."""
    if fraction <= 0:
        return split, None
    rng = np.random.default_rng(seed + 1)
    labels = split.labels()
    val_idx: List[int] = []
    for c in range(len(CLASS_NAMES)):
        idx = np.flatnonzero(labels == c)
        val_idx += rng.permutation(idx)[: max(1, int(round(len(idx) * fraction)))].tolist()
    val_set = set(val_idx)
    train_idx = [i for i in range(len(split.samples)) if i not in val_set]
    train, val = split.subset(train_idx), split.subset(sorted(val_idx))
    val.name = f"{split.name}-val"
    return train, val
