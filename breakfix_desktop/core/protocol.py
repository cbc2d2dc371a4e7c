"""The JSON-lines event protocol between the training backend and the GUI.

Stdlib only, imported by both sides (``training`` writes, ``breakfix_desktop`` reads).
The backend writes exactly one JSON object per line to stdout and flushes after each line;
human-readable logs go to stderr.

Every message has::

    {"v": 1, "type": "<event type>", "t": <unix time, float>, ...fields}

Event types and their required fields (extra fields are allowed and ignored by old readers):

=================  ==========================================================================
``run_started``    ``run_id`` (str), ``command`` (str), ``config`` (object)
``progress``       ``phase`` ("train" | "eval" | ...), ``epoch`` (int), ``step`` (int),
                   ``total`` (int); optional ``loss``, ``acc``, ``images_per_s``, ``message``
``epoch_end``      ``epoch`` (int), ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``
                   (float or null), ``lr`` (float)
``metrics``        ``split`` (str), ``report`` (object: the classification report)
``artifact_written`` ``kind`` (str), ``path`` (str)
``warning``        ``message`` (str); optional ``path``
``run_finished``   ``status`` ("ok" | "cancelled"); optional ``summary`` (object)
``error``          ``message`` (str); optional ``detail``
=================  ==========================================================================

Version rule: readers accept any message whose ``v`` equals :data:`PROTOCOL_VERSION`; a newer
major version is refused with :class:`ProtocolError`.  Adding optional fields does not bump it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import IO, Any, Dict, Iterator, List, Mapping, Optional

PROTOCOL_VERSION = 1

#: type -> {field: allowed python types}
SCHEMA: Dict[str, Dict[str, tuple]] = {
    "run_started": {"run_id": (str,), "command": (str,), "config": (dict,)},
    "progress": {"phase": (str,), "epoch": (int,), "step": (int,), "total": (int,)},
    "epoch_end": {
        "epoch": (int,),
        "train_loss": (float, int, type(None)),
        "train_acc": (float, int, type(None)),
        "test_loss": (float, int, type(None)),
        "test_acc": (float, int, type(None)),
        "lr": (float, int),
    },
    "metrics": {"split": (str,), "report": (dict,)},
    "artifact_written": {"kind": (str,), "path": (str,)},
    "warning": {"message": (str,)},
    "run_finished": {"status": (str,)},
    "error": {"message": (str,)},
}
EVENT_TYPES = tuple(SCHEMA)


class ProtocolError(ValueError):
    """A line is not a valid protocol message."""


def _clean(value: Any) -> Any:
    """Make a value strict-JSON: NaN/inf become null, tuples lists, numpy scalars python."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _clean(value.item())
        except (TypeError, ValueError):
            pass
    return value


def make_event(type_: str, **fields: Any) -> Dict[str, Any]:
    """Build and validate a message dict."""
    msg = {"v": PROTOCOL_VERSION, "type": type_, "t": round(time.time(), 3)}
    msg.update(_clean(fields))
    validate(msg)
    return msg


def encode(msg: Mapping[str, Any]) -> str:
    """One message -> one line (no trailing newline), strict JSON."""
    return json.dumps(msg, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def validate(msg: Any) -> Dict[str, Any]:
    if not isinstance(msg, dict):
        raise ProtocolError(f"message must be a JSON object, got {type(msg).__name__}")
    v = msg.get("v")
    if v != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {v!r} (this reader speaks {PROTOCOL_VERSION})")
    type_ = msg.get("type")
    if type_ not in SCHEMA:
        raise ProtocolError(f"unknown event type {type_!r}")
    for field, types in SCHEMA[type_].items():
        if field not in msg:
            raise ProtocolError(f"{type_} event lacks field {field!r}")
        value = msg[field]
        if isinstance(value, bool) and bool not in types:
            raise ProtocolError(f"{type_}.{field} must be {'/'.join(t.__name__ for t in types)}, got bool")
        if not isinstance(value, types):
            raise ProtocolError(
                f"{type_}.{field} must be {'/'.join(t.__name__ for t in types)}, got {type(value).__name__}"
            )
    return msg


def decode(line: str) -> Dict[str, Any]:
    """One line -> validated message dict.  Raises :class:`ProtocolError`."""
    line = line.strip()
    if not line:
        raise ProtocolError("empty line")
    try:
        msg = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc.msg} at column {exc.colno}") from exc
    return validate(msg)


class EventWriter:
    """Writes validated events, one flushed line each, to a text stream (stdout by default)."""

    def __init__(self, stream: Optional[IO[str]] = None):
        self._stream = stream

    @property
    def stream(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stdout

    def emit(self, type_: str, **fields: Any) -> Dict[str, Any]:
        msg = make_event(type_, **fields)
        self.stream.write(encode(msg) + "\n")
        self.stream.flush()
        return msg


class NullWriter(EventWriter):
    """Validates but writes nothing (library use, tests)."""

    def emit(self, type_: str, **fields: Any) -> Dict[str, Any]:
        return make_event(type_, **fields)


class LineBuffer:
    """Reassembles complete lines from arbitrary chunks (QProcess reads may split anywhere).

    ``feed(chunk)`` returns the complete lines (decoded, without newline); a trailing partial
    line is kept until its newline arrives.  ``flush()`` returns what is left at end of stream.
    """

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes | str) -> List[str]:
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        return [ln.decode("utf-8", errors="replace").rstrip("\r") for ln in lines]

    def flush(self) -> List[str]:
        rest, self._buf = self._buf, b""
        text = rest.decode("utf-8", errors="replace").strip()
        return [text] if text else []


def iter_events(lines) -> Iterator[Dict[str, Any]]:
    """Decode an iterable of lines, skipping blanks; raises on the first invalid one."""
    for line in lines:
        if line.strip():
            yield decode(line)
