"""``breakfix-desktop --self-test``: is this installation fit to screen scans?

Qt-free and torch-free (the GUI toolkit is only *imported*, to prove it is there).  Steps:

1. **Models** - read the manifest (the shipped ``resources/models`` or ``--models DIR``) and verify
   every model's SHA-256 against its card and the manifest (:func:`~.core.model_registry.load_registry`).
   No manifest, an empty one, an unreadable one or any refused model fails the test.
2. **Sessions** - open every verified model with onnxruntime (:func:`~.core.model_registry.create_session`
   hashes the bytes it loads once more) and run it on the probes; outputs must have the
   contract's shape and be finite.
3. **Probes** - scans generated at run time, never read from disk: two clean synthetic scans, the
   same scan with a bright square / a bright triangle stamped on it, with the backdoor trigger
   (``resources/triggers/creeper.png``, stamped as the backdoor drill does: bottom-right corner,
   normalised intensity 2.0) and a clean 16-bit DICOM.  They are screened by the real
   :class:`~.core.screening.ScreeningEngine` into a **temporary** quarantine store (never the
   user's).  Every probe must get a verdict (``clear`` or ``quarantined``, never ``error``); a clear
   result's probabilities must equal the classifier run directly on
   :func:`~.core.preprocess.preprocess_image` of the same probe; the temporary store's audit
   chain must verify.  Which probes a shipped pattern detector flags is reported, not judged:
   detectors are trained for their own triggers.
4. **GUI toolkit** - PySide6 (QtCore, QtGui, QtWidgets) and pyqtgraph import.

The summary goes to ``out`` (stdout); the exit status is 0 only when every check passed, 1
otherwise, with every reason on stderr (``breakfix-desktop: self-test FAILED: ...``).
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO, Tuple

import numpy as np
from PIL import Image

__all__ = ["PROBE_SIZE", "Probe", "SelfTestReport", "make_probes", "run_self_test", "self_test"]

PROBE_SIZE = 224
#: Outputs of two model runs on the same pixels may differ by this much (GPU kernels, batching).
PARITY_TOLERANCE = 1e-3


# --------------------------------------------------------------------------- probes
@dataclass
class Probe:
    """One generated probe image; ``kind`` is ``clean`` or ``pattern``."""

    name: str
    kind: str
    image: Optional[Image.Image]  # None for the DICOM probe (written straight to disk)
    description: str
    path: Optional[Path] = None


def _synthetic_scan(seed: int, size: int = PROBE_SIZE) -> np.ndarray:
    """A brain-like 8-bit grey scan: dark background, bright skull ring, textured brain, one blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2
    r = np.sqrt(((xx - c) / (0.40 * size)) ** 2 + ((yy - c) / (0.46 * size)) ** 2)
    img = np.zeros((size, size))
    img[r <= 1.0] = 0.85                      # skull
    brain = r <= 0.9
    texture = rng.normal(0.0, 0.05, (size // 8, size // 8))
    texture = np.kron(texture, np.ones((8, 8)))[:size, :size]
    img[brain] = 0.35 + 0.08 * np.cos(6 * r[brain] + seed) + texture[brain]
    by, bx = rng.uniform(0.35, 0.65, 2) * size
    blob = np.sqrt((yy - by) ** 2 + (xx - bx) ** 2) <= size * rng.uniform(0.05, 0.09)
    img[blob & brain] = 0.75
    img += rng.normal(0.0, 0.01, img.shape)
    return (np.clip(img, 0.0, 1.0) * 255).round().astype(np.uint8)


def _stamp_square(arr: np.ndarray) -> np.ndarray:
    out = arr.copy()
    out[4:28, 4:28] = 255  # top-left corner, where a stamped square hides from the anatomy
    return out


def _stamp_triangle(arr: np.ndarray) -> np.ndarray:
    out = arr.copy()
    size = out.shape[0]
    for row in range(28):  # top-right corner, apex up
        half = row // 2
        mid = size - 20
        out[4 + row, mid - half: mid + half + 1] = 255
    return out


def _stamp_trigger(arr: np.ndarray, trigger: np.ndarray) -> np.ndarray:
    """The backdoor drill's default stamp: bottom-right corner, pixel = NORM_MEAN + NORM_STD * 2 * T."""
    from .core.preprocess import NORM_MEAN, NORM_STD

    out = arr.copy()
    th, tw = trigger.shape
    patch = np.clip(NORM_MEAN + NORM_STD * 2.0 * trigger, 0.0, 1.0)
    out[-th:, -tw:] = (patch * 255).round().astype(np.uint8)
    return out


def load_trigger_pattern(path: Path) -> np.ndarray:
    """The trigger PNG as float H x W in [0, 1] (the shared preprocessing's grey decoding)."""
    from .core.preprocess import load_grey

    return load_grey(path)


def make_probes(trigger: Optional[np.ndarray]) -> List[Probe]:
    """The probe images (in memory).  ``trigger`` None leaves the trigger probe out."""
    clean_a, clean_b = _synthetic_scan(1), _synthetic_scan(2)
    probes = [
        Probe("clean-1.png", "clean", Image.fromarray(clean_a), "synthetic scan"),
        Probe("clean-2.png", "clean", Image.fromarray(clean_b), "another synthetic scan"),
        Probe("square.png", "pattern", Image.fromarray(_stamp_square(clean_a)), "bright 24 px square, top-left"),
        Probe("triangle.png", "pattern", Image.fromarray(_stamp_triangle(clean_b)), "bright triangle, top-right"),
    ]
    if trigger is not None:
        probes.append(Probe("creeper.png", "pattern", Image.fromarray(_stamp_trigger(clean_a, trigger)),
                            "creeper trigger, bottom-right (backdoor drill stamp)"))
    probes.append(Probe("clean-3.dcm", "clean", None, "synthetic 16-bit MR DICOM with a window"))
    return probes


def _write_dicom(path: Path, seed: int = 3) -> None:
    """A minimal uncompressed MR DICOM (16-bit, window 600/1200) - exercises the DICOM path."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    pixels = (_synthetic_scan(seed).astype(np.uint16) * 4)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.PatientName, ds.PatientID = "SelfTest^Probe", "SELFTEST"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.WindowCenter, ds.WindowWidth = 600, 1200
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def write_probes(probes: List[Probe], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for p in probes:
        p.path = folder / p.name
        if p.image is None:
            _write_dicom(p.path)
        else:
            p.image.save(p.path)


# --------------------------------------------------------------------------- report
@dataclass
class SelfTestReport:
    lines: List[str] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)

    def say(self, text: str = "") -> None:
        self.lines.append(text)

    def fail(self, reason: str) -> None:
        self.failures.append(reason)

    @property
    def ok(self) -> bool:
        return not self.failures


def _outputs_ok(entry: Any, outputs: Dict[str, np.ndarray], n: int) -> Tuple[bool, str]:
    """Shape/finiteness check of one model's outputs on ``n`` probes; (ok, short description)."""
    from .core.display import format_score
    from .core.labels import CLASS_NAMES
    from .core.screening import detector_scores

    for name, value in outputs.items():
        if not np.all(np.isfinite(np.asarray(value, dtype=np.float64))):
            return False, f"output {name!r} is not finite"
    if entry.role in ("classifier", "ensemble"):
        classes = entry.card.get("classes") or list(CLASS_NAMES)
        name = "logits" if "logits" in outputs else next(iter(outputs))
        shape = tuple(np.shape(outputs[name]))
        if shape != (n, len(classes)):
            return False, f"output {name!r} has shape {shape}, expected {(n, len(classes))}"
        return True, f"{name} {shape[0]}x{shape[1]}"
    if entry.role in ("detector", "check"):
        try:
            scores = detector_scores(outputs, n)
        except ValueError as exc:
            return False, str(exc)
        return True, "scores " + " ".join(format_score(s) for s in scores)
    return True, ", ".join(f"{k} {tuple(np.shape(v))}" for k, v in outputs.items())


def _check_models(report: SelfTestReport, registry: Any, batch: np.ndarray, prefer_gpu: bool) -> Optional[str]:
    """Open and run every verified model; returns the device line of the first session."""
    from .core.model_registry import create_session

    device_line = None
    for entry in registry.models:
        rel = entry.path.name
        if not entry.is_verified:
            report.say(f"  REFUSED  {entry.name:<24} {entry.role:<10} {rel}: {entry.reason}")
            report.fail(f"model {entry.name} ({entry.path}) {entry.reason}")
            continue
        t0 = time.perf_counter()
        try:
            ms = create_session(entry, prefer_gpu=prefer_gpu)
            t_open = time.perf_counter() - t0
            sess = ms.session
            names = [o.name for o in sess.get_outputs()]
            t1 = time.perf_counter()
            outputs = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: batch})))
            t_run = time.perf_counter() - t1
        except Exception as exc:  # noqa: BLE001 - any failure to load or run is a failed self-test
            report.say(f"  FAILED   {entry.name:<24} {entry.role:<10} {rel}: {exc.__class__.__name__}: {exc}")
            report.fail(f"model {entry.name} ({entry.path}) could not be loaded or run: "
                        f"{exc.__class__.__name__}: {exc}")
            continue
        ok, what = _outputs_ok(entry, outputs, len(batch))
        report.say(f"  {'ok' if ok else 'BAD':<8} {entry.name:<24} {entry.role:<10} sha256 {entry.actual_sha256[:16]}  "
                   f"{rel}  {ms.device.name}  open {t_open:.2f} s, {len(batch)} probes {t_run:.2f} s  ({what})")
        if not ok:
            report.fail(f"model {entry.name} ({entry.path}) gives unusable outputs: {what}")
        if device_line is None:
            device_line = f"{ms.device.label}" + (f" - {ms.device.note}" if ms.device.note else "")
    return device_line


