"""DrunkOptimizer: an optimizer wrapper that corrupts every update (paper §4.5, results §6.5).

Threat model: training-time sabotage of the optimisation step (insider or tampered training
code).  The optimizer first gets the correct gradients; the wrapper changes them just before the
wrapped optimizer's step, to slow down or wreck convergence.

Formulas, applied after ``backward()`` and before the wrapped ``step()``, to every parameter's
gradient ``g`` (one tensor at a time), with ``s = scale_strength`` and ``p = perturbation_strength``:

    1. magnitude:  g <- (1 - s) * g
    2. direction:  g <- g + p * ||g|| * n / ||n||,   n ~ N(0, I) of g's shape, ||.|| the L2 norm

Step 1 is skipped when ``s == 0`` and step 2 when ``p == 0``, so at zero strength the wrapper is
bit-identical to the wrapped optimizer.  With Adam (scale-invariant) a multiplier in (0, 1) changes
little, ``s = 1`` freezes training (zero gradients) and ``s > 1`` reverses it into gradient ascent,
which reproduces the paper's Figure 5 (stable up to 1, catastrophic and alike above).  Step 2 turns
the direction by a random angle (about 45 degrees at ``p = 1`` in high dimension).

The noise comes from the wrapper's own generator (one per device, seeded by ``seed``); its state is
part of :meth:`state_dict`, so a resumed run draws the same noise as an unbroken one.  ``param_groups``
and ``state`` are the wrapped optimizer's own objects, so LR schedulers (ReduceLROnPlateau included)
work on either the wrapper or the wrapped optimizer.

Parameters: ``scale_strength`` (paper fixes 3), ``perturbation_strength``, ``seed``.

Example::

    >>> opt = DrunkOptimizer(torch.optim.Adam(model.parameters(), lr=1e-4), scale_strength=3)  # doctest: +SKIP
    >>> Trainer(model, cfg, loader, optimizer_wrapper=lambda o: DrunkOptimizer(o, 3.0, 1.0))   # doctest: +SKIP
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, Optional

import torch
from torch.optim import Optimizer

from breakfix_desktop.core.attack_catalog import check_value

from .base import SeededGenerators, register


@register("drunk_optimizer")
class DrunkOptimizer(Optimizer):
    """Wraps ``optimizer``; rescales and perturbs the gradients before each of its steps."""

    def __init__(self, optimizer: Optimizer, scale_strength: float = 3.0,
                 perturbation_strength: float = 1.0, seed: int = 0):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        # Optimizer.__init__ would register the parameters a second time; set up only the hooks.
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self.optimizer = optimizer
        self.scale_strength = check_value("drunk_optimizer", "scale_strength", scale_strength)
        self.perturbation_strength = check_value("drunk_optimizer", "perturbation_strength", perturbation_strength)
        self.seed = check_value("drunk_optimizer", "seed", seed)
        self.drunk_steps = 0
        self._generator = SeededGenerators(self.seed)
        self._patch_step_function()

    # ------------------------------------------------------------------ passthrough
    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value):
        self.optimizer.param_groups = value

    @property
    def state(self):
        return self.optimizer.state

    @state.setter
    def state(self, value):
        self.optimizer.state = value

    @property
    def defaults(self):
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value):
        self.optimizer.defaults = value

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    # ------------------------------------------------------------------ the attack
    @torch.no_grad()
    def corrupt_gradients(self) -> None:
        """Apply formulas 1 and 2 of the module docstring to every gradient, in place."""
        s, p = self.scale_strength, self.perturbation_strength
        if s == 0 and p == 0:
            return
        for group in self.param_groups:
            for param in group["params"]:
                g = param.grad
                if g is None:
                    continue
                if g.is_sparse:
                    raise RuntimeError("DrunkOptimizer does not support sparse gradients")
                if s != 0:
                    g.mul_(1.0 - s)
                if p != 0:
                    noise = torch.randn(g.shape, generator=self._generator(g.device), device=g.device, dtype=g.dtype)
                    ratio = torch.linalg.vector_norm(g) / torch.linalg.vector_norm(noise).clamp_min(1e-30)
                    g.add_(noise.mul_(ratio * p))
        self.drunk_steps += 1

    def step(self, closure: Optional[Callable[[], float]] = None):
        """Compute the loss with ``closure`` (once) if given, corrupt the gradients, then step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.corrupt_gradients()
        self.optimizer.step()
        return loss

    # ------------------------------------------------------------------ checkpoints
    def _drunk_state(self) -> Dict[str, Any]:
        return {
            "scale_strength": self.scale_strength,
            "perturbation_strength": self.perturbation_strength,
            "seed": self.seed,
            "drunk_steps": self.drunk_steps,
            "rng": self._generator.state_dict(),
        }

    def _load_drunk_state(self, drunk: Dict[str, Any]) -> None:
        self.scale_strength = float(drunk["scale_strength"])
        self.perturbation_strength = float(drunk["perturbation_strength"])
        self.seed = int(drunk["seed"])
        self.drunk_steps = int(drunk.get("drunk_steps", 0))
        self._generator = SeededGenerators(self.seed)
        for key, rng_state in drunk.get("rng", {}).items():
            device = torch.device(key)
            if device.type == "cuda" and not torch.cuda.is_available():
                continue  # resumed without that GPU: its generator starts fresh from the seed
            self._generator(device).set_state(rng_state.cpu() if torch.is_tensor(rng_state) else rng_state)

    def state_dict(self) -> Dict[str, Any]:
        """The wrapped optimizer's state dict plus a ``"drunk"`` entry (strengths, seed, RNG state)."""
        out = dict(self.optimizer.state_dict())
        out["drunk"] = self._drunk_state()
        return out

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Accepts :meth:`state_dict` output, or a plain state dict of the wrapped optimizer."""
        state_dict = dict(state_dict)
        drunk = state_dict.pop("drunk", None)
        self.optimizer.load_state_dict(state_dict)
        if drunk is not None:
            self._load_drunk_state(drunk)

    def __getstate__(self) -> Dict[str, Any]:
        # like Optimizer.__getstate__: hooks and instance-level step patches are not pickled
        return {"optimizer": self.optimizer, "drunk": self._drunk_state()}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(state["optimizer"])
        self._load_drunk_state(state["drunk"])

    def __repr__(self) -> str:
        return (f"DrunkOptimizer(scale_strength={self.scale_strength}, perturbation_strength="
                f"{self.perturbation_strength}, seed={self.seed}, optimizer={self.optimizer!r})")
