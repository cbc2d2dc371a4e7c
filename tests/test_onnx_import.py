"""import-onnx: a shipped classifier turned back into a trainable checkpoint with the same predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from breakfix_desktop.core.preprocess import preprocess_file
from training.export import export_onnx, graph_sha256, write_card
from training.models import build_model, load_model
from training.onnx_import import ImportErrorOnnx, import_onnx

REPO = Path(__file__).resolve().parents[1]

KWARGS = {"blocks": 2, "width": 4, "hidden": 16, "pool": 2, "dropout": 0.0}


def _model_with_real_batchnorm(seed=0):
    torch.manual_seed(seed)
    m = build_model("cnn", **KWARGS)
    with torch.no_grad():  # BatchNorm far from identity, so folding really changes the weights
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.2, 3.0)
                mod.weight.uniform_(0.5, 2.0)
                mod.bias.uniform_(-0.3, 0.3)
    return m.eval()


def _shipped(tmp_path, model, kwargs=KWARGS):
    path = export_onnx(model, tmp_path / "tiny.onnx")
    write_card(path, name="tiny", role="classifier", architecture="cnn",
               training={"arch": "cnn", "model_kwargs": kwargs, "epochs": 3, "epochs_done": 3, "lr": 1e-3},
               data={}, metrics={"history": HISTORY})
    return path


#: the card's per-epoch history; an import carries it into the checkpoint (a re-export keeps it)
HISTORY = [{"epoch": e, "train_loss": 1.0 / e, "test_acc": 0.5 + 0.1 * e} for e in (1, 2, 3)]


def _pixels(n, seed=0):
    return np.random.default_rng(seed).random((n, 3, 224, 224), dtype=np.float32) * 0.6


def test_rebuilt_checkpoint_matches_graph_in_eval_and_train_mode(tmp_path):
    original = _model_with_real_batchnorm()
    path = _shipped(tmp_path, original)
    calib = _pixels(24)
    state = import_onnx(path, None, calib, _pixels(8, seed=1))
    assert state["format"] == "breakfix-checkpoint/1"
    assert state["config"]["model_kwargs"] == KWARGS and state["epoch"] == 3
    assert state["history"] == HISTORY
    src = state["provenance"]["imported_from"]
    assert src["card"] == "tiny" and src["calibration_images"] == 24
    card = json.loads(path.with_name("tiny.card.json").read_text())
    assert src["graph_sha256"] == card["graph_sha256"] == graph_sha256(path)  # survives a metadata re-seal
    assert src["parity"]["max_abs_logit_diff"] <= 1e-4

    ckpt = tmp_path / "checkpoint.pt"
    torch.save(state, ckpt)
    rebuilt = load_model(ckpt)  # the loader every command uses
    x = torch.from_numpy(_pixels(8, seed=2))
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), original(x), atol=1e-4)
        # train mode on the calibration batch uses exactly the calibrated statistics: same function
        rebuilt.train()
        c = torch.from_numpy(calib)
        assert torch.allclose(rebuilt(c), original(c), atol=1e-3)
    # the recalibrated BatchNorm is not the identity (a fine-tune would otherwise start elsewhere)
    bn = next(m for m in rebuilt.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert float(bn.running_var.mean()) != pytest.approx(1.0, abs=1e-3)


def test_card_hash_mismatch_is_refused(tmp_path):
    path = _shipped(tmp_path, _model_with_real_batchnorm())
    card_path = tmp_path / "tiny.card.json"
    card = json.loads(card_path.read_text())
    card["sha256"] = "0" * 64
    card_path.write_text(json.dumps(card))
    with pytest.raises(ImportErrorOnnx, match="does not match its card"):
        import_onnx(path, None, _pixels(4))


def test_wrong_architecture_in_card_is_refused(tmp_path):
    path = _shipped(tmp_path, _model_with_real_batchnorm(), kwargs={**KWARGS, "blocks": 3})
    with pytest.raises(ImportErrorOnnx):
        import_onnx(path, None, _pixels(4))


def test_shipped_cnn_clean_round_trips(real_data):
    onnx_path = Path(__file__).resolve().parents[1] / "resources" / "models" / "cnn_clean.onnx"
    files = []
    for cls in ("glioma", "meningioma", "notumor", "pituitary"):
        files += sorted(real_data.joinpath("Training", cls).glob("*.jpg"))[:16]
    calib = np.stack([preprocess_file(f) for f in files])
    state = import_onnx(onnx_path, None, calib)
    parity = state["provenance"]["imported_from"]["parity"]
    assert parity["max_abs_logit_diff"] <= 1e-4 and parity["argmax_agreement"] == 1.0


def test_cli_writes_a_checkpoint_that_seeds_adversarial_training(tmp_path, make_dataset):
    """import-onnx on synthetic data, then `train --adv fgsm --init` starts from it (provenance kept)."""
    import subprocess
    import sys

    data = make_dataset(per_class=6, test_per_class=2, size=224)
    path = _shipped(tmp_path, _model_with_real_batchnorm())
    ckpt = tmp_path / "clean" / "checkpoint.pt"

    def run(*args):
        return subprocess.run([sys.executable, "-m", "training", "--events", "json", *args],
                              capture_output=True, text=True)

    res = run("import-onnx", str(path), "--out", str(ckpt), "--data", str(data), "--calibration-images", "16")
    assert res.returncode == 0, res.stderr[-2000:]
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert events[-1]["type"] == "run_finished" and events[-1]["summary"]["parity"]["max_abs_logit_diff"] <= 1e-4
    again = run("import-onnx", str(path), "--out", str(ckpt), "--data", str(data))
    assert again.returncode == 2 and "--force" in again.stderr  # never overwrites silently

    res = run("train", "--out", str(tmp_path / "fgsm"), "--data", str(data), "--adv", "fgsm", "--init", str(ckpt),
              "--epochs", "1", "--batch-size", "8", "--robust-val-images", "0", "--val-fraction", "0")
    assert res.returncode == 0, res.stderr[-2000:]
    config = json.loads((tmp_path / "fgsm" / "config.json").read_text())
    assert config["model_kwargs"] == KWARGS
    assert config["provenance"]["init"]["path"] == str(ckpt)
    # the chain back to the shipped file is kept: the card of a model trained from it says where it began
    assert config["provenance"]["init"]["provenance"]["imported_from"]["onnx"] == str(path)


def test_roles_other_than_classifier_ensemble_or_detector_are_refused(tmp_path):
    path = _shipped(tmp_path, _model_with_real_batchnorm())
    card_path = tmp_path / "tiny.card.json"
    card = json.loads(card_path.read_text())
    card["role"] = "attack"
    card_path.write_text(json.dumps(card))
    with pytest.raises(ImportErrorOnnx, match="role 'attack'; only single classifiers, ensemble members"):
        import_onnx(path, None, _pixels(4))
    card["role"] = "ensemble"  # an ensemble needs a member named, and has to list it
    card_path.write_text(json.dumps(card))
    with pytest.raises(ImportErrorOnnx, match="an ensemble graph: name the member"):
        import_onnx(path, None, _pixels(4))
    with pytest.raises(ImportErrorOnnx, match="no member 'X'"):
        import_onnx(path, None, _pixels(4), member="X")
    card["role"] = "detector"  # a detector card without the detector's pattern settings
    card_path.write_text(json.dumps(card))
    with pytest.raises(ImportErrorOnnx, match="training.detector is not 'breakfix-pattern-detector/1'"):
        import_onnx(path, None, _pixels(4))
    card["role"] = "classifier"
    card_path.write_text(json.dumps(card))
    with pytest.raises(ImportErrorOnnx, match="has no members"):
        import_onnx(path, None, _pixels(4), member="A")


def test_an_ensemble_member_is_rebuilt_from_the_one_graph(tmp_path):
    """ResNet18_PGD ships only inside ensemble.onnx: each member comes back with its own output's values."""
    from training.engine import Trainer, TrainConfig
    from training.cli import main

    ckpts = {}
    for i, name in enumerate(("CNN_PGD", "ResNet18_PGD")):
        model = _model_with_real_batchnorm(seed=i)
        cfg = TrainConfig(arch="cnn", epochs=2, device="cpu", model_kwargs=KWARGS).validate()
        ckpts[name] = Trainer(model, cfg, train_loader=None,
                              checkpoint_path=tmp_path / name / "checkpoint.pt").save_checkpoint()
    spec = tmp_path / "ensemble.json"
    assert main(["--events", "none", "make-ensemble", *[a for n, c in ckpts.items() for a in ("--member", f"{n}={c}")],
                 "--out", str(spec)]) == 0
    onnx_path = tmp_path / "models" / "ensemble.onnx"
    assert main(["--events", "none", "export", "--ensemble", str(spec), "--out", str(onnx_path), "--name", "ensemble",
                 "--parity-images", "2"]) == 0
    x = _pixels(6, seed=3)
    for name, ckpt in ckpts.items():
        state = import_onnx(onnx_path, None, _pixels(24), x, member=name)
        src = state["provenance"]["imported_from"]
        assert src["member"] == name and "member" in src["note"]
        assert state["config"]["model_kwargs"] == KWARGS and state["history"] == []
        (diff,) = [v for k, v in src["parity"].items() if k.startswith("max_abs_")]
        assert diff <= 1e-4
        rebuilt = build_model("cnn", **KWARGS)
        rebuilt.load_state_dict(state["model"])
        with torch.no_grad():
            got = rebuilt.eval()(torch.from_numpy(x)).numpy()
            want = load_model(ckpt)(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_shipped_pattern_detector_round_trips(real_data):
    """The shipped detector rebuilt from its ONNX file: score and map as the graph's (<= 1e-4)."""
    from training import cli as C
    from training import data as D
    from training.detector import DETECTOR_FORMAT

    onnx_path = REPO / "resources" / "models" / "pattern_detector.onnx"
    if not onnx_path.is_file():
        pytest.skip("resources/models/pattern_detector.onnx is not shipped in this checkout")
    train = C._subset(D.scan_split(real_data, "Training"), 64, 0)
    grey, _, _ = D.load_arrays(train)
    card = json.loads(onnx_path.with_name("pattern_detector.card.json").read_text())
    union = card["training"]["detector"].get("union") or []
    # a union of detectors: rebuilding any member rebuilds and checks the whole graph; the last member
    # is the one whose weights the exporter may have deduplicated into the first's names
    for member in [str(len(union) - 1)] if union else [None]:
        state = import_onnx(onnx_path, None, D.grey_to_pixels(grey), member=member)
        par = state["provenance"]["imported_from"]["parity"]
        assert par["max_abs_score_diff"] <= 1e-4 and par["max_abs_map_diff"] <= 1e-4
        assert state["detector"]["format"] == DETECTOR_FORMAT
