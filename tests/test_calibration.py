"""Temperature scaling (``python -m training calibrate``): the fit, the measurements, the sealed value in
the shipped file and the card, and the screening engine showing softmax(logits / T)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from breakfix_desktop.core.hashing import sha256_file
from breakfix_desktop.core.model_registry import ModelRefusedError, Registry, create_session
from breakfix_desktop.core.preprocess import preprocess_file
from training.calibration import (CalibrationError, calibrate_shipped, calibration_stats, choose_flag, fit_temperature,
                                  flag_curve, holdout_of, nll)

ROOT = Path(__file__).resolve().parents[1]


def _sampled(n: int = 20000, scale: float = 3.0, seed: int = 0):
    """Logits whose softmax is the true label distribution, and labels drawn from it."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, scale, size=(n, 4))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = (rng.random(n)[:, None] > p.cumsum(1)).sum(1)
    return z, labels


@pytest.mark.parametrize("factor", [3.0, 0.5])
def test_fit_recovers_the_temperature_of_over_and_underconfident_logits(factor):
    z, y = _sampled()
    t = fit_temperature(z * factor, y)
    assert t == pytest.approx(factor, rel=0.08)
    # the fitted T is the NLL minimum, and it changes no decision
    assert nll(z * factor, y, t) < min(nll(z * factor, y, t * 1.2), nll(z * factor, y, t / 1.2), nll(z * factor, y))
    assert ((z * factor / t).argmax(1) == (z * factor).argmax(1)).all()


def test_stats_count_what_a_doctor_would_see():
    z, y = _sampled(4000)
    over = z * 20  # an overconfident model: nearly every result reads 100.0 %
    before, after = calibration_stats(over, y, 1.0), calibration_stats(over, y, fit_temperature(over, y))
    assert before["accuracy"] == after["accuracy"] and before["errors"] == after["errors"] > 0
    assert after["ece"] < before["ece"] / 3 and after["nll"] < before["nll"]
    assert before["shown_as_100_percent"] > 2 * after["shown_as_100_percent"]
    assert before["errors_shown_as_100_percent"] > after["errors_shown_as_100_percent"]
    assert after["errors_flagged_low_confidence"] > before["errors_flagged_low_confidence"]
    # by hand on three results
    s = calibration_stats(np.array([[20.0, 0, 0, 0], [0.1, 0, 0, 0], [0, 9.0, 0, 0]]), np.array([0, 1, 0]))
    assert (s["images"], s["errors"], s["shown_as_100_percent"], s["errors_shown_as_100_percent"]) == (3, 2, 2, 1)
    assert (s["low_confidence"], s["errors_flagged_low_confidence"]) == (1, 1)
    with pytest.raises(CalibrationError, match="NaN"):
        fit_temperature(np.full((2, 4), np.nan), np.array([0, 1]))


def test_the_flag_threshold_is_the_lowest_that_catches_enough_errors():
    # tops: 0.97 right, 0.55 wrong, 0.72 wrong, 0.91 wrong, 0.99 right
    probs = np.array([[0.97, 0.01, 0.01, 0.01], [0.55, 0.15, 0.15, 0.15], [0.72, 0.10, 0.09, 0.09],
                      [0.91, 0.03, 0.03, 0.03], [0.99, 0.0033, 0.0033, 0.0034]])
    logits, labels = np.log(probs), np.array([0, 1, 1, 1, 0])
    curve = flag_curve(logits, labels)
    assert curve["0.60"] == {"flagged": 1, "errors_caught": 1, "errors": 3, "images": 5}
    assert curve["0.92"] == {"flagged": 3, "errors_caught": 3, "errors": 3, "images": 5}
    assert choose_flag(curve, 0.6) == 0.73 and choose_flag(curve, 1.0) == 0.92 and choose_flag(curve, 0.3) == 0.56
    assert choose_flag(flag_curve(logits[[0, 4]], labels[[0, 4]])) is None  # no errors: nothing to choose


def test_with_the_disagreement_flag_the_threshold_need_only_catch_the_rest():
    # the same five results; members disagree on the 0.91 error and on the 0.99 right answer
    probs = np.array([[0.97, 0.01, 0.01, 0.01], [0.55, 0.15, 0.15, 0.15], [0.72, 0.10, 0.09, 0.09],
                      [0.91, 0.03, 0.03, 0.03], [0.99, 0.0033, 0.0033, 0.0034]])
    logits, labels = np.log(probs), np.array([0, 1, 1, 1, 0])
    disagree = np.array([False, False, False, True, True])
    either = flag_curve(logits, labels, also=disagree)
    assert either["0.60"] == {"flagged": 3, "errors_caught": 2, "errors": 3, "images": 5}  # union, counted once
    assert either["0.50"]["flagged"] == 2  # below every top probability: the other flag alone
    assert choose_flag(either, 1.0) == 0.73  # alone it needed 0.92 (test above)
    assert choose_flag(either, 0.6) == 0.56 and choose_flag(either, 0.3) == 0.5
    with pytest.raises(CalibrationError, match="2 values for 5 results"):
        flag_curve(logits, labels, also=disagree[:2])


