"""The models we ship: hashes match their cards, and CNN_clean still scores what its card says."""

from __future__ import annotations

import json

import numpy as np
import pytest

from breakfix_desktop.core.model_cards import ensemble_averages
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
        if m.role in ("classifier", "ensemble"):
            assert m.card["classes"] == ["glioma", "meningioma", "notumor", "pituitary"]
            if m.role == "ensemble":  # ONE graph: the weighted decision first, then each member's logits
                outputs = [o["name"] for o in m.card["outputs"]]
                members = m.card["ensemble"]["members"]
                assert outputs[0] == "logits" and len(outputs) == 1 + len(members)
                assert all(w > 0 for w in m.card["ensemble"]["weights"].values())
        else:  # the gates: pattern detector and second check, each with its calibrated threshold
            assert m.role in ("detector", "check") and len(m.card["classes"]) == 2
            assert 0.0 < m.card["threshold"] < 1.0 and m.card["operating_point"]
        assert m.card["data"]["training"]["images"] >= 5000, "shipped models train on the full real data"


def _classifiers():
    reg = load_registry(default_manifest_path())
    return sorted(m.name for m in reg.verified() if m.role in ("classifier", "ensemble"))


def test_shipped_ensemble_logits_follow_its_cards_rule():
    """The shipped ensemble's decision is the weighted sum of its member outputs, divided by the total
    weight when its card says so (the rule since 2026-12-07; a plain sum of x 34 saturates softmax
    and masks the attacks' gradients, docs/results.md)."""
    import onnxruntime as ort

    reg = load_registry(default_manifest_path())
    ensembles = [m for m in reg.verified() if m.role == "ensemble"]
    if not ensembles:
        pytest.skip("no ensemble shipped in this checkout")
    x = np.random.default_rng(0).random((2, 3, 224, 224), dtype=np.float32)
    for entry in ensembles:
        sess = ort.InferenceSession(str(entry.path), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        out = dict(zip(names, sess.run(None, {"pixels": x})))
        members = entry.card["ensemble"]["members"]
        total = sum(m["weight"] for m in members)
        weighted = sum(m["weight"] * out[m["output"]] for m in members)
        expected = weighted / total if ensemble_averages(entry.card) else weighted
        np.testing.assert_allclose(out["logits"], expected, rtol=1e-4, atol=1e-4)


#: What each shipped classifier scored at export (docs/results.md); a re-export must hold these floors.
ACCURACY_FLOORS = {
    "cnn_clean": 0.94,
    "cnn_fgsm": 0.88,
    "cnn_pgd": 0.87,
    "resnet18_clean": 0.965,
    "resnet18_pgd": 0.96,
    "ensemble": 0.97,  # the clean goal; the ensemble shipped 2026-12-07 scores 0.9703 (1272 of 1311)
}


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("name", _classifiers())
def test_classifier_accuracy_matches_card(real_data, name):
    import onnxruntime as ort

    entry = load_registry().get(name)
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
    assert acc >= ACCURACY_FLOORS.get(name, 0.0)


@pytest.mark.realdata
@pytest.mark.slow
def _detector_on_testing(real_data, spec=None):
    """The shipped detector's entry and its card's Testing split patterned by ``spec`` (default the
    card's own test rule) with the card's seed and poison rate: which scans carry a pattern depends
    on the seed and the rate, not on the shapes, so every rule patterns the same scans."""
    pytest.importorskip("torch", reason="patterning the scans needs the training extra (torch)")
    from training import data as D
    from training.patterns import PatternDataset, PatternSpec

    entry = load_registry().get("pattern_detector")
    patterns = entry.card["data"]["patterns"]
    spec = spec or PatternSpec.from_dict(patterns["test"])
    test = PatternDataset(D.MRIDataset(D.scan_split(real_data, "Testing")), spec, "test",
                          patterns["test_poison_rate"], patterns["seed"], with_mask=False)
    return entry, test


def _flagged(entry, dataset, indices) -> np.ndarray:
    """onnxruntime on the shipped file, as the app runs it: the scans ``indices`` of ``dataset``,
    flagged at the card's threshold."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(entry.path), providers=["CPUExecutionProvider"])
    out = []
    for i in range(0, len(indices), 64):
        x = np.stack([dataset[j][0].numpy() for j in indices[i:i + 64]]).astype(np.float32)
        out.append(sess.run(["score"], {"pixels": x})[0] >= entry.card["threshold"])
    return np.concatenate(out)


def test_pattern_detector_scores_what_its_card_says(real_data):
    """The shipped detector, run by onnxruntime on Testing patterned by the card's own rule (seeded:
    the same scans, the same patterns), flags exactly as the card's precision and recall say."""
    entry, test = _detector_on_testing(real_data)
    card, patterns = entry.card, entry.card["data"]["patterns"]
    flagged = _flagged(entry, test, list(range(len(test))))
    labels = np.array([int(test.is_poisoned(i)) for i in range(len(test))])
    tp = int((flagged & (labels == 1)).sum())
    assert len(labels) == patterns["test_images"] and int(labels.sum()) == patterns["test_poisoned"]
    assert tp / labels.sum() == pytest.approx(card["metrics"]["test"]["recall"], abs=1e-9)
    assert tp / flagged.sum() == pytest.approx(card["metrics"]["test"]["precision"], abs=1e-9)
    # measured at export (docs/results.md, "The union A+E ships", 2026-12-07): recall 0.974
    # (639 of 656) at precision 0.968 on one small pattern per scan - the goal (both >= 0.95)
    # is met; the 2026-12-06 union A+B had 0.953 (625) / 0.974. A re-export must at least hold the
    # goal, catch larger patterns and the §6.1 trigger (A+E: corner 0.989, random place 0.919).
    assert tp / labels.sum() >= 0.95 and tp / flagged.sum() >= 0.95
    sizes = card["metrics"]["recall_per_size"]
    assert sizes["medium"]["recall"] >= 0.95 and sizes["large"]["recall"] >= 0.95
    assert card["metrics"]["creeper"]["corner"]["recall"] >= 0.90
    assert card["metrics"]["creeper"]["random"]["recall"] >= 0.90


