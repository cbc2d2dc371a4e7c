"""Shipped-model registry: manifest -> model cards -> SHA-256-verified ONNX files.

Qt-free and torch-free.  ``onnxruntime`` is imported only when a session is created, so the
registry itself can be inspected (tests, ``--version``, the Models page) without it.

A swapped model file is a poisoning vector, so verification is strict.  A model is **refused**
(listed with its reason, never loaded) when any of these hold:

* the manifest entry is malformed or its name is a duplicate;
* the card is missing, unreadable, of an unknown format, or describes another model;
* the ONNX file is missing;
* the file's SHA-256 differs from the card's ``sha256`` or from the manifest's ``sha256``.

:func:`create_session` hashes the very bytes it hands to onnxruntime, so a file changed after
the registry was loaded is refused too.

Manifest format (written by ``training.export.update_manifest``; paths relative to it)::

    {"format": "breakfix-manifest/1",
     "models": [{"name", "role", "file", "card", "sha256"}, ...]}
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .hashing import sha256_file
from .resources import resource_path

__all__ = [
    "CARD_FORMAT",
    "MANIFEST_FORMAT",
    "VERIFIED",
    "REFUSED",
    "ModelEntry",
    "Registry",
    "ModelRefusedError",
    "InferenceDevice",
    "ModelSession",
    "ModelCatalog",
    "ThreadBudget",
    "gui_thread_budget",
    "default_manifest_path",
    "resolve_manifest",
    "load_registry",
    "sha256_file",
    "verify_entry",
    "create_session",
    "probe_inference_device",
    "cuda_provider_shipped",
    "onnxruntime_version",
]

CARD_FORMAT = "breakfix-model-card/1"
MANIFEST_FORMAT = "breakfix-manifest/1"
VERIFIED = "verified"
REFUSED = "refused"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

PathLike = Union[str, os.PathLike]


def default_manifest_path() -> Path:
    """``resources/models/manifest.json`` of this checkout / installation / frozen bundle."""
    return resource_path("models", "manifest.json")


def resolve_manifest(location: Optional[PathLike] = None) -> Path:
    """``None`` -> the shipped manifest; a folder -> ``folder/manifest.json``; a file -> itself."""
    if location is None:
        return default_manifest_path()
    path = Path(location).expanduser()
    return path / "manifest.json" if path.is_dir() else path


# --------------------------------------------------------------------------- entries
@dataclass(frozen=True)
class ModelEntry:
    """One manifest entry after verification.

    ``sha256`` is the hash the manifest promises; ``actual_sha256`` what the file on disk hashed
    to (``None`` when it could not be read).  ``reason`` explains a refusal ("" when verified).
    """

    name: str
    role: str
    path: Path
    card: Dict[str, Any]
    status: str
    reason: str = ""
    card_path: Optional[Path] = None
    sha256: str = ""
    actual_sha256: Optional[str] = None

    @property
    def is_verified(self) -> bool:
        return self.status == VERIFIED

    @property
    def short_sha(self) -> str:
        """First 12 hex digits of the verified hash (of the promised one when refused)."""
        return (self.actual_sha256 if self.is_verified else self.sha256 or self.actual_sha256 or "")[:12]

    @property
    def threshold(self) -> Optional[float]:
        """A detector's flagging score: the card's ``threshold``, 0.5 when the card has none;
        ``None`` when the card's value is not a number.  The screening engine flags at it and
        the views print it, so both read it here."""
        value = (self.card or {}).get("threshold", 0.5)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def temperature(self) -> Optional[float]:
        """A classifier's confidence temperature: the card's ``temperature`` (``training calibrate``),
        1.0 when the card has none; ``None`` when the value is not a positive number.  The screening
        engine shows ``softmax(logits / temperature)``."""
        value = (self.card or {}).get("temperature", 1.0)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")
        return float(value) if ok else None

    @property
    def low_confidence(self) -> Optional[float]:
        """A classifier's low-confidence flag: results whose top probability is under the card's
        ``low_confidence`` (chosen on validation by ``training calibrate``) need a closer look;
        ``None`` when the card has none or the value is not in (0, 1] (the engine's default applies;
        a present but bad value is refused when the model is loaded)."""
        value = (self.card or {}).get("low_confidence")
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1
        return float(value) if ok else None

    @property
    def version_label(self) -> str:
        """``name sha12`` - how a model version is shown to people (status bar, reports)."""
        return f"{self.name} {self.short_sha}".strip()

    def metric(self, split: str, key: str = "accuracy") -> Optional[float]:
        """``card["metrics"][split][key]`` as a float, or ``None`` when the card lacks it."""
        value = ((self.card.get("metrics") or {}).get(split) or {}).get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def test_accuracy(self) -> Optional[float]:
        return self.metric("test")

    @property
    def test_dedup_accuracy(self) -> Optional[float]:
        return self.metric("test_dedup")


def _refuse(name: str, role: str, path: Path, reason: str, **kw: Any) -> ModelEntry:
    return ModelEntry(name=name, role=role, path=path, card=kw.pop("card", {}), status=REFUSED,
                      reason=f"REFUSED: {reason}", **kw)


def _read_json(path: Path) -> Tuple[Optional[Any], str]:
    """(data, "") or (None, why it could not be read)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), ""
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path} cannot be read ({exc})"
    except json.JSONDecodeError as exc:
        return None, f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})"


