"""Model registry: manifest + card + SHA-256 verification, refusals, sessions (Qt-free)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from breakfix_desktop.core import model_registry as mr
from breakfix_desktop.core.model_registry import (
    PROBE_MODEL,
    ModelCatalog,
    ModelRefusedError,
    Registry,
    create_session,
    load_registry,
)

REPO = Path(__file__).resolve().parents[1]


def test_verified_model_loads_and_runs_on_cpu(make_models):
    folder = make_models([("tiny-cnn", "classifier"), ("trigger-check", "detector")])
    reg = load_registry(folder)
    assert reg.manifest_exists and not reg.problems
    assert [m.name for m in reg.verified()] == ["tiny-cnn", "trigger-check"]
    assert [m.name for m in reg.verified("detector")] == ["trigger-check"]
    assert reg.refused == []
    entry = reg.get("tiny-cnn")
    assert entry.status == "verified" and entry.reason == ""
    assert entry.short_sha == entry.sha256[:12] and entry.test_accuracy == pytest.approx(0.90)
    assert entry.version_label in reg.summary()

    ms = create_session(entry, prefer_gpu=False)
    assert ms.device.provider == "CPUExecutionProvider" and ms.device.name == "CPU"
    assert ms.device.label.startswith("CPU (onnxruntime ")
    logits = ms.session.run(None, {"pixels": np.zeros((2, 3, 224, 224), np.float32)})[0]
    assert logits.shape == (2, 4)


def test_gpu_preference_falls_back_to_a_provider_the_session_really_has(make_models):
    entry = load_registry(make_models()).verified()[0]
    ms = create_session(entry, prefer_gpu=True)
    assert ms.device.provider in ms.session.get_providers()
    assert ms.device.provider in ("CUDAExecutionProvider", "CPUExecutionProvider")


def test_tampered_file_is_refused_with_reason_naming_the_file(make_models):
    folder = make_models()
    onnx_file = folder / "tiny-cnn.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")  # swapped / poisoned
    reg = load_registry(folder)
    assert reg.verified() == []
    (entry,) = reg.refused
    assert entry.status == "refused"
    assert "REFUSED" in entry.reason and str(onnx_file) in entry.reason and "checksum" in entry.reason
    assert "1 REFUSED" in reg.summary()
    with pytest.raises(ModelRefusedError, match="not verified"):
        create_session(entry)


def test_card_and_manifest_hash_must_both_match(make_models):
    folder = make_models()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["models"][0]["sha256"] = "0" * 64  # card still right, manifest disagrees
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (entry,) = load_registry(folder).refused
    assert "manifest 000000000000" in entry.reason

    folder2 = make_models(folder=folder.parent / "models2")
    card_path = folder2 / "tiny-cnn.card.json"
    card = json.loads(card_path.read_text())
    card["sha256"] = "f" * 64
    card_path.write_text(json.dumps(card))
    (entry,) = load_registry(folder2).refused
    assert "card ffffffffffff" in entry.reason


def test_missing_file_and_missing_card_are_refused(make_models):
    folder = make_models([("a", "classifier"), ("b", "classifier")])
    (folder / "a.onnx").unlink()
    (folder / "b.card.json").unlink()
    reg = load_registry(folder)
    assert reg.verified() == []
    reasons = {m.name: m.reason for m in reg.refused}
    assert "is missing" in reasons["a"] and str(folder / "a.onnx") in reasons["a"]
    assert "model card" in reasons["b"] and "does not exist" in reasons["b"]


def test_card_describing_another_model_is_refused(make_models):
    folder = make_models()
    card_path = folder / "tiny-cnn.card.json"
    card = json.loads(card_path.read_text())
    card["name"] = "other"
    card_path.write_text(json.dumps(card))
    (entry,) = load_registry(folder).refused
    assert "describes name 'other'" in entry.reason


def test_file_changed_after_verification_is_refused_at_load(make_models):
    folder = make_models()
    entry = load_registry(folder).verified()[0]
    (folder / "tiny-cnn.onnx").write_bytes(b"not the model")
    with pytest.raises(ModelRefusedError, match="changed after verification"):
        create_session(entry, prefer_gpu=False)


def test_absent_empty_and_broken_manifests(tmp_path):
    reg = load_registry(tmp_path)  # no manifest.json: nothing shipped yet
    assert isinstance(reg, Registry) and reg.models == () and not reg.problems and not reg.manifest_exists
    assert reg.summary() == "no models shipped"

    (tmp_path / "manifest.json").write_text(json.dumps({"format": "breakfix-manifest/1", "models": []}))
    reg = load_registry(tmp_path / "manifest.json")
    assert reg.manifest_exists and reg.models == () and not reg.problems

    (tmp_path / "manifest.json").write_text("{not json")
    reg = load_registry(tmp_path)
    assert reg.models == () and "not valid JSON" in reg.problems[0]

    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else/9", "models": []}))
    assert "expected 'breakfix-manifest/1'" in load_registry(tmp_path).problems[0]


def test_malformed_and_duplicate_entries_are_refused(make_models):
    folder = make_models()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["models"] += [manifest["models"][0], {"name": "half"}, "junk"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    reg = load_registry(folder)
    assert len(reg.verified()) == 1
    reasons = [m.reason for m in reg.refused]
    assert any("duplicate" in r for r in reasons)
    assert any("lacks role, file, card, sha256" in r for r in reasons)
    assert any("not a JSON object" in r for r in reasons)


def test_default_manifest_location():
    assert mr.default_manifest_path() == REPO / "resources" / "models" / "manifest.json"
    assert load_registry().manifest_path == mr.default_manifest_path()


def test_probe_model_is_the_documented_identity_graph():
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(PROBE_MODEL)
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Identity"]
    device = mr.probe_inference_device(prefer_gpu=False)
    assert device.provider == "CPUExecutionProvider" and "not requested" in device.note


def test_catalog_notifies_listeners(make_models, tmp_path):
    catalog = ModelCatalog(tmp_path / "empty")
    seen = []
    catalog.subscribe(seen.append)
    assert catalog.registry.models == ()
    catalog.reload(make_models())
    assert seen == ["registry"] and len(catalog.registry.verified()) == 1
    ms = catalog.open_session(catalog.registry.verified()[0])
    assert seen[-1] == "device" and catalog.device == ms.device
    catalog.unsubscribe(seen.append)
    catalog.reload()
    assert seen[-1] == "device"


def test_desktop_package_never_imports_torch():
    code = (
        "import importlib, pkgutil, sys\n"
        "import breakfix_desktop, breakfix_desktop.app\n"
        "for mod in pkgutil.walk_packages(breakfix_desktop.__path__, 'breakfix_desktop.'):\n"
        "    if not mod.name.endswith('__main__'):\n"
        "        importlib.import_module(mod.name)\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print('TORCH:' + ','.join(bad))\n"
        "print('MODULES:' + ','.join(sorted(m for m in sys.modules if m.startswith('breakfix_desktop'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "TORCH:\n" in out.stdout, out.stdout
    assert "breakfix_desktop.app" in out.stdout and "breakfix_desktop._qt.qt_main_window" in out.stdout


def test_a_failed_cuda_start_is_remembered_not_retried_per_model(monkeypatch):
    """Where onnxruntime lists CUDA but it cannot start, the first session finds out and every
    later one goes straight to the CPU with the same reason (no repeated failure, no log spam)."""
    import onnxruntime as ort

    calls = []
    real = ort.InferenceSession

    def session(model, options=None, providers=None):
        calls.append(tuple(providers))
        return real(model, options, providers=["CPUExecutionProvider"])  # CUDA "fails": CPU only

    monkeypatch.setattr(mr, "_cuda_failure", None)
    monkeypatch.setattr(ort, "get_available_providers", lambda: [mr.CUDA, mr.CPU])
    monkeypatch.setattr(mr, "cuda_provider_shipped", lambda _ort: True)
    monkeypatch.setattr(ort, "InferenceSession", session)
    first = mr.probe_inference_device()
    second = mr.probe_inference_device()
    assert first.provider == second.provider == mr.CPU
    assert "could not start" in first.note and second.note == first.note
    assert calls == [(mr.CUDA, mr.CPU), (mr.CPU,)]


def test_detector_threshold_is_the_cards_as_the_engine_applies_it(make_models):
    catalog = ModelCatalog(make_models([("tiny-cnn", "classifier"), ("trigger-check", "detector")]))
    card = catalog.registry.get("trigger-check").card
    card.pop("threshold", None)
    assert catalog.detector_threshold("trigger-check") == 0.5  # the engine's default too
    card["threshold"] = 0.000376
    assert catalog.detector_threshold("trigger-check") == pytest.approx(0.000376)
    card["threshold"] = "high"
    assert catalog.detector_threshold("trigger-check") is None
    assert catalog.detector_threshold("no-such-model") is None
