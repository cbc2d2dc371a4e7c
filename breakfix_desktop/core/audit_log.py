"""Append-only audit log with a SHA-256 hash chain.

Where it lives: in the quarantine store's SQLite database (table ``audit_log``), so a scan record
and the audit entries about it are committed in **one** transaction - a process killed at any
moment leaves either both or neither.  Two triggers abort any ``UPDATE`` or ``DELETE`` on the
table; the hash chain detects changes made around them (trigger dropped, file edited)::

    audit_log(seq INTEGER PRIMARY KEY,   -- 1, 2, 3, ... without gaps
              time TEXT,                 -- UTC, ISO 8601 with microseconds
              event TEXT,                -- one of EVENTS
              payload TEXT,              -- canonical JSON object
              prev_hash TEXT,            -- hash of entry seq-1 (GENESIS_HASH for seq 1)
              hash TEXT)                 -- sha256(prev_hash + canonical_json(entry))

where ``entry`` is ``{"seq", "time", "event", "payload"}`` and canonical JSON is
``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``.

Events: ``screened``, ``quarantined``, ``released``, ``confirmed``, ``exported``,
``model_loaded``, ``model_refused``.  Payloads never carry patient identifiers (DICOM
PatientName, PatientID, PatientBirthDate): :func:`append` refuses them.

What the chain cannot show: entries cut off the *end* of the log together with the rows they
describe (the chain of the remaining prefix is still valid).  Exported reports quote the last
hash (``head``), which pins the log as it was at that time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, NamedTuple, Optional, Union

__all__ = [
    "EVENTS",
    "GENESIS_HASH",
    "SCHEMA_SQL",
    "AuditEntry",
    "AuditCheck",
    "append",
    "canonical_json",
    "entry_hash",
    "iter_entries",
    "head",
    "utc_now",
    "verify_connection",
    "verify_audit",
]

EVENTS = ("screened", "quarantined", "released", "confirmed", "exported", "model_loaded", "model_refused")
GENESIS_HASH = "0" * 64
#: Payload keys that would carry patient identifiers; :func:`append` refuses them.
FORBIDDEN_KEYS = frozenset({"patient_name", "patient_id", "patient_birth_date",
                            "PatientName", "PatientID", "PatientBirthDate"})

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS audit_log (
    seq       INTEGER PRIMARY KEY,
    time      TEXT NOT NULL,
    event     TEXT NOT NULL,
    payload   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: entries cannot be changed'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: entries cannot be deleted'); END;
"""

PathLike = Union[str, os.PathLike]


def utc_now() -> str:
    """Current UTC time, ISO 8601 with microseconds (``2026-01-01T12:00:00.000000+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, tuples -> lists, paths -> str."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if hasattr(obj, "item"):  # numpy scalars
        return _clean(obj.item())
    return str(obj)


def canonical_json(obj: Any) -> str:
    """The one serialisation that is hashed (sorted keys, no spaces, UTF-8, no NaN)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(prev_hash: str, seq: int, time: str, event: str, payload: Dict[str, Any]) -> str:
    """``sha256(prev_hash + canonical_json({"seq", "time", "event", "payload"}))`` as hex."""
    body = canonical_json({"seq": seq, "time": time, "event": event, "payload": payload})
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit log."""

    seq: int
    time: str
    event: str
    payload: Dict[str, Any]
    prev_hash: str
    hash: str


def _forbidden(obj: Any) -> Optional[str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in FORBIDDEN_KEYS:
                return k
            found = _forbidden(v)
            if found:
                return found
    elif isinstance(obj, list):
        for v in obj:
            found = _forbidden(v)
            if found:
                return found
    return None


def append(conn: sqlite3.Connection, event: str, payload: Optional[Dict[str, Any]] = None,
           *, time: Optional[str] = None) -> AuditEntry:
    """Append one entry.  Call inside the caller's write transaction (``BEGIN IMMEDIATE``) so the
    read of the previous hash and the insert are atomic with the change being logged."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}; expected one of {', '.join(EVENTS)}")
    clean = _clean(dict(payload or {}))
    bad = _forbidden(clean)
    if bad:
        raise ValueError(f"audit payloads must not carry patient identifiers (key {bad!r})")
    row = conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS_HASH)
    time = time or utc_now()
    digest = entry_hash(prev, seq, time, event, clean)
    conn.execute("INSERT INTO audit_log (seq, time, event, payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)",
                 (seq, time, event, canonical_json(clean), prev, digest))
    return AuditEntry(seq, time, event, clean, prev, digest)


