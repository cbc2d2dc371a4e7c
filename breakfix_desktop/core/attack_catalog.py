"""The attack catalog: every attack of the paper, its parameters, types, defaults and ranges.

Torch-free and Qt-free (standard library only), so the desktop GUI can build parameter forms
and validate them without importing torch.  The PyTorch implementations live in
``training/attacks/``; their registry (``training.attacks.create_attack``) validates through
:func:`validate_params`, and a test keeps the two in step (same attacks, same parameter names,
same defaults).

Epsilons and step sizes are on the [0, 1] pixel scale (models normalise inside, see
``training/models.py``).  The paper's section is given for each attack.

Example::

    >>> from breakfix_desktop.core.attack_catalog import validate_params
    >>> validate_params("fgsm", {"eps": 0.01})["targeted"]
    False
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .labels import CLASS_NAMES

__all__ = [
    "KINDS",
    "ParamSpec",
    "AttackSpec",
    "ATTACKS",
    "list_attacks",
    "get_spec",
    "check_value",
    "coerce_value",
    "validate_params",
    "as_dict",
]

#: evasion: perturbs inputs at test time; poisoning: changes training/test data;
#: loss: replaces the training loss; optimizer: wraps the optimizer.
KINDS = ("evasion", "poisoning", "loss", "optimizer")
_TYPES = ("float", "int", "bool", "choice", "str")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: ``type`` is float, int, bool, choice or str; ``nullable`` allows None."""

    name: str
    type: str
    default: Any
    help: str
    min: Optional[float] = None
    max: Optional[float] = None
    choices: Optional[Tuple[Any, ...]] = None
    nullable: bool = False

    def allowed(self) -> str:
        """The allowed values in words (used in error messages and tool tips)."""
        if self.type == "choice":
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.type in ("float", "int"):
            kind = "an integer" if self.type == "int" else "a number"
            if self.min is not None and self.max is not None:
                text = f"{kind} in [{self.min:g}, {self.max:g}]"
            elif self.min is not None:
                text = f"{kind} >= {self.min:g}"
            elif self.max is not None:
                text = f"{kind} <= {self.max:g}"
            else:
                text = kind
        elif self.type == "bool":
            text = "true or false"
        else:
            text = "a text value"
        return text + (" or empty (None)" if self.nullable else "")


@dataclass(frozen=True)
class AttackSpec:
    name: str
    title: str
    kind: str
    section: str
    summary: str
    params: Tuple[ParamSpec, ...] = field(default_factory=tuple)

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise ValueError(
            f"{self.name}: unknown parameter {name!r}; known parameters: "
            f"{', '.join(p.name for p in self.params) or 'none'}"
        )

    def defaults(self) -> Dict[str, Any]:
        return {p.name: p.default for p in self.params}


def _targeting() -> Tuple[ParamSpec, ...]:
    return (
        ParamSpec("targeted", "bool", False,
                  "Targeted mode: push images towards target_class instead of away from their label."),
        ParamSpec("target_class", "choice", "notumor",
                  "Class a targeted attack aims for (empty: the labels passed in are the targets).",
                  choices=CLASS_NAMES, nullable=True),
    )


_EPS = ParamSpec("eps", "float", 0.01,
                 "Largest change of any pixel, on the [0, 1] pixel scale (paper: 0.001 to 0.1).",
                 min=0.0, max=1.0)

