"""PGD, Projected Gradient Descent (Madry et al. 2017; paper §4.3, Eq. 2, results §6.3).

Threat model: evasion at test time, white box, L-infinity budget ``eps`` per pixel.  Starting
from a uniformly random point of the eps-ball around ``x`` (``random_start``), it takes ``steps``
signed-gradient steps of size ``alpha``, each followed by the projection onto the eps-ball and
onto the valid pixel range:

    x^{t+1} = Proj_{[0,1] ∩ B_inf(x, eps)}( x^t + alpha * sign(grad_x J(theta, x^t, y)) )   (Eq. 2)

The projection is ``min(max(x', x - eps), x + eps)`` then ``clamp(0, 1)``, so one step with
``alpha = eps`` and no random start gives exactly :class:`~training.attacks.fgsm.FGSM`.
Targeted mode descends the cross-entropy of the target class.

Parameters: ``eps``, ``alpha`` (pixel scale), ``steps``, ``random_start``, ``targeted``,
``target_class``, ``seed`` (random start from a private generator; ``None`` = torch's global one).
Paper's realistic setting: eps 0.01, alpha 0.001, 5 steps.

Example::

    >>> attack = PGD(model, eps=0.01, alpha=0.001, steps=5)    # doctest: +SKIP
    >>> x_adv = attack(images, labels)                         # doctest: +SKIP
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from breakfix_desktop.core.attack_catalog import check_value

from .base import Attack, ClassRef, SeededGenerators, register


@register("pgd")
class PGD(Attack):
    """Iterated FGSM with random start and projection onto the eps-ball and [0, 1]."""

    def __init__(self, model: nn.Module, eps: float = 0.01, alpha: float = 0.001, steps: int = 5,
                 random_start: bool = True, targeted: bool = False, target_class: ClassRef = "notumor",
                 seed: Optional[int] = None):
        super().__init__(model, targeted=targeted, target_class=target_class)
        self.eps = check_value("pgd", "eps", eps)
        self.alpha = check_value("pgd", "alpha", alpha)
        self.steps = check_value("pgd", "steps", steps)
        self.random_start = check_value("pgd", "random_start", random_start)
        self.seed = check_value("pgd", "seed", seed)
        self._generator = SeededGenerators(self.seed)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # [0, 1] ∩ B_inf(x, eps) = [max(x - eps, 0), min(x + eps, 1)], never empty for x in [0, 1]:
        # one clamp to these bounds picks exactly the value of min(max(x', x - eps), x + eps) then
        # clamp(0, 1) (comparisons only, no rounding), with one pass over the batch instead of three.
        lower = (x - self.eps).clamp_(min=0.0)
        upper = (x + self.eps).clamp_(max=1.0)
        if self.random_start:
            noise = torch.empty_like(x).uniform_(-self.eps, self.eps, generator=self._generator(x.device))
            adv = noise.add_(x).clamp_(0.0, 1.0)
        else:
            adv = x.clone()
        for _ in range(self.steps):
            grad = self.input_grad(adv, labels)
            # adv is ours (never the caller's tensor): update in place, alpha * sign as before
            adv = adv.detach().add_(grad.sign().mul_(self.alpha)).clamp_(lower, upper)
        return adv
