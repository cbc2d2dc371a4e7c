"""Adversarial training (paper §5.2) as :class:`~training.engine.Trainer` hooks, and robust early stopping.

Threat model: the evasion attacks of §4.2-4.3 (FGSM, PGD; white box, L-infinity budget ``eps`` on
the [0, 1] pixel scale).  The defense trains the classifier on attacked images so that a small
perturbation no longer flips its decision (Tables 3 and 4 compare the resulting CNN_FGSM, CNN_PGD,
ResNet_PGD and their ensemble with CNN_clean).

Three recipes, each an object whose :meth:`hooks` returns the ``batch_hook`` / ``loss_fn`` to pass
to the Trainer:

* :class:`AdversarialTraining` - **the paper's method** (§5.2): "adversarial examples are generated
  on the current batch ... these new attacked images are appended to the original batch", with
  "a range of epsilon values": per batch ``eps ~ U[eps_min, eps_max]`` (default [0.001, 0.01], the
  range of Tables 3-4 where the perturbation stays invisible), attack FGSM (Eq. 1) or PGD (Eq. 2,
  random start, ``steps`` steps of ``alpha``; default ``alpha = 2.5 * eps / steps``, Madry et al.
  2018).  The model then trains on ``[x; x_adv]`` with labels ``[y; y]`` - the batch doubles.
* :class:`FastAdversarialTraining` - "Fast is better than free" (Wong, Rice & Kolter 2020): FGSM
  from a uniform random start in the eps-ball with step ``alpha = 1.25 * eps``, projected back;
  the batch is *replaced* by its adversarial version (as in that paper).  One gradient per batch
  instead of PGD's ``steps``; prone to catastrophic overfitting, hence :class:`RobustEarlyStopping`.
* :class:`TradesLoss` - TRADES (Zhang et al. 2019):
  ``CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x_adv))`` with ``x_adv`` found by PGD
  *maximising the KL term* (start ``x + 0.001 * N(0, 1)``, as the reference code).  It needs the
  model inside the loss: its ``batch_hook`` computes ``x_adv`` and stashes it (with the model),
  leaves the batch clean, and its ``loss_fn`` runs the second forward pass on the stashed
  ``x_adv`` in training mode, exactly like the reference implementation (separate clean and
  adversarial forward passes, so BatchNorm sees each on its own).

Attacks are generated with the model in eval mode (BatchNorm running statistics, no dropout; the
attack base class restores every module's mode), which keeps the adversarial examples from
disturbing the running statistics.  The random draws (eps, PGD starts) use torch's global
generator, so ``seed_everything`` makes a run reproducible and checkpoints (which store the RNG
state) resume it bit for bit.

Paper §5.2 also says "it's crucial to use a pre-trained model that has been trained exclusively on
the original clean data": ``python -m training train --adv ...`` refuses to start without
``--init CHECKPOINT`` unless ``--force-random-init`` is given (``TrainConfig.validate``).

:class:`RobustEarlyStopping` is an ``epoch_hook``: after every epoch it measures PGD robust accuracy
on (up to) ``max_images`` validation images - never the test split - keeps the best-robust model
as ``best.pt`` and stops when robust accuracy falls more than ``patience_drop`` below the best
(catastrophic overfitting; Wong et al. 2020 stop on the same signal with a 0.2 drop).

Example::

    >>> at = AdversarialTraining("pgd", eps_min=0.001, eps_max=0.01, steps=5)        # doctest: +SKIP
    >>> stop = RobustEarlyStopping(val_loader, eps=0.01, best_path=run / "best.pt")  # doctest: +SKIP
    >>> Trainer(model, cfg, train_loader, **at.hooks(), epoch_hook=stop).fit()       # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import FGSM, PGD
from ..attacks.base import Attack
from ..engine import ADV_METHODS as METHODS

log = logging.getLogger(__name__)


def _check_range(eps_min: float, eps_max: float) -> tuple:
    eps_min, eps_max = float(eps_min), float(eps_max)
    if not 0.0 < eps_min <= eps_max <= 1.0:
        raise ValueError(f"eps range must satisfy 0 < eps_min <= eps_max <= 1 (got [{eps_min}, {eps_max}])")
    return eps_min, eps_max


class _EpsRange:
    """eps ~ U[eps_min, eps_max], one draw per batch from torch's global generator (CPU)."""

    def __init__(self, eps_min: float, eps_max: float):
        self.eps_min, self.eps_max = _check_range(eps_min, eps_max)
        self.last_eps: Optional[float] = None

    def draw_eps(self) -> float:
        u = float(torch.rand(()))
        self.last_eps = self.eps_min + u * (self.eps_max - self.eps_min)
        return self.last_eps

    def hooks(self) -> Dict[str, Any]:
        """Keyword arguments for :class:`~training.engine.Trainer`: ``batch_hook`` and ``loss_fn``."""
        return {"batch_hook": self.batch_hook, "loss_fn": getattr(self, "loss_fn", None)}

    def batch_hook(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):  # pragma: no cover - abstract
        raise NotImplementedError


