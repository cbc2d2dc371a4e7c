"""Content hashes: SHA-256 is how BreakFix names scans (quarantine), data sets and model files."""

from __future__ import annotations

import hashlib
import os
from typing import Union


def sha256_file(path: Union[str, os.PathLike], block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()