def verify_entry(raw: Any, base: Path, index: int = 0) -> ModelEntry:
    """Verify one manifest entry (paths relative to ``base``); never raises."""
    if not isinstance(raw, dict):
        return _refuse(f"<entry {index + 1}>", "?", base, "manifest entry is not a JSON object")
    name, role = str(raw.get("name") or f"<entry {index + 1}>"), str(raw.get("role") or "?")
    missing = [k for k in ("name", "role", "file", "card", "sha256") if not isinstance(raw.get(k), str) or not raw[k]]
    if missing:
        return _refuse(name, role, base, f"manifest entry lacks {', '.join(missing)}")
    path, card_path, promised = base / raw["file"], base / raw["card"], raw["sha256"].lower()
    common = dict(card_path=card_path, sha256=promised)
    card, why = _read_json(card_path)
    if card is None:
        return _refuse(name, role, path, f"model card {why}", **common)
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        fmt = card.get("format") if isinstance(card, dict) else type(card).__name__
        return _refuse(name, role, path, f"model card {card_path} has format {fmt!r}, expected {CARD_FORMAT!r}", **common)
    common["card"] = card
    for key, expected in (("name", name), ("role", role), ("file", path.name)):
        if card.get(key) != expected:
            return _refuse(name, role, path, f"model card {card_path} describes {key} {card.get(key)!r}, "
                                             f"manifest says {expected!r}", **common)
    if not path.is_file():
        return _refuse(name, role, path, f"model file {path} is missing", **common)
    try:
        actual = sha256_file(path)
    except OSError as exc:
        return _refuse(name, role, path, f"model file {path} cannot be read ({exc})", **common)
    common["actual_sha256"] = actual
    card_sha = str(card.get("sha256", "")).lower()
    if actual != card_sha or actual != promised:
        return _refuse(name, role, path, f"model file {path} does not match its checksum "
                       f"(file SHA-256 {actual[:12]}..., card {card_sha[:12] or 'none'}..., manifest {promised[:12]}...)"
                       " - the file may have been swapped or corrupted; it will not be loaded", **common)
    return ModelEntry(name=name, role=role, path=path, status=VERIFIED, **common)


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Registry:
    """All models of one manifest.  ``problems`` lists manifest-level errors (shown loudly)."""

    manifest_path: Path
    models: Tuple[ModelEntry, ...] = ()
    problems: Tuple[str, ...] = ()
    manifest_exists: bool = False

    @classmethod
    def load(cls, location: Optional[PathLike] = None) -> "Registry":
        return load_registry(location)

    def verified(self, role: Optional[str] = None) -> List[ModelEntry]:
        """Verified models, optionally only those of ``role`` (e.g. ``"classifier"``)."""
        return [m for m in self.models if m.is_verified and (role is None or m.role == role)]

    @property
    def refused(self) -> List[ModelEntry]:
        return [m for m in self.models if not m.is_verified]

    def get(self, name: str) -> Optional[ModelEntry]:
        return next((m for m in self.models if m.name == name), None)

    def summary(self) -> str:
        """One line for the status bar: verified model versions, or why there are none."""
        parts = [m.version_label for m in self.verified()] or ["no models shipped" if not self.models else "no verified model"]
        if self.refused:
            parts.append(f"{len(self.refused)} REFUSED")
        if self.problems:
            parts.append("manifest unreadable")
        return ", ".join(parts)


