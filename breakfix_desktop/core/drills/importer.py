"""Import a drill that ran outside the app: ``python -m training drill NAME --out DIR`` on a
server, a GPU machine or a terminal writes ``DIR/events.jsonl`` (the same JSON-lines events the
app reads from a live run) and ``DIR/report.json``; :func:`read_drill_folder` rebuilds a
:class:`~.run.DrillRun` from them so its curves, reports and per-model table show in the Drills
page and it can be compared with runs made in the app.

Qt-free and torch-free.  Nothing in the folder is changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from ..protocol import ProtocolError, decode
from .run import ROLES, DrillRun

__all__ = ["EVENTS_NAME", "REPORT_NAME", "IMPORT_PREFIX", "DrillImportError", "events_path", "read_drill_folder"]

EVENTS_NAME = "events.jsonl"
REPORT_NAME = "report.json"
#: Imported runs' ids are ``IMPORT_PREFIX + <the backend's run_id>``: importing the same stream
#: twice is refused instead of making a second copy.
IMPORT_PREFIX = "import-"


class DrillImportError(ValueError):
    """The folder or file cannot be imported; the message names the file and says why."""


def events_path(path: Union[str, Path]) -> Path:
    """The events file for ``path``: the file itself, or ``events.jsonl`` in a folder."""
    p = Path(path)
    if p.is_dir():
        p = p / EVENTS_NAME
    if not p.is_file():
        raise DrillImportError(f"{p}: no such file (a drill folder written by 'python -m training drill "
                           f"NAME --out DIR' holds {EVENTS_NAME})")
    return p


def _read_report(folder: Path) -> Optional[Dict[str, Any]]:
    path = folder / REPORT_NAME
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DrillImportError(f"{path}: not a readable drill report ({exc})") from exc
    return report if isinstance(report, dict) else None


def read_drill_folder(path: Union[str, Path], roles: Optional[Mapping[str, str]] = None,
                      titles: Optional[Mapping[str, str]] = None) -> DrillRun:
    """Rebuild the run recorded in ``path`` (a drill output folder or its ``events.jsonl``).

    ``roles`` / ``titles`` map drill names to the role and title the app knows for them (from the
    backend's ``drill --list``); without them the title comes from ``report.json`` and the role from
    the events' own tags (the last of clean, attacked, defended among them).  Lines that are not valid protocol messages are kept in
    ``invalid_lines`` (the run is still imported); a file without a ``run_started`` event, or
    without any event, is refused with :class:`DrillImportError`.

    The status is ``ok`` or ``cancelled`` as the stream's ``run_finished`` says, ``failed`` when it
    ends with an ``error`` event, else ``interrupted`` (the drill was stopped, or still runs).
    """
    events_file = events_path(path)
    folder = events_file.parent
    try:
        text = events_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DrillImportError(f"{events_file}: cannot be read ({exc})") from exc
    messages, invalid = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            messages.append(decode(line))
        except ProtocolError as exc:
            invalid.append((line, f"line {number}: {exc}"))
    if not messages:
        raise DrillImportError(f"{events_file}: no protocol events in it"
                           + (f" ({len(invalid)} invalid line(s); first: {invalid[0][1]})" if invalid else ""))
    started = next((m for m in messages if m["type"] == "run_started"), None)
    if started is None:
        raise DrillImportError(f"{events_file}: no run_started event: not the stream of a backend run")
    config = started["config"]
    command = started["command"].split()
    name = str(config.get("drill") or (command[1] if command[:1] == ["drill"] and len(command) > 1 else command[0]))
    report = _read_report(folder)
    recipe = f"drill:{name}" if command[:1] == ["drill"] else name
    title = (titles or {}).get(name) or (report or {}).get("title") or name
    # without the listing: the last of clean < attacked < defended that a series is tagged with
    # (Figure 6's clean / attacked / defended curves make a "defended" drill)
    tagged = {m["role"] for m in messages if isinstance(m.get("role"), str) and m["role"] in ROLES}
    role = (roles or {}).get(name) or next((r for r in reversed(ROLES) if r in tagged), "clean")
    if role not in ROLES:
        role = "clean"
    finished_at = messages[-1].get("t")
    run = DrillRun(
        IMPORT_PREFIX + started["run_id"], recipe, title, role,
        config={"recipe": recipe, "settings": dict(config.get("settings") or {}), "params": {},
                "data": str(config.get("data", "")), "device": "", "role": role,
                "quick": bool(config.get("quick")), "imported_from": str(folder),
                "command": "python -m training " + started["command"]},
        steps=[command], out_dir=str(folder), device=str(config.get("device") or "-"),
        created=float(started["t"]))
    for msg in messages:
        run.apply(msg)
    for line, reason in invalid:
        run.note_invalid(line, reason)
    run.started = float(started["t"])
    finished = [m for m in messages if m["type"] == "run_finished"]
    if finished:
        status = "cancelled" if finished[-1]["status"] == "cancelled" else "ok"
        message = f"imported from {folder}"
    elif run.errors:
        status, message = "failed", f"imported from {folder}; the drill failed: {run.errors[-1]}"
    else:
        status = "interrupted"
        message = (f"imported from {folder}; the stream ends before the drill finished "
                   "(it was stopped, or is still running)")
    run.status, run.message = status, message
    run.finished = float(finished_at) if isinstance(finished_at, (int, float)) else None
    run.step_index = 0
    run.version += 1
    return run
