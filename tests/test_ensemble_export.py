"""Ensembles (§5.2): make-ensemble, ONE exported ONNX graph with ``logits`` + ``member_*`` outputs
matching torch, a card the app's registry accepts, and the screening engine reading the members."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from breakfix_desktop.core.hashing import sha256_file
from breakfix_desktop.core.model_registry import load_registry
from training.cli import main
from training.engine import Trainer, TrainConfig
from training.export import EnsembleGraph, member_output_names
from training.models import WeightedEnsemble, default_member_weight, load_model, read_ensemble_spec

TINY = {"blocks": 2, "width": 4, "hidden": 16, "pool": 4, "dropout": 0.0}


def _checkpoint(path: Path, seed: int) -> Path:
    from training.models import build_model

    torch.manual_seed(seed)
    model = build_model("cnn", **TINY)
    model.train()
    with torch.no_grad():  # distinct BatchNorm statistics per member
        model(torch.rand(4, 3, 224, 224) * (seed + 1) / 3)
    cfg = TrainConfig(arch="cnn", epochs=1, device="cpu", model_kwargs=TINY).validate()
    trainer = Trainer(model.eval(), cfg, train_loader=None, checkpoint_path=path)
    return trainer.save_checkpoint()


@pytest.fixture
def two_members(tmp_path):
    return _checkpoint(tmp_path / "runs" / "cnn_pgd" / "checkpoint.pt", 0), \
        _checkpoint(tmp_path / "runs" / "resnet18_pgd" / "best.pt", 1)


def test_paper_default_weights():
    assert default_member_weight("ResNet18_PGD") == 2.0 == default_member_weight("resnet_pgd")
    assert default_member_weight("CNN_PGD") == 1.0 == default_member_weight("CNN_FGSM")
    assert member_output_names(["CNN PGD", "CNN-PGD", "a"]) == ["member_CNN_PGD", "member_CNN_PGD_2", "member_a"]


def test_ensemble_logits_keep_one_models_scale_whatever_the_weights(two_members):
    """Scaling every weight by the same factor changes nothing: the weighted sum is divided by the
    total weight.  A plain sum (weights 1 + 8 -> logits x 9) saturates softmax, so the attack's
    cross-entropy gradient vanishes on confident scans and FGSM/PGD overstate robustness."""
    nets = {n: load_model(p).eval() for n, p in zip(("A", "B"), two_members)}
    x = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        za, zb = nets["A"](x), nets["B"](x)
        small = WeightedEnsemble(nets, {"A": 0.1, "B": 0.8})(x)
        large = WeightedEnsemble(nets, {"A": 1.0, "B": 8.0})(x)
    torch.testing.assert_close(small, large)
    torch.testing.assert_close(large, (za + 8 * zb) / 9)
    one = WeightedEnsemble({"A": nets["A"]}, {"A": 5.0})
    with torch.no_grad():
        torch.testing.assert_close(one(x), za)  # a single member is itself, at any weight


def test_make_ensemble_writes_relative_paths_hashes_and_paper_weights(two_members, tmp_path):
    cnn, resnet = two_members
    out = tmp_path / "runs" / "ensemble" / "ensemble.json"
    assert main(["--events", "none", "make-ensemble", "--member", f"CNN_PGD={cnn}",
                 "--member", f"ResNet18_PGD={resnet}", "--out", str(out)]) == 0
    spec = json.loads(out.read_text())
    assert spec["format"] == "breakfix-ensemble/1"
    assert [(m["name"], m["checkpoint"], m["weight"]) for m in spec["members"]] == [
        ("CNN_PGD", "../cnn_pgd/checkpoint.pt", 1.0), ("ResNet18_PGD", "../resnet18_pgd/best.pt", 2.0)]
    assert spec["members"][1]["sha256"] == sha256_file(resnet)
    ens = load_model(out)
    assert isinstance(ens, WeightedEnsemble) and ens.weights.tolist() == [1.0, 2.0]
    assert EnsembleGraph(ens).output_names == ["logits", "member_CNN_PGD", "member_ResNet18_PGD"]
    # an explicit weight wins over the paper's default
    assert main(["--events", "none", "make-ensemble", "--member", f"ResNet18_PGD={resnet}:0.5",
                 "--out", str(out)]) == 0
    assert read_ensemble_spec(out)[0]["weight"] == 0.5


def test_a_swapped_member_checkpoint_is_refused(two_members, tmp_path):
    cnn, resnet = two_members
    out = tmp_path / "ens.json"
    main(["--events", "none", "make-ensemble", "--member", f"A={cnn}", "--member", f"B={resnet}", "--out", str(out)])
    _checkpoint(resnet, 7)  # someone replaces a member after the ensemble was made
    with pytest.raises(ValueError, match="changed since the ensemble was made"):
        load_model(out)
    with pytest.raises(SystemExit) as exc:
        main(["--events", "none", "export", "--ensemble", str(out), "--out", str(tmp_path / "e.onnx"), "--name", "e"])
    assert exc.value.code == 2


def test_ensemble_exports_one_graph_matching_torch_that_the_app_accepts(two_members, tmp_path):
    cnn, resnet = two_members
    spec = tmp_path / "ensemble.json"
    main(["--events", "none", "make-ensemble", "--member", f"CNN_PGD={cnn}", "--member", f"ResNet18_PGD={resnet}",
          "--out", str(spec)])
    models = tmp_path / "models"
    onnx_path = models / "ensemble.onnx"
    assert main(["--events", "none", "export", "--ensemble", str(spec), "--out", str(onnx_path), "--name", "ensemble",
                 "--manifest", str(models / "manifest.json"), "--parity-images", "4"]) == 0

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["pixels"]
    names = [o.name for o in sess.get_outputs()]
    assert names == ["logits", "member_CNN_PGD", "member_ResNet18_PGD"]
    x = np.random.default_rng(5).random((3, 3, 224, 224), dtype=np.float32)
    got = dict(zip(names, sess.run(None, {"pixels": x})))
    members = [load_model(cnn), load_model(resnet)]
    with torch.no_grad():
        ref = [m(torch.from_numpy(x)).numpy() for m in members]
    np.testing.assert_allclose(got["member_CNN_PGD"], ref[0], atol=1e-4)
    np.testing.assert_allclose(got["member_ResNet18_PGD"], ref[1], atol=1e-4)
    # ResNet18_PGD counts double; the weighted sum is divided by the total weight (one model's logit scale)
    np.testing.assert_allclose(got["logits"], (ref[0] + 2.0 * ref[1]) / 3.0, atol=1e-4)
    assert not np.allclose(ref[0], ref[1])  # the members really differ

    card = json.loads((models / "ensemble.card.json").read_text())
    assert card["role"] == "ensemble" and card["sha256"] == sha256_file(onnx_path)
    assert [o["name"] for o in card["outputs"]] == names
    members_card = card["ensemble"]["members"]
    assert [(m["name"], m["sha256"], m["weight"], m["output"]) for m in members_card] == [
        ("CNN_PGD", sha256_file(cnn), 1.0, "member_CNN_PGD"),
        ("ResNet18_PGD", sha256_file(resnet), 2.0, "member_ResNet18_PGD")]
    assert card["ensemble"]["weights"] == {"CNN_PGD": 1.0, "ResNet18_PGD": 2.0}
    parity = card["metrics"]["parity"]
    assert parity["max_abs_logit_diff"] <= 1e-4 and set(parity["per_output"]) == set(names)

    registry = load_registry(models)
    (entry,) = registry.verified("ensemble")
    assert entry.name == "ensemble" and not registry.refused


def test_screening_reads_the_member_outputs(two_members, tmp_path):
    """The exported ensemble drives the app's screening engine: decision + member agreement."""
    from PIL import Image

    from breakfix_desktop.core.quarantine import QuarantineStore
    from breakfix_desktop.core.screening import ScreeningEngine

    cnn, resnet = two_members
    spec = tmp_path / "ensemble.json"
    main(["--events", "none", "make-ensemble", "--member", f"A={cnn}", "--member", f"B={resnet}", "--out", str(spec)])
    models = tmp_path / "models"
    main(["--events", "none", "export", "--ensemble", str(spec), "--out", str(models / "ens.onnx"), "--name", "ens",
          "--manifest", str(models / "manifest.json"), "--parity-images", "2"])
    scans = tmp_path / "scans"
    scans.mkdir()
    files = []
    for i in range(2):
        files.append(scans / f"{i}.png")
        Image.fromarray((np.random.default_rng(i).random((64, 64)) * 255).astype(np.uint8)).save(files[-1])
    store = QuarantineStore(tmp_path / "store")
    try:
        engine = ScreeningEngine(load_registry(models), store, workers=1, prefer_gpu=False)
        summary = engine.run(files)
    finally:
        store.close()
    assert [r.verdict for r in summary.results] == ["clear", "clear"]
    assert all(r.member_agreement in (0.0, 0.5, 1.0) for r in summary.results)
