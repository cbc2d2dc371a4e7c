"""The current screening session: which scans, their results, and how far a run has got.

Qt-free.  The GUI's Screening page is a view over one :class:`ScreeningSession`; it only listens
(:meth:`ScreeningSession.subscribe`) and calls the methods below.  All screening work is done by
the one :class:`~.screening.ScreeningEngine` (the same engine as the headless ``screen``
command); the session only keeps the list and the bookkeeping.

Threads: :meth:`ScreeningSession.run` blocks until the run is over and is meant to be called on a
worker thread.  Listeners are called on the thread that made the change - for a run, that
worker thread - so a GUI must hand the events over to its UI thread (the Qt view does this with
a queued signal).  The event's ``data`` carries what changed, so a listener never needs to read
shared state from another thread.

Events ``listener(event, data)``:

=================  ==========================================================================
``"items"``        items were added; ``data`` = ``(first_index, [InputItem, ...])``
``"cleared"``      every item and result was removed; ``data`` = ``None``
``"result"``       ``data`` = ``(index, ScreeningResult)`` (a new result, or one re-read from
                   the store after a review)
``"progress"``     ``data`` = :class:`Progress`
``"state"``        ``data`` = one of :data:`STATES`
``"notes"``        ``data`` = list of notes from the loaded models (e.g. no pattern detector)
``"summary"``      ``data`` = the run's :class:`~.screening.RunSummary`
``"failed"``       ``data`` = message (the run could not start, e.g. no verified classifier)
``"availability"`` the model registry changed; ``data`` = :meth:`unavailable_reason`
=================  ==========================================================================
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from .inputs import Discovery, InputItem, discover
from .model_registry import ModelCatalog
from .quarantine import QuarantineStore
from .screening import RunSummary, ScreeningEngine, ScreeningResult, ScreeningUnavailable, select_models

__all__ = ["STATES", "Progress", "ScreeningSession", "format_eta"]

#: idle (nothing run yet or cleared), running, cancelling, finished, cancelled, failed
STATES = ("idle", "running", "cancelling", "finished", "cancelled", "failed")

Listener = Callable[[str, Any], None]
PathLike = Union[str, os.PathLike]


def format_eta(seconds: Optional[float]) -> str:
    """``"about 12 s left"``, ``"about 3 min left"``; ``""`` when unknown."""
    if seconds is None:
        return ""
    if seconds < 1:
        return "less than a second left"
    if seconds < 90:
        return f"about {seconds:.0f} s left"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} min left"
    return f"about {seconds / 3600:.1f} h left"


@dataclass(frozen=True)
class Progress:
    """How far the current (or last) run has got."""

    done: int = 0
    total: int = 0
    eta_s: Optional[float] = None
    running: bool = False

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    def text(self) -> str:
        """``"12 of 40 screened - about 8 s left"``."""
        if not self.total:
            return "Nothing screened yet"
        text = f"{self.done} of {self.total} screened"
        if self.running and self.done < self.total:
            eta = format_eta(self.eta_s)
            text += f" - {eta}" if eta else " - estimating time left..."
        return text


def _key(path: PathLike, frame: Optional[int]) -> Tuple[str, Optional[int]]:
    return os.path.normcase(os.path.abspath(os.fspath(path))), frame


class ScreeningSession:
    """Items, results and progress of the screening on screen, over ``catalog`` and ``store``.

    ``store`` may be ``None`` when it could not be opened; ``store_error`` then says why and
    :meth:`unavailable_reason` reports it.
    """

    def __init__(self, catalog: ModelCatalog, store: Optional[QuarantineStore], *, batch_size: int = 8,
                 workers: Optional[int] = None, store_error: Optional[str] = None):
        self.catalog = catalog
        self.store = store
        self.store_error = store_error
        self.batch_size = batch_size
        self.workers = workers
        self._items: List[InputItem] = []
        self._results: Dict[int, ScreeningResult] = {}
        self._index: Dict[Tuple[str, Optional[int]], int] = {}
        self._missing: List[Path] = []
        self._lock = threading.RLock()
        self._listeners: List[Listener] = []
        self._engine: Optional[ScreeningEngine] = None
        self._engine_stale = False
        self._state = "idle"
        self._progress = Progress()
        self._notes: List[str] = []
        self.summary: Optional[RunSummary] = None
        catalog.subscribe(self._on_catalog)

    # ------------------------------------------------------------------ observers
    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(self, event: str, data: Any = None) -> None:
        for listener in list(self._listeners):
            listener(event, data)

    def close(self) -> None:
        """Stop following the catalog (the session is being thrown away)."""
        self.catalog.unsubscribe(self._on_catalog)

    def _on_catalog(self, what: str) -> None:
        if what != "registry":
            return
        with self._lock:
            if self.running:
                self._engine_stale = True  # the run in progress keeps its models; the next one reloads
            else:
                self._engine = None
        self._emit("availability", self.unavailable_reason())

    # ------------------------------------------------------------------ state (thread-safe reads)
    @property
    def items(self) -> List[InputItem]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def result(self, index: int) -> Optional[ScreeningResult]:
        with self._lock:
            return self._results.get(index)

    def results(self) -> List[ScreeningResult]:
        """Results so far, in item order (items without a result left out)."""
        with self._lock:
            return [self._results[i] for i in sorted(self._results)]

    @property
    def missing(self) -> List[Path]:
        with self._lock:
            return list(self._missing)

    @property
    def state(self) -> str:
        return self._state

    @property
    def running(self) -> bool:
        return self._state in ("running", "cancelling")

    @property
    def progress(self) -> Progress:
        return self._progress

    @property
    def notes(self) -> List[str]:
        return list(self._notes)

    def pending_indices(self) -> List[int]:
        """Items without a result yet."""
        with self._lock:
            return [i for i in range(len(self._items)) if i not in self._results]

    def counts(self) -> Dict[str, int]:
        """``{"clear": n, "quarantined": n, "error": n, "pending": n, "attention": n}``; attention =
        clear results with low confidence or member disagreement."""
        with self._lock:
            results = list(self._results.values())
            out = {v: sum(1 for r in results if r.verdict == v) for v in ("clear", "quarantined", "error")}
            out["pending"] = len(self._items) - len(results)
            out["attention"] = sum(1 for r in results
                                   if r.verdict == "clear" and (r.low_confidence or r.members_disagree))
            return out

    def unavailable_reason(self) -> Optional[str]:
        """Why screening cannot run now (no store, no verified classifier), or ``None``."""
        if self.store is None:
            why = self.store_error or ""
            return f"The quarantine store could not be opened, so screening cannot run. {why}".strip()
        registry = self.catalog.registry
        if select_models(registry)["classifier"]:
            return None
        refused = [m for m in registry.refused if m.role in ("classifier", "ensemble")]
        why = (f" {len(refused)} classifier(s) were REFUSED because their checksum does not match "
               "(see the Models page)." if refused else "")
        return ("No verified classifier is installed, so screening cannot run." + why +
                f" Install a model manifest in {registry.manifest_path.parent} or use File > Open models folder...")

    # ------------------------------------------------------------------ items
    def add_paths(self, paths: Iterable[PathLike]) -> Discovery:
        """Find the scans in files and folders (recursively, see :func:`~.inputs.discover`) and add
        them.  Blocking (folder walks, DICOM headers): a GUI calls it off the UI thread."""
        found = discover(list(paths))
        self.add_discovery(found)
        return found

    def add_discovery(self, found: Discovery) -> List[InputItem]:
        """Add what :func:`~.inputs.discover` found; items already in the session are skipped.
        Returns the items actually added."""
        with self._lock:
            first = len(self._items)
            added = []
            for item in found.items:
                key = _key(item.path, item.frame)
                if key in self._index:
                    continue
                self._index[key] = len(self._items)
                self._items.append(item)
                added.append(item)
            self._missing.extend(found.missing)
        if added:
            self._emit("items", (first, added))
        return added

    def clear(self) -> None:
        """Forget every item and result (the store keeps its records).  Not while running."""
        if self.running:
            raise RuntimeError("cannot clear the session while screening runs; cancel first")
        with self._lock:
            self._items.clear()
            self._results.clear()
            self._index.clear()
            self._missing.clear()
            self._progress = Progress()
            self.summary = None
        self._set_state("idle")
        self._emit("cleared")
        self._emit("progress", self._progress)

    # ------------------------------------------------------------------ running
    def _set_state(self, state: str) -> None:
        self._state = state
        self._emit("state", state)

    def engine(self) -> ScreeningEngine:
        """The engine (created on first use; recreated after the model registry changed)."""
        with self._lock:
            if self.store is None:
                raise ScreeningUnavailable(self.unavailable_reason() or "no store")
            if self._engine is None or self._engine_stale:
                self._engine = ScreeningEngine(self.catalog, self.store, batch_size=self.batch_size,
                                               workers=self.workers)
                self._engine_stale = False
            return self._engine

    def begin(self) -> bool:
        """Mark the session as running (call on the UI thread before handing :meth:`run` to a
        worker, so the buttons change at once).  ``False`` if a run is already going."""
        with self._lock:
            if self.running:
                return False
            self._state = "running"
        self._emit("state", "running")
        return True

    def run(self, indices: Optional[Sequence[int]] = None) -> Optional[RunSummary]:
        """Screen ``indices`` (default: the items without a result; if every item has one, all of
        them again - the engine reuses stored records).  Blocks; call it on a worker thread.

        Returns the :class:`RunSummary`, or ``None`` when the run could not start (a ``"failed"``
        event says why).  Never raises for bad inputs: those are error verdicts.
        """
        with self._lock:
            if self._state != "running":
                if self.running:
                    raise RuntimeError("a screening run is already in progress")
                self._state = "running"
                started_here = True
            else:
                started_here = False
            if indices is None:
                everything = list(range(len(self._items)))
                indices = [i for i in everything if i not in self._results] or everything
            indices = list(indices)
            items = [self._items[i] for i in indices]
        if started_here:
            self._emit("state", "running")
        start = time.monotonic()
        self._progress = Progress(0, len(items), None, True)
        self._emit("progress", self._progress)
        try:
            engine = self.engine()
            models = engine.load()
        except ScreeningUnavailable as exc:
            return self._fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - a broken model must not take the app down
            return self._fail(f"screening could not start: {exc.__class__.__name__}: {exc}")
        self._notes = list(models.notes)
        self._emit("notes", self.notes)
        if self._state == "cancelling":  # cancelled while the models were loading
            summary = RunSummary(run_id="", total=len(items), cancelled=True, notes=list(models.notes),
                                 models=models.versions, device=models.device)
            return self._finish(summary, start)
        positions = {_key(item.path, item.frame): i for i, item in zip(indices, items)}

        def on_result(result: ScreeningResult) -> None:
            index = positions.get(_key(result.path, result.frame))
            if index is None:
                return
            with self._lock:
                self._results[index] = result
            self._emit("result", (index, result))

        def on_progress(done: int, total: int, eta: Optional[float]) -> None:
            if self._state == "cancelling":
                engine.cancel()  # again: a cancel that came just before engine.run started is not lost
            self._progress = Progress(done, total, eta, True)
            self._emit("progress", self._progress)

        try:
            summary = engine.run(items, on_progress=on_progress, on_result=on_result)
        except Exception as exc:  # noqa: BLE001
            return self._fail(f"screening stopped: {exc.__class__.__name__}: {exc}")
        return self._finish(summary, start)

    def _finish(self, summary: RunSummary, start: float) -> RunSummary:
        summary.elapsed_s = time.monotonic() - start
        self.summary = summary
        self._progress = Progress(summary.done, summary.total, None, False)
        self._emit("progress", self._progress)
        self._emit("summary", summary)
        self._set_state("cancelled" if summary.cancelled else "finished")
        return summary

    def _fail(self, message: str) -> Optional[RunSummary]:
        self._progress = Progress(0, self._progress.total, None, False)
        self._emit("progress", self._progress)
        self._emit("failed", message)
        self._set_state("failed")
        return None

    def cancel(self) -> None:
        """Ask the running screening to stop; items not started get no result (and no record)."""
        with self._lock:
            if not self.running:
                return
            self._state = "cancelling"
            engine = self._engine
        if engine is not None:
            engine.cancel()
        self._emit("state", "cancelling")

    # ------------------------------------------------------------------ after reviews
    def refresh_from_store(self) -> List[int]:
        """Re-read the records of quarantined results (a reviewer may have released or confirmed
        them); emits ``"result"`` for each that changed and returns their indices."""
        if self.store is None:
            return []
        changed = []
        with self._lock:
            todo = [(i, r) for i, r in self._results.items() if r.verdict == "quarantined" and r.scan_id is not None]
        for index, old in todo:
            try:
                rec = self.store.get(old.scan_id)
            except Exception:  # noqa: BLE001 - the record stays as it was shown
                continue
            if rec.review_status == old.review_status:
                continue
            new = ScreeningResult.from_record(rec, old.path, old.frame, reused=old.reused, patient=old.patient)
            with self._lock:
                self._results[index] = new
            changed.append(index)
            self._emit("result", (index, new))
        return changed
