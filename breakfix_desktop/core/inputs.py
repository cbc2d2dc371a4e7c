"""Screening inputs: files and folders -> an ordered list of :class:`InputItem` (path, frame).

Qt-free and torch-free; the GUI's file dialogs and the headless ``screen`` command both call
:func:`discover`.

Rules:

* A **folder** is walked recursively.  It contributes the files whose extension is a raster
  image (:data:`~breakfix_desktop.core.labels.IMAGE_EXTENSIONS`) or DICOM (``.dcm``,
  ``.dicom``), plus extensionless files with the DICOM ``DICM`` marker (how PACS exports often
  name them).  Hidden files and hidden folders (name starting with ``.``) and anything that is
  not a regular file (pipes, sockets, devices) are skipped; symbolic links to folders are not
  followed (no loops).
* A **file** named explicitly is always an input, whatever its extension: the user asked for it,
  so a bad one gets an error verdict rather than silently vanishing.
* A path that does not exist is reported in :attr:`Discovery.missing`, not silently dropped.
* Order is deterministic: arguments in the order given; inside a folder, by relative path
  (case-insensitive, then exact).  The same file reached twice is listed once.
* A multi-frame DICOM file becomes one item per frame (``frame`` 0..n-1); every other file is one
  item with ``frame=None``.  If its header cannot be read, it stays one item and the screening
  engine reports the error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Union

from .labels import DICOM_EXTENSIONS, IMAGE_EXTENSIONS
from .preprocess import PreprocessError, frame_count, has_dicom_magic

__all__ = ["SUPPORTED_EXTENSIONS", "InputItem", "Discovery", "discover", "is_supported_file", "walk_folder"]

PathLike = Union[str, os.PathLike]

#: Extensions picked up when walking folders (lower case).
SUPPORTED_EXTENSIONS = tuple(IMAGE_EXTENSIONS) + tuple(DICOM_EXTENSIONS)


@dataclass(frozen=True)
class InputItem:
    """One scan to screen: a file, and for multi-frame DICOM the frame index (else ``None``)."""

    path: Path
    frame: Optional[int] = None

    @property
    def display_name(self) -> str:
        """``name.dcm [frame 3]`` - how the item is shown to people."""
        return self.path.name if self.frame is None else f"{self.path.name} [frame {self.frame}]"

    def __str__(self) -> str:
        return str(self.path) if self.frame is None else f"{self.path}#frame={self.frame}"


@dataclass
class Discovery:
    """What :func:`discover` found: ``items`` to screen and ``missing`` paths that do not exist."""

    items: List[InputItem] = field(default_factory=list)
    missing: List[Path] = field(default_factory=list)

    @property
    def files(self) -> List[Path]:
        """Distinct files, in item order."""
        seen, out = set(), []
        for item in self.items:
            if item.path not in seen:
                seen.add(item.path)
                out.append(item.path)
        return out


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def is_supported_file(path: PathLike) -> bool:
    """Would a folder walk pick ``path`` up?  (Supported extension, or extensionless DICOM.)"""
    p = Path(path)
    if _is_hidden(p.name) or not p.is_file():
        return False
    suffix = p.suffix.lower()
    if suffix in SUPPORTED_EXTENSIONS:
        return True
    return suffix == "" and has_dicom_magic(p)


def _sort_key(rel: str):
    return (rel.casefold(), rel)


def walk_folder(folder: PathLike) -> Iterator[Path]:
    """Supported files under ``folder`` (recursive), hidden entries skipped, in a fixed order."""
    root = Path(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not _is_hidden(d)]
        for name in filenames:
            path = Path(dirpath) / name
            if is_supported_file(path):
                found.append((_sort_key(path.relative_to(root).as_posix()), path))
    found.sort(key=lambda t: t[0])
    for _, path in found:
        yield path


def _frames(path: Path) -> List[Optional[int]]:
    """``[None]`` for a single-frame file, ``[0, .., n-1]`` for multi-frame DICOM."""
    try:
        n = frame_count(path)
    except PreprocessError:
        return [None]  # the engine reports why it cannot be read
    return [None] if n <= 1 else list(range(n))


def discover(paths: Iterable[PathLike], *, expand_frames: bool = True) -> Discovery:
    """Expand files and folders into screening items (see the module docstring for the rules)."""
    result = Discovery()
    seen = set()

    def add(path: Path) -> None:
        key = os.path.normcase(os.path.abspath(path))
        if key in seen:
            return
        seen.add(key)
        for frame in (_frames(path) if expand_frames else [None]):
            result.items.append(InputItem(path, frame))

    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            for f in walk_folder(p):
                add(f)
        elif p.exists() or p.is_symlink():
            add(p)
        else:
            result.missing.append(p)
    return result
