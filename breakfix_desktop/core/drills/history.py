"""Drill run history in SQLite (:class:`RunHistory`), optionally written by a background thread
(:class:`_HistoryWriter`) so the GUI thread never waits for SQLite."""

from __future__ import annotations

import atexit
import json
import logging
import queue
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..protocol import ProtocolError, validate
from .run import FINAL_STATUSES, DrillRun, SeriesData, _number

__all__ = ["DB_NAME", "SCHEMA_VERSION", "HistoryEntry", "RunHistory"]

log = logging.getLogger(__name__)
DB_NAME = "drills.sqlite3"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class HistoryEntry:
    id: str
    number: int
    recipe: str
    title: str
    role: str
    status: str
    created: float
    finished: Optional[float]
    test_acc: Optional[float]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    number INTEGER NOT NULL,
    recipe TEXT NOT NULL,
    title TEXT NOT NULL,
    role TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    finished REAL,
    test_acc REAL,
    config TEXT NOT NULL,      -- JSON: recipe settings, attack params, data, device
    record TEXT NOT NULL       -- JSON: DrillRun.to_record() (steps, results, stderr tail)
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,       -- one protocol message, JSON
    PRIMARY KEY (run_id, seq)
);
"""


class _HistoryWriter:
    """One thread with its own SQLite connection that performs a :class:`RunHistory`'s writes in
    order, so the caller (the GUI thread) never waits for SQLite: creating the database (the WAL
    switch and schema commit are disk syncs), inserting events, saving records.  Operations queued
    while one is being written are batched into one transaction.  Errors are kept in ``errors``
    (and logged), never raised into the caller."""

    def __init__(self, path: Path):
        self.path = path
        self.queue: "queue.Queue[Optional[Callable[[sqlite3.Connection], None]]]" = queue.Queue()
        self.errors: List[str] = []
        self._thread = threading.Thread(target=self._loop, name="drill-history-writer", daemon=True)
        self._thread.start()
        _LIVE_WRITERS.add(self)

    def submit(self, op: Callable[[sqlite3.Connection], None]) -> None:
        self.queue.put(op)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every queued write is committed; False if ``timeout`` seconds passed first."""
        if not self._thread.is_alive():
            return self.queue.unfinished_tasks == 0
        if timeout is None:
            self.queue.join()
            return True
        deadline = time.monotonic() + timeout
        with self.queue.all_tasks_done:
            while self.queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.queue.all_tasks_done.wait(left)
        return True

    def close(self, timeout: Optional[float] = None) -> bool:
        """Write what is queued, then stop the thread."""
        _LIVE_WRITERS.discard(self)
        if not self._thread.is_alive():
            return True
        self.queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        conn: Optional[sqlite3.Connection] = None
        stop = False
        while not stop:
            batch = [self.queue.get()]
            while True:  # everything queued meanwhile goes into the same transaction
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            ops = [op for op in batch if op is not None]
            stop = len(ops) < len(batch)
            try:
                if ops:
                    if conn is None:
                        conn = _open_db(self.path, create=True, check_same_thread=True)
                    with conn:
                        for op in ops:
                            op(conn)
            except Exception as exc:  # noqa: BLE001 - kept and reported, never kills the thread
                message = f"drill history {self.path}: {type(exc).__name__}: {exc}"
                self.errors.append(message)
                log.error("%s", message)
            finally:
                for _ in batch:
                    self.queue.task_done()
        if conn is not None:
            conn.close()


#: writers with queued work, by database: a reader of the same file flushes them first, and they
#: are flushed when the interpreter exits (nothing queued is lost when the app closes).
_LIVE_WRITERS: "weakref.WeakSet[_HistoryWriter]" = weakref.WeakSet()


@atexit.register
def _flush_writers_at_exit() -> None:
    for writer in list(_LIVE_WRITERS):
        writer.close(timeout=30)