def test_the_validation_split_comes_from_the_card():
    path = Path("m.card.json")
    assert holdout_of({"training": {"seed": 0, "val_fraction": 0.1}}, path) == (0, 0.1)
    same = {"seed": 3, "val_fraction": 0.2}
    assert holdout_of({"training": {"members": {"a": same, "b": same}}}, path) == (3, 0.2)
    with pytest.raises(CalibrationError, match="different validation splits"):
        holdout_of({"training": {"members": {"a": same, "b": {"seed": 0, "val_fraction": 0.2}}}}, path)
    with pytest.raises(CalibrationError, match="m.card.json: the card does not give"):
        holdout_of({"training": {"epochs_done": 1}}, path)
    with pytest.raises(CalibrationError, match="does not give"):
        holdout_of({"training": {"seed": 0, "val_fraction": 0}}, path)


@pytest.fixture
def shipped(make_dataset, make_screening_models):
    """A synthetic data set and a models folder whose tiny ensemble's card names its validation split."""
    data = make_dataset(per_class=10, test_per_class=5)
    folder = make_screening_models([("ens", "ensemble", "ensemble"), ("trigger", "detector", "detector")])
    card_path = folder / "ens.card.json"
    card = json.loads(card_path.read_text())
    card["training"] = {"members": {f"m{i}": {"seed": 0, "val_fraction": 0.2} for i in range(3)}}
    card_path.write_text(json.dumps(card))
    return data, folder


def test_calibrate_seals_the_temperature_and_the_app_shows_it(shipped, tmp_path):
    from breakfix_desktop.core.quarantine import QuarantineStore
    from breakfix_desktop.core.screening import ScreeningEngine, softmax
    from training.cli import evaluate_onnx
    from training.data import load_arrays, scan_split
    from training.export import graph_sha256

    data, folder = shipped
    model = folder / "ens.onnx"
    before_sha = sha256_file(model)
    before_graph = graph_sha256(model)
    raw = evaluate_onnx(model, load_arrays(scan_split(data, "Testing"))[0])
    section = calibrate_shipped(model, data, folder / "manifest.json")
    t = section["temperature"]
    assert 0.05 <= t <= 50 and set(section["measured"]) == {"validation", "test", "test_dedup", "test_dedup_near"}
    assert section["measured"]["validation"]["before"]["images"] == 8  # 20 % of 10 per class
    assert section["measured"]["validation"]["after"]["nll"] <= section["measured"]["validation"]["before"]["nll"]
    # the graph is unchanged: same logits, only the metadata moved the hash
    assert sha256_file(model) != before_sha
    assert graph_sha256(model) == before_graph  # what card-robustness links attacked members by
    np.testing.assert_array_equal(evaluate_onnx(model, load_arrays(scan_split(data, "Testing"))[0]), raw)
    card = json.loads((folder / "ens.card.json").read_text())
    assert card["temperature"] == t and card["calibration"]["temperature"] == t
    flag = card["low_confidence"]
    assert flag == section["low_confidence"]["threshold"] and 0.5 <= flag <= 0.99
    # chosen for the app's closer-look mark: either flag catches 80 % of the validation errors
    assert section["low_confidence"]["flag_rule"] == "either"
    val_curve = section["low_confidence"]["curve_either"]["validation"][f"{flag:.2f}"]
    assert val_curve["errors_caught"] >= 0.8 * val_curve["errors"] > 0
    lower = section["low_confidence"]["curve_either"]["validation"]
    assert all(row["errors_caught"] < 0.8 * row["errors"] for t, row in lower.items() if float(t) < flag)
    # the ensemble's other flag, counted as the app counts it (any member voting for another class)
    outs = evaluate_onnx(model, load_arrays(scan_split(data, "Testing"))[0], all_outputs=True)
    votes = np.stack([v.argmax(1) for k, v in outs.items() if k.startswith("member_")])
    expected = int((votes != outs["logits"].argmax(1)).any(0).sum())
    dis = section["members_disagree"]["test"]
    assert dis["flagged"] == expected and dis["either_flagged"] >= max(dis["flagged"], section["measured"]["test"]["after"]["low_confidence"])
    assert card["sha256"] == sha256_file(model) and card["bytes"] == model.stat().st_size
    assert card["graph_sha256"] == before_graph
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [m["sha256"] for m in manifest["models"] if m["name"] == "ens"] == [card["sha256"]]

    entry = [m for m in Registry.load(folder).models if m.name == "ens"][0]
    assert entry.is_verified and entry.temperature == t and entry.low_confidence == flag
    sealed = create_session(entry, prefer_gpu=False).session.get_modelmeta().custom_metadata_map
    assert float(sealed["temperature"]) == t and float(sealed["low_confidence"]) == flag

    # the engine shows softmax(logits / T)
    scan = sorted((data / "Testing" / "glioma").iterdir())[0]
    with QuarantineStore(tmp_path / "store") as store:
        engine = ScreeningEngine(Registry.load(folder), store, prefer_gpu=False)
        result = engine.run([scan]).results[0]
        assert engine.flag_threshold(engine.load()) == flag  # the card's flag, not the default 0.6
    logits = evaluate_onnx(model, preprocess_file(scan)[:1])  # grey: the three channels are copies
    expected = softmax(logits / t)[0]
    assert [result.probabilities[c] for c in card["classes"]] == pytest.approx(expected.tolist(), abs=1e-6)
    assert not np.allclose(expected, softmax(logits)[0], atol=1e-3)  # T made a visible difference
    assert result.low_confidence == (expected.max() < flag)

    # an edited card temperature or flag is refused, never obeyed
    for key, bad in (("temperature", t * 2), ("temperature", "warm"), ("temperature", -1.0),
                     ("low_confidence", 0.5 if flag != 0.5 else 0.6), ("low_confidence", 1.5)):
        edited = {**card, key: bad}
        (folder / "ens.card.json").write_text(json.dumps(edited))
        entry = [m for m in Registry.load(folder).models if m.name == "ens"][0]
        with pytest.raises(ModelRefusedError, match=key):
            create_session(entry, prefer_gpu=False)


