"""Adversarial training (§5.2) hooks, TRADES, robust early stopping, and the train CLI's rules."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from breakfix_desktop.core import protocol as proto
from training import data as D
from training.defenses import (AdversarialTraining, FastAdversarialTraining, RobustEarlyStopping, TradesLoss,
                               make_adversarial)
from training.engine import Trainer, TrainConfig, make_loader, seed_everything
from training.models import build_model

TINY = {"blocks": 2, "width": 4, "hidden": 16, "pool": 4, "dropout": 0.0}
ROOT = Path(__file__).resolve().parent.parent


def _model(seed=0):
    torch.manual_seed(seed)
    m = build_model("cnn", **TINY)
    m.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        m(torch.rand(8, 3, 224, 224))
    return m


def _batch(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 224, 224, generator=g), torch.arange(n) % 4


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_appended_batch_doubles_and_stays_in_the_eps_ball(method):
    model, (x, y) = _model(), _batch()
    at = AdversarialTraining(method, eps_min=0.002, eps_max=0.008, steps=2)
    torch.manual_seed(0)
    for _ in range(3):
        x2, y2 = at.batch_hook(model, x, y)
        eps = at.last_eps
        assert 0.002 <= eps <= 0.008
        assert x2.shape == (8, 3, 224, 224) and torch.equal(y2, torch.cat([y, y]))
        assert torch.equal(x2[:4], x)  # the clean batch comes first, untouched
        delta = (x2[4:] - x).abs()
        assert float(delta.max()) <= eps + 1e-6  # inside the eps-ball
        assert float(delta.max()) >= 0.5 * eps  # and really perturbed
        assert float(x2.min()) >= 0 and float(x2.max()) <= 1
    assert model.training and all(p.requires_grad for p in model.parameters())  # modes put back


def test_eps_is_uniform_over_the_range():
    at = AdversarialTraining("fgsm", eps_min=0.001, eps_max=0.01)
    torch.manual_seed(0)
    draws = [at.draw_eps() for _ in range(400)]
    assert min(draws) >= 0.001 and max(draws) <= 0.01
    assert min(draws) < 0.0015 and max(draws) > 0.0095  # covers the range, not one value
    assert abs(sum(draws) / len(draws) - 0.0055) < 0.0005
    torch.manual_seed(0)
    assert [at.draw_eps() for _ in range(5)] == draws[:5]  # reproducible under the seed


def test_fast_at_replaces_the_batch_with_random_start_fgsm():
    model, (x, y) = _model(), _batch()
    fast = FastAdversarialTraining(eps_min=0.004, eps_max=0.004)
    attack = fast.make_attack(model, 0.004)
    assert attack.steps == 1 and attack.random_start and attack.alpha == pytest.approx(1.25 * 0.004)
    torch.manual_seed(0)
    x2, y2 = fast.batch_hook(model, x, y)
    assert x2.shape == x.shape and torch.equal(y2, y)
    delta = (x2 - x).abs()
    assert float(delta.max()) <= 0.004 + 1e-6 and float(delta.mean()) > 0.001


def test_trades_loss_is_cross_entropy_when_beta_is_zero():
    model, (x, y) = _model(), _batch()
    logits = model(x)
    trades = TradesLoss(beta=0.0)
    trades.batch_hook(model, x, y)
    assert torch.equal(trades(logits, y), F.cross_entropy(logits, y))


def test_trades_loss_adds_beta_times_kl_of_the_stashed_adversarial_batch():
    model, (x, y) = _model(), _batch()
    trades = TradesLoss(beta=6.0, eps_min=0.01, eps_max=0.01, steps=3)
    torch.manual_seed(0)
    x_out, y_out = trades.batch_hook(model, x, y)
    assert x_out is x and y_out is y  # the Trainer's batch stays clean
    _, x_adv = trades._stash
    assert float((x_adv - x).abs().max()) <= 0.01 + 1e-6 and not torch.equal(x_adv, x)
    model.train()
    logits = model(x)
    loss = trades(logits, y)
    with torch.no_grad():
        adv_logits = model(x_adv)
    kl = F.kl_div(F.log_softmax(adv_logits, 1), F.softmax(logits, 1), reduction="batchmean")
    expected = (F.cross_entropy(logits, y) + 6.0 * kl).detach()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(kl.detach()) > 0
    with pytest.raises(RuntimeError, match="no adversarial batch stashed"):
        trades(logits, y)  # the stash is used once; a loss without its batch_hook is refused


def test_inner_maximisation_increases_the_kl():
    model, (x, y) = _model(), _batch()
    model.eval()
    with torch.no_grad():
        p = F.softmax(model(x), 1)

    def kl(x_adv):
        with torch.no_grad():
            return float(F.kl_div(F.log_softmax(model(x_adv), 1), p, reduction="sum"))

    trades = TradesLoss(beta=1.0, eps_min=0.01, eps_max=0.01, steps=5)
    torch.manual_seed(0)
    trades.batch_hook(model, x, y)
    torch.manual_seed(0)
    noise_only = (x + 0.01 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    assert kl(trades._stash[1]) > kl(noise_only)


@pytest.mark.parametrize("method", ["fgsm", "pgd", "fast", "trades"])
def test_every_method_trains_through_the_trainer(make_dataset, method):
    root = make_dataset(per_class=3, test_per_class=1)
    seed_everything(0)
    cfg = TrainConfig(arch="cnn", epochs=1, batch_size=6, seed=0, device="cpu", model_kwargs=TINY, adv=method,
                      adv_steps=2, force_random_init=True).validate()
    ds = D.MRIDataset(D.scan_split(root, "Training"))
    recipe = make_adversarial(method, *cfg.adv_eps, steps=cfg.adv_steps)
    trainer = Trainer(_model(), cfg, make_loader(ds, 6, True, 0, 0), **recipe.hooks())
    hist = trainer.fit()
    assert len(hist) == 1 and hist[0]["train_loss"] == hist[0]["train_loss"]  # finite, not NaN


def test_adversarial_run_resumes_bit_identically(make_dataset, tmp_path):
    root = make_dataset(per_class=2, test_per_class=1)
    ds = D.MRIDataset(D.scan_split(root, "Training"))

    def trainer(epochs, ckpt=None):
        cfg = TrainConfig(arch="cnn", epochs=epochs, batch_size=4, lr=1e-3, seed=0, device="cpu", model_kwargs=TINY,
                          adv="pgd", adv_steps=2, force_random_init=True).validate()
        seed_everything(0)
        return Trainer(build_model("cnn", **TINY), cfg, make_loader(ds, 4, True, 0, 0), checkpoint_path=ckpt,
                       **AdversarialTraining("pgd", steps=2).hooks())

    straight = trainer(2)
    straight.fit()
    first = trainer(1, tmp_path / "ck.pt")
    first.fit()
    resumed = trainer(2, tmp_path / "ck.pt")
    torch.rand(50)  # the checkpoint's RNG state must win
    resumed.load_checkpoint(tmp_path / "ck.pt")
    resumed.fit()
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


# --------------------------------------------------------------------------- early stopping
def _fit_with_fake_robust_accuracy(make_dataset, tmp_path, values, patience_drop=0.2, epochs=5, buf=None):
    root = make_dataset(per_class=2, test_per_class=1)
    ds = D.MRIDataset(D.scan_split(root, "Training"))
    cfg = TrainConfig(arch="cnn", epochs=epochs, batch_size=8, seed=0, device="cpu", model_kwargs=TINY).validate()
    seq = iter(values)
    stop = RobustEarlyStopping(measure=lambda model: next(seq), patience_drop=patience_drop)
    seed_everything(0)
    trainer = Trainer(build_model("cnn", **TINY), cfg, make_loader(ds, 8, True, 0, 0),
                      checkpoint_path=tmp_path / "ck.pt", epoch_hook=stop,
                      events=proto.EventWriter(buf) if buf is not None else None)
    return trainer, trainer.fit()


def test_early_stopping_on_a_robust_accuracy_drop_keeps_the_best(make_dataset, tmp_path):
    buf = io.StringIO()
    trainer, hist = _fit_with_fake_robust_accuracy(make_dataset, tmp_path, [0.5, 0.6, 0.35, 0.9, 0.9], buf=buf)
    assert [h["epoch"] for h in hist] == [1, 2, 3]  # stopped after the drop of 0.25 > 0.2
    assert [h["robust_val_acc"] for h in hist] == [0.5, 0.6, 0.35]
    assert "catastrophic overfitting" in hist[-1]["early_stop"] and "early_stop" not in hist[1]
    assert hist[1]["robust_best"] and hist[2]["robust_best_epoch"] == 2
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["epoch"] == 2 and best["history"][-1]["robust_val_acc"] == 0.6
    last = torch.load(tmp_path / "ck.pt", weights_only=False)
    assert last["epoch"] == 3 and last["history"][-1]["early_stop"]
    events = list(proto.iter_events(buf.getvalue().splitlines()))
    assert any(e["type"] == "warning" and "early stop after epoch 3" in e["message"] for e in events)
    assert [e["path"] for e in events if e["type"] == "artifact_written" and e["kind"] == "best_checkpoint"] == \
        [str(tmp_path / "best.pt")] * 2
    # a resumed run remembers the stop and trains no further
    cfg = trainer.config
    again = Trainer(build_model("cnn", **TINY), cfg, trainer.train_loader, checkpoint_path=tmp_path / "ck.pt",
                    epoch_hook=RobustEarlyStopping(measure=lambda m: 1.0))
    again.load_checkpoint(tmp_path / "ck.pt")
    assert again.stop_reason and len(again.fit()) == 3


def test_small_dips_do_not_stop_training(make_dataset, tmp_path):
    _, hist = _fit_with_fake_robust_accuracy(make_dataset, tmp_path, [0.5, 0.6, 0.45, 0.55], epochs=4)
    assert len(hist) == 4 and not any(h.get("early_stop") for h in hist)
    assert torch.load(tmp_path / "best.pt", weights_only=False)["epoch"] == 2


def test_real_pgd_measurement_on_validation_images(make_dataset):
    root = make_dataset(per_class=2, test_per_class=1)
    val = make_loader(D.MRIDataset(D.scan_split(root, "Testing")), 3, False, 0, 0)
    stop = RobustEarlyStopping(val, eps=0.01, steps=2, max_images=3)
    model = _model()
    acc = stop.measure(model)
    assert stop._images[0].shape == (3, 3, 224, 224) and 0.0 <= acc <= 1.0
    assert stop.measure(model) == acc  # seeded starts: the same number every epoch for the same weights


# --------------------------------------------------------------------------- config and CLI
def test_adversarial_training_needs_a_clean_init():
    with pytest.raises(ValueError, match=r"adv: .*--init CHECKPOINT.*--force-random-init"):
        TrainConfig(adv="pgd").validate()
    TrainConfig(adv="pgd", init="runs/cnn_clean/checkpoint.pt").validate()
    TrainConfig(adv="pgd", force_random_init=True).validate()
    with pytest.raises(ValueError, match="adv_eps"):
        TrainConfig(adv="fgsm", init="x.pt", adv_eps=[0.01, 0.001]).validate()
    with pytest.raises(ValueError, match="adv:"):
        TrainConfig(adv="free", init="x.pt").validate()


@pytest.mark.parametrize("name", ["cnn_fgsm", "cnn_pgd", "resnet18_pgd"])
def test_shipped_configs_are_valid(name):
    from training.cli import load_config_file

    cfg = TrainConfig.from_dict(load_config_file(str(ROOT / "configs" / f"{name}.toml"))).validate()
    assert cfg.adv in ("fgsm", "pgd") and cfg.init and cfg.adv_eps == [0.001, 0.01] and cfg.robust_val_images > 0


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "configs").glob("*.toml")))
def test_every_config_validates_and_adversarial_ones_stop_on_robustness_at_the_goals_eps(name):
    from training.cli import load_config_file

    cfg = TrainConfig.from_dict(load_config_file(str(ROOT / "configs" / f"{name}.toml"))).validate()
    if cfg.adv:  # wide eps ranges still stop early on PGD at eps 0.01 (catastrophic overfitting shows there)
        assert cfg.init and cfg.robust_val_images > 0 and (cfg.robust_val_eps or cfg.adv_eps[1]) == 0.01


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "training", "--events", "json", *args], capture_output=True, text=True,
                          cwd=ROOT)


def test_cli_refuses_adversarial_training_from_random_weights(tmp_path):
    res = _cli("train", "--out", str(tmp_path / "r"), "--adv", "pgd", "--data", str(tmp_path))
    assert res.returncode == 2 and "--init CHECKPOINT" in res.stderr and "crucial" in res.stderr
    res = _cli("train", "--out", str(tmp_path / "r"), "--adv", "pgd", "--init", str(tmp_path / "none.pt"))
    assert res.returncode == 2 and "--init: checkpoint" in res.stderr


def test_cli_adversarial_run_from_a_clean_checkpoint(make_dataset, tmp_path):
    root = make_dataset(per_class=3, test_per_class=1)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('[train]\narch = "cnn"\nbatch_size = 6\nval_fraction = 0.25\ndevice = "cpu"\n'
                   'model_kwargs = { blocks = 2, width = 4, hidden = 16, pool = 4, dropout = 0.0 }\n')
    clean = tmp_path / "clean"
    res = _cli("train", "--data", str(root), "--out", str(clean), "--config", str(cfg), "--epochs", "1",
               "--threads", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    adv = tmp_path / "adv"
    # no --arch / model_kwargs: they come from the clean checkpoint
    res = _cli("train", "--data", str(root), "--out", str(adv), "--adv", "fast", "--adv-eps", "0.002", "0.004",
               "--init", str(clean / "checkpoint.pt"), "--epochs", "1", "--batch-size", "6", "--val-fraction", "0.25",
               "--robust-val-images", "3", "--device", "cpu", "--threads", "1", "--keep-epochs")
    assert res.returncode == 0, res.stderr[-2000:]
    events = list(proto.iter_events(res.stdout.splitlines()))
    # --keep-epochs: the epoch's checkpoint kept beside checkpoint.pt (the trajectory `average` reads)
    kept = torch.load(adv / "epoch1.pt", weights_only=False)
    assert kept["epoch"] == 1 and (adv / "epoch1.pt").read_bytes() == (adv / "checkpoint.pt").read_bytes()
    assert any(e["type"] == "artifact_written" and e["kind"] == "epoch_checkpoint" for e in events)
    end = [e for e in events if e["type"] == "epoch_end"][0]
    assert 0.0 <= end["robust_val_acc"] <= 1.0
    summary = events[-1]["summary"]
    assert summary["best_checkpoint"] == str(adv / "best.pt") and (adv / "best.pt").is_file()
    recorded = json.loads((adv / "config.json").read_text())
    assert recorded["adv"] == "fast" and recorded["adv_eps"] == [0.002, 0.004]
    assert recorded["model_kwargs"] == TINY and recorded["provenance"]["init"]["sha256"]
    # a conflicting architecture is refused
    res = _cli("train", "--data", str(root), "--out", str(tmp_path / "bad"), "--adv", "pgd", "--arch", "resnet18",
               "--init", str(clean / "checkpoint.pt"))
    assert res.returncode == 2 and "--init" in res.stderr and "arch" in res.stderr
    # so is a validation split other than the start model's: it would hold scans that model trained on
    for flags in (["--seed", "1"], ["--val-fraction", "0.2"], ["--max-train-images", "8"]):
        res = _cli("train", "--data", str(root), "--out", str(tmp_path / "leak"), "--adv", "fast",
                   "--init", str(clean / "checkpoint.pt"), "--val-fraction", "0.25", *flags)
        assert res.returncode == 2 and "validation split would hold scans" in res.stderr, (flags, res.stderr[-500:])
        assert not (tmp_path / "leak").exists()


def test_robust_validation_subset_covers_every_class(make_dataset):
    # the splits list scans class by class: the first n of them would be one class only
    root = make_dataset(per_class=2, test_per_class=5)
    ds = D.MRIDataset(D.scan_split(root, "Testing"))
    labels = [int(ds[i][1]) for i in range(len(ds))]
    assert labels == sorted(labels)  # class by class, as the real splits
    stop = RobustEarlyStopping(make_loader(ds, 3, False, 0, 0), eps=0.01, steps=1, max_images=8)
    stop.measure(_model())
    x, y = stop._images
    assert x.shape == (8, 3, 224, 224) and sorted(set(y.tolist())) == [0, 1, 2, 3]
    assert sorted(y.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