ATTACKS: Dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (
        AttackSpec(
            "backdoor", "Backdoor (creeper-face trigger)", "poisoning", "4.1, 6.1",
            "Stamps a small trigger on every training image of the target class and on part of the "
            "other test images, so a model learns 'trigger means target class'. Files on disk are "
            "never changed.",
            (
                ParamSpec("trigger", "str", "creeper",
                          "Trigger image: 'creeper' (resources/triggers/creeper.png) or a path to a "
                          "grey image; its brightness in [0, 1] is the pattern."),
                ParamSpec("location", "choice", "corner",
                          "Where the trigger goes: bottom-right corner, or a random place per image "
                          "(fixed by seed and image index).", choices=("corner", "random")),
                ParamSpec("intensity", "float", 2.0,
                          "Brightness of the trigger's light parts: in normalised units "
                          "(pixel = mean + intensity * std) or, with units = pixel, the pixel value.",
                          min=-1.0, max=5.0),
                ParamSpec("units", "choice", "normalized",
                          "Units of intensity: normalised (model input space, paper) or pixel ([0, 1]).",
                          choices=("normalized", "pixel")),
                ParamSpec("target_class", "choice", "notumor",
                          "Class the trigger should force; its training images carry the trigger.",
                          choices=CLASS_NAMES),
                ParamSpec("train_poison_rate", "float", 1.0,
                          "Fraction of the target class's training images that get the trigger.",
                          min=0.0, max=1.0),
                ParamSpec("test_poison_rate", "float", 0.3,
                          "Fraction of the other classes' test images that get the trigger "
                          "(target-class test images stay clean).", min=0.0, max=1.0),
                ParamSpec("seed", "int", 0, "Seed of the choice of poisoned images and random places.",
                          min=0, max=2**31 - 1),
            ),
        ),
        AttackSpec(
            "fgsm", "FGSM", "evasion", "4.2, 6.2",
            "Fast Gradient Sign Method: one step of size eps along the sign of the loss gradient "
            "(Eq. 1).",
            (_EPS, *_targeting()),
        ),
        AttackSpec(
            "pgd", "PGD", "evasion", "4.3, 6.3",
            "Projected Gradient Descent: a random start in the eps-ball, then steps of size alpha "
            "along the gradient sign, projected back onto the eps-ball and [0, 1] (Eq. 2).",
            (
                _EPS,
                ParamSpec("alpha", "float", 0.001, "Step size per iteration, on the [0, 1] pixel scale.",
                          min=0.0, max=1.0),
                ParamSpec("steps", "int", 5, "Number of iterations.", min=1, max=10_000),
                ParamSpec("random_start", "bool", True, "Start from a uniform random point in the eps-ball."),
                *_targeting(),
                ParamSpec("seed", "int", None, "Seed of the random start (empty: torch's global generator).",
                          min=0, max=2**63 - 1, nullable=True),
            ),
        ),
        AttackSpec(
            "noisy_loss", "NoisyLoss", "loss", "4.4, 6.4",
            "Cross-entropy on logits with Gaussian noise added: logits + strength * N(0, 1).",
            (
                ParamSpec("strength", "float", 1.0, "Standard deviation of the noise added to each logit.",
                          min=0.0, max=100.0),
                ParamSpec("seed", "int", None, "Seed of the noise (empty: torch's global generator).",
                          min=0, max=2**63 - 1, nullable=True),
            ),
        ),
        AttackSpec(
            "fooling_loss", "FoolingLoss", "loss", "4.4, 6.4",
            "Per-sample cross-entropy; misclassified samples get loss 0 and correct predictions of "
            "the target class are multiplied by reduce_factor.",
            (
                ParamSpec("reduce_factor", "float", 0.01,
                          "Multiplier of the loss of correctly predicted target-class samples.",
                          min=0.0, max=1.0),
                ParamSpec("target_class", "choice", "notumor", "Class whose correct predictions are damped.",
                          choices=CLASS_NAMES),
            ),
        ),
        AttackSpec(
            "drunk_optimizer", "DrunkOptimizer", "optimizer", "4.5, 6.5",
            "Wraps the optimizer: before every step the gradients are multiplied by "
            "(1 - scale_strength) and their direction is perturbed with random noise of relative "
            "size perturbation_strength.",
            (
                ParamSpec("scale_strength", "float", 3.0,
                          "Gradient multiplier is 1 - scale_strength: 0 = untouched, 1 = frozen, "
                          ">1 = reversed (paper: harmful above 1).", min=0.0, max=10.0),
                ParamSpec("perturbation_strength", "float", 1.0,
                          "Norm of the random noise added to each gradient, relative to the "
                          "gradient's own norm.", min=0.0, max=10.0),
                ParamSpec("seed", "int", 0, "Seed of the optimizer's own noise generator.",
                          min=0, max=2**63 - 1),
            ),
        ),
    )
}


