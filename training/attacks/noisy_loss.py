"""NoisyLoss: cross-entropy computed on noisy logits (paper §4.4 "Attack to the loss", results §6.4).

Threat model: training-time sabotage by someone who controls the training code (an insider or
a tampered dependency) but not the data.  The goal is slower, less stable convergence.

Formula, with ``z`` the logits (N x K) and ``n`` i.i.d. standard normal noise of the same shape,
drawn fresh for every call and never differentiated::

    loss = CE(z + strength * n, y)          (mean over the batch)

At ``strength = 0`` it is exactly ``F.cross_entropy(z, y)`` (no noise is drawn).

Parameters: ``strength`` (standard deviation of the noise on each logit; the paper's "bias
strength" 0.1, 1.2, 2.0), ``seed`` (private generator per device; ``None`` = torch's global RNG).

Example::

    >>> trainer = Trainer(model, cfg, train_loader, loss_fn=NoisyLoss(strength=1.2, seed=0))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from breakfix_desktop.core.attack_catalog import check_value

from .base import SeededGenerators, register


@register("noisy_loss")
class NoisyLoss(nn.Module):
    """``CE(logits + strength * N(0, 1), y)``; a drop-in ``loss_fn(logits, y)``."""

    def __init__(self, strength: float = 1.0, seed: Optional[int] = None):
        super().__init__()
        self.strength = check_value("noisy_loss", "strength", strength)
        self.seed = check_value("noisy_loss", "seed", seed)
        self._generator = SeededGenerators(self.seed)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.strength == 0:
            return F.cross_entropy(logits, target)
        noise = torch.randn(logits.shape, generator=self._generator(logits.device),
                            device=logits.device, dtype=logits.dtype)
        return F.cross_entropy(logits + self.strength * noise, target)

    def extra_repr(self) -> str:
        return f"strength={self.strength}, seed={self.seed}"
