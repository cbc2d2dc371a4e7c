"""The screening engine: one pipeline for the GUI and the headless ``screen`` command.

Qt-free and torch-free.  For every :class:`~.inputs.InputItem`::

    SHA-256 -> existing record?  -> reuse it (quarantined records always; clear ones when the
                                    same model versions produced them)
            -> preprocess_file (the one preprocessing path)
            -> pattern detector (+ the second check, when shipped)
            -> any detector flags it: verdict "quarantined", the file is copied content-addressed
               into the store, the classifier's result is stored but WITHHELD until release
            -> otherwise: verdict "clear" with the classifier's class, softmax probabilities
               (of the logits divided by the card's sealed ``temperature``, 1 when it has none),
               member agreement (ensembles) and plain flags for low confidence / disagreement
    any failure of one item -> verdict "error" with a message naming the file; the run goes on.

Models are chosen by role from the verified registry, never by name: the classifier is the
best ``ensemble`` (else the best ``classifier``) by the card's test accuracy, ties by name; the
pattern detector the best ``detector``; the second check the best ``check``.

Model outputs:

* classifier - the output named ``logits`` (else the first) is the decision, N x classes, in
  the card's ``classes`` order (default :data:`~.labels.CLASS_NAMES`); outputs named
  ``member_*`` (N x classes each) are the ensemble members' logits.
* detector / check - the output named ``score`` (else ``probability``, ``trigger``,
  ``logits``, else the first).  Shape N or N x 1: a probability in [0, 1] (a sigmoid is applied
  when the output's name contains ``logit``); N x 2: softmax, column 1 is "pattern present".
  Flagged when ``score >= card.get("threshold", 0.5)``.

Without any detector the run still works; every result has ``pattern_score`` ``None`` and the
summary carries the note :data:`NO_DETECTOR_NOTE`.

Threads: items are processed in batches on a :class:`~concurrent.futures.ThreadPoolExecutor`
(hashing, decoding and onnxruntime all release the GIL); at most ``workers + 1`` batches are
queued, so :meth:`ScreeningEngine.cancel` stops promptly and items never started get no
record.  Store writes and callbacks happen on the thread that called :meth:`ScreeningEngine.run`.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .hashing import sha256_file
from .inputs import InputItem
from .labels import CLASS_NAMES
from .model_registry import ModelCatalog, ModelEntry, ModelRefusedError, ModelSession, Registry, create_session
from .preprocess import PreprocessError, check_regular_file, is_dicom, preprocess_file, read_patient_identifiers
from .quarantine import QuarantineStore, ScanRecord, StoreError

__all__ = [
    "NO_DETECTOR_NOTE",
    "LOW_CONFIDENCE",
    "ScreeningUnavailable",
    "ScreeningResult",
    "RunSummary",
    "LoadedModels",
    "ScreeningEngine",
    "select_models",
    "softmax",
    "decision_and_agreement",
    "detector_scores",
    "results_json",
]

NO_DETECTOR_NOTE = "no pattern detector installed: scans were NOT checked for trigger patterns"
#: Results whose top probability is below this are flagged as low confidence, unless the classifier's
#: card gives its own ``low_confidence`` (chosen on validation by ``training calibrate``).
LOW_CONFIDENCE = 0.6
#: Ensemble results where fewer than this share of the members vote for the decision are flagged
#: "members disagree" (1.0: any member voting otherwise).
MIN_AGREEMENT = 1.0

PathLike = Union[str, os.PathLike]
ProgressCallback = Callable[[int, int, Optional[float]], None]
ResultCallback = Callable[["ScreeningResult"], None]


class ScreeningUnavailable(RuntimeError):
    """Screening cannot run at all (no verified classifier, or none could be loaded)."""


# --------------------------------------------------------------------------- results
@dataclass
class ScreeningResult:
    """The outcome for one input item.  :meth:`to_json` is the headless report's object."""

    path: str
    frame: Optional[int] = None
    sha256: Optional[str] = None
    verdict: str = "error"
    label: Optional[str] = None
    probabilities: Optional[Dict[str, float]] = None
    pattern_score: Optional[float] = None
    error: Optional[str] = None
    #: every detector's score by model name (pattern detector and second check)
    scores: Dict[str, float] = field(default_factory=dict)
    member_agreement: Optional[float] = None
    low_confidence: bool = False
    members_disagree: bool = False
    #: quarantined scans: pending | released | confirmed
    review_status: Optional[str] = None
    scan_id: Optional[int] = None
    #: the existing record was reused (the same content was screened before)
    reused: bool = False
    quarantine_file: Optional[str] = None
    models: List[str] = field(default_factory=list)
    #: DICOM PatientName/PatientID/PatientBirthDate; for opt-in reports only, never logged or stored
    patient: Dict[str, Optional[str]] = field(default_factory=dict, repr=False)

    @property
    def withheld(self) -> bool:
        """A quarantined result whose diagnosis is hidden until a reviewer releases it."""
        return self.verdict == "quarantined" and self.review_status != "released"

    @property
    def display_name(self) -> str:
        name = Path(self.path).name
        return name if self.frame is None else f"{name} [frame {self.frame}]"

    def to_json(self) -> Dict[str, Any]:
        """``path, sha256, verdict, label, probabilities, pattern_score, error`` (+ ``frame`` for
        multi-frame DICOM items).  Label and probabilities are ``null`` while withheld."""
        out: Dict[str, Any] = {"path": self.path}
        if self.frame is not None:
            out["frame"] = self.frame
        out.update(sha256=self.sha256, verdict=self.verdict,
                   label=None if self.withheld else self.label,
                   probabilities=None if self.withheld or self.probabilities is None else dict(self.probabilities),
                   pattern_score=self.pattern_score, error=self.error)
        return out

    @classmethod
    def from_record(cls, rec: ScanRecord, path: PathLike, frame: Optional[int], *, reused: bool = False,
                    patient: Optional[Dict[str, Optional[str]]] = None) -> "ScreeningResult":
        """The result a stored record stands for (withheld fields stay hidden)."""
        return cls(path=os.fspath(path), frame=frame, sha256=rec.sha256, verdict=rec.verdict, label=rec.label,
                   probabilities=rec.probabilities, pattern_score=rec.pattern_score, error=rec.error,
                   scores=dict(rec.scores), member_agreement=rec.member_agreement,
                   low_confidence=rec.low_confidence, members_disagree=rec.members_disagree,
                   review_status=rec.review_status, scan_id=rec.id, reused=reused,
                   quarantine_file=rec.quarantine_file, models=list(rec.models), patient=dict(patient or {}))