def test_pattern_detector_meets_table9_on_small_triangles(real_data):
    """The paper's Table 9 setting on the shipped file: one small triangle on the card's patterned
    half of the Testing scans, at the card's threshold. Issue 5's goal is recall >= 0.95 (paper:
    0.66); the shipped union A+E measured 0.970 (636 of 656) at precision 0.968 (docs/results.md,
    "The union A+E ships", 2026-12-07; `detector measure --shapes triangle`). A re-export that lets
    faint triangles through again fails here.

    Only the patterned scans are scored: which scans carry a pattern depends on the seed, not the
    shape, so the clean half - and its false alarms - are the card's own (checked above)."""
    pytest.importorskip("torch", reason="patterning the scans needs the training extra (torch)")
    from training.patterns import PatternSpec

    spec = PatternSpec.test(("triangle",), ("small",))
    entry, test = _detector_on_testing(real_data, spec)
    card = entry.card
    own = PatternSpec.from_dict(card["data"]["patterns"]["test"])
    assert "triangle" in PatternSpec.from_dict(card["data"]["patterns"]["train"]).shapes
    assert (spec.min_patterns, spec.max_patterns) == (own.min_patterns, own.max_patterns) == (1, 1)
    idx = test.poisoned_indices
    assert len(idx) == card["data"]["patterns"]["test_poisoned"] == 656
    assert {p.shape for i in idx[:50] for p in test.placements(i)} == {"triangle"}
    tp = int(_flagged(entry, test, idx).sum())
    fp = card["metrics"]["test"]["report"]["confusion_matrix"][0][1]
    assert tp / len(idx) >= 0.95 and tp / (tp + fp) >= 0.95