class AdversarialTraining(_EpsRange):
    """Paper §5.2: append FGSM or PGD copies of every batch, eps drawn per batch from a range.

    ``alpha`` (PGD step) defaults to ``2.5 * eps / steps`` for the eps drawn (Madry et al. 2018), so
    every eps of the range gets a step that can reach the edge of its ball.
    """

    loss_fn = None  # plain cross-entropy over the doubled batch

    def __init__(self, method: str = "pgd", eps_min: float = 0.001, eps_max: float = 0.01,
                 alpha: Optional[float] = None, steps: int = 5):
        if method not in ("fgsm", "pgd"):
            raise ValueError(f"method must be 'fgsm' or 'pgd' (got {method!r}); "
                             "see FastAdversarialTraining / TradesLoss for the others")
        super().__init__(eps_min, eps_max)
        if alpha is not None and not 0.0 < float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in (0, 1] (got {alpha!r})")
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1 (got {steps!r})")
        self.method, self.alpha, self.steps = method, alpha, int(steps)

    def make_attack(self, model: nn.Module, eps: float) -> Attack:
        if self.method == "fgsm":
            return FGSM(model, eps=eps)
        alpha = self.alpha if self.alpha is not None else 2.5 * eps / self.steps
        return PGD(model, eps=eps, alpha=alpha, steps=self.steps, random_start=True)

    def batch_hook(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        eps = self.draw_eps()
        x_adv = self.make_attack(model, eps)(x, y)
        return torch.cat([x, x_adv]), torch.cat([y, y])

    def __repr__(self) -> str:
        return (f"AdversarialTraining(method={self.method!r}, eps=[{self.eps_min:g}, {self.eps_max:g}], "
                f"alpha={self.alpha!r}, steps={self.steps})")


class FastAdversarialTraining(_EpsRange):
    """FGSM with a random start, ``alpha = 1.25 * eps`` (Wong et al. 2020); replaces the batch.

    ``x_adv = Proj(x + delta + alpha * sign(grad))`` with ``delta ~ U[-eps, eps]``: exactly
    :class:`~training.attacks.PGD` with one step, ``alpha = alpha_ratio * eps`` and a random start.
    """

    loss_fn = None

    def __init__(self, eps_min: float = 0.001, eps_max: float = 0.01, alpha_ratio: float = 1.25):
        super().__init__(eps_min, eps_max)
        if not 0.0 < float(alpha_ratio) <= 10.0:
            raise ValueError(f"alpha_ratio must be in (0, 10] (got {alpha_ratio!r})")
        self.alpha_ratio = float(alpha_ratio)

    def make_attack(self, model: nn.Module, eps: float) -> Attack:
        return PGD(model, eps=eps, alpha=min(1.0, self.alpha_ratio * eps), steps=1, random_start=True)

    def batch_hook(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        eps = self.draw_eps()
        return self.make_attack(model, eps)(x, y), y

    def __repr__(self) -> str:
        return f"FastAdversarialTraining(eps=[{self.eps_min:g}, {self.eps_max:g}], alpha={self.alpha_ratio:g}*eps)"


class _KLAttack(Attack):
    """TRADES' inner maximisation: PGD on KL(f(x) || f(x')) within the eps-ball (labels unused)."""

    def __init__(self, model: nn.Module, eps: float, alpha: float, steps: int):
        super().__init__(model)
        self.eps, self.alpha, self.steps = float(eps), float(alpha), int(steps)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            p_clean = F.softmax(self.model(x), dim=1)
        lower, upper = (x - self.eps).clamp(min=0.0), (x + self.eps).clamp(max=1.0)
        adv = (x + 0.001 * torch.randn_like(x)).clamp(lower, upper)
        for _ in range(self.steps):
            adv = adv.detach().requires_grad_(True)
            kl = F.kl_div(F.log_softmax(self.model(adv), dim=1), p_clean, reduction="sum")
            grad = torch.autograd.grad(kl, adv)[0]
            adv = (adv.detach() + self.alpha * grad.sign()).clamp(lower, upper)
        return adv.detach()


class TradesLoss(_EpsRange):
    """TRADES (Zhang et al. 2019): ``CE(f(x), y) + beta * KL(f(x) || f(x_adv))``, batch mean.

    Use both halves together: ``Trainer(..., **TradesLoss(...).hooks())``.  ``batch_hook`` draws
    eps, finds ``x_adv`` by ``steps`` PGD steps of ``alpha`` (default ``2.5 * eps / steps``)
    maximising the KL term, stashes ``(model, x_adv)`` and returns the clean batch unchanged;
    the loss (``__call__(logits, y)``, ``logits`` = f(x) from the Trainer) takes the stash and adds
    the KL term computed on a second forward pass.  ``beta = 0`` is plain cross-entropy (the
    adversarial pass is skipped).  Called without a stash (or with one for another batch) the
    loss raises ``RuntimeError`` rather than silently training without the robustness term.
    """

    def __init__(self, beta: float = 6.0, eps_min: float = 0.001, eps_max: float = 0.01,
                 alpha: Optional[float] = None, steps: int = 5):
        super().__init__(eps_min, eps_max)
        if float(beta) < 0:
            raise ValueError(f"beta must be >= 0 (got {beta!r})")
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1 (got {steps!r})")
        self.beta, self.alpha, self.steps = float(beta), alpha, int(steps)
        self._stash: Optional[tuple] = None
        self.last_terms: Dict[str, float] = {}

    def batch_hook(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        eps = self.draw_eps()
        if self.beta > 0:
            alpha = self.alpha if self.alpha is not None else 2.5 * eps / self.steps
            self._stash = (model, _KLAttack(model, eps, alpha, self.steps)(x, y))
        else:
            self._stash = (model, None)
        return x, y

    def loss_fn(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self(logits, y)

    def kl_term(self, logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
        """``KL(softmax(logits) || softmax(adv_logits))`` averaged over the batch."""
        return F.kl_div(F.log_softmax(adv_logits, dim=1), F.softmax(logits, dim=1), reduction="batchmean")

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._stash is None:
            raise RuntimeError("TradesLoss: no adversarial batch stashed; pass TradesLoss.hooks() to the Trainer "
                               "(its batch_hook must run before the loss)")
        model, x_adv = self._stash
        self._stash = None
        ce = F.cross_entropy(logits, y)
        if self.beta == 0 or x_adv is None:
            self.last_terms = {"ce": float(ce.detach()), "kl": 0.0}
            return ce
        if len(x_adv) != len(logits):
            raise RuntimeError(f"TradesLoss: stashed {len(x_adv)} adversarial images for a batch of {len(logits)}")
        kl = self.kl_term(logits, model(x_adv))
        self.last_terms = {"ce": float(ce.detach()), "kl": float(kl.detach())}
        return ce + self.beta * kl

    def __repr__(self) -> str:
        return (f"TradesLoss(beta={self.beta:g}, eps=[{self.eps_min:g}, {self.eps_max:g}], alpha={self.alpha!r}, "
                f"steps={self.steps})")


def make_adversarial(method: str, eps_min: float = 0.001, eps_max: float = 0.01, alpha: Optional[float] = None,
                     steps: int = 5, trades_beta: float = 6.0):
    """The recipe object for ``method`` (``fgsm`` | ``pgd`` | ``fast`` | ``trades``; ``TrainConfig.adv``)."""
    if method in ("fgsm", "pgd"):
        return AdversarialTraining(method, eps_min, eps_max, alpha=alpha, steps=steps)
    if method == "fast":
        return FastAdversarialTraining(eps_min, eps_max)
    if method == "trades":
        return TradesLoss(trades_beta, eps_min, eps_max, alpha=alpha, steps=steps)
    raise ValueError(f"unknown adversarial training method {method!r}; choose one of {', '.join(METHODS)}")


def from_config(config) -> Optional[_EpsRange]:
    """The recipe a :class:`~training.engine.TrainConfig` asks for (``None`` when ``adv`` is empty)."""
    if not config.adv:
        return None
    return make_adversarial(config.adv, *config.adv_eps, alpha=config.adv_alpha, steps=config.adv_steps,
                            trades_beta=config.trades_beta)


# --------------------------------------------------------------------------- early stopping
class RobustEarlyStopping:
    """``epoch_hook``: PGD robust validation accuracy per epoch, ``best.pt``, stop on a drop.

    Each epoch it measures the accuracy of the model under PGD (``steps`` steps of ``alpha``,
    default ``eps / 4``, one random start from a generator seeded with ``seed`` so every epoch faces
    the same starts) on ``max_images`` images of ``val_loader`` (the validation split carved from
    Training) spread evenly over it, so every class is in (``robust_eval.spread_images``; until
    2026-12-07 they were the first ``max_images``, all glioma at the default 128), and writes it into the epoch's history row as ``robust_val_acc``.

    * A new best (strictly higher than every earlier epoch's) is saved as a full checkpoint at
      ``best_path`` (default: ``best.pt`` beside the trainer's checkpoint) and marked
      ``robust_best: true`` in the row; the row also carries ``robust_best_epoch``.
    * A value more than ``patience_drop`` below the best ends training
      (:meth:`~training.engine.Trainer.request_stop`; recorded as ``early_stop`` in the row and as
      a ``warning`` event): catastrophic overfitting (Wong et al. 2020), after which the last
      checkpoint is no longer the model to ship - ``best.pt`` is.

    The best so far is read from the trainer's history, so a resumed run continues correctly.
    ``measure(model) -> float`` replaces the PGD measurement (tests, other attacks).
    """

    def __init__(self, val_loader=None, eps: float = 0.01, alpha: Optional[float] = None, steps: int = 10,
                 max_images: int = 128, patience_drop: float = 0.2, best_path: Optional[Path] = None,
                 seed: int = 0, measure: Optional[Callable[[nn.Module], float]] = None):
        if measure is None and val_loader is None:
            raise ValueError("RobustEarlyStopping needs a validation loader (or a measure function)")
        if not 0 < float(patience_drop) <= 1:
            raise ValueError(f"patience_drop must be in (0, 1] (got {patience_drop!r})")
        self.val_loader, self.eps, self.steps = val_loader, float(eps), int(steps)
        self.alpha = float(alpha) if alpha is not None else self.eps / 4
        self.max_images, self.patience_drop, self.seed = int(max_images), float(patience_drop), int(seed)
        self.best_path = Path(best_path) if best_path else None
        self._measure = measure
        self._images: Optional[tuple] = None

    @property
    def description(self) -> str:
        return f"PGD-{self.steps} (eps {self.eps:g}, alpha {self.alpha:g}) on up to {self.max_images} validation images"

    def measure(self, model: nn.Module) -> float:
        if self._measure is not None:
            return float(self._measure(model))
        from ..robust_eval import attack_accuracy, spread_images

        if self._images is None:
            self._images = spread_images(self.val_loader, self.max_images)
        attack = PGD(model, eps=self.eps, alpha=self.alpha, steps=self.steps, random_start=True, seed=self.seed)
        return attack_accuracy(model, self._images, attack, batch_size=64)

    def __call__(self, trainer, row: Dict[str, Any]) -> None:
        acc = self.measure(trainer.model)
        earlier = [(h["robust_val_acc"], h["epoch"]) for h in trainer.history
                   if h is not row and h.get("robust_val_acc") is not None]
        best, best_epoch = max(earlier, key=lambda t: (t[0], -t[1])) if earlier else (None, None)
        row["robust_val_acc"] = acc
        if best is None or acc > best:
            row["robust_best"] = True
            row["robust_best_epoch"] = row["epoch"]
            path = self.best_path or (trainer.checkpoint_path.with_name("best.pt") if trainer.checkpoint_path else None)
            if path is not None:
                trainer.save_checkpoint(path)
                trainer.events.emit("artifact_written", kind="best_checkpoint", path=str(path))
            log.info("epoch %d: robust val acc %.4f (new best; %s)", row["epoch"], acc, self.description)
            return
        row["robust_best_epoch"] = best_epoch
        log.info("epoch %d: robust val acc %.4f (best %.4f at epoch %d)", row["epoch"], acc, best, best_epoch)
        if acc < best - self.patience_drop:
            trainer.request_stop(
                f"robust validation accuracy fell to {acc:.4f}, more than patience_drop {self.patience_drop:g} "
                f"below the best {best:.4f} (epoch {best_epoch}): catastrophic overfitting; the best-robust "
                f"model is kept in best.pt")


def early_stopping_from_config(config, val_loader, best_path: Optional[Path]) -> Optional[RobustEarlyStopping]:
    """Robust early stopping for an adversarial run (``None`` without ``adv``, a val split or images)."""
    if not config.adv or val_loader is None or config.robust_val_images <= 0:
        return None
    eps = config.robust_val_eps if config.robust_val_eps is not None else config.adv_eps[1]
    return RobustEarlyStopping(val_loader, eps=eps, steps=config.robust_val_steps,
                               max_images=config.robust_val_images, patience_drop=config.patience_drop,
                               best_path=best_path, seed=config.seed)
