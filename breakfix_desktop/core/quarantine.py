"""The quarantine store: screening records, content-addressed quarantine copies, reviews, audit log.

Qt-free and torch-free.  One folder (by default ``platformdirs.user_data_dir("BreakFix Desktop",
"BreakFix")``, overridable with ``$BREAKFIX_STORE`` or an explicit folder) holds::

    breakfix.sqlite3          SQLite, WAL journal, foreign keys on, synchronous=FULL
    quarantine/ab/abcdef...   read-only copies of flagged scans, named by their SHA-256
    tmp/                      copies in progress (``<sha>.<pid>.<random>.part``)

Schema (version :data:`SCHEMA_VERSION`, kept in ``schema_version``)::

    scans(id, sha256, frame,              -- UNIQUE (sha256, frame); frame -1 = single-frame file
          path, last_path,                -- first and latest path the content was seen at
          verdict,                        -- clear | quarantined | error
          label, probabilities,           -- classifier result (JSON); withheld while quarantined
          pattern_score, scores,          -- primary detector score; every detector's score (JSON)
          member_agreement, low_confidence, members_disagree, error,
          models,                         -- JSON list of "name sha12" used
          quarantine_file,                -- relative path of the copy
          review_status,                  -- pending | released | confirmed (quarantined only)
          first_seen, last_seen, times_seen)
    reviews(id, scan_id -> scans.id, decision (release | confirm_tampering), reviewer (non-empty),
            comment, time)                -- append-only (triggers)
    audit_log(...)                        -- see audit_log.py; same database, same transactions

Guarantees:

* **Originals are only ever read.**  A flagged scan is streamed into ``tmp/``, hashed on the way,
  fsynced, and ``os.replace``-d to its content address; a file whose bytes changed since it was
  hashed is refused.  ``quarantine/`` therefore only ever holds complete copies whose SHA-256 is
  their name; leftovers of killed processes in ``tmp/`` are removed when a store is opened
  (POSIX: when their process is gone; Windows: after an hour).
* **One record per content.**  ``(sha256, frame)`` is UNIQUE; recording the same scan again updates
  the existing row (``times_seen``, ``last_path``) instead of adding one.  A quarantined record is
  sticky: a later screening never turns it back to clear - only a reviewer's *release* shows its
  result.  An error never overwrites a good record.
* **Crash consistency.**  Every change and its audit entries are one ``BEGIN IMMEDIATE``
  transaction; WAL with ``synchronous=FULL`` makes committed transactions durable and a killed
  process leaves the last committed state.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

from . import audit_log
from .audit_log import AuditCheck, AuditEntry, utc_now

__all__ = [
    "APP_NAME",
    "APP_AUTHOR",
    "DB_NAME",
    "SCHEMA_VERSION",
    "VERDICTS",
    "DECISIONS",
    "StoreError",
    "ResultWithheldError",
    "ScanRecord",
    "Review",
    "QuarantineStore",
    "default_store_dir",
]

APP_NAME = "BreakFix Desktop"
APP_AUTHOR = "BreakFix"
DB_NAME = "breakfix.sqlite3"
SCHEMA_VERSION = 1
VERDICTS = ("clear", "quarantined", "error")
#: Review decision -> (review_status it sets, audit event).
DECISIONS = {"release": ("released", "released"), "confirm_tampering": ("confirmed", "confirmed")}
_NO_FRAME = -1

PathLike = Union[str, os.PathLike]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS scans (
    id               INTEGER PRIMARY KEY,
    sha256           TEXT NOT NULL CHECK (length(sha256) = 64),
    frame            INTEGER NOT NULL DEFAULT -1,
    path             TEXT NOT NULL,
    last_path        TEXT NOT NULL,
    verdict          TEXT NOT NULL CHECK (verdict IN ('clear', 'quarantined', 'error')),
    label            TEXT,
    probabilities    TEXT,
    pattern_score    REAL,
    scores           TEXT NOT NULL DEFAULT '{}',
    member_agreement REAL,
    low_confidence   INTEGER NOT NULL DEFAULT 0,
    members_disagree INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    models           TEXT NOT NULL DEFAULT '[]',
    quarantine_file  TEXT,
    review_status    TEXT CHECK (review_status IN ('pending', 'released', 'confirmed')),
    first_seen       TEXT NOT NULL,
    last_seen        TEXT NOT NULL,
    times_seen       INTEGER NOT NULL DEFAULT 1,
    UNIQUE (sha256, frame)
);
CREATE INDEX IF NOT EXISTS scans_queue ON scans (verdict, review_status);
CREATE TABLE IF NOT EXISTS reviews (
    id       INTEGER PRIMARY KEY,
    scan_id  INTEGER NOT NULL REFERENCES scans (id) ON DELETE RESTRICT,
    decision TEXT NOT NULL CHECK (decision IN ('release', 'confirm_tampering')),
    reviewer TEXT NOT NULL CHECK (length(trim(reviewer)) > 0),
    comment  TEXT NOT NULL DEFAULT '',
    time     TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS reviews_no_update BEFORE UPDATE ON reviews
BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END;
CREATE TRIGGER IF NOT EXISTS reviews_no_delete BEFORE DELETE ON reviews
BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END;
"""