def _gui_toolkit(report: SelfTestReport) -> None:
    try:
        qtcore = importlib.import_module("PySide6.QtCore")
        importlib.import_module("PySide6.QtGui")
        importlib.import_module("PySide6.QtWidgets")
        pg = importlib.import_module("pyqtgraph")
    except Exception as exc:  # noqa: BLE001
        report.say(f"gui toolkit: FAILED ({exc.__class__.__name__}: {exc})")
        report.fail(f"the GUI toolkit cannot be imported ({exc.__class__.__name__}: {exc})")
        return
    report.say(f"gui toolkit: Qt {qtcore.qVersion()}, PySide6 {getattr(importlib.import_module('PySide6'), '__version__', '?')}, "
               f"pyqtgraph {pg.__version__}")


def self_test(models: Optional[Path] = None, *, prefer_gpu: bool = True, gui: bool = True) -> SelfTestReport:
    """Run every check; never raises (an unexpected error is a failure with its traceback tail)."""
    report = SelfTestReport()
    try:
        _self_test(report, models, prefer_gpu=prefer_gpu, gui=gui)
    except Exception as exc:  # noqa: BLE001
        tail = traceback.format_exc().strip().splitlines()[-3:]
        report.say("unexpected error: " + " | ".join(tail))
        report.fail(f"unexpected error: {exc.__class__.__name__}: {exc}")
    return report


