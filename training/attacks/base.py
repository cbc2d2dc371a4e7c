"""Base class of the evasion attacks and the attack registry (torchattacks/timm conventions).

:class:`Attack` turns ``(images, labels)`` into adversarial images.  ``attack(x, y)`` calls
:meth:`Attack.forward` with the model switched to eval mode and its parameters' ``requires_grad``
off (every submodule's mode and every parameter's flag are put back afterwards, also on error),
on a detached copy of the inputs (never modified in place), and returns a detached tensor clamped
to [0, 1].  Inputs are pixels in [0, 1]: every model of
``training/models.py`` normalises inside, so ``eps`` is on the pixel scale.  Any ``nn.Module``
that maps pixels to logits works, an ensemble summing its members' logits included.

Modes: untargeted (default) increases the cross-entropy of the true label; targeted decreases the
cross-entropy of ``target_class`` (or, with ``target_class=None``, of the labels passed in).

Registry::

    >>> from training.attacks import create_attack, list_attacks
    >>> pgd = create_attack("pgd", model, eps=0.01, alpha=0.001, steps=5)   # doctest: +SKIP
    >>> x_adv = pgd(x, y)                                                    # doctest: +SKIP

``create_attack`` validates through the torch-free catalog
(:mod:`breakfix_desktop.core.attack_catalog`), so unknown names and out-of-range values raise
ValueError naming the parameter and its allowed range.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from breakfix_desktop.core import attack_catalog as catalog
from breakfix_desktop.core.labels import CLASS_NAMES

ClassRef = Union[int, str, None]


def class_index(target: ClassRef) -> Optional[int]:
    """Class name or index -> index (None stays None)."""
    if target is None:
        return None
    if isinstance(target, str):
        if target not in CLASS_NAMES:
            raise ValueError(f"unknown class {target!r}; choose one of {', '.join(CLASS_NAMES)}")
        return CLASS_NAMES.index(target)
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < len(CLASS_NAMES):
        raise ValueError(f"class index must be an integer in [0, {len(CLASS_NAMES) - 1}] (got {target!r})")
    return target


def _model_device(model: nn.Module) -> Optional[torch.device]:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


class Attack:
    """Base class of the evasion attacks (FGSM, PGD).  Subclasses implement :meth:`forward`."""

    #: registry name, set by :func:`register`
    name: str = ""

    def __init__(self, model: nn.Module, targeted: bool = False, target_class: ClassRef = "notumor"):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.targeted = bool(targeted)
        self.target_class = class_index(target_class)

    # ------------------------------------------------------------------ modes (torchattacks style)
    def set_mode_default(self) -> "Attack":
        self.targeted = False
        return self

    def set_mode_targeted(self, target_class: ClassRef = "notumor") -> "Attack":
        """Targeted mode towards ``target_class``; ``None`` means the labels given are the targets."""
        self.targeted = True
        self.target_class = class_index(target_class)
        return self

    # ------------------------------------------------------------------ helpers for subclasses
    def get_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The quantity the attack ascends: CE of the label, or minus CE of the target."""
        ce = F.cross_entropy(logits, labels)
        return -ce if self.targeted else ce

    def input_grad(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Gradient of :meth:`loss` with respect to ``x`` only (parameter grads stay untouched)."""
        x = x.detach().requires_grad_(True)
        cost = self.loss(self.get_logits(x), labels)
        return torch.autograd.grad(cost, x, retain_graph=False, create_graph=False)[0]

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Adversarial images for ``x``; ``labels`` are the true labels or (targeted) the targets."""
        raise NotImplementedError

    # ------------------------------------------------------------------ public call
    def __call__(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attack a batch ``x`` (N x C x H x W, pixels in [0, 1]) with labels ``y``.

        Without ``y`` the model's own predictions are used as labels.  Returns a new, detached
        tensor in [0, 1] on the model's device.
        """
        if not torch.is_tensor(x) or x.dim() < 2:
            raise ValueError("x must be a batched tensor of images (N x C x H x W)")
        device = _model_device(self.model) or x.device
        x = x.detach().to(device).clone()
        if not x.is_floating_point():
            raise ValueError(f"x must be floating point pixels in [0, 1], got {x.dtype}")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError("x must be pixels in [0, 1] (the models normalise inside)")
        modes = [(m, m.training) for m in self.model.modules()]
        # Only the input gradient is needed: parameters stop requiring grad during the attack, so
        # autograd neither records nor keeps anything for them (same values, less graph and memory).
        frozen = [p for p in self.model.parameters() if p.requires_grad]
        self.model.eval()
        try:
            for p in frozen:
                p.requires_grad_(False)
            if y is None:
                with torch.no_grad():
                    y = self.get_logits(x).argmax(1)
            y = y.detach().to(device).long().clone()
            if self.targeted and self.target_class is not None:
                y = torch.full_like(y, self.target_class)
            with torch.enable_grad():
                adv = self.forward(x, y)
        finally:
            for p in frozen:
                p.requires_grad_(True)
            for m, training in modes:
                m.training = training
        return adv.detach().clamp_(0.0, 1.0)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({fields})"

    def params(self) -> Dict[str, Any]:
        out = {p.name: getattr(self, p.name) for p in catalog.get_spec(self.name).params} if self.name else {}
        if "target_class" in out and out["target_class"] is not None:
            out["target_class"] = CLASS_NAMES[out["target_class"]]
        return out


# --------------------------------------------------------------------------- registry
_REGISTRY: Dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: registers an attack under ``name`` (must be in the catalog)."""
    if name not in catalog.ATTACKS:
        raise ValueError(f"attack {name!r} is not in breakfix_desktop.core.attack_catalog; describe it there first")

    def deco(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"attack {name!r} registered twice ({_REGISTRY[name].__name__}, {cls.__name__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def list_attacks(kind: Optional[str] = None) -> List[str]:
    """Registered attack names (optionally one kind of the catalog), sorted."""
    return sorted(n for n in _REGISTRY if kind is None or catalog.ATTACKS[n].kind == kind)


def get_attack_class(name: str) -> type:
    if name not in _REGISTRY:
        raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(list_attacks())}")
    return _REGISTRY[name]


def create_attack(name: str, subject: Any = None, **params: Any) -> Any:
    """Build attack ``name`` with ``params`` validated against the catalog.

    ``subject`` is what the attack acts on:

    * evasion (fgsm, pgd): the model (required) -> an :class:`Attack`;
    * optimizer (drunk_optimizer): the optimizer to wrap -> a ``DrunkOptimizer``; without it, a
      factory ``optimizer -> DrunkOptimizer`` usable as ``Trainer(optimizer_wrapper=...)``;
    * loss (noisy_loss, fooling_loss) and poisoning (backdoor): no subject -> the loss module or
      the :class:`~training.attacks.backdoor.Backdoor`.
    """
    cls = get_attack_class(name)
    kind = catalog.ATTACKS[name].kind
    merged = catalog.validate_params(name, params)
    if kind == "evasion":
        if subject is None:
            raise ValueError(f"{name}: an evasion attack needs the model to attack: create_attack({name!r}, model, ...)")
        return cls(subject, **merged)
    if kind == "optimizer":
        if subject is None:
            return lambda optimizer: cls(optimizer, **merged)
        return cls(subject, **merged)
    if subject is not None:
        raise ValueError(f"{name}: a {kind} attack takes no model or optimizer, only parameters")
    return cls(**merged)


class SeededGenerators:
    """One ``torch.Generator`` per device, all seeded with ``seed`` (``None``: torch's global RNG).

    Attacks that draw noise (PGD's random start, NoisyLoss, DrunkOptimizer) use it so a seeded
    attack is reproducible on CPU and GPU alike; ``state_dict``/``load_state_dict`` round-trip it.
    """

    def __init__(self, seed: Optional[int]):
        self.seed = seed
        self._by_device: Dict[str, torch.Generator] = {}

    def __call__(self, device: torch.device) -> Optional[torch.Generator]:
        if self.seed is None:
            return None
        key = str(device)
        if key not in self._by_device:
            self._by_device[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._by_device[key]

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {key: gen.get_state() for key, gen in self._by_device.items()}

    def reset(self) -> None:
        self._by_device = {}
