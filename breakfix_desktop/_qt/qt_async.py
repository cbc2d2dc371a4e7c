"""Run blocking work off the UI thread and get the outcome back on it.

``QtAsync(parent).submit(fn, on_done)`` runs ``fn()`` on a :class:`QThreadPool` and later calls
``on_done(result, error)`` on the UI thread (through a queued signal).  ``error`` is the exception
``fn`` raised, else ``None``.  Work submitted with a ``key`` supersedes earlier work of that key:
only the newest outcome is delivered (a reader clicking through scans sees the last one).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Dict, Optional, Tuple

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

Callback = Callable[[Any, Optional[BaseException]], None]


class _Relay(QObject):
    # one tuple, never a bare None: PySide6 mis-counts references of None sent through queued
    # ``object`` arguments (a crash at interpreter exit)
    done = Signal(object)


class _Task(QRunnable):
    def __init__(self, task_id: int, fn: Callable[[], Any], relay: _Relay):
        super().__init__()
        self.task_id, self.fn, self.relay = task_id, fn, relay
        self.setAutoDelete(True)

    def run(self) -> None:  # worker thread
        try:
            result, error = self.fn(), None
        except BaseException as exc:  # noqa: BLE001 - handed to the UI thread
            result, error = None, exc
        try:
            self.relay.done.emit((self.task_id, result, error))
        except RuntimeError:
            pass  # the receiving view is gone


class QtAsync(QObject):
    """Owner-bound background calls (see the module docstring)."""

    def __init__(self, parent: Optional[QObject] = None, pool: Optional[QThreadPool] = None):
        super().__init__(parent)
        self.pool = pool or QThreadPool.globalInstance()
        self._relay = _Relay(self)
        self._relay.done.connect(self._deliver)
        self._ids = itertools.count(1)
        self._callbacks: Dict[int, Tuple[Optional[str], Callback]] = {}
        self._latest: Dict[str, int] = {}

    def submit(self, fn: Callable[[], Any], on_done: Callback, key: Optional[str] = None) -> int:
        task_id = next(self._ids)
        self._callbacks[task_id] = (key, on_done)
        if key is not None:
            self._latest[key] = task_id
        self.pool.start(_Task(task_id, fn, self._relay))
        return task_id

    @property
    def pending(self) -> int:
        return len(self._callbacks)

    def _deliver(self, outcome: Tuple[int, Any, Any]) -> None:
        task_id, result, error = outcome
        key, callback = self._callbacks.pop(task_id, (None, None))
        if callback is None or (key is not None and self._latest.get(key) != task_id):
            return
        callback(result, error)

    def wait(self, msecs: int = 30000) -> bool:
        """Wait for the pool's work to finish (shutdown and tests)."""
        return self.pool.waitForDone(msecs)
