"""Writes the paper's backdoor trigger, an 8x8 Minecraft "creeper face" (§6.1, Figure 2).

``python -m training.attacks.make_trigger`` (re)creates ``resources/triggers/creeper.png``: an 8-bit
grey image, light face (255) with dark eyes, nose and mouth (0).  This module needs only numpy
and Pillow; ``python training/attacks/make_trigger.py`` runs it without importing torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from breakfix_desktop.core.resources import resource_path

#: "#" = dark (0), "." = light face (1).  Rows top to bottom.
CREEPER_ROWS = (
    "........",
    "........",
    ".##..##.",
    ".##..##.",
    "...##...",
    "..####..",
    "..####..",
    "..#..#..",
)
TRIGGER_DIR = resource_path("triggers")
CREEPER_PATH = TRIGGER_DIR / "creeper.png"


def creeper_pattern() -> np.ndarray:
    """The creeper face as float32 8 x 8 in [0, 1] (1 = light face, 0 = dark features)."""
    return np.array([[0.0 if c == "#" else 1.0 for c in row] for row in CREEPER_ROWS], dtype=np.float32)


def write_creeper(path: Path = CREEPER_PATH) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((creeper_pattern() * 255).astype(np.uint8)).save(path, optimize=True)
    return path


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(write_creeper(Path(args[0]) if args else CREEPER_PATH))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
