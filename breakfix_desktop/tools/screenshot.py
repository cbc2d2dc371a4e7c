"""Save a PNG of the real main window, rendered offscreen.

    python -m breakfix_desktop.tools.screenshot --out shots/main.png [--section Models] [--models DIR]

Settings go to a throw-away file, so screenshots neither read nor change the user's layout.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence


def build_parser() -> argparse.ArgumentParser:
    from .._qt.qt_main_window import SECTIONS

    parser = argparse.ArgumentParser(prog="python -m breakfix_desktop.tools.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--section", default=SECTIONS[0], help=f"one of: {', '.join(SECTIONS)}")
    parser.add_argument("--models", metavar="DIR", type=Path, default=None, help="models folder (default: shipped)")
    parser.add_argument("--size", default="1180x740", help="window size WIDTHxHEIGHT")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from ..app import APPLICATION, ORGANIZATION, create_main_window

    args = build_parser().parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    with tempfile.TemporaryDirectory() as tmp:
        settings = QSettings(str(Path(tmp) / "screenshot.ini"), QSettings.IniFormat)
        window = create_main_window(args.models, settings=settings)
        window.set_section(args.section)
        window.resize(width, height)
        window.show()
        for _ in range(5):
            app.processEvents()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if not window.grab().save(str(args.out), "PNG"):
            print(f"could not write {args.out}", file=sys.stderr)
            return 1
        window.close()
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