def load_registry(location: Optional[PathLike] = None) -> Registry:
    """Read and verify a manifest (see :func:`resolve_manifest`).  Never raises.

    An absent manifest gives an empty registry (no models shipped yet); an unreadable one an
    empty registry whose ``problems`` say why.
    """
    manifest_path = resolve_manifest(location)
    if not manifest_path.exists():
        return Registry(manifest_path)
    data, why = _read_json(manifest_path)
    if data is None:
        return Registry(manifest_path, problems=(f"Manifest {why}",), manifest_exists=True)
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("models", []), list):
        fmt = data.get("format") if isinstance(data, dict) else type(data).__name__
        return Registry(manifest_path, manifest_exists=True,
                        problems=(f"Manifest {manifest_path} has format {fmt!r}, expected {MANIFEST_FORMAT!r}",))
    base, seen, models = manifest_path.parent, set(), []
    for i, raw in enumerate(data.get("models", [])):
        entry = verify_entry(raw, base, i)
        if entry.name in seen:
            entry = _refuse(entry.name, entry.role, entry.path, "duplicate model name in manifest",
                            card=entry.card, card_path=entry.card_path, sha256=entry.sha256)
        seen.add(entry.name)
        models.append(entry)
    return Registry(manifest_path, tuple(models), manifest_exists=True)


# --------------------------------------------------------------------------- inference
class ModelRefusedError(RuntimeError):
    """Raised instead of loading a model that is not verified."""


def onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


@dataclass(frozen=True)
class InferenceDevice:
    """The execution provider a session actually runs on, and why (``note``)."""

    provider: str
    note: str = ""

    @property
    def name(self) -> str:
        return "CUDA" if self.provider == CUDA else "CPU"

    @property
    def label(self) -> str:
        """E.g. ``"CPU (onnxruntime 1.31.1)"``."""
        return f"{self.name} (onnxruntime {onnxruntime_version()})"


@dataclass(frozen=True)
class ModelSession:
    """A verified model's onnxruntime session plus the device it runs on."""

    entry: ModelEntry
    session: Any
    device: InferenceDevice


def cuda_provider_shipped(ort: Any) -> bool:
    """Whether onnxruntime's CUDA provider library is installed next to it.

    onnxruntime-gpu lists ``CUDAExecutionProvider`` even where that library was left out (the
    CPU screening bundle drops it); trying it there only fails, loudly, on every session."""
    capi = Path(ort.__file__).resolve().parent / "capi"
    return not capi.is_dir() or any(capi.glob("*onnxruntime_providers_cuda*"))


@dataclass(frozen=True)
class ThreadBudget:
    """How many CPU threads onnxruntime may use per session (``intra_op``; ``None``: its default,
    every core) and whether idle pool threads spin (busy-wait, onnxruntime's default).  The GUI
    passes :func:`gui_thread_budget` so inference leaves the UI thread a core."""

    intra_op: Optional[int] = None
    spinning: bool = True

    def session_options(self, ort: Any) -> Any:
        so = ort.SessionOptions()
        if self.intra_op is not None:
            so.intra_op_num_threads = max(1, int(self.intra_op))
            so.inter_op_num_threads = 1
        if not self.spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return so


