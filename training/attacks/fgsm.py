"""FGSM, the Fast Gradient Sign Method (Goodfellow et al. 2014; paper §4.2, Eq. 1, results §6.2).

Threat model: evasion at test time, white box.  The attacker knows the model's weights and
changes every pixel of an input image by at most ``eps`` (L-infinity), in one gradient step.

    x_adv = clip_[0,1]( x + eps * sign(grad_x J(theta, x, y)) )               (Eq. 1)

Targeted mode steps *down* the cross-entropy of the target class instead:
``x_adv = clip(x - eps * sign(grad_x J(theta, x, t)))``.

Parameters: ``eps`` (pixel scale, [0, 1]; the paper sweeps 0.001 to 0.1), ``targeted``,
``target_class`` (name or index; ``None`` = the labels passed in are the targets).

Example::

    >>> attack = FGSM(model, eps=0.01)          # doctest: +SKIP
    >>> x_adv = attack(images, labels)          # images: N x 3 x H x W in [0, 1]   # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import nn

from breakfix_desktop.core.attack_catalog import check_value

from .base import Attack, ClassRef, register


@register("fgsm")
class FGSM(Attack):
    """One signed-gradient step of size ``eps``; batched; untargeted or targeted."""

    def __init__(self, model: nn.Module, eps: float = 0.01, targeted: bool = False,
                 target_class: ClassRef = "notumor"):
        super().__init__(model, targeted=targeted, target_class=target_class)
        self.eps = check_value("fgsm", "eps", eps)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        grad = self.input_grad(x, labels)
        return (x + self.eps * grad.sign()).clamp_(0.0, 1.0)
