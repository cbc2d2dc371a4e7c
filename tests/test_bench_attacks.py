"""benchmarks/bench_attacks.py (ours vs torchattacks PGD) end to end on a tiny batch, and the
attack-speed changes it motivated: parameters' requires_grad is switched off during an attack and
always put back."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from training.attacks import FGSM, PGD
from training.models import VGGLikeCNN

from conftest import load_benchmark


def load_bench():
    return load_benchmark("bench_attacks.py")


def test_bench_attacks_tiny_run_writes_results(tmp_path, restore_threads, capsys):
    pytest.importorskip("torchattacks", reason="torchattacks (dev dependency) is not installed")
    bench = load_bench()
    out = tmp_path / "attacks.json"
    assert bench.main(["--model", "cnn", "--batch", "2", "--image-size", "32", "--repeats", "1", "--warmup", "0",
                       "--threads", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["benchmark"] == "attacks" and data["config"]["alpha"] == pytest.approx(0.0025)
    assert set(data["arms"]) == {"ours", "torchattacks"}
    assert data["ratio_ours_over_torchattacks"] > 0
    # same random start and the same model: the two PGDs agree to rounding
    assert data["agreement"]["max_abs_diff"] < 1e-6
    assert data["agreement"]["ours_max_perturbation"] <= 0.01 + 1e-6
    assert "threads" in data["environment"] and "torchattacks" in data["environment"]
    assert "ours / torchattacks" in capsys.readouterr().out


class Boom(Exception):
    pass


def test_attack_restores_requires_grad_and_modes_even_on_error():
    torch.manual_seed(0)
    model = VGGLikeCNN(blocks=2, width=4, hidden=8, pool=2)
    model.head[1].weight.requires_grad_(False)  # a partly frozen model (fine-tuning) keeps its flags
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    model.train()
    x = torch.rand(2, 3, 16, 16)
    y = torch.tensor([0, 1])
    seen = []

    class Probe(PGD):
        def forward(self, x, labels):
            seen.append(any(p.requires_grad for p in self.model.parameters()))
            return super().forward(x, labels)

    Probe(model, eps=0.02, alpha=0.01, steps=2)(x, y)
    assert seen == [False], "no parameter requires grad during the attack"
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert all(m.training for m in model.modules())

    class Failing(FGSM):
        def forward(self, x, labels):
            self.input_grad(x, labels)
            raise Boom

    with pytest.raises(Boom):
        Failing(model, eps=0.01)(x, y)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters()), "attacks never accumulate parameter gradients"


def test_pgd_leaves_the_callers_tensors_alone():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    x = torch.rand(3, 3, 8, 8)
    y = torch.tensor([0, 1, 2])
    x0, y0 = x.clone(), y.clone()
    for random_start in (False, True):
        adv = PGD(model, eps=0.05, alpha=0.02, steps=3, random_start=random_start)(x, y)
        assert torch.equal(x, x0) and torch.equal(y, y0)
        assert (adv - x).abs().max() <= 0.05 + 1e-6
