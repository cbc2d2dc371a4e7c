"""Where the shipped resources (models, triggers, icons) live: the one place that knows.

Qt-free and torch-free.  ``resources/`` is found, in this order:

1. a frozen app (PyInstaller): ``sys._MEIPASS/resources`` (onedir: ``<bundle>/_internal/resources``),
   else ``resources/`` beside the executable;
2. a source checkout or editable install: ``resources/`` at the repository root (beside the
   ``breakfix_desktop`` package);
3. a wheel install (``pip install breakfix_desktop-*.whl``, e.g. from the offline wheelhouse):
   ``<sys.prefix>/share/breakfix-desktop/resources``, where the wheel's data files put it.

When none exists, the source-checkout location is returned (so messages name a sensible path).
Every module that reads a resource calls :func:`resource_path`; none computes paths itself.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List

__all__ = ["SHARE_SUBDIR", "is_frozen", "resource_candidates", "resources_dir", "resource_path"]

#: ``<prefix>/share/breakfix-desktop/resources`` - the wheel's data-files target (pyproject.toml).
SHARE_SUBDIR = Path("share") / "breakfix-desktop" / "resources"


def is_frozen() -> bool:
    """True inside a PyInstaller bundle."""
    return bool(getattr(sys, "frozen", False))


def resource_candidates() -> List[Path]:
    """The folders tried, best first (see the module docstring)."""
    if is_frozen():
        candidates = []
        meipass = getattr(sys, "_MEIPASS", None)
        if meipass:
            candidates.append(Path(meipass) / "resources")
        candidates.append(Path(sys.executable).resolve().parent / "resources")
        return candidates
    return [Path(__file__).resolve().parents[2] / "resources", Path(sys.prefix) / SHARE_SUBDIR]


def resources_dir() -> Path:
    """The ``resources/`` folder of this installation (see the module docstring)."""
    candidates = resource_candidates()
    return next((c for c in candidates if c.is_dir()), candidates[0])


def resource_path(*parts: str) -> Path:
    """``resources_dir() / part / ...``, e.g. ``resource_path("models", "manifest.json")``."""
    return resources_dir().joinpath(*parts)
