"""UpdateGuard: an integrity check on every optimizer step, against DrunkOptimizer-style tampering.

Threat model: the optimizer (or the code between ``backward()`` and ``step()``) is compromised and
rescales or re-directs the gradients (paper §4.5, :class:`~training.attacks.DrunkOptimizer`); the
loss and the backward pass are trusted.  The guard sits outside the (possibly tampered) optimizer:

1. before the step it keeps the true gradients ``g`` (straight from ``backward()``) and the
   parameters ``w``;
2. it lets the wrapped optimizer step, then measures the update ``u = w' - w``;
3. a genuine descent step points downhill: ``cos(u, -g) >= min_cosine`` (Adam's preconditioned
   steps do; a sign-flipped or pure-noise step does not).  A failing step is rolled back and
   replaced by a step of the guard's own trusted Adam (same learning rate as the wrapped one, fed
   the true gradients), and counted in :attr:`rejected`.

So the model keeps learning at close to the clean rate and the tampering is *detected*: the
rejection rate is reported (a clean optimizer stays near 0 %, DrunkOptimizer at scale 3 near 100 %).
This is the "defended" run of the paper's Figure 6 (the paper describes its defense only as
gradient-noise-aware adversarial training; see docs/results.md).

Cost: one copy of the parameters and gradients per step.

Example::

    >>> guard = lambda opt: UpdateGuard(DrunkOptimizer(opt, scale_strength=3.0))      # doctest: +SKIP
    >>> Trainer(model, cfg, loader, optimizer_wrapper=guard).fit()                     # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import torch


class UpdateGuard:
    """Wraps an optimizer; rolls back and replaces every update that does not descend."""

    def __init__(self, optimizer: torch.optim.Optimizer, min_cosine: float = 0.0,
                 betas: tuple = (0.9, 0.999), eps: float = 1e-8):
        if not -1.0 <= float(min_cosine) < 1.0:
            raise ValueError(f"min_cosine must be in [-1, 1) (got {min_cosine!r})")
        self.optimizer = optimizer
        self.min_cosine = float(min_cosine)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        self.trusted = torch.optim.Adam(params, lr=optimizer.param_groups[0]["lr"], betas=betas, eps=eps)
        self.steps = 0
        self.rejected = 0
        self.last_cosine: Optional[float] = None

    # -- optimizer surface used by the engine and LR schedulers -------------------
    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @property
    def rejection_rate(self) -> float:
        return self.rejected / self.steps if self.steps else 0.0

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        before = [p.detach().clone() for p in params]
        grads = [p.grad.detach().clone() for p in params]
        self.optimizer.step()
        dot = torch.zeros((), dtype=torch.float64)
        u_sq = torch.zeros((), dtype=torch.float64)
        g_sq = torch.zeros((), dtype=torch.float64)
        for p, w, g in zip(params, before, grads):
            u = (p.detach() - w).double()
            dot -= (u * g.double()).sum().cpu()
            u_sq += u.pow(2).sum().cpu()
            g_sq += g.double().pow(2).sum().cpu()
        denom = (u_sq.sqrt() * g_sq.sqrt()).item()
        cosine = dot.item() / denom if denom > 0 else 1.0  # no gradient or no move: nothing to judge
        self.last_cosine = cosine
        self.steps += 1
        if cosine < self.min_cosine:
            self.rejected += 1
            for p, w, g in zip(params, before, grads):
                p.copy_(w)
                p.grad.copy_(g)
            lr = self.optimizer.param_groups[0]["lr"]
            for group in self.trusted.param_groups:
                group["lr"] = lr
            self.trusted.step()
        return loss

    # -- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {"inner": self.optimizer.state_dict(), "trusted": self.trusted.state_dict(),
                "guard": {"steps": self.steps, "rejected": self.rejected, "min_cosine": self.min_cosine}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["inner"])
        self.trusted.load_state_dict(state["trusted"])
        guard = state.get("guard", {})
        self.steps = int(guard.get("steps", 0))
        self.rejected = int(guard.get("rejected", 0))

    def __repr__(self) -> str:
        return f"UpdateGuard(min_cosine={self.min_cosine}, optimizer={self.optimizer!r})"