@dataclass
class RunSummary:
    """What one :meth:`ScreeningEngine.run` did.  ``results`` are in input order; items not
    started because of :meth:`~ScreeningEngine.cancel` are absent."""

    run_id: str
    total: int
    results: List[ScreeningResult] = field(default_factory=list)
    cancelled: bool = False
    notes: List[str] = field(default_factory=list)
    models: List[str] = field(default_factory=list)
    device: str = ""
    elapsed_s: float = 0.0

    @property
    def done(self) -> int:
        return len(self.results)

    def count(self, verdict: str) -> int:
        return sum(1 for r in self.results if r.verdict == verdict)

    def text(self) -> str:
        """A few human lines: counts, models, device and notes (notes in capitals, plainly)."""
        lines = [f"screened {self.done} of {self.total} item(s) in {self.elapsed_s:.1f} s"
                 + (" - CANCELLED" if self.cancelled else "") + ": "
                 f"{self.count('clear')} clear, {self.count('quarantined')} quarantined, {self.count('error')} error",
                 f"models: {', '.join(self.models) or 'none'}; device: {self.device or 'unknown'}"]
        flagged = [r for r in self.results if r.verdict == "clear" and (r.low_confidence or r.members_disagree)]
        if flagged:
            lines.append(f"{len(flagged)} clear result(s) need a closer look (low confidence or members disagree)")
        lines += [f"NOTE: {n}" for n in self.notes]
        return "\n".join(lines)


# --------------------------------------------------------------------------- models
def _rank(entries: Sequence[ModelEntry]) -> List[ModelEntry]:
    return sorted(entries, key=lambda m: (-(m.test_accuracy if m.test_accuracy is not None else -1.0), m.name))