def default_store_dir() -> Path:
    """``$BREAKFIX_STORE`` if set, else the per-user data folder from platformdirs."""
    env = os.environ.get("BREAKFIX_STORE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, APP_AUTHOR))


class StoreError(RuntimeError):
    """The store cannot do what was asked (unwritable folder, newer schema, bad review, ...)."""


class ResultWithheldError(PermissionError):
    """The classifier result of a quarantined scan is withheld until a reviewer releases it."""


@dataclass(frozen=True)
class ScanRecord:
    """One row of ``scans``.  ``label``/``probabilities`` are ``None`` while the result is withheld
    (quarantined and not released); the stored values are only reachable through
    :meth:`QuarantineStore.withheld_result` after release."""

    id: int
    sha256: str
    frame: Optional[int]
    path: str
    last_path: str
    verdict: str
    pattern_score: Optional[float]
    scores: Dict[str, float]
    member_agreement: Optional[float]
    low_confidence: bool
    members_disagree: bool
    error: Optional[str]
    models: List[str]
    quarantine_file: Optional[str]
    review_status: Optional[str]
    first_seen: str
    last_seen: str
    times_seen: int
    _label: Optional[str] = field(default=None, repr=False)
    _probabilities: Optional[Dict[str, float]] = field(default=None, repr=False)

    @property
    def withheld(self) -> bool:
        return self.verdict == "quarantined" and self.review_status != "released"

    @property
    def label(self) -> Optional[str]:
        return None if self.withheld else self._label

    @property
    def probabilities(self) -> Optional[Dict[str, float]]:
        return None if self.withheld else (dict(self._probabilities) if self._probabilities is not None else None)


@dataclass(frozen=True)
class Review:
    """One reviewer decision on a quarantined scan."""

    id: int
    scan_id: int
    decision: str
    reviewer: str
    comment: str
    time: str


def _loads(text: Optional[str], default: Any) -> Any:
    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _frame_key(frame: Optional[int]) -> int:
    return _NO_FRAME if frame is None else int(frame)


_COLUMNS = ("id, sha256, frame, path, last_path, verdict, label, probabilities, pattern_score, scores, "
            "member_agreement, low_confidence, members_disagree, error, models, quarantine_file, review_status, "
            "first_seen, last_seen, times_seen")


def _record(row: Sequence[Any]) -> ScanRecord:
    (id_, sha, frame, path, last_path, verdict, label, probs, pscore, scores, agree, low, disagree, error, models,
     qfile, status, first, last, times) = row
    return ScanRecord(
        id=id_, sha256=sha, frame=None if frame == _NO_FRAME else frame, path=path, last_path=last_path,
        verdict=verdict, pattern_score=pscore, scores=_loads(scores, {}), member_agreement=agree,
        low_confidence=bool(low), members_disagree=bool(disagree), error=error, models=_loads(models, []),
        quarantine_file=qfile, review_status=status, first_seen=first, last_seen=last, times_seen=times,
        _label=label, _probabilities=_loads(probs, None),
    )


def _pid_alive(pid: int) -> bool:
    """Is process ``pid`` still running?  (POSIX only: on Windows ``os.kill`` would terminate it.)"""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


#: A temp copy older than this is abandoned even if its process id looks alive (ids get reused).
_STALE_TEMP_S = 24 * 3600


def _temp_abandoned(part: Path) -> bool:
    try:
        age = time.time() - part.stat().st_mtime
    except OSError:
        return False
    if os.name == "nt":
        return age > 3600
    try:
        pid = int(part.name.split(".")[1])
    except (IndexError, ValueError):
        return True
    return age > _STALE_TEMP_S or not _pid_alive(pid)


class QuarantineStore:
    """The embedded store.  Thread-safe: one connection, every use under a lock; writes are
    ``BEGIN IMMEDIATE`` transactions, so several processes may share a store too."""

    def __init__(self, folder: Optional[PathLike] = None, *, timeout: float = 30.0):
        self.folder = Path(folder).expanduser() if folder is not None else default_store_dir()
        self.db_path = self.folder / DB_NAME
        self.quarantine_dir = self.folder / "quarantine"
        self.tmp_dir = self.folder / "tmp"
        try:
            for d in (self.folder, self.quarantine_dir, self.tmp_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store folder {self.folder} ({exc.strerror or exc})") from exc
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(str(self.db_path), timeout=timeout, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.db_path}: SQLite refused WAL mode (got {mode!r})")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store database {self.db_path} ({exc})") from exc
        self._remove_stale_temp_files()

    # ------------------------------------------------------------------ plumbing
    def _migrate(self) -> None:
        with self._write() as conn:
            has = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'").fetchone()
            version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] if has else None
            if version is not None and version > SCHEMA_VERSION:
                raise StoreError(f"{self.db_path} was written by a newer BreakFix Desktop (schema {version}, this "
                                 f"version understands {SCHEMA_VERSION}); not opened")
            if version is None:
                # executescript() would COMMIT early; run the statements inside this transaction
                for statement in _split_sql(_SCHEMA + audit_log.SCHEMA_SQL):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version, created) VALUES (?, ?)", (SCHEMA_VERSION, utc_now()))

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), rolled back on any error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> List[Sequence[Any]]:
        with self._lock:
            return self._conn.execute(sql, tuple(args)).fetchall()

    def _remove_stale_temp_files(self) -> None:
        """Delete ``tmp/*.part`` left by processes that no longer run (killed mid-copy)."""
        for part in self.tmp_dir.glob("*.part"):
            if _temp_abandoned(part):
                try:
                    part.unlink()
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "QuarantineStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` (``"ok"`` for a healthy database)."""
        return "; ".join(str(r[0]) for r in self._query("PRAGMA integrity_check"))

    @property
    def schema_version(self) -> int:
        return int(self._query("SELECT MAX(version) FROM schema_version")[0][0])

    # ------------------------------------------------------------------ scans
    def find(self, sha256: str, frame: Optional[int] = None) -> Optional[ScanRecord]:
        """The record of this content (and frame), or ``None``."""
        rows = self._query(f"SELECT {_COLUMNS} FROM scans WHERE sha256 = ? AND frame = ?", (sha256, _frame_key(frame)))
        return _record(rows[0]) if rows else None

    def get(self, scan_id: int) -> ScanRecord:
        rows = self._query(f"SELECT {_COLUMNS} FROM scans WHERE id = ?", (scan_id,))
        if not rows:
            raise StoreError(f"no scan record with id {scan_id}")
        return _record(rows[0])

    def scans(self, verdict: Optional[str] = None) -> List[ScanRecord]:
        """All records (optionally of one verdict), oldest first."""
        if verdict is None:
            rows = self._query(f"SELECT {_COLUMNS} FROM scans ORDER BY id")
        else:
            rows = self._query(f"SELECT {_COLUMNS} FROM scans WHERE verdict = ? ORDER BY id", (verdict,))
        return [_record(r) for r in rows]

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM scans")[0][0])

    def review_queue(self) -> List[ScanRecord]:
        """Quarantined scans waiting for a reviewer, oldest first."""
        rows = self._query(f"SELECT {_COLUMNS} FROM scans WHERE verdict = 'quarantined' AND review_status = 'pending' "
                           "ORDER BY id")
        return [_record(r) for r in rows]

    def record_scan(
        self,
        *,
        sha256: str,
        path: PathLike,
        verdict: str,
        frame: Optional[int] = None,
        label: Optional[str] = None,
        probabilities: Optional[Dict[str, float]] = None,
        pattern_score: Optional[float] = None,
        scores: Optional[Dict[str, float]] = None,
        member_agreement: Optional[float] = None,
        low_confidence: bool = False,
        members_disagree: bool = False,
        error: Optional[str] = None,
        models: Sequence[str] = (),
        quarantine_file: Optional[PathLike] = None,
        run_id: Optional[str] = None,
    ) -> ScanRecord:
        """Insert or update the record of ``(sha256, frame)`` and audit it, in one transaction.

        Returns the record as stored, which may differ from the arguments: a quarantined record
        stays quarantined, and an error does not overwrite an earlier good result.
        """
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        if verdict == "quarantined" and not quarantine_file:
            raise ValueError("a quarantined scan needs its quarantine copy (quarantine_file)")
        now, key, path = utc_now(), _frame_key(frame), os.fspath(path)
        qrel = None
        if quarantine_file:
            q = Path(quarantine_file)
            qrel = (q.relative_to(self.folder) if q.is_absolute() else q).as_posix()
        fields = dict(
            verdict=verdict, label=label, probabilities=json.dumps(probabilities) if probabilities is not None else None,
            pattern_score=pattern_score, scores=json.dumps(scores or {}), member_agreement=member_agreement,
            low_confidence=int(bool(low_confidence)), members_disagree=int(bool(members_disagree)), error=error,
            models=json.dumps(list(models)), quarantine_file=qrel,
            review_status="pending" if verdict == "quarantined" else None,
        )
        with self._write() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM scans WHERE sha256 = ? AND frame = ?", (sha256, key)).fetchone()
            old = _record(row) if row else None
            if old is None:
                cols = ["sha256", "frame", "path", "last_path", "first_seen", "last_seen", *fields]
                values = [sha256, key, path, path, now, now, *fields.values()]
                cur = conn.execute(f"INSERT INTO scans ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                                   values)
                scan_id, changed = cur.lastrowid, True
            else:
                scan_id = old.id
                keep = old.verdict == "quarantined" or (verdict == "error" and old.verdict != "error")
                conn.execute("UPDATE scans SET last_path = ?, last_seen = ?, times_seen = times_seen + 1 WHERE id = ?",
                             (path, now, scan_id))
                changed = not keep
                if changed:
                    sets = ", ".join(f"{k} = ?" for k in fields)
                    conn.execute(f"UPDATE scans SET {sets} WHERE id = ?", (*fields.values(), scan_id))
            stored = _record(conn.execute(f"SELECT {_COLUMNS} FROM scans WHERE id = ?", (scan_id,)).fetchone())
            payload = {"scan_id": scan_id, "sha256": sha256, "frame": frame, "path": path, "verdict": stored.verdict,
                       "pattern_score": stored.pattern_score, "models": stored.models, "run": run_id,
                       "new_record": old is None}
            if stored.verdict == "clear":
                payload["label"] = stored.label
            if stored.verdict == "error":
                payload["error"] = stored.error
            if stored.verdict != verdict:
                payload["computed_verdict"] = verdict
            audit_log.append(conn, "screened", payload, time=now)
            if changed and verdict == "quarantined":
                audit_log.append(conn, "quarantined", {
                    "scan_id": scan_id, "sha256": sha256, "frame": frame, "pattern_score": pattern_score,
                    "scores": scores or {}, "quarantine_file": qrel, "run": run_id}, time=now)
        return stored

    def touch(self, scan_id: int, path: PathLike, *, run_id: Optional[str] = None) -> ScanRecord:
        """The scan was screened again and its existing record reused: count it and audit it."""
        now, path = utc_now(), os.fspath(path)
        with self._write() as conn:
            conn.execute("UPDATE scans SET last_path = ?, last_seen = ?, times_seen = times_seen + 1 WHERE id = ?",
                         (path, now, scan_id))
            row = conn.execute(f"SELECT {_COLUMNS} FROM scans WHERE id = ?", (scan_id,)).fetchone()
            if row is None:
                raise StoreError(f"no scan record with id {scan_id}")
            rec = _record(row)
            payload = {"scan_id": rec.id, "sha256": rec.sha256, "frame": rec.frame, "path": path,
                       "verdict": rec.verdict, "pattern_score": rec.pattern_score, "models": rec.models,
                       "run": run_id, "new_record": False, "reused": True}
            if rec.verdict == "clear":
                payload["label"] = rec.label
            audit_log.append(conn, "screened", payload, time=now)
        return rec

    def record_unhashed_error(self, path: PathLike, error: str, *, frame: Optional[int] = None,
                              run_id: Optional[str] = None) -> AuditEntry:
        """A file that could not even be read (so has no SHA-256): audited, no scan record."""
        return self.log_event("screened", {"scan_id": None, "sha256": None, "frame": frame, "path": os.fspath(path),
                                           "verdict": "error", "error": error, "run": run_id, "new_record": False})

    # ------------------------------------------------------------------ quarantine copies
    def quarantine_path(self, sha256: str) -> Path:
        """``<store>/quarantine/<sha[:2]>/<sha>``."""
        sha = sha256.lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.quarantine_dir / sha[:2] / sha

    def quarantine_copy(self, source: PathLike, sha256: str) -> Path:
        """Copy ``source`` (only read, never changed) to its content address and return that path.

        The bytes are hashed while copying; if they do not hash to ``sha256`` (the file changed
        since it was screened) nothing is kept and :class:`StoreError` is raised.
        """
        dest = self.quarantine_path(sha256)
        if dest.is_file():
            try:
                from .hashing import sha256_file

                if sha256_file(dest) == sha256.lower():
                    return dest
            except OSError:
                pass
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp_dir / f"{sha256[:16]}.{os.getpid()}.{uuid.uuid4().hex}.part"
        h = hashlib.sha256()
        try:
            with open(source, "rb") as src, open(tmp, "xb") as out:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != sha256.lower():
                raise StoreError(f"{source}: the file changed while it was being screened (SHA-256 now "
                                 f"{h.hexdigest()[:12]}..., screened {sha256[:12]}...); not quarantined")
            os.chmod(tmp, 0o444)
            if dest.exists():  # a damaged earlier copy (read-only; Windows refuses to replace those)
                os.chmod(dest, 0o644)
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)
        except OSError as exc:
            raise StoreError(f"{source}: cannot copy into quarantine ({exc.strerror or exc})") from exc
        finally:
            if tmp.exists():
                try:
                    tmp.unlink()
                except OSError:
                    pass
        return dest

    def quarantine_files(self) -> List[Path]:
        """Every file under ``quarantine/`` (for checks and the review queue)."""
        return sorted(p for p in self.quarantine_dir.rglob("*") if p.is_file())

    # ------------------------------------------------------------------ reviews
    def review(self, scan_id: int, decision: str, reviewer: str, comment: str = "") -> ScanRecord:
        """Record a reviewer's ``release`` or ``confirm_tampering`` of a pending quarantined scan."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        reviewer = (reviewer or "").strip()
        if not reviewer:
            raise StoreError("a review needs the reviewer's name")
        comment = (comment or "").strip()
        status, event = DECISIONS[decision]
        now = utc_now()
        with self._write() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM scans WHERE id = ?", (scan_id,)).fetchone()
            if row is None:
                raise StoreError(f"no scan record with id {scan_id}")
            rec = _record(row)
            if rec.verdict != "quarantined":
                raise StoreError(f"scan {scan_id} is not quarantined (verdict {rec.verdict}); nothing to review")
            if rec.review_status != "pending":
                raise StoreError(f"scan {scan_id} was already reviewed ({rec.review_status})")
            conn.execute("INSERT INTO reviews (scan_id, decision, reviewer, comment, time) VALUES (?, ?, ?, ?, ?)",
                         (scan_id, decision, reviewer, comment, now))
            conn.execute("UPDATE scans SET review_status = ? WHERE id = ?", (status, scan_id))
            audit_log.append(conn, event, {"scan_id": scan_id, "sha256": rec.sha256, "frame": rec.frame,
                                           "reviewer": reviewer, "comment": comment}, time=now)
            return _record(conn.execute(f"SELECT {_COLUMNS} FROM scans WHERE id = ?", (scan_id,)).fetchone())

    def release(self, scan_id: int, reviewer: str, comment: str = "") -> ScanRecord:
        """Release a quarantined scan: its withheld result becomes visible."""
        return self.review(scan_id, "release", reviewer, comment)

    def confirm_tampering(self, scan_id: int, reviewer: str, comment: str = "") -> ScanRecord:
        """Confirm that a quarantined scan was tampered with: its result stays withheld."""
        return self.review(scan_id, "confirm_tampering", reviewer, comment)

    def reviews(self, scan_id: Optional[int] = None) -> List[Review]:
        if scan_id is None:
            rows = self._query("SELECT id, scan_id, decision, reviewer, comment, time FROM reviews ORDER BY id")
        else:
            rows = self._query("SELECT id, scan_id, decision, reviewer, comment, time FROM reviews WHERE scan_id = ? "
                               "ORDER BY id", (scan_id,))
        return [Review(*r) for r in rows]

    def withheld_result(self, scan_id: int) -> tuple:
        """``(label, probabilities)`` of a quarantined scan - only after it was released."""
        rec = self.get(scan_id)
        if rec.verdict == "quarantined" and rec.review_status != "released":
            raise ResultWithheldError(f"the result of scan {scan_id} is withheld until a reviewer releases it "
                                      f"(review status: {rec.review_status})")
        return rec._label, (dict(rec._probabilities) if rec._probabilities is not None else None)

    # ------------------------------------------------------------------ audit
    def log_event(self, event: str, payload: Optional[Dict[str, Any]] = None) -> AuditEntry:
        """Append one audit entry in its own transaction (model_loaded, exported, ...)."""
        with self._write() as conn:
            return audit_log.append(conn, event, payload)

    def audit_entries(self, since: int = 1) -> List[AuditEntry]:
        with self._lock:
            return list(audit_log.iter_entries(self._conn, since))

    def audit_head(self) -> Optional[AuditEntry]:
        with self._lock:
            return audit_log.head(self._conn)

    def verify_audit_chain(self) -> AuditCheck:
        """Verify the hash chain (see :func:`~.audit_log.verify_connection`)."""
        with self._lock:
            return audit_log.verify_connection(self._conn)


def _split_sql(script: str) -> List[str]:
    """Statements of a schema script (triggers keep their inner ``;``)."""
    out, buf = [], []
    for line in script.strip().splitlines():
        buf.append(line)
        text = "\n".join(buf).strip()
        if text.endswith(";") and (not text.upper().startswith("CREATE TRIGGER") or text.upper().endswith("END;")):
            out.append(text)
            buf = []
    if "".join(buf).strip():
        out.append("\n".join(buf))
    return out


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