def test_no_temperature_keeps_the_probabilities_and_seals_the_flag(shipped):
    data, folder = shipped
    section = calibrate_shipped(folder / "ens.onnx", data, fit=False, catch_errors=1.0, flag_rule="low-confidence")
    card = json.loads((folder / "ens.card.json").read_text())
    assert card["temperature"] == section["temperature"] == 1.0 != section["temperature_fitted"]
    assert section["low_confidence"]["flag_rule"] == "low-confidence"
    row = section["low_confidence"]["curve"]["validation"][f"{card['low_confidence']:.2f}"]
    assert row["errors_caught"] == row["errors"] > 0  # catch 100 % with the low-confidence flag alone
    with pytest.raises(CalibrationError, match="flag rule 'both'"):
        calibrate_shipped(folder / "ens.onnx", data, flag_rule="both")


def test_a_card_value_the_file_does_not_seal_is_refused(shipped):
    """An older file has no sealed temperature or flag: a card that adds one (say a flag of 0.01, which
    would switch the closer-look mark off) is refused, not obeyed."""
    _, folder = shipped
    card = json.loads((folder / "ens.card.json").read_text())
    for key, value in (("low_confidence", 0.01), ("temperature", 1.0)):
        (folder / "ens.card.json").write_text(json.dumps({**card, key: value}))
        entry = [m for m in Registry.load(folder).models if m.name == "ens"][0]
        with pytest.raises(ModelRefusedError, match=f"gives {key} .* does not seal one"):
            create_session(entry, prefer_gpu=False)
    (folder / "ens.card.json").write_text(json.dumps(card))
    entry = [m for m in Registry.load(folder).models if m.name == "ens"][0]
    assert create_session(entry, prefer_gpu=False) is not None


def test_calibrate_refuses_what_it_cannot_calibrate(shipped):
    data, folder = shipped
    with pytest.raises(CalibrationError, match="only classifiers and ensembles"):
        calibrate_shipped(folder / "trigger.onnx", data)
    (folder / "ens.onnx").write_bytes((folder / "ens.onnx").read_bytes() + b"\0")
    with pytest.raises(CalibrationError, match="ens.onnx: its SHA-256 differs"):
        calibrate_shipped(folder / "ens.onnx", data)


def test_cli_calibrate(shipped):
    data, folder = shipped
    cmd = [sys.executable, "-m", "training", "calibrate", "--model", str(folder / "ens.onnx"), "--data", str(data),
           "--manifest", str(folder / "manifest.json")]
    files = {p: p.read_bytes() for p in folder.iterdir()}
    res = subprocess.run(cmd + ["--dry-run"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "temperature" in res.stdout and "nothing written" in res.stdout
    assert {p: p.read_bytes() for p in folder.iterdir()} == files  # measured, nothing changed
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "temperature" in res.stdout and "test_dedup_near" in res.stdout
    assert json.loads((folder / "ens.card.json").read_text())["sha256"] == sha256_file(folder / "ens.onnx") != \
        json.loads(files[folder / "ens.card.json"])["sha256"]
    res = subprocess.run(cmd[:5] + [str(folder / "nope.onnx")], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and "nope.onnx not found" in res.stderr
