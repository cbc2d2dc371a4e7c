"""One drill launch and what its events told us: :class:`DrillRun` (configuration, backend steps,
status, every event, reports) with one :class:`SeriesData` per model (per-epoch and per-batch
:class:`Series` in growable numpy buffers, so plotting 100k points stays cheap)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..protocol import ProtocolError, decode

__all__ = [
    "ROLES", "ROLE_COLORS", "ROLE_TITLES", "STATUSES", "FINAL_STATUSES", "EPOCH_KEYS", "Series", "MAIN_SERIES",
    "SeriesData", "report_key", "DrillRun",
]

#: A run's role decides its colour on the plots (the paper's Figure 6: clean blue, attacked orange,
#: defended green).
ROLES = ("clean", "attacked", "defended")
ROLE_COLORS = {"clean": "#1f77b4", "attacked": "#ff7f0e", "defended": "#2ca02c"}
ROLE_TITLES = {"clean": "Clean", "attacked": "Attacked", "defended": "Defended"}
STATUSES = ("queued", "running", "ok", "failed", "crashed", "cancelled", "interrupted")
FINAL_STATUSES = ("ok", "failed", "crashed", "cancelled", "interrupted")
EPOCH_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr")


class Series:
    """An (x, y) float series in amortised-growth numpy buffers; ``x``/``y`` are views (no copies)."""

    __slots__ = ("_x", "_y", "_n")

    def __init__(self, capacity: int = 256):
        self._x = np.empty(capacity, dtype=np.float64)
        self._y = np.empty(capacity, dtype=np.float64)
        self._n = 0

    def append(self, x: float, y: float) -> None:
        if self._n == len(self._x):
            self._x = np.resize(self._x, 2 * len(self._x))
            self._y = np.resize(self._y, 2 * len(self._y))
        self._x[self._n] = x
        self._y[self._n] = y
        self._n += 1

    def __len__(self) -> int:
        return self._n

    @property
    def x(self) -> np.ndarray:
        return self._x[: self._n]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self._n]


#: Name of a run's main series: events without a ``series`` tag (plain train runs, old streams).
MAIN_SERIES = ""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class SeriesData:
    """One model's curves within a run: per-epoch rows and (x, y) series, per-batch training loss,
    classification reports.

    Multi-run drills (Figure 5's sweep, Figure 6's clean / attacked / defended) train several
    models in one backend process and tag ``progress``, ``epoch_end`` and ``metrics`` events with
    ``series`` (the model's name), ``role`` and ``param``; each tag gets one ``SeriesData``.
    """

    __slots__ = ("name", "role", "param", "epochs", "curves", "batch_loss", "reports")

    def __init__(self, name: str, role: Optional[str] = None, param: Optional[Dict[str, Any]] = None,
                 epochs: Optional[List[Dict[str, Any]]] = None):
        self.name = name
        self.role = role
        self.param = param
        self.epochs: List[Dict[str, Any]] = epochs if epochs is not None else []
        self.curves: Dict[str, Series] = {k: Series(64) for k in EPOCH_KEYS}
        self.batch_loss = Series(1024 if name == MAIN_SERIES else 256)
        self.reports: Dict[str, Dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"SeriesData({self.name!r}, role={self.role!r}, {len(self.epochs)} epochs)"

    @property
    def has_curves(self) -> bool:
        return bool(self.epochs) or len(self.batch_loss) > 0

    @property
    def final_test_acc(self) -> Optional[float]:
        """The last epoch's test accuracy (validation accuracy when the run has no test split)."""
        for row in reversed(self.epochs):
            for key in ("test_acc", "val_acc"):
                if _number(row.get(key)):
                    return float(row[key])
        return None

    def tag(self, msg: Mapping[str, Any]) -> None:
        """Take ``role`` / ``param`` from an event (the first ones that come)."""
        if self.role is None and isinstance(msg.get("role"), str):
            self.role = msg["role"]
        if self.param is None and isinstance(msg.get("param"), dict):
            self.param = dict(msg["param"])

    def add_progress(self, msg: Mapping[str, Any]) -> None:
        loss = msg.get("loss")
        if msg["phase"] == "train" and _number(loss) and msg["total"] > 0:
            self.batch_loss.append(msg["epoch"] - 1 + msg["step"] / msg["total"], float(loss))

    def add_epoch(self, msg: Mapping[str, Any]) -> None:
        self.epochs.append({k: msg.get(k) for k in ("epoch",) + EPOCH_KEYS})
        for key in EPOCH_KEYS:
            value = msg.get(key)
            if _number(value):
                self.curves[key].append(float(msg["epoch"]), float(value))

    def to_record(self) -> Dict[str, Any]:
        return {"name": self.name, "role": self.role, "param": self.param, "epochs": self.epochs,
                "reports": sorted(self.reports), "final_test_acc": self.final_test_acc}


def report_key(series: str, split: str) -> str:
    """``DrillRun.reports`` key of a classification report: the split, ``"series / split"`` if tagged."""
    return f"{series} / {split}" if series else split


@dataclass(repr=False)
class DrillRun:
    """One launch: its configuration and backend steps, and everything its events told us."""

    id: str
    recipe: str
    title: str
    role: str = "clean"
    config: Dict[str, Any] = field(default_factory=dict)
    steps: List[List[str]] = field(default_factory=list)
    files: Dict[str, Any] = field(default_factory=dict)  # relative name -> JSON written before step 0
    out_dir: str = ""
    device: str = "cpu"
    number: int = 0
    status: str = "queued"
    message: str = ""
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None
    step_index: int = 0
    stderr_tail: str = ""
    events: List[Dict[str, Any]] = field(default_factory=list)
    epochs: List[Dict[str, Any]] = field(default_factory=list)
    reports: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    artifacts: List[Tuple[str, str]] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    invalid_lines: List[Tuple[str, str]] = field(default_factory=list)
    step_results: List[Dict[str, Any]] = field(default_factory=list)
    progress: Optional[Dict[str, Any]] = None
    version: int = 0

    def __post_init__(self) -> None:
        main = SeriesData(MAIN_SERIES, epochs=self.epochs)
        #: name -> :class:`SeriesData`, in order of appearance; the main (untagged) series first.
        #: ``epochs``, ``series`` and ``batch_loss`` of the run are the main series' own objects.
        self.series_data: Dict[str, SeriesData] = {MAIN_SERIES: main}
        self.series: Dict[str, Series] = main.curves
        self.batch_loss = main.batch_loss
        #: ``reports`` key -> (series, split) for reports that came in a ``metrics`` event
        self.report_sources: Dict[str, Tuple[str, str]] = {}
        #: the series of the latest progress / epoch_end event (the model training now)
        self.current_series: str = MAIN_SERIES

    def __repr__(self) -> str:
        return f"DrillRun(#{self.number} {self.id} {self.recipe} {self.role} {self.status}, {len(self.events)} events)"

    # ------------------------------------------------------------------ labels
    @property
    def role_title(self) -> str:
        return ROLE_TITLES.get(self.role, self.role.title())

    @property
    def label(self) -> str:
        sweep = self.sweep
        extra = f" {sweep['param']}={sweep['value']:g}" if sweep else ""
        return f"#{self.number} {self.role_title}: {self.title}{extra}"

    @property
    def sweep(self) -> Optional[Dict[str, Any]]:
        s = self.config.get("sweep")
        return s if isinstance(s, dict) and "value" in s else None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    # ------------------------------------------------------------------ events
    def apply_line(self, line: str) -> Optional[Dict[str, Any]]:
        """Decode and apply one line; an invalid line is recorded (``invalid_lines``), not raised."""
        if not line.strip():
            return None
        try:
            msg = decode(line)
        except ProtocolError as exc:
            self.note_invalid(line, str(exc))
            return None
        self.apply(msg)
        return msg

    def note_invalid(self, line: str, reason: str) -> None:
        self.invalid_lines.append((line[:500], reason))
        self.version += 1

    # ------------------------------------------------------------------ series
    def series_of(self, msg: Mapping[str, Any]) -> SeriesData:
        """The :class:`SeriesData` an event belongs to (created on its first event): its ``series``
        tag, or the main series for untagged events."""
        name = msg.get("series")
        name = name if isinstance(name, str) and name else MAIN_SERIES
        data = self.series_data.get(name)
        if data is None:
            data = self.series_data[name] = SeriesData(name)
        data.tag(msg)
        return data

    @property
    def tagged_series(self) -> List[SeriesData]:
        """The tagged series (one per model of a multi-run drill), in order of appearance."""
        return [d for name, d in self.series_data.items() if name != MAIN_SERIES]

    def plot_series(self) -> List[SeriesData]:
        """The series to draw: the main one alone (untagged runs, also before any data came), else
        the tagged ones (and the main one too if it has curves of its own)."""
        main = self.series_data[MAIN_SERIES]
        tagged = [d for d in self.tagged_series if d.has_curves]
        if not tagged:
            return [main]
        return ([main] if main.has_curves else []) + tagged

    @property
    def multi_series(self) -> bool:
        """More than one curve per plot (a drill that trained several models)."""
        return len(self.plot_series()) > 1

    def final_test_accs(self) -> Dict[str, Optional[float]]:
        """Series name -> its last epoch's test accuracy (series with epochs; main series as "")."""
        return {d.name: d.final_test_acc for d in self.series_data.values() if d.epochs}

    def sweep_families(self) -> Dict[str, Tuple[str, float, List[float]]]:
        """Series of this run that form a parameter sweep: name -> (param key, value, family values).

        A family is the series of one role whose ``param`` objects differ in a numeric key (the
        paper's Figure 5: ``{"scale_strength": 0 | 1 | 3, "perturbation_strength": 1}``, tagged
        role ``attacked``), or every series of role ``sweep`` with a numeric param.  Colours follow
        the value along the sweep colour map."""
        groups: Dict[str, List[SeriesData]] = {}
        for d in self.tagged_series:
            if d.has_curves and isinstance(d.param, dict):
                groups.setdefault(d.role or self.role, []).append(d)
        out: Dict[str, Tuple[str, float, List[float]]] = {}
        for role, members in groups.items():
            keys = [k for k in members[0].param
                    if all(_number(m.param.get(k)) for m in members)]
            varying = [k for k in keys if len({float(m.param[k]) for m in members}) > 1]
            key = varying[0] if varying else (keys[0] if role == "sweep" and keys else None)
            if key is None:
                continue
            values = [float(m.param[key]) for m in members]
            for m, v in zip(members, values):
                out[m.name] = (key, v, values)
        return out

    def apply(self, msg: Dict[str, Any]) -> None:
        """Consume one validated protocol message."""
        self.events.append(msg)
        type_ = msg["type"]
        if type_ == "progress":
            self.progress = msg
            data = self.series_of(msg)
            if data.name != MAIN_SERIES or msg["phase"] == "train":
                self.current_series = data.name
            data.add_progress(msg)
        elif type_ == "epoch_end":
            data = self.series_of(msg)
            self.current_series = data.name
            data.add_epoch(msg)
        elif type_ == "metrics":
            data = self.series_of(msg)
            key = report_key(data.name, msg["split"])
            data.reports[msg["split"]] = msg["report"]
            self.reports[key] = msg["report"]
            self.report_sources[key] = (data.name, msg["split"])
        elif type_ == "artifact_written":
            self.artifacts.append((msg["kind"], msg["path"]))
        elif type_ == "warning":
            self.warnings.append(msg["message"])
        elif type_ == "error":
            self.errors.append(msg["message"])
        elif type_ == "run_finished":
            self.step_results.append({"status": msg["status"], "summary": msg.get("summary")})
        self.version += 1

    # ------------------------------------------------------------------ lifecycle
    def mark_started(self) -> None:
        self.status, self.started = "running", time.time()
        self.version += 1

    def finish(self, status: str, message: str = "", stderr_tail: str = "") -> None:
        if status not in FINAL_STATUSES:
            raise ValueError(f"unknown final status {status!r}")
        self.status, self.message, self.finished = status, message, time.time()
        if stderr_tail:
            self.stderr_tail = stderr_tail
        self.version += 1

    # ------------------------------------------------------------------ results
    @property
    def report_key(self) -> Optional[str]:
        """Key (in ``reports``) of the main classification report: the untagged Testing/test report,
        else the first untagged one, else (multi-run drills tag every report with its series) the
        first series' Testing/test report, else the first report."""
        untagged = [k for k in self.reports if self.report_sources.get(k, (MAIN_SERIES, k))[0] == MAIN_SERIES]
        for key in ("Testing", "test"):
            if key in untagged:
                return key
        if untagged:
            return untagged[0]
        for key in self.reports:
            if self.report_sources.get(key, ("", key))[1] in ("Testing", "test"):
                return key
        return next(iter(self.reports), None)

    @property
    def report(self) -> Optional[Dict[str, Any]]:
        """The main classification report (see :attr:`report_key`)."""
        key = self.report_key
        return None if key is None else self.reports[key]

    @property
    def summary(self) -> Optional[Dict[str, Any]]:
        """The last step's run_finished summary."""
        return self.step_results[-1]["summary"] if self.step_results else None

    @property
    def final_test_acc(self) -> Optional[float]:
        """The main report's accuracy, else the main series' last test accuracy, else (multi-run
        drills) the last series' (see :meth:`final_test_accs` for every series)."""
        if self.report is not None:
            return self.report.get("accuracy")
        if self.epochs:
            return self.epochs[-1].get("test_acc")
        last = next((d for d in reversed(self.tagged_series) if d.epochs), None)
        return None if last is None else last.final_test_acc

    @property
    def final_series(self) -> Optional[str]:
        """Name of the series :attr:`final_test_acc` comes from when it is a tagged one, else None."""
        if self.report is not None or self.epochs:
            return None
        last = next((d for d in reversed(self.tagged_series) if d.epochs), None)
        return None if last is None else last.name

    def duration(self) -> Optional[float]:
        if self.started is None:
            return None
        return (self.finished or time.time()) - self.started

    def progress_text(self) -> str:
        """One line for the status area: step, epoch and batch progress."""
        parts = []
        if len(self.steps) > 1:
            cmd = self.steps[min(self.step_index, len(self.steps) - 1)][0]
            parts.append(f"step {self.step_index + 1}/{len(self.steps)} ({cmd})")
        epochs = self.config.get("train", {}).get("epochs")
        p = self.progress
        current = self.series_data.get(self.current_series)
        if p is not None and p.get("phase") in ("eval", "attack"):  # no epoch: what is measured, e.g.
            # "Ensemble: PGD-20 x2 worst case (so far 0.953)", "CNN_PGD Testing"
            parts.append(str(p.get("message") or ("attacking" if p["phase"] == "attack" else "evaluating")))
            parts.append(f"batch {p['step']}/{p['total']}")
            p = None
        elif current is not None and current.name:  # a multi-run drill: which model trains now
            parts.append(current.name)
        if p is not None:
            parts.append(f"epoch {p['epoch']}" + (f"/{epochs}" if epochs else ""))
            parts.append(f"batch {p['step']}/{p['total']}")
            if isinstance(p.get("loss"), (int, float)):
                parts.append(f"loss {p['loss']:.4f}")
            if p.get("images_per_s"):
                parts.append(f"{p['images_per_s']:.0f} img/s")
        epochs_rows = current.epochs if current is not None else self.epochs
        if epochs_rows and epochs_rows[-1].get("test_acc") is not None:
            parts.append(f"test acc {100 * epochs_rows[-1]['test_acc']:.1f} %")
        return " · ".join(parts)

    def fraction_done(self) -> float:
        """0..1 progress over all steps (training steps weighted by epochs)."""
        if self.is_final:
            return 1.0
        n = max(len(self.steps), 1)
        inner = 0.0
        p = self.progress
        epochs = self.config.get("train", {}).get("epochs")
        if p is not None and epochs and self.steps and self.steps[min(self.step_index, n - 1)][0] in ("train", "drill"):
            inner = min(1.0, (p["epoch"] - 1 + p["step"] / max(p["total"], 1)) / epochs)
        return min(1.0, (self.step_index + inner) / n)

    def to_record(self) -> Dict[str, Any]:
        """Everything but the events, JSON-able (the history row)."""
        return {
            "id": self.id, "recipe": self.recipe, "title": self.title, "role": self.role, "config": self.config,
            "steps": self.steps, "out_dir": self.out_dir, "device": self.device, "number": self.number,
            "status": self.status, "message": self.message, "created": self.created, "started": self.started,
            "finished": self.finished, "stderr_tail": self.stderr_tail,
            "results": {"reports": self.reports, "epochs": self.epochs, "artifacts": self.artifacts,
                        "series": [d.to_record() for d in self.tagged_series],
                        "summary": self.summary, "warnings": self.warnings[-50:], "errors": self.errors,
                        "invalid_lines": self.invalid_lines[-50:]},
        }

    def copy_config(self) -> Dict[str, Any]:
        return json.loads(json.dumps(self.config))

