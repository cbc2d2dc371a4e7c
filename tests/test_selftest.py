"""``breakfix-desktop --self-test`` and the resource locator the frozen bundle relies on."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from breakfix_desktop.core import resources
from breakfix_desktop.core.model_registry import default_manifest_path
from breakfix_desktop.selftest import make_probes, run_self_test

REPO = Path(__file__).resolve().parents[1]


def selftest(models, **kw):
    out, err = io.StringIO(), io.StringIO()
    rc = run_self_test(models, prefer_gpu=False, out=out, err=err, **kw)
    return rc, out.getvalue(), err.getvalue()


def test_all_good_exits_0_and_summarises(make_screening_models, tmp_path, monkeypatch):
    user_store = tmp_path / "user-store"
    monkeypatch.setenv("BREAKFIX_STORE", str(user_store))
    models = make_screening_models()
    rc, out, err = selftest(models)
    assert rc == 0, out + err
    assert out.rstrip().endswith("self-test PASSED")
    assert err == ""
    card = json.loads((models / "tiny-cnn.card.json").read_text())
    assert f"sha256 {card['sha256'][:16]}" in out          # models with their hash prefixes
    assert "CPU" in out                                     # the provider used
    for name in ("clean-1.png", "square.png", "triangle.png", "creeper.png", "clean-3.dcm"):
        assert name in out
    # the tiny detector flags a bright top-left corner: the square probe is quarantined, clean ones clear
    square = next(line for line in out.splitlines() if "square.png" in line)
    clean = next(line for line in out.splitlines() if "clean-1.png" in line)
    assert "quarantined" in square and "clear" in clean
    assert "audit log intact" in out and "total:" in out
    assert not user_store.exists()                          # never the user's store


def test_classifier_without_detector_passes_with_the_note(make_models):
    """The shipped set may be one classifier (CNN_clean): fine, but the summary says scans were not checked."""
    rc, out, err = selftest(make_models(), gui=False)
    assert rc == 0, out + err
    assert "no pattern detector installed" in out and "no detector" in out


def test_tampered_model_fails_naming_the_file(make_screening_models):
    models = make_screening_models()
    onnx = models / "trigger.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF
    onnx.write_bytes(bytes(data))
    rc, out, err = selftest(models, gui=False)
    assert rc == 1
    assert "self-test FAILED" in out
    assert str(onnx) in err and "REFUSED" in err and "checksum" in err


def test_no_manifest_fails(tmp_path):
    rc, out, err = selftest(tmp_path, gui=False)
    assert rc == 1
    assert "no models shipped" in err and "no manifest" in err


def test_empty_manifest_fails(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "breakfix-manifest/1", "models": []}))
    rc, _, err = selftest(tmp_path, gui=False)
    assert rc == 1 and "no models shipped" in err


def test_detector_only_fails_without_classifier(make_screening_models):
    models = make_screening_models(specs=(("trigger", "detector", "detector"),))
    rc, _, err = selftest(models, gui=False)
    assert rc == 1 and "no verified classifier" in err


def test_missing_trigger_resource_fails(make_screening_models, monkeypatch, tmp_path):
    models = make_screening_models()
    monkeypatch.setattr(resources, "resource_candidates", lambda: [tmp_path / "no-resources"])
    rc, _, err = selftest(models, gui=False)
    assert rc == 1 and "creeper.png" in err


def test_probes_are_generated_and_distinct():
    import numpy as np

    trigger = np.ones((8, 8), np.float32)
    probes = make_probes(trigger)
    kinds = {p.name: p.kind for p in probes}
    assert kinds["clean-1.png"] == "clean" and kinds["creeper.png"] == "pattern"
    arrays = [np.asarray(p.image) for p in probes if p.image is not None]
    assert all(a.shape == (224, 224) for a in arrays)
    assert len({a.tobytes() for a in arrays}) == len(arrays)


def test_cli_flag(make_screening_models):
    models = make_screening_models()
    res = subprocess.run([sys.executable, "-m", "breakfix_desktop", "--models", str(models), "--self-test"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "self-test PASSED" in res.stdout
    bad = subprocess.run([sys.executable, "-m", "breakfix_desktop", "--self-test", "verify-audit"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--self-test runs on its own" in bad.stderr


# --------------------------------------------------------------------------- resources
def test_resources_from_the_source_tree():
    assert resources.resources_dir() == REPO / "resources"
    assert default_manifest_path() == REPO / "resources" / "models" / "manifest.json"


def test_resources_in_a_frozen_bundle(monkeypatch, tmp_path):
    internal = tmp_path / "breakfix-screening" / "_internal"
    (internal / "resources" / "models").mkdir(parents=True)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(internal), raising=False)
    assert resources.resources_dir() == internal / "resources"
    assert default_manifest_path() == internal / "resources" / "models" / "manifest.json"


def test_resources_of_a_wheel_install(monkeypatch, tmp_path):
    share = tmp_path / "venv" / "share" / "breakfix-desktop" / "resources"
    share.mkdir(parents=True)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    fake_pkg = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "breakfix_desktop" / "core" / "resources.py"
    monkeypatch.setattr(resources, "__file__", str(fake_pkg))
    assert resources.resources_dir() == share


def test_no_module_computes_resource_paths_itself():
    """Every resource lookup goes through core.resources (the frozen bundle depends on it)."""
    offenders = []
    for folder in ("breakfix_desktop", "training"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if path.name != "resources.py" and '/ "resources"' in text:
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


@pytest.mark.parametrize("argv", [["--help"]])
def test_help_mentions_self_test(argv, capsys):
    from breakfix_desktop.app import main

    with pytest.raises(SystemExit):
        main(argv)
    assert "--self-test" in capsys.readouterr().out


def test_cuda_provider_left_out_of_the_bundle_is_not_tried(tmp_path):
    """The CPU bundle drops libonnxruntime_providers_cuda: sessions go straight to CPU, with the reason."""
    from types import SimpleNamespace

    from breakfix_desktop.core.model_registry import cuda_provider_shipped

    capi = tmp_path / "onnxruntime" / "capi"
    capi.mkdir(parents=True)
    fake = SimpleNamespace(__file__=str(tmp_path / "onnxruntime" / "__init__.pyc"))
    assert not cuda_provider_shipped(fake)
    (capi / "libonnxruntime_providers_cuda.so").write_bytes(b"")
    assert cuda_provider_shipped(fake)
