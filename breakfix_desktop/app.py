"""``breakfix-desktop``: the desktop entry point.

With no command it opens the GUI.  Subcommands are registered in :data:`COMMANDS`: ``gui``,
``screen`` (headless screening, see :mod:`.headless`) and ``verify-audit``; all share
``--models DIR``.  ``--self-test`` (see :mod:`.selftest`) checks the installation instead of
running a command.  Qt is imported only when the GUI starts, so commands stay usable headless.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

ORGANIZATION = "BreakFix"
APPLICATION = "BreakFix Desktop"


def _dist_version(dist: str) -> str:
    from importlib import metadata  # ~50 ms of imports: only when a version is asked for

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def version_text() -> str:
    """``breakfix-desktop 0.1.0 (onnxruntime 1.31.1, PySide6 6.12.0, Python 3.11.x)``."""
    ort = next((v for v in map(_dist_version, ("onnxruntime-gpu", "onnxruntime")) if v != "not installed"), "not installed")
    py = ".".join(map(str, sys.version_info[:3]))
    return (f"breakfix-desktop {_dist_version('breakfix-desktop')} "
            f"(onnxruntime {ort}, PySide6 {_dist_version('PySide6-Essentials')}, Python {py})")


def create_main_window(models: Optional[Path] = None, settings=None, *, probe_device: bool = True, store=None,
                       deferred: bool = False):
    """The real main window over a fresh :class:`ModelCatalog` (QApplication must exist).

    ``store``: the quarantine store folder (or an open store); ``None`` lets the window choose
    (``$BREAKFIX_STORE``, the settings, else the per-user data folder).  ``deferred=True`` returns
    at once with the window's shell: the manifest is not verified, the store not opened and the
    Screening/Review pages not built until :meth:`QtMainWindow.start_loading` (call it after
    ``show()``); the status bar says "Loading models..." and model actions are disabled until then."""
    from ._qt.qt_main_window import QtMainWindow
    from .core.model_registry import ModelCatalog

    catalog = ModelCatalog(models, load=not deferred)
    if probe_device and not deferred:
        catalog.probe_device()
    return QtMainWindow(catalog, settings=settings, store=store, deferred=deferred)


def run_gui(args: argparse.Namespace) -> int:
    """Open the main window and run the Qt event loop.

    The window is shown first; numpy/PIL/onnxruntime, the manifest's hash checks, the quarantine
    store and the device probe follow on a background thread (see ``start_loading``)."""
    from PySide6.QtWidgets import QApplication

    from ._qt.qt_main_window import app_icon

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setWindowIcon(app_icon())
    window = create_main_window(args.models, store=getattr(args, "store", None), probe_device=False, deferred=True)
    window.show()
    window.start_loading(on_ready=lambda: app.setApplicationVersion(_dist_version("breakfix-desktop")))
    code = app.exec()
    if window.loader is not None:
        window.loader.join(30)  # never tear the interpreter down under an onnxruntime session being created
    return code


def run_screen(args: argparse.Namespace) -> int:
    from .headless import run_screen as run

    return run(args)


def run_verify_audit(args: argparse.Namespace) -> int:
    from .headless import run_verify_audit as run

    return run(args)


def _configure_gui(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="DIR", type=Path, default=argparse.SUPPRESS,
                        help="quarantine store folder (default: $BREAKFIX_STORE, the settings, else the per-user "
                             "data folder)")


def _configure_screen(parser: argparse.ArgumentParser) -> None:
    from .headless import configure_screen

    configure_screen(parser)


def _configure_verify_audit(parser: argparse.ArgumentParser) -> None:
    from .headless import configure_verify_audit

    configure_verify_audit(parser)


#: command name -> (help, handler[, configure(subparser)]).
COMMANDS: Dict[str, tuple] = {
    "gui": ("open the desktop app (the default)", run_gui, _configure_gui),
    "screen": ("screen files or folders headless and write a JSON report (same engine as the GUI)",
               run_screen, _configure_screen),
    "verify-audit": ("check the audit log's hash chain; names the first bad entry (exit 0 only when intact)",
                     run_verify_audit, _configure_verify_audit),
}


class _VersionAction(argparse.Action):
    """``--version``; the versions are looked up (importlib.metadata) only when asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="show program's version number and exit"):  # noqa: A002 - argparse's name
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())  # stdout, as argparse's own version action does
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="breakfix-desktop",
        description="Offline brain-MRI screening with verified models. Without a command, opens the GUI.",
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("--models", metavar="DIR", type=Path, default=None,
                        help="folder holding manifest.json (default: the shipped resources/models)")
    parser.add_argument("--store", metavar="DIR", type=Path, default=None,
                        help="quarantine store folder for the GUI (the screen and verify-audit commands take "
                             "their own --store)")
    parser.add_argument("--self-test", action="store_true",
                        help="verify every model in the manifest (SHA-256), screen generated probe images in a "
                             "temporary store, print a summary; exit 0 only when all is well")
    sub = parser.add_subparsers(dest="command", metavar="[COMMAND]")
    for name, (help_text, _, *configure) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        for fn in configure:
            fn(sp)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``breakfix-desktop`` and ``python -m breakfix_desktop``."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.models is not None and not args.models.exists():
        print(f"breakfix-desktop: --models {args.models}: no such folder or file", file=sys.stderr)
        return 2
    if args.self_test:
        if args.command:
            parser.error(f"--self-test runs on its own; drop the {args.command!r} command")
        from .selftest import run_self_test

        return run_self_test(args.models)
    handler: Callable[[argparse.Namespace], int] = COMMANDS[args.command or "gui"][1]
    return int(handler(args) or 0)


__all__: List[str] = ["main", "build_parser", "create_main_window", "version_text", "COMMANDS"]