def _open_db(path: Path, create: bool, check_same_thread: bool = True) -> Optional[sqlite3.Connection]:
    if not create and not path.is_file():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=10, check_same_thread=check_same_thread)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit appends to the log without a disk sync (syncs happen at checkpoints);
        # the database stays consistent after a crash, at worst the last commits are missing
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            conn.commit()
        elif row[0] > SCHEMA_VERSION:
            raise RuntimeError(f"{path}: drill history schema {row[0]} is newer than this app ({SCHEMA_VERSION})")
    except BaseException:
        conn.close()
        raise
    return conn


_UPSERT_RUN = (
    "INSERT INTO runs (id, number, recipe, title, role, status, created, finished, test_acc, config, record)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET number=excluded.number,"
    " recipe=excluded.recipe, title=excluded.title, role=excluded.role, status=excluded.status,"
    " created=excluded.created, finished=excluded.finished, test_acc=excluded.test_acc,"
    " config=excluded.config, record=excluded.record"
)  # an upsert, not INSERT OR REPLACE: REPLACE deletes the row, and ON DELETE CASCADE its events


class RunHistory:
    """Drill runs in SQLite (``folder/drills.sqlite3``): config, every event, results.

    The database file is created by the first :meth:`save`; reading a folder without one gives an
    empty history (opening the GUI never writes anything).

    ``background=True`` (the drill studio): writes are queued to a writer thread with its own
    connection (:class:`_HistoryWriter`), so the caller never waits for SQLite - not for creating
    the database, not for saving a run's events.  :meth:`append_events` stores a running run's new
    events incrementally, :meth:`save` then only adds the rest.  Reads first wait for the queued
    writes of every writer of the same file in this process (read-your-writes), :meth:`flush`
    waits explicitly and :meth:`close` flushes; queued writes are also flushed at interpreter exit.
    Without ``background`` every write happens at once in the caller's thread.
    """

    def __init__(self, folder: Optional[Path] = None, background: bool = False):
        if folder is None:
            from ..quarantine import default_store_dir

            folder = default_store_dir()
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.background = background
        self._conn: Optional[sqlite3.Connection] = None
        self._writer: Optional[_HistoryWriter] = None
        #: run id -> how many of its events are stored (or queued); only runs this object wrote
        self._stored_events: Dict[str, int] = {}

    # ------------------------------------------------------------------ connections
    def _connect(self, create: bool) -> Optional[sqlite3.Connection]:
        """The reading (and, without ``background``, writing) connection; None when there is no
        database yet and ``create`` is false."""
        self._flush_same_file()
        if self._conn is not None:
            return self._conn
        self._conn = _open_db(self.path, create)
        return self._conn

    def _flush_same_file(self) -> None:
        for writer in list(_LIVE_WRITERS):
            if writer.path == self.path:
                writer.flush()

    def _write(self, op: Callable[[sqlite3.Connection], None]) -> None:
        if not self.background:
            conn = self._connect(create=True)
            with conn:
                op(conn)
            return
        if self._writer is None or not self._writer._thread.is_alive():
            self._writer = _HistoryWriter(self.path)
        elif self._writer not in _LIVE_WRITERS:
            _LIVE_WRITERS.add(self._writer)
        self._writer.submit(op)

    @property
    def write_errors(self) -> List[str]:
        """Errors of background writes (empty when every write succeeded)."""
        return list(self._writer.errors) if self._writer is not None else []

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every queued write is in the database (True), or ``timeout`` seconds."""
        return self._writer.flush(timeout) if self._writer is not None else True

    def close(self) -> None:
        """Write everything queued, stop the writer thread, close the connections."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ writes
    def _events_op(self, run: DrillRun) -> Optional[Callable[[sqlite3.Connection], None]]:
        """The write of the run's events not stored yet (all of them, replacing any stored ones,
        the first time this object writes the run).  Only references are taken here; the JSON is
        encoded by whoever runs the operation (the writer thread)."""
        start = self._stored_events.get(run.id)
        events = run.events[start or 0:]
        self._stored_events[run.id] = (start or 0) + len(events)
        run_id = run.id

        def op(conn: sqlite3.Connection) -> None:
            if start is None:
                conn.execute("DELETE FROM events WHERE run_id = ?", (run_id,))
            conn.executemany("INSERT OR REPLACE INTO events (run_id, seq, event) VALUES (?,?,?)",
                             ((run_id, (start or 0) + i, json.dumps(e)) for i, e in enumerate(events)))

        return op if (events or start is None) else None

    def save(self, run: DrillRun, with_events: bool = True) -> None:
        """Store the run's record (config, status, results) and with ``with_events`` its events
        (only those not stored yet by :meth:`append_events` or an earlier save)."""
        row = (run.id, run.number, run.recipe, run.title, run.role, run.status, run.created, run.finished,
               run.final_test_acc, json.dumps(run.config), json.dumps(run.to_record()))
        events = self._events_op(run) if with_events else None

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(_UPSERT_RUN, row)
            if events is not None:
                events(conn)

        self._write(op)

    def append_events(self, run: DrillRun) -> int:
        """Store the events the run received since the last call (a running run, saved before);
        returns how many were queued."""
        before = self._stored_events.get(run.id, 0)
        op = self._events_op(run)
        if op is not None:
            self._write(op)
        return self._stored_events[run.id] - before

    def stored_events(self, run_id: str) -> int:
        """How many of the run's events this object has stored or queued."""
        return self._stored_events.get(run_id, 0)

    # ------------------------------------------------------------------ reads
    def entries(self) -> List[HistoryEntry]:
        """All runs, newest first (no events loaded)."""
        conn = self._connect(create=False)
        if conn is None:
            return []
        rows = conn.execute("SELECT id, number, recipe, title, role, status, created, finished, test_acc FROM runs"
                            " ORDER BY created DESC").fetchall()
        return [HistoryEntry(*row) for row in rows]

    def next_number(self) -> int:
        conn = self._connect(create=False)
        if conn is None:
            return 1
        return int(conn.execute("SELECT COALESCE(MAX(number), 0) FROM runs").fetchone()[0]) + 1

    def load(self, run_id: str) -> DrillRun:
        """A stored run rebuilt from its events (series and reports as when it ran)."""
        conn = self._connect(create=False)
        row = conn.execute("SELECT record FROM runs WHERE id = ?", (run_id,)).fetchone() if conn else None
        if row is None:
            raise KeyError(f"no drill run {run_id!r} in {self.path}")
        rec = json.loads(row[0])
        run = DrillRun(rec["id"], rec["recipe"], rec["title"], rec["role"], rec["config"], rec["steps"],
                       out_dir=rec["out_dir"], device=rec["device"], number=rec["number"], created=rec["created"])
        for (text,) in conn.execute("SELECT event FROM events WHERE run_id = ? ORDER BY seq", (run_id,)):
            try:
                run.apply(validate(json.loads(text)))
            except (ProtocolError, json.JSONDecodeError) as exc:
                run.note_invalid(text, str(exc))
        results = rec.get("results", {})
        run.reports = results.get("reports", run.reports) or run.reports
        # tagged series are rebuilt from the events; the record's "series" (optional: older records
        # lack it) restores their epochs when the events were not stored
        for item in results.get("series") or []:
            if isinstance(item, dict) and item.get("name") and item["name"] not in run.series_data:
                data = run.series_data[item["name"]] = SeriesData(item["name"], item.get("role"), item.get("param"))
                for row in item.get("epochs") or []:
                    if isinstance(row, dict) and _number(row.get("epoch")):
                        data.add_epoch(row)
        run.invalid_lines = [tuple(x) for x in results.get("invalid_lines", [])] or run.invalid_lines
        status = rec["status"]
        # a run still queued/running in the database belonged to a session that ended
        run.status = status if status in FINAL_STATUSES else "interrupted"
        run.message = rec["message"] if status in FINAL_STATUSES else "the app closed before this run finished"
        run.started, run.finished, run.stderr_tail = rec["started"], rec["finished"], rec["stderr_tail"]
        run.step_index = max(len(run.steps) - 1, 0)
        return run

    def delete(self, run_id: str) -> None:
        if not self.path.is_file() and not self._stored_events and self._writer is None:
            return
        self._stored_events.pop(run_id, None)
        self._write(lambda conn: conn.execute("DELETE FROM runs WHERE id = ?", (run_id,)))