#: environment override of the GUI's inference threads (total CPU threads for screening)
THREADS_ENV = "BREAKFIX_INFERENCE_THREADS"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def gui_thread_budget(total: Optional[int] = None, cores: Optional[int] = None) -> Tuple[int, ThreadBudget]:
    """``(engine workers, ThreadBudget)`` for the GUI: workers x onnxruntime threads stay within
    ``total`` CPU threads (default ``$BREAKFIX_INFERENCE_THREADS``, else cores - 1, at least 1), so
    the UI thread always has a core; pool threads sleep instead of spinning when idle."""
    if total is None:
        try:
            total = int(os.environ.get(THREADS_ENV, "") or 0) or None
        except ValueError:
            total = None
    cores = cores or available_cores()
    total = max(1, int(total if total is not None else cores - 1))
    workers = 2 if total >= 6 else 1
    return workers, ThreadBudget(intra_op=max(1, total // workers), spinning=False)


#: Why CUDA could not start in this process, once it has failed: later sessions go straight to
#: the CPU instead of failing again (and printing onnxruntime's warning for every model).
_cuda_failure: Optional[str] = None


def _open_session(model: bytes, prefer_gpu: bool, budget: Optional[ThreadBudget] = None) -> Tuple[Any, InferenceDevice]:
    """CUDA only when onnxruntime lists it *and* the session really got it; else CPU."""
    global _cuda_failure
    import onnxruntime as ort

    budget = budget or ThreadBudget()
    note = "GPU not requested"
    if prefer_gpu:
        if CUDA in ort.get_available_providers() and not cuda_provider_shipped(ort):
            note = "the CUDA provider library is not part of this installation (CPU-only bundle)"
        elif _cuda_failure is not None:
            note = _cuda_failure
        elif CUDA in ort.get_available_providers():
            # onnxruntime logs a multi-line warning when CUDA's libraries are missing; the reason is
            # kept in the device note (status bar, reports) instead, so silence it for this attempt.
            ort.set_default_logger_severity(3)
            try:
                sess = ort.InferenceSession(model, budget.session_options(ort), providers=[CUDA, CPU])
                if CUDA in sess.get_providers():
                    return sess, InferenceDevice(CUDA, "CUDA execution provider active")
                _cuda_failure = "onnxruntime lists CUDA but it could not start (drivers/libraries missing?); using CPU"
                return sess, InferenceDevice(CPU, _cuda_failure)  # onnxruntime fell back to its CPU provider
            except Exception as exc:  # noqa: BLE001 - any CUDA failure means: fall back to CPU
                note = _cuda_failure = f"CUDA session failed ({exc.__class__.__name__}: {exc}); using CPU"
            finally:
                ort.set_default_logger_severity(2)
        else:
            note = "this onnxruntime build has no CUDA provider"
    return ort.InferenceSession(model, budget.session_options(ort), providers=[CPU]), InferenceDevice(CPU, note)


def create_session(entry: ModelEntry, *, prefer_gpu: bool = True, budget: Optional[ThreadBudget] = None) -> ModelSession:
    """An onnxruntime session for a verified model.

    The file is read once; those exact bytes are hashed and, only if they still match the
    verified SHA-256, given to onnxruntime.  Raises :class:`ModelRefusedError` otherwise.
    """
    if not entry.is_verified:
        raise ModelRefusedError(f"model {entry.name!r} is not verified and will not be loaded: {entry.reason}")
    try:
        data = Path(entry.path).read_bytes()
    except OSError as exc:
        raise ModelRefusedError(f"REFUSED: model file {entry.path} cannot be read ({exc})") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry.actual_sha256 or actual != entry.sha256:
        raise ModelRefusedError(f"REFUSED: model file {entry.path} changed after verification "
                                f"(SHA-256 now {actual[:12]}..., verified {entry.short_sha}...); it will not be loaded")
    session, device = _open_session(data, prefer_gpu, budget)
    _check_sealed_values(entry, session)
    return ModelSession(entry, session, device)


#: Card values that change what the app decides or shows, sealed by the exporters in the model's own
#: metadata: a detector's flagging ``threshold``, a classifier's confidence ``temperature`` and
#: ``low_confidence`` flag.
SEALED_KEYS = ("threshold", "temperature", "low_confidence")
#: of those, the ones a card may only give when the file seals them (every writer seals them; older
#: detector files carry an unsealed threshold)
SEAL_REQUIRED = ("temperature", "low_confidence")


def _check_sealed_values(entry: ModelEntry, session: Any) -> None:
    """The card is not hashed, so a value in it could be edited unnoticed (a threshold of 1.1 would
    switch a detector off; a temperature of 100 would flag every scan as low confidence).  Exporters
    seal these values in the model's own metadata, inside the hashed bytes; a card that disagrees with
    the file is refused."""
    if entry.temperature is None:
        raise ModelRefusedError(f"REFUSED: model card {entry.card_path} gives temperature "
                                f"{entry.card.get('temperature')!r}, not a positive number; it will not be loaded")
    if "low_confidence" in (entry.card or {}) and entry.low_confidence is None:
        raise ModelRefusedError(f"REFUSED: model card {entry.card_path} gives low_confidence "
                                f"{entry.card.get('low_confidence')!r}, not a probability in (0, 1]; it will not be loaded")
    try:
        sealed_map = dict(session.get_modelmeta().custom_metadata_map)
    except Exception:  # noqa: BLE001 - a model without readable metadata has nothing sealed
        sealed_map = {}
    for key in SEALED_KEYS:
        sealed = sealed_map.get(key)
        if sealed is None:
            if key in SEAL_REQUIRED and key in (entry.card or {}):
                raise ModelRefusedError(
                    f"REFUSED: model card {entry.card_path} gives {key} {entry.card[key]!r} but {entry.path} does "
                    f"not seal one (training calibrate writes both); the card may have been edited - it will not "
                    f"be loaded")
            continue
        card_value = (entry.card or {}).get(key)
        try:
            ok = card_value is not None and abs(float(card_value) - float(sealed)) <= 1e-9 * max(1.0, abs(float(sealed)))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelRefusedError(
                f"REFUSED: model card {entry.card_path} gives {key} {card_value!r} but {entry.path} was exported "
                f"with {key} {sealed}; the card may have been edited - it will not be loaded")


#: A 79-byte ONNX model (opset 13, IR 8): y = Identity(x), x/y float32 [1].  Used to find out
#: which execution provider works without loading a real model.  Generated with
#: ``onnx.helper`` (make_graph/make_model, producer "breakfix"); tests rebuild and compare it.
PROBE_MODEL = (
    b"\x08\x08\x12\x08breakfix:;\n\x10\n\x01x\x12\x01y\"\x08Identity\x12\x05probeZ\x0f\n\x01x\x12\n\n"
    b"\x08\x08\x01\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\r"
)


def probe_inference_device(*, prefer_gpu: bool = True) -> InferenceDevice:
    """The device sessions would run on, found by opening :data:`PROBE_MODEL`."""
    return _open_session(PROBE_MODEL, prefer_gpu)[1]


# --------------------------------------------------------------------------- observable model
Listener = Callable[[str], None]


class ModelCatalog:
    """The app's Qt-free model of "which models, on which device".

    Views subscribe with :meth:`subscribe`; listeners are called with ``"registry"`` or
    ``"device"`` after the corresponding attribute changed.
    """

    def __init__(self, location: Optional[PathLike] = None, *, prefer_gpu: bool = True, load: bool = True,
                 threads: Optional[ThreadBudget] = None):
        self.location = location
        self.prefer_gpu = prefer_gpu
        #: onnxruntime threads per session (``None``: onnxruntime's defaults)
        self.threads = threads
        #: ``load=False`` leaves the manifest unread (an empty registry, ``loaded`` False) until
        #: :meth:`reload` - the GUI verifies the models after its window is on screen
        self.loaded = load
        self.registry: Registry = load_registry(location) if load else Registry(resolve_manifest(location))
        self.device: Optional[InferenceDevice] = None
        self._listeners: List[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(self, what: str) -> None:
        for listener in list(self._listeners):
            listener(what)

    def reload(self, location: Optional[PathLike] = None) -> Registry:
        """Re-read (and re-verify) the manifest; ``location`` switches to another folder."""
        if location is not None:
            self.location = location
        return self.set_registry(load_registry(self.location))

    def set_registry(self, registry: Registry) -> Registry:
        self.registry = registry
        self.loaded = True
        self._emit("registry")
        return registry

    def probe_device(self) -> InferenceDevice:
        """Find the execution provider that actually works (see :func:`probe_inference_device`)."""
        return self.set_device(probe_inference_device(prefer_gpu=self.prefer_gpu))

    def set_device(self, device: InferenceDevice) -> InferenceDevice:
        self.device = device
        self._emit("device")
        return device

    def detector_threshold(self, name: str) -> Optional[float]:
        """The score at which the installed detector ``name`` flags a scan: its card's
        ``threshold`` (0.5 when the card has none, as the screening engine applies it);
        ``None`` when no such model is installed or the card's value is not a number."""
        entry = self.registry.get(name)
        return entry.threshold if entry is not None else None

    def open_session(self, entry: ModelEntry) -> ModelSession:
        """Create a session for ``entry`` and record the device it really runs on."""
        ms = create_session(entry, prefer_gpu=self.prefer_gpu, budget=self.threads)
        self.set_device(ms.device)
        return ms
