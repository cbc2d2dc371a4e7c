"""Headless commands of ``breakfix-desktop``: ``screen`` and ``verify-audit``.

Qt-free.  ``screen`` runs the very engine the GUI uses (:class:`~.core.screening.ScreeningEngine`)
and writes the JSON report; ``verify-audit`` checks the store's hash-chained audit log.

Exit codes: 0 - done (every input got a verdict, errors included; the audit log is intact);
1 - ``verify-audit`` found the log broken; 2 - cannot run at all (no verified classifier, no
inputs found, unwritable report or store), with a message on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from .core.fsutil import atomic_write_bytes

__all__ = ["configure_screen", "configure_verify_audit", "run_screen", "run_verify_audit", "write_report"]

EXIT_OK, EXIT_BROKEN, EXIT_CANNOT_RUN = 0, 1, 2


def _err(message: str) -> None:
    print(f"breakfix-desktop: {message}", file=sys.stderr, flush=True)


def configure_screen(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", metavar="PATH", nargs="+", type=Path,
                   help="image files (PNG, JPEG, BMP, TIFF, DICOM) or folders (searched recursively)")
    p.add_argument("--report", metavar="OUT.json", type=Path, required=True,
                   help="where to write the JSON report (one object per input)")
    p.add_argument("--store", metavar="DIR", type=Path, default=None,
                   help="quarantine store folder (default: $BREAKFIX_STORE or the per-user data folder)")
    p.add_argument("--models", metavar="DIR", type=Path, default=argparse.SUPPRESS,
                   help="folder holding manifest.json (default: the shipped resources/models)")
    p.add_argument("--batch-size", metavar="N", type=int, default=8, help="items per inference batch (default 8)")
    p.add_argument("--workers", metavar="N", type=int, default=None, help="worker threads (default: min(4, CPUs))")
    p.add_argument("--cpu", action="store_true", help="do not try the CUDA execution provider")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def configure_verify_audit(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="DIR", type=Path, default=None,
                   help="quarantine store folder (default: $BREAKFIX_STORE or the per-user data folder)")


def _check_report_writable(report: Path) -> Optional[str]:
    parent = report.expanduser().absolute().parent
    if report.is_dir():
        return f"--report {report}: is a folder; give a file name such as {report / 'report.json'}"
    if not parent.is_dir():
        return f"--report {report}: the folder {parent} does not exist"
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".breakfix-", suffix=".probe"):
            pass
    except OSError as exc:
        return f"--report {report}: cannot write in {parent} ({exc.strerror or exc})"
    return None


def write_report(report: Path, objects: List[dict]) -> None:
    """Write the JSON list atomically (temp file in the same folder, fsync, rename)."""
    text = json.dumps(objects, indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(report, text.encode("utf-8"))


def run_screen(args: argparse.Namespace) -> int:
    """``breakfix-desktop screen PATH... --report OUT.json [--store DIR] [--models DIR]``."""
    from .core.inputs import discover
    from .core.model_registry import load_registry
    from .core.quarantine import QuarantineStore, StoreError
    from .core.screening import ScreeningEngine, ScreeningResult, ScreeningUnavailable

    problem = _check_report_writable(args.report)
    if problem:
        _err(problem)
        return EXIT_CANNOT_RUN
    if args.batch_size < 1 or (args.workers is not None and args.workers < 1):
        _err("--batch-size and --workers must be >= 1")
        return EXIT_CANNOT_RUN
    found = discover(args.paths)
    for missing in found.missing:
        _err(f"{missing}: no such file or folder")
    if not found.items:
        where = ", ".join(str(p) for p in args.paths)
        _err(f"no inputs found in {where} (PNG, JPEG, BMP, TIFF or DICOM files, or folders holding them)")
        return EXIT_CANNOT_RUN
    registry = load_registry(args.models)
    for entry in registry.refused:
        _err(f"model {entry.name}: {entry.reason}")
    try:
        store = QuarantineStore(args.store)
    except StoreError as exc:
        _err(str(exc))
        return EXIT_CANNOT_RUN
    with store:
        engine = ScreeningEngine(registry, store, batch_size=args.batch_size, workers=args.workers,
                                 prefer_gpu=not args.cpu)
        try:
            models = engine.load()
        except ScreeningUnavailable as exc:
            _err(str(exc))
            return EXIT_CANNOT_RUN
        for note in models.notes:
            _err(f"NOTE: {note}")
        last = [0.0]

        def progress(done: int, total: int, eta: Optional[float]) -> None:
            now = time.monotonic()
            if not args.quiet and (done == total or now - last[0] >= 1.0):
                last[0] = now
                eta_text = f", about {eta:.0f} s left" if eta is not None and done < total else ""
                print(f"screened {done}/{total}{eta_text}", file=sys.stderr, flush=True)

        summary = engine.run(found.items, on_progress=progress)
        objects = [ScreeningResult(path=str(p), error=f"{p}: no such file or folder").to_json()
                   for p in found.missing]
        objects = [r.to_json() for r in summary.results] + objects
        try:
            write_report(args.report, objects)
        except OSError as exc:
            _err(f"--report {args.report}: cannot write ({exc.strerror or exc})")
            return EXIT_CANNOT_RUN
        head = store.audit_head()
        store.log_event("exported", {"kind": "screen-report", "report": str(args.report.absolute()),
                                     "run": summary.run_id, "items": len(objects),
                                     "audit_head": head.hash if head else None})
        print(summary.text())
        print(f"report: {args.report} ({len(objects)} item(s)); store: {store.folder}")
    return EXIT_OK


def run_verify_audit(args: argparse.Namespace) -> int:
    """``breakfix-desktop verify-audit [--store DIR]``: exit 0 only when the chain is intact."""
    from .core.audit_log import verify_audit
    from .core.quarantine import default_store_dir

    folder = args.store if args.store is not None else default_store_dir()
    ok, first_bad, message = verify_audit(folder)
    if ok:
        print(f"OK: {message} ({folder})")
        return EXIT_OK
    if first_bad is None:
        _err(message)
        return EXIT_CANNOT_RUN
    print(f"AUDIT LOG BROKEN at entry {first_bad}: {message} ({folder})")
    return EXIT_BROKEN
