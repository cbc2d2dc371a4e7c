"""The models we ship: hashes match their cards, and CNN_clean still scores what its card says."""

from __future__ import annotations

import json

import numpy as np
import pytest

from breakfix_desktop.core.model_registry import default_manifest_path, load_registry
from breakfix_desktop.core.preprocess import preprocess_file
from breakfix_desktop.core.hashing import sha256_file


def test_manifest_lists_verified_models_only():
    manifest = default_manifest_path()
    assert manifest.is_file(), f"{manifest} missing: the release must ship at least CNN_clean"
    reg = load_registry(manifest)
    assert reg.refused == [], [m.reason for m in reg.refused]
    names = {m.name for m in reg.verified()}
    assert "cnn_clean" in names
    for m in reg.verified():
        assert sha256_file(m.path) == m.card["sha256"]
        if m.role == "classifier":
            assert m.card["classes"] == ["glioma", "meningioma", "notumor", "pituitary"]
        else:  # the gates: pattern detector and second check, each with its calibrated threshold
            assert m.role in ("detector", "check") and len(m.card["classes"]) == 2
            assert 0.0 < m.card["threshold"] < 1.0 and m.card["operating_point"]
        assert m.card["data"]["training"]["images"] >= 5000, "shipped models train on the full real data"


@pytest.mark.realdata
@pytest.mark.slow
def test_cnn_clean_accuracy_matches_card(real_data):
    import onnxruntime as ort

    entry = load_registry().get("cnn_clean")
    sess = ort.InferenceSession(str(entry.path), providers=["CPUExecutionProvider"])
    classes = entry.card["classes"]
    correct = total = 0
    for label, cls in enumerate(classes):
        files = sorted(real_data.joinpath("Testing", cls).glob("*.jpg"))
        for i in range(0, len(files), 64):
            x = np.stack([preprocess_file(f) for f in files[i : i + 64]])
            correct += int((sess.run(["logits"], {"pixels": x})[0].argmax(1) == label).sum())
            total += len(x)
    acc = correct / total
    assert total == entry.card["metrics"]["test"]["n"]
    assert acc == pytest.approx(entry.card["metrics"]["test"]["accuracy"], abs=1e-9)
    # The card's number is what we measured at export (0.9413; the goal of 0.95 is not met
    # yet, see docs/results.md). Any re-export must at least hold this floor.
    assert acc >= 0.94