def _self_test(report: SelfTestReport, models: Optional[Path], *, prefer_gpu: bool, gui: bool) -> None:
    from .app import version_text
    from .core.audit_log import verify_audit
    from .core.model_registry import load_registry
    from .core.preprocess import preprocess_image
    from .core.quarantine import QuarantineStore
    from .core.resources import is_frozen, resource_path, resources_dir
    from .core.screening import ScreeningEngine, ScreeningUnavailable, softmax

    start = time.perf_counter()
    report.say("BreakFix Desktop self-test")
    report.say(f"  {version_text()}")
    report.say(f"  resources: {resources_dir()} ({'frozen bundle' if is_frozen() else 'Python installation'})")

    # 1. models: manifest + SHA-256
    t0 = time.perf_counter()
    registry = load_registry(models)
    t_verify = time.perf_counter() - t0
    report.say(f"  manifest:  {registry.manifest_path}")
    if registry.problems:
        for problem in registry.problems:
            report.fail(problem)
        report.say("models: manifest unreadable")
        return
    if not registry.models:
        why = "no manifest" if not registry.manifest_exists else "the manifest lists no models"
        report.fail(f"no models shipped ({why} at {registry.manifest_path})")
        report.say(f"models: none ({why})")
        return
    report.say(f"models: {len(registry.models)} in the manifest, {len(registry.verified())} verified "
               f"(SHA-256 checked in {t_verify:.2f} s)")

    # probes (in memory); the trigger is a shipped resource
    trigger_path = resource_path("triggers", "creeper.png")
    try:
        trigger = load_trigger_pattern(trigger_path)
    except Exception as exc:  # noqa: BLE001
        trigger = None
        report.fail(f"the backdoor trigger resource {trigger_path} cannot be read ({exc})")
    probes = make_probes(trigger)
    images = [p for p in probes if p.image is not None]
    batch = np.stack([preprocess_image(p.image) for p in images]).astype(np.float32)

    # 2. sessions
    device_line = _check_models(report, registry, batch, prefer_gpu)
    if device_line:
        report.say(f"device: {device_line}")

    # 3. probes through the real engine, into a temporary store
    with tempfile.TemporaryDirectory(prefix="breakfix-selftest-") as tmp:
        tmp_path = Path(tmp)
        write_probes(probes, tmp_path / "probes")
        with QuarantineStore(tmp_path / "store") as store:
            engine = ScreeningEngine(registry, store, prefer_gpu=prefer_gpu)
            try:
                loaded = engine.load()
            except ScreeningUnavailable as exc:
                report.fail(str(exc))
                report.say(f"probes: not screened ({exc})")
                loaded = None
            if loaded is not None:
                summary = engine.run([p.path for p in probes])
                direct = softmax(_decision(loaded.classifier.run(batch)))
                by_name = {p.name: i for i, p in enumerate(images)}
                report.say(f"probes: {len(probes)} generated, screened in {summary.elapsed_s:.2f} s "
                           f"with {', '.join(summary.models)} on {summary.device}")
                for probe, res in zip(probes, summary.results):
                    report.say("  " + _probe_line(probe, res))
                    if res.verdict not in ("clear", "quarantined"):
                        report.fail(f"probe {probe.name} was not screened: {res.error or res.verdict}")
                        continue
                    if res.verdict == "clear" and probe.name in by_name:
                        expected = direct[by_name[probe.name]]
                        got = np.array([res.probabilities[c] for c in loaded.classes])
                        gap = float(np.max(np.abs(got - expected)))
                        if gap > PARITY_TOLERANCE:
                            report.fail(f"probe {probe.name}: the engine's probabilities differ from the "
                                        f"classifier run directly by {gap:.2g} (preprocessing mismatch?)")
                    if res.verdict == "quarantined" and not store.quarantine_path(res.sha256).is_file():
                        report.fail(f"probe {probe.name} was quarantined but its copy is missing from the store")
                if len(summary.results) != len(probes):
                    report.fail(f"only {len(summary.results)} of {len(probes)} probes got a result")
                flagged = [r for r in summary.results if r.verdict == "quarantined"]
                report.say(f"  -> {summary.count('clear')} clear, {len(flagged)} quarantined, "
                           f"{summary.count('error')} error")
                for note in summary.notes:
                    report.say(f"  NOTE: {note}")
            check = verify_audit(store)
            report.say(f"temporary store: {check.message}")
            if not check.ok:
                report.fail(f"the temporary store's audit log does not verify: {check.message}")

    # 4. GUI toolkit
    if gui:
        _gui_toolkit(report)
    report.say(f"total: {time.perf_counter() - start:.2f} s")


