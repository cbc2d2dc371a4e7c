"""Can this install run drills: the training backend (torch + ``training``) and the data folder."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

__all__ = ["INSTALL_HINT", "BackendStatus", "backend_status", "default_data_dir", "check_data_dir"]

INSTALL_HINT = "pip install 'breakfix-desktop[train]'   (in a source checkout: make install)"


@dataclass(frozen=True)
class BackendStatus:
    """Can this install launch the training backend?  ``message`` says why not and how to fix it."""

    available: bool
    message: str
    torch: bool = False
    training: bool = False


def backend_status() -> BackendStatus:
    """Looks for ``torch`` and the ``training`` package without importing either."""

    def found(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    has_torch, has_training = found("torch"), found("training")
    if has_torch and has_training:
        return BackendStatus(True, "Training backend available (python -m training).", True, True)
    missing = " and ".join(n for n, ok in (("PyTorch", has_torch), ("the training package", has_training)) if not ok)
    return BackendStatus(
        False,
        f"This is a screening-only install: {missing} not installed, so drills and training cannot run "
        f"here. Install the training extra with:  {INSTALL_HINT}",
        has_torch, has_training,
    )


def default_data_dir() -> Optional[Path]:
    """``$BREAKFIX_DATA``, else ``../shared/data/brain-tumor-mri`` beside a source checkout, if present."""
    env = os.environ.get("BREAKFIX_DATA")
    candidates = [Path(env).expanduser()] if env else []
    candidates.append(Path(__file__).resolve().parents[4] / "shared" / "data" / "brain-tumor-mri")
    for path in candidates:
        if (path / "Training").is_dir():
            return path
    return None


def check_data_dir(path: Any, need_splits: Sequence[str] = ("Training", "Testing")) -> Path:
    """The data folder as a Path; ValueError with a clear message when it is not usable."""
    if not path or not str(path).strip():
        raise ValueError("Data folder: choose the folder that holds Training/ and Testing/")
    root = Path(str(path).strip()).expanduser()
    if not root.is_dir():
        raise ValueError(f"Data folder: {root} does not exist")
    missing = [s for s in need_splits if not (root / s).is_dir()]
    if missing:
        raise ValueError(f"Data folder: {root} has no {' or '.join(m + '/' for m in missing)} sub-folder "
                         "(expected Training/<class>/ and Testing/<class>/ with the four classes)")
    return root
