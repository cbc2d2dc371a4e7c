"""Atomic file output: a report or record is either complete on disk or not there at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

PathLike = Union[str, os.PathLike]

#: mkstemp creates 0600 files; reports are ordinary documents.
DOCUMENT_MODE = 0o644


@contextlib.contextmanager
def atomic_output(path: PathLike, mode: Optional[int] = DOCUMENT_MODE) -> Iterator[str]:
    """Yield a temp path in ``path``'s folder; on success fsync it and rename it over ``path``.

    On any exception the temp file is removed and ``path`` is left untouched.
    """
    path = Path(path).expanduser()
    fd, tmp = tempfile.mkstemp(dir=path.absolute().parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes, mode: Optional[int] = DOCUMENT_MODE) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    with atomic_output(path, mode) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return Path(path).expanduser()