def select_models(registry: Registry) -> Dict[str, List[ModelEntry]]:
    """Candidates per slot, best first: ``classifier`` (ensembles, then classifiers),
    ``detector`` and ``check``.  Only verified models; names are never hard-coded."""
    return {
        "classifier": _rank(registry.verified("ensemble")) + _rank(registry.verified("classifier")),
        "detector": _rank(registry.verified("detector")),
        "check": _rank(registry.verified("check")),
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def decision_and_agreement(outputs: Dict[str, np.ndarray]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """A classifier's decision logits (the output named ``logits``, else the first) and, for an
    ensemble, per scan the share of its ``member_*`` outputs whose top class is the decision's
    (``None`` without members).  The engine's flags and ``training calibrate`` both count from it."""
    logits = np.asarray(outputs["logits"] if "logits" in outputs else next(iter(outputs.values())))
    votes = [np.asarray(v).argmax(axis=1) for k, v in outputs.items() if k.startswith("member_")]
    if not votes:
        return logits, None
    return logits, (np.stack(votes) == logits.argmax(axis=1)).mean(axis=0)


_SCORE_NAMES = ("score", "probability", "prob", "trigger", "logits", "logit")


def detector_scores(outputs: Dict[str, np.ndarray], n: int) -> np.ndarray:
    """Pattern-present probability per item from a detector's outputs (see the module docstring)."""
    names = list(outputs)
    name = next((c for c in _SCORE_NAMES if c in outputs), names[0])
    arr = np.asarray(outputs[name], dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 2:
        return softmax(arr)[:, 1]
    arr = arr.reshape(n, -1) if arr.size == n else None  # type: ignore[assignment]
    if arr is None:
        raise ValueError(f"detector output {name!r} has shape {np.shape(outputs[name])}; expected N, N x 1 or N x 2")
    score = arr[:, 0]
    if "logit" in name.lower():
        score = 1.0 / (1.0 + np.exp(-score))
    return np.clip(np.nan_to_num(score, nan=1.0), 0.0, 1.0)  # NaN counts as flagged: never wave it through


@dataclass
class _Model:
    session: ModelSession
    input_name: str
    output_names: List[str]

    @property
    def entry(self) -> ModelEntry:
        return self.session.entry

    def run(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        outs = self.session.session.run(None, {self.input_name: batch})
        return dict(zip(self.output_names, outs))


@dataclass
class LoadedModels:
    """The sessions a run uses."""

    classifier: _Model
    detector: Optional[_Model] = None
    check: Optional[_Model] = None
    device: str = ""
    notes: List[str] = field(default_factory=list)

    @property
    def detectors(self) -> List[Tuple[str, _Model]]:
        return [(slot, m) for slot, m in (("detector", self.detector), ("check", self.check)) if m is not None]

    @property
    def versions(self) -> List[str]:
        return [m.entry.version_label for m in (self.classifier, self.detector, self.check) if m is not None]

    @property
    def classes(self) -> Tuple[str, ...]:
        classes = self.classifier.entry.card.get("classes")
        return tuple(classes) if isinstance(classes, list) and classes else CLASS_NAMES


# --------------------------------------------------------------------------- engine
@dataclass
class _Work:
    """One item on its way through a worker."""

    index: int
    item: InputItem
    result: ScreeningResult
    pixels: Optional[np.ndarray] = None
    existing: Optional[ScanRecord] = None
    outcome: Dict[str, Any] = field(default_factory=dict)


class ScreeningEngine:
    """Screens input items with the verified models of a registry into a :class:`QuarantineStore`.

    ``source`` is a :class:`Registry` or a :class:`ModelCatalog` (then the catalog's device is
    updated when sessions open).  Sessions open on the first :meth:`run` (or :meth:`load`).
    """

    def __init__(self, source: Union[Registry, ModelCatalog], store: QuarantineStore, *, batch_size: int = 8,
                 workers: Optional[int] = None, low_confidence: Optional[float] = None,
                 min_agreement: float = MIN_AGREEMENT, prefer_gpu: bool = True):
        self.catalog = source if isinstance(source, ModelCatalog) else None
        self.registry: Registry = source.registry if isinstance(source, ModelCatalog) else source
        self.store = store
        self.batch_size = max(1, int(batch_size))
        self.workers = max(1, int(workers or min(4, os.cpu_count() or 1)))
        #: an explicit flag threshold; ``None``: the classifier card's, else :data:`LOW_CONFIDENCE`
        self.low_confidence = None if low_confidence is None else float(low_confidence)
        self.min_agreement = float(min_agreement)
        self.prefer_gpu = prefer_gpu if self.catalog is None else self.catalog.prefer_gpu
        self._models: Optional[LoadedModels] = None
        self._cancel = threading.Event()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ models
    def _open(self, entry: ModelEntry) -> ModelSession:
        if self.catalog is not None:
            return self.catalog.open_session(entry)
        return create_session(entry, prefer_gpu=self.prefer_gpu)

    def _load_slot(self, slot: str, candidates: List[ModelEntry], notes: List[str]) -> Optional[_Model]:
        for entry in candidates:
            try:
                ms = self._open(entry)
            except ModelRefusedError as exc:
                self.store.log_event("model_refused", {"name": entry.name, "role": entry.role, "slot": slot,
                                                       "sha256": entry.sha256, "reason": str(exc)})
                notes.append(f"{slot} {entry.name} REFUSED: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - a model onnxruntime cannot open is unusable, not fatal
                self.store.log_event("model_refused", {"name": entry.name, "role": entry.role, "slot": slot,
                                                       "sha256": entry.sha256,
                                                       "reason": f"onnxruntime could not open it: {exc}"})
                notes.append(f"{slot} {entry.name} could not be opened: {exc.__class__.__name__}: {exc}")
                continue
            sess = ms.session
            model = _Model(ms, sess.get_inputs()[0].name, [o.name for o in sess.get_outputs()])
            self.store.log_event("model_loaded", {"name": entry.name, "role": entry.role, "slot": slot,
                                                  "sha256": entry.actual_sha256, "device": ms.device.provider,
                                                  "threshold": entry.card.get("threshold") if slot != "classifier"
                                                  else None,
                                                  "temperature": entry.temperature if slot == "classifier" else None,
                                                  "low_confidence": entry.low_confidence if slot == "classifier"
                                                  else None})
            return model
        return None

    def load(self) -> LoadedModels:
        """Open the sessions (once).  Raises :class:`ScreeningUnavailable` without a classifier."""
        with self._lock:
            if self._models is not None:
                return self._models
            for entry in self.registry.refused:
                self.store.log_event("model_refused", {"name": entry.name, "role": entry.role,
                                                       "sha256": entry.sha256, "reason": entry.reason})
            picks, notes = select_models(self.registry), []
            if not picks["classifier"]:
                problems = "; ".join(self.registry.problems) or (
                    f"{len(self.registry.refused)} model(s) refused" if self.registry.refused else "no models shipped")
                raise ScreeningUnavailable(
                    f"no verified classifier (role 'ensemble' or 'classifier') in {self.registry.manifest_path} "
                    f"({problems}); screening cannot run")
            classifier = self._load_slot("classifier", picks["classifier"], notes)
            if classifier is None:
                raise ScreeningUnavailable("no classifier could be loaded: " + "; ".join(notes))
            detector = self._load_slot("detector", picks["detector"], notes)
            check = self._load_slot("check", picks["check"], notes)
            if detector is None and check is None:
                notes.insert(0, NO_DETECTOR_NOTE)
            self._models = LoadedModels(classifier, detector, check, classifier.session.device.label, notes)
            return self._models

    def flag_threshold(self, models: LoadedModels) -> float:
        """Top probability under which a result is flagged as low confidence: the engine's explicit
        ``low_confidence``, else the classifier card's, else :data:`LOW_CONFIDENCE`."""
        if self.low_confidence is not None:
            return self.low_confidence
        card_value = models.classifier.entry.low_confidence
        return LOW_CONFIDENCE if card_value is None else card_value

    # ------------------------------------------------------------------ control
    def cancel(self) -> None:
        """Stop the running :meth:`run` promptly: batches not yet started are dropped."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # ------------------------------------------------------------------ run
    def run(self, items: Iterable[Union[InputItem, PathLike]], *, on_progress: Optional[ProgressCallback] = None,
            on_result: Optional[ResultCallback] = None) -> RunSummary:
        """Screen ``items`` (InputItems or plain paths); returns the :class:`RunSummary`.

        ``on_progress(done, total, eta_seconds_or_None)`` and ``on_result(result)`` are called on
        this thread after each item is recorded.
        """
        models = self.load()
        self._cancel.clear()
        work_items = [it if isinstance(it, InputItem) else InputItem(Path(it)) for it in items]
        run_id = uuid.uuid4().hex[:12]
        summary = RunSummary(run_id=run_id, total=len(work_items), notes=list(models.notes),
                             models=models.versions, device=models.device)
        start = time.monotonic()
        batches = [list(enumerate(work_items))[i:i + self.batch_size]
                   for i in range(0, len(work_items), self.batch_size)]
        by_index: Dict[int, ScreeningResult] = {}
        pending: set = set()
        next_batch = 0
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="breakfix-screen") as pool:
            while next_batch < len(batches) or pending:
                while not self._cancel.is_set() and next_batch < len(batches) and len(pending) <= self.workers:
                    pending.add(pool.submit(self._process_batch, batches[next_batch], models))
                    next_batch += 1
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    for work in self._collect(fut):
                        result = self._record(work, models, run_id)
                        by_index[work.index] = result
                        if on_result is not None:
                            on_result(result)
                        if on_progress is not None:
                            done = len(by_index)
                            elapsed = time.monotonic() - start
                            eta = elapsed / done * (summary.total - done) if done else None
                            on_progress(done, summary.total, eta)
        summary.cancelled = len(by_index) < summary.total and self._cancel.is_set()
        summary.results = [by_index[i] for i in sorted(by_index)]
        summary.elapsed_s = time.monotonic() - start
        return summary

    @staticmethod
    def _collect(fut: "Future[List[_Work]]") -> List[_Work]:
        return fut.result()  # _process_batch never raises; see there

    # ------------------------------------------------------------------ worker side
    def _process_batch(self, batch: List[Tuple[int, InputItem]], models: LoadedModels) -> List[_Work]:
        """Hash, look up, preprocess and infer one batch.  Never raises: failures become errors."""
        if self._cancel.is_set():
            return []
        works = []
        for index, item in batch:
            work = _Work(index, item, ScreeningResult(path=os.fspath(item.path), frame=item.frame))
            works.append(work)
            try:
                self._prepare(work)
            except Exception as exc:  # noqa: BLE001 - one bad input must never stop the run
                work.result.error = f"{item.path}: unexpected error while reading ({exc.__class__.__name__}: {exc})"
        todo = [w for w in works if w.pixels is not None]
        if todo:
            try:
                self._infer(todo, models)
            except Exception as exc:  # noqa: BLE001
                for w in todo:
                    w.pixels = None
                    w.outcome = {}
                    w.result.error = f"{w.item.path}: inference failed ({exc.__class__.__name__}: {exc})"
        for w in works:
            w.pixels = None  # free memory before the batch goes back to the run thread
        return works

    def _prepare(self, work: _Work) -> None:
        item, res = work.item, work.result
        try:
            check_regular_file(item.path)
        except PreprocessError as exc:
            if not (item.path.is_file() and exc.reason.startswith("file is empty")):
                res.error = str(exc)  # missing, unreadable, folder, pipe: nothing to hash
                return
        try:
            res.sha256 = sha256_file(item.path)
        except OSError as exc:
            res.error = f"{item.path}: cannot read file ({exc.strerror or exc})"
            return
        if is_dicom(item.path):
            try:
                res.patient = read_patient_identifiers(item.path)
            except PreprocessError:
                res.patient = {}
        existing = self.store.find(res.sha256, item.frame)
        if existing is not None and self._reusable(existing):
            work.existing = existing
            return
        try:
            work.pixels = preprocess_file(item.path, frame=item.frame)
        except PreprocessError as exc:
            res.error = str(exc)

    def _reusable(self, rec: ScanRecord) -> bool:
        """Quarantined records always stand; clear ones when made by the same model versions."""
        if rec.verdict == "quarantined":
            return True
        return rec.verdict == "clear" and self._models is not None and rec.models == self._models.versions

    def _infer(self, todo: List[_Work], models: LoadedModels) -> None:
        batch = np.stack([w.pixels for w in todo]).astype(np.float32, copy=False)
        n = len(todo)
        flagged = np.zeros(n, dtype=bool)
        primary: Optional[np.ndarray] = None
        for slot, model in models.detectors:
            scores = detector_scores(model.run(batch), n)
            threshold = model.entry.threshold
            if threshold is None:
                raise ValueError(f"{model.entry.name}: the card's threshold is not a number")
            flagged |= scores >= threshold
            if primary is None:
                primary = scores
            for w, s in zip(todo, scores):
                w.result.scores[model.entry.name] = float(s)
        logits, agreement = decision_and_agreement(models.classifier.run(batch))
        probs = softmax(logits / models.classifier.entry.temperature)
        classes = models.classes
        if probs.shape[1] != len(classes):
            raise ValueError(f"classifier {models.classifier.entry.name} gives {probs.shape[1]} classes, its card "
                             f"lists {len(classes)}")
        top = probs.argmax(axis=1)
        flag_below = self.flag_threshold(models)
        for i, w in enumerate(todo):
            res = w.result
            res.pattern_score = float(primary[i]) if primary is not None else None
            res.label = classes[int(top[i])]
            res.probabilities = {c: float(p) for c, p in zip(classes, probs[i])}
            res.low_confidence = bool(probs[i].max() < flag_below)
            if agreement is not None:
                res.member_agreement = float(agreement[i])
                res.members_disagree = res.member_agreement < self.min_agreement
            res.verdict = "quarantined" if flagged[i] else "clear"
        for i, w in enumerate(todo):
            if flagged[i]:
                try:
                    w.outcome["quarantine_file"] = self.store.quarantine_copy(w.item.path, w.result.sha256)
                except StoreError as exc:
                    w.result.verdict = "error"
                    w.result.error = (f"{exc} - it was flagged by the pattern detector; its result stays withheld")
                    w.result.label = w.result.probabilities = None

    # ------------------------------------------------------------------ run-thread side
    def _record(self, work: _Work, models: LoadedModels, run_id: str) -> ScreeningResult:
        """Write one item to the store (+ audit) and return the result as the store sees it."""
        res, item = work.result, work.item
        try:
            if work.existing is not None:
                rec = self.store.touch(work.existing.id, item.path, run_id=run_id)
                return ScreeningResult.from_record(rec, item.path, item.frame, reused=True, patient=res.patient)
            if res.sha256 is None:
                self.store.record_unhashed_error(item.path, res.error or "unreadable", frame=item.frame,
                                                 run_id=run_id)
                res.verdict = "error"
                return res
            if res.error is not None or res.verdict == "error":
                res.verdict, res.label, res.probabilities = "error", None, None
            rec = self.store.record_scan(
                sha256=res.sha256, frame=item.frame, path=item.path, verdict=res.verdict, label=res.label,
                probabilities=res.probabilities, pattern_score=res.pattern_score, scores=res.scores,
                member_agreement=res.member_agreement, low_confidence=res.low_confidence,
                members_disagree=res.members_disagree, error=res.error, models=models.versions,
                quarantine_file=work.outcome.get("quarantine_file"), run_id=run_id)
            if res.verdict == "error" and rec.verdict != "error":
                res.scan_id = rec.id  # the good earlier record stands; this run's error is reported as is
                return res
            return ScreeningResult.from_record(rec, item.path, item.frame, reused=False, patient=res.patient)
        except Exception as exc:  # noqa: BLE001 - the store failing for one item must not lose the others
            res.verdict, res.label, res.probabilities = "error", None, None
            res.error = f"{item.path}: could not be recorded in the store ({exc.__class__.__name__}: {exc})"
            return res


def results_json(results: Iterable[ScreeningResult]) -> str:
    """The headless report: a JSON list of :meth:`ScreeningResult.to_json` objects."""
    return json.dumps([r.to_json() for r in results], indent=2, ensure_ascii=False)