def _rows(conn: sqlite3.Connection, where: str = "", args: tuple = ()) -> Iterator[AuditEntry]:
    for seq, time, event, payload, prev, digest in conn.execute(
            f"SELECT seq, time, event, payload, prev_hash, hash FROM audit_log {where} ORDER BY seq", args):
        try:
            data = json.loads(payload)
        except (TypeError, ValueError):
            data = {}
        yield AuditEntry(seq, time, event, data if isinstance(data, dict) else {}, prev, digest)


def iter_entries(conn: sqlite3.Connection, since: int = 1) -> Iterator[AuditEntry]:
    """Entries with ``seq >= since`` in order (an unreadable payload comes back as ``{}``)."""
    return _rows(conn, "WHERE seq >= ?", (since,))


def head(conn: sqlite3.Connection) -> Optional[AuditEntry]:
    """The last entry, or ``None`` for an empty log."""
    row = conn.execute("SELECT MAX(seq) FROM audit_log").fetchone()
    return next(_rows(conn, "WHERE seq = ?", (row[0],)), None) if row and row[0] is not None else None


class AuditCheck(NamedTuple):
    """Result of a verification: unpacks as ``ok, first_bad_seq, message``."""

    ok: bool
    first_bad_seq: Optional[int]
    message: str


def verify_connection(conn: sqlite3.Connection) -> AuditCheck:
    """Walk the chain from entry 1; report the first entry that is missing, altered or relinked."""
    expected_seq, prev, count = 1, GENESIS_HASH, 0
    rows = conn.execute("SELECT seq, time, event, payload, prev_hash, hash FROM audit_log ORDER BY seq")
    for seq, time, event, payload_text, prev_hash, digest in rows:
        if seq != expected_seq:
            if seq > expected_seq:
                gap = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}..{seq - 1}"
                return AuditCheck(False, expected_seq,
                                  f"audit entry {gap} is missing (entry {seq} follows entry {expected_seq - 1})")
            return AuditCheck(False, seq, f"audit entry {seq} is out of sequence (expected {expected_seq})")
        try:
            payload = json.loads(payload_text)
            if not isinstance(payload, dict):
                raise ValueError("payload is not a JSON object")
            recomputed = entry_hash(prev_hash, seq, time, event, payload)
        except (TypeError, ValueError) as exc:
            return AuditCheck(False, seq, f"audit entry {seq} ({event}, {time}) has an unreadable payload ({exc})")
        if event not in EVENTS:
            return AuditCheck(False, seq, f"audit entry {seq} has an unknown event type {event!r}")
        if prev_hash != prev:
            return AuditCheck(False, seq, f"audit entry {seq} ({event}, {time}) does not link to entry {seq - 1}: "
                                          "its prev_hash differs from that entry's hash")
        if recomputed != digest:
            return AuditCheck(False, seq, f"audit entry {seq} ({event}, {time}) has been altered: its content "
                                          "does not match its hash")
        prev, expected_seq, count = digest, seq + 1, count + 1
    if count == 0:
        return AuditCheck(True, None, "audit log is empty (nothing recorded yet)")
    return AuditCheck(True, None, f"audit log intact: {count} entries, chain head {prev[:16]}...")


def _db_path(store: Any) -> Path:
    if hasattr(store, "db_path"):
        return Path(store.db_path)
    path = Path(store).expanduser()
    if path.is_dir() or not path.suffix:
        from .quarantine import DB_NAME

        return path / DB_NAME
    return path


def verify_audit(store: Any) -> AuditCheck:
    """Verify the audit log of ``store``: a :class:`~.quarantine.QuarantineStore`, its folder or its
    database file.  Opens the database read-only; never creates or repairs anything.  A missing
    store or log is *not* ok (``first_bad_seq`` ``None``)."""
    if hasattr(store, "verify_audit_chain"):
        return store.verify_audit_chain()
    path = _db_path(store)
    if not path.is_file():
        return AuditCheck(False, None, f"no store database at {path}: nothing to verify")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        return AuditCheck(False, None, f"cannot open {path} ({exc})")
    try:
        has_table = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='audit_log'").fetchone()
        if not has_table:
            return AuditCheck(False, None, f"{path} has no audit log table")
        return verify_connection(conn)
    except sqlite3.Error as exc:
        return AuditCheck(False, None, f"cannot read the audit log in {path} ({exc})")
    finally:
        conn.close()
