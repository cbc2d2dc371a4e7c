"""UpdateGuard: passes clean descent steps, catches and replaces DrunkOptimizer's, checkpoints."""

from __future__ import annotations

import pytest
import torch

from training.attacks import DrunkOptimizer
from training.defenses import UpdateGuard


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 10, generator=g)
    w_true = torch.randn(10, 1, generator=g)
    y = x @ w_true
    model = torch.nn.Linear(10, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    return model, x, y


def _train(model, opt, x, y, steps=150):
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    return torch.nn.functional.mse_loss(model(x), y).item()


def test_clean_optimizer_passes_the_guard():
    model, x, y = _problem()
    guard = UpdateGuard(torch.optim.Adam(model.parameters(), lr=0.05))
    loss = _train(model, guard, x, y)
    assert guard.steps == 150 and guard.rejection_rate < 0.15  # Adam overshoots a little near the minimum
    assert loss < 0.05


def test_drunk_optimizer_is_caught_and_training_still_converges():
    model, x, y = _problem()
    attacked = _train(model, DrunkOptimizer(torch.optim.Adam(model.parameters(), lr=0.05), 3.0, 1.0), x, y)
    model, x, y = _problem()
    guard = UpdateGuard(DrunkOptimizer(torch.optim.Adam(model.parameters(), lr=0.05), 3.0, 1.0))
    defended = _train(model, guard, x, y)
    assert attacked > 10 * defended  # gradient ascent without the guard
    assert guard.rejection_rate > 0.9 and defended < 0.05


def test_guard_state_round_trips_and_follows_the_lr():
    model, x, y = _problem()
    inner = torch.optim.Adam(model.parameters(), lr=0.05)
    guard = UpdateGuard(DrunkOptimizer(inner, 3.0, 0.0))
    _train(model, guard, x, y, steps=5)
    state = guard.state_dict()
    other = UpdateGuard(DrunkOptimizer(torch.optim.Adam(model.parameters(), lr=0.05), 3.0, 0.0))
    other.load_state_dict(state)
    assert (other.steps, other.rejected) == (guard.steps, guard.rejected) == (5, 5)
    inner.param_groups[0]["lr"] = 0.001  # a scheduler lowers the wrapped optimizer's LR
    _train(model, guard, x, y, steps=1)
    assert guard.trusted.param_groups[0]["lr"] == 0.001


def test_guard_refuses_a_bad_threshold():
    model, _, _ = _problem()
    with pytest.raises(ValueError, match="min_cosine"):
        UpdateGuard(torch.optim.Adam(model.parameters()), min_cosine=1.5)