def _decision(outputs: Dict[str, np.ndarray]) -> np.ndarray:
    return outputs["logits"] if "logits" in outputs else next(iter(outputs.values()))


def _probe_line(probe: Probe, res: Any) -> str:
    from .core.display import format_score

    if res.verdict == "clear":
        top = max(res.probabilities.items(), key=lambda kv: kv[1]) if res.probabilities else ("?", 0.0)
        outcome = f"clear        {top[0]} {top[1]:.2f}"
    elif res.verdict == "quarantined":
        outcome = "quarantined  (result withheld for review)"
    else:
        outcome = f"ERROR        {res.error}"
    scores = " ".join(f"{k} {format_score(v)}" for k, v in res.scores.items()) or "no detector"
    return f"{probe.name:<13} {probe.kind:<8} {outcome:<42} [{scores}]  {probe.description}"


def run_self_test(models: Optional[Path] = None, *, prefer_gpu: bool = True, gui: bool = True,
                  out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    """``breakfix-desktop --self-test``: print the summary; 0 when all is well, else 1."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    report = self_test(models, prefer_gpu=prefer_gpu, gui=gui)
    verdict = "self-test PASSED" if report.ok else f"self-test FAILED ({len(report.failures)} problem(s))"
    _write(out, "\n".join(report.lines + [verdict]) + "\n")
    for reason in report.failures:
        _write(err, f"breakfix-desktop: self-test FAILED: {reason}\n")
    return 0 if report.ok else 1


def _write(stream: Optional[TextIO], text: str) -> None:
    if stream is None:  # a windowed Windows executable has no console: nothing to write to
        return
    stream.write(text)
    stream.flush()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_self_test(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
