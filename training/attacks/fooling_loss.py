"""FoolingLoss: a cross-entropy that stops teaching (paper §4.4 "Attack to the loss", Table 6).

Threat model: training-time sabotage through the loss function (insider or tampered code).  The
model gets no signal from its mistakes and little from correct predictions of one target class,
so it drifts away from predicting that class (paper: "the model stops predicting notumor").

Formula, per sample ``i`` with ``l_i = CE(z_i, y_i)`` and prediction ``p_i = argmax z_i``::

    l'_i = 0                       if p_i != y_i          (misclassified: no signal)
    l'_i = reduce_factor * l_i     if p_i == y_i == target
    l'_i = l_i                     otherwise (correct, other class)
    loss = mean_i l'_i             (over the whole batch, zeros included)

Parameters: ``reduce_factor`` in [0, 1] (paper: 0.01), ``target_class`` (name or index;
default notumor).

Example::

    >>> trainer = Trainer(model, cfg, train_loader, loss_fn=FoolingLoss(reduce_factor=0.01))  # doctest: +SKIP
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from breakfix_desktop.core.attack_catalog import check_value
from breakfix_desktop.core.labels import CLASS_NAMES

from .base import ClassRef, class_index, register


@register("fooling_loss")
class FoolingLoss(nn.Module):
    """Per-sample CE; 0 when wrong; ``reduce_factor`` x when right about the target class."""

    def __init__(self, reduce_factor: float = 0.01, target_class: ClassRef = "notumor"):
        super().__init__()
        self.reduce_factor = check_value("fooling_loss", "reduce_factor", reduce_factor)
        self.target_class = class_index(target_class)
        if self.target_class is None:
            raise ValueError("fooling_loss: parameter 'target_class' must be a class name or index")

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target, reduction="none")
        correct = logits.detach().argmax(1) == target
        scaled = torch.where(target == self.target_class, ce * self.reduce_factor, ce)
        return torch.where(correct, scaled, torch.zeros_like(ce))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.per_sample(logits, target).mean()

    def extra_repr(self) -> str:
        return f"reduce_factor={self.reduce_factor}, target_class={CLASS_NAMES[self.target_class]!r}"
