"""Training engine: learns, emits valid events, and resumes bit-identically."""

from __future__ import annotations

import io

import pytest
import torch

from breakfix_desktop.core import protocol as proto
from training import data as D
from training.engine import Trainer, TrainConfig, make_loader, seed_everything
from training.models import build_model

TINY = {"blocks": 2, "width": 4, "hidden": 16, "pool": 2, "dropout": 0.1}


def _loaders(root, seed=0):
    tr = D.MRIDataset(D.scan_split(root, "Training"))
    te = D.MRIDataset(D.scan_split(root, "Testing"))
    return make_loader(tr, 8, True, 0, seed), make_loader(te, 16, False, 0, seed)


def _trainer(root, epochs, ckpt=None, events=None, lr=3e-3, **extra):
    cfg = TrainConfig(arch="cnn", epochs=epochs, batch_size=8, lr=lr, seed=0, device="cpu", model_kwargs=TINY,
                      **extra).validate()
    seed_everything(cfg.seed)
    model = build_model("cnn", **TINY)
    train, test = _loaders(root)
    return Trainer(model, cfg, train, test, events=events, checkpoint_path=ckpt)


def test_learns_and_streams_valid_events(make_dataset):
    root = make_dataset(per_class=12, test_per_class=4)
    buf = io.StringIO()
    t = _trainer(root, epochs=6, events=proto.EventWriter(buf), lr=1e-2)
    hist = t.fit()
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["test_acc"] >= 0.75  # the synthetic classes are easy
    events = list(proto.iter_events(buf.getvalue().splitlines()))
    kinds = [e["type"] for e in events]
    assert kinds.count("epoch_end") == 6
    assert kinds.count("progress") == 6 * 6  # one per batch (48 images / batch 8)


def test_resume_is_bit_identical(make_dataset, tmp_path):
    root = make_dataset(per_class=6, test_per_class=2)
    straight = _trainer(root, epochs=3)
    straight.fit()
    ckpt = tmp_path / "ck.pt"
    first = _trainer(root, epochs=1, ckpt=ckpt)
    first.fit()
    resumed = _trainer(root, epochs=3, ckpt=ckpt)
    # throw the RNG off course: the checkpoint must restore it
    torch.rand(100)
    resumed.load_checkpoint(ckpt)
    assert resumed.epoch == 1
    resumed.fit()
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]


@pytest.mark.parametrize("field,value", [("epochs", 0), ("lr", -1.0), ("batch_size", 0), ("arch", "vgg"),
                                         ("device", "tpu"), ("val_fraction", 0.7), ("precision", "fp16")])
def test_config_errors_name_the_parameter(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value}).validate()


def test_unknown_config_key():
    with pytest.raises(ValueError, match="unknown configuration key.*colour"):
        TrainConfig.from_dict({"colour": 1})


def test_bf16_precision_learns_like_fp32_keeps_float32_weights_and_resumes(make_dataset, tmp_path):
    root = make_dataset(per_class=12, test_per_class=4)
    assert "precision" not in TrainConfig().to_dict()  # fp32 runs' configs (and resumes) are unchanged
    ckpt = tmp_path / "bf16.pt"
    t = _trainer(root, epochs=6, lr=1e-2, ckpt=ckpt, precision="bf16")
    calls = []
    real = t.compute_loss

    def spy(inputs):  # the forward pass of a training step runs under bf16 autocast
        loss, logits, y = real(inputs)
        calls.append(logits.dtype)
        return loss, logits, y

    t.compute_loss = spy
    hist = t.fit()
    assert set(calls) == {torch.bfloat16}
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] and hist[-1]["test_acc"] >= 0.75
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["config"]["precision"] == "bf16"
    assert all(v.dtype in (torch.float32, torch.int64) for v in state["model"].values())
    fresh = build_model("cnn", **TINY)  # a checkpoint written in channels_last loads into a plain model
    fresh.load_state_dict(state["model"])
    again = _trainer(root, epochs=7, lr=1e-2, ckpt=ckpt, precision="bf16")
    again.load_checkpoint(ckpt)
    assert again.epoch == 6 and len(again.fit()) == 7
