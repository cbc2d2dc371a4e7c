"""Replay a recorded JSON-lines event stream as if it were the training backend.

    python -m breakfix_desktop.tools.replay_events [--file CMD=PATH ...] [--chunk N] [--delay S]
        [--stderr TEXT] [--exit CODE] [--hang] [-- BACKEND ARGS...]

Writes the recording to stdout in chunks of ``--chunk`` bytes (lines split anywhere, as a pipe
may deliver them), flushing and sleeping ``--delay`` seconds after each chunk.  With several
``--file CMD=PATH`` the file is picked by the first backend argument after ``--`` (e.g. ``train``
or ``evaluate``), so a GUI can run its usual multi-step commands against recordings.  ``--stderr``
is written to stderr at the end, then the process exits with ``--exit`` (``--hang`` waits forever
instead, to test cancelling).  Used by the tests, the drill screenshots and benchmarks; torch-free.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m breakfix_desktop.tools.replay_events",
                                description=__doc__.splitlines()[0])
    p.add_argument("--file", action="append", default=[], metavar="[CMD=]PATH",
                   help="recording to replay; CMD= picks it by the backend command (default: any)")
    p.add_argument("--chunk", type=int, default=0, help="bytes per write (0: whole lines)")
    p.add_argument("--delay", type=float, default=0.0, help="seconds to sleep after each write")
    p.add_argument("--stderr", default="", help="text written to stderr after the events")
    p.add_argument("--exit", type=int, default=0, help="exit status")
    p.add_argument("--hang", action="store_true", help="after the events, wait until killed")
    p.add_argument("backend_args", nargs="*", help="the backend's arguments (after --), used to pick --file")
    return p


def pick_file(specs: Sequence[str], backend_args: Sequence[str]) -> Optional[Path]:
    command = next((a for a in backend_args if not a.startswith("-")), "")
    fallback = None
    for spec in specs:
        cmd, sep, path = spec.partition("=")
        if not sep:
            fallback = fallback or Path(spec)
        elif cmd == command:
            return Path(path)
    return fallback


def chunks(data: bytes, size: int) -> List[bytes]:
    if size <= 0:
        return [line + b"\n" for line in data.split(b"\n") if line]
    return [data[i:i + size] for i in range(0, len(data), size)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    path = pick_file(args.file, args.backend_args)
    data = path.read_bytes() if path is not None else b""
    out = sys.stdout.buffer
    for part in chunks(data, args.chunk):
        out.write(part)
        out.flush()
        if args.delay:
            time.sleep(args.delay)
    if args.stderr:
        sys.stderr.write(args.stderr.replace("\\n", "\n") + "\n")
        sys.stderr.flush()
    if args.hang:
        while True:
            time.sleep(3600)
    return args.exit


if __name__ == "__main__":
    raise SystemExit(main())