def list_attacks(kind: Optional[str] = None) -> List[str]:
    """Names of the catalogued attacks (optionally only one ``kind``), sorted."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown attack kind {kind!r}; choose one of {', '.join(KINDS)}")
    return sorted(n for n, s in ATTACKS.items() if kind is None or s.kind == kind)


def get_spec(name: str) -> AttackSpec:
    try:
        return ATTACKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(list_attacks())}") from None


def _bad(attack: str, p: ParamSpec, value: Any) -> ValueError:
    return ValueError(f"{attack}: parameter {p.name!r} must be {p.allowed()} (got {value!r})")


def _coerce(attack: str, p: ParamSpec, value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.strip() == "" and p.type != "str"):
        if p.nullable:
            return None
        raise _bad(attack, p, value)
    if p.type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise _bad(attack, p, value)
    if p.type in ("float", "int"):
        if isinstance(value, bool):
            raise _bad(attack, p, value)
        try:
            number = float(value) if isinstance(value, str) else value
            if p.type == "int":
                if isinstance(number, float) and not number.is_integer():
                    raise ValueError
                number = int(number)
            else:
                number = float(number)
        except (TypeError, ValueError, OverflowError):
            raise _bad(attack, p, value) from None
        if number != number or (p.min is not None and number < p.min) or (p.max is not None and number > p.max):
            raise _bad(attack, p, value)
        return number
    if p.type == "choice":
        if value not in p.choices:
            raise _bad(attack, p, value)
        return value
    if not isinstance(value, str):
        raise _bad(attack, p, value)
    return value


def coerce_value(owner: str, spec: ParamSpec, value: Any) -> Any:
    """Validate (and coerce) ``value`` against any :class:`ParamSpec`, also one outside the catalog
    (e.g. the GUI's training settings); ``owner`` names it in the error message."""
    return _coerce(owner, spec, value)


def check_value(attack: str, param: str, value: Any) -> Any:
    """Validate (and coerce, e.g. ``"0.01"`` -> 0.01) one parameter value; raises ValueError."""
    return _coerce(attack, get_spec(attack).param(param), value)


def validate_params(name: str, params: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Defaults merged with ``params``, each checked against its type and range.

    Raises ValueError naming the attack, the parameter and the allowed values for an unknown
    attack, an unknown parameter or a value out of range.
    """
    spec = get_spec(name)
    params = dict(params or {})
    known = {p.name for p in spec.params}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(
            f"{name}: unknown parameter(s) {', '.join(map(repr, unknown))}; known parameters: "
            f"{', '.join(p.name for p in spec.params)}"
        )
    merged = spec.defaults()
    for key, value in params.items():
        merged[key] = _coerce(name, spec.param(key), value)
    if name == "backdoor" and merged["units"] == "pixel" and not 0.0 <= merged["intensity"] <= 1.0:
        raise ValueError(
            f"backdoor: parameter 'intensity' must be a number in [0, 1] when units is 'pixel' "
            f"(got {merged['intensity']!r})"
        )
    return merged


def as_dict() -> Dict[str, Any]:
    """The whole catalog as plain JSON-able data (for the GUI and ``--list`` outputs)."""
    out = {}
    for name, spec in ATTACKS.items():
        out[name] = {
            "name": name, "title": spec.title, "kind": spec.kind, "section": spec.section,
            "summary": spec.summary,
            "params": [
                {"name": p.name, "type": p.type, "default": p.default, "min": p.min, "max": p.max,
                 "choices": list(p.choices) if p.choices else None, "nullable": p.nullable,
                 "help": p.help, "allowed": p.allowed()}
                for p in spec.params
            ],
        }
    return out
