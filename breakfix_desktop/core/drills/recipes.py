"""What the Drills view can launch: :class:`Recipe` (backend commands, single defenses, catalog
attacks, the DrunkOptimizer sweep, the backend's ``drill --list``), the configuration the backend
commands get (:func:`drill_config`, :func:`defense_config`) and :class:`ParamForm` (text values for
catalog :class:`~breakfix_desktop.core.attack_catalog.ParamSpec` objects, checked with the catalog's rules)."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .. import attack_catalog
from ..attack_catalog import ParamSpec, coerce_value, validate_params
from .run import ROLES

__all__ = [
    "DRILL_COMMAND_NOTE", "MODEL_PRESETS", "model_presets", "EVALUATE_SETTINGS", "AUDIT_SETTINGS", "SWEEP_SETTING",
    "AUGMENT_PARAMS", "ADVERSARIAL_PARAMS", "PATH_SETTINGS", "QUICK_SETTING", "THREADS_SETTING", "Recipe",
    "builtin_recipes", "recipes_from_listing", "drill_config", "defense_config", "parse_sweep_values",
    "FormError", "value_text", "ParamForm",
]

DRILL_COMMAND_NOTE = (
    "Attack and defense drills need the backend command 'python -m training drill', which this "
    "backend does not have yet (it arrives with the drills issue). Their parameter forms work and "
    "are validated now; launching them will be enabled when the backend lists them."
)


# --------------------------------------------------------------------------- recipes
#: Model presets: TrainConfig keys the GUI writes into the run's config file.
MODEL_PRESETS: Dict[str, Dict[str, Any]] = {
    "tiny": {"arch": "cnn", "model_kwargs": {"blocks": 2, "width": 4, "hidden": 16, "pool": 2},
             "title": "Tiny CNN (2 blocks x 4 channels; seconds per epoch, demos)"},
    "small": {"arch": "cnn", "model_kwargs": {"blocks": 3, "width": 8, "hidden": 64, "pool": 4},
              "title": "Small CNN (3 blocks x 8 channels)"},
    "resnet18": {"arch": "resnet18", "model_kwargs": {}, "title": "ResNet-18 (from scratch)"},
}


def model_presets(configs_dir: Optional[Path] = None) -> Dict[str, Dict[str, Any]]:
    """:data:`MODEL_PRESETS` plus one ``config:NAME`` preset per ``configs/*.toml`` (arch + model_kwargs)."""
    presets = {k: dict(v) for k, v in MODEL_PRESETS.items()}
    folder = configs_dir if configs_dir is not None else Path(__file__).resolve().parents[3] / "configs"
    for path in sorted(Path(folder).glob("*.toml")) if Path(folder).is_dir() else []:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            continue
        table = data.get("train", data)
        if isinstance(table, dict) and "arch" in table:
            presets[f"config:{path.stem}"] = {
                "arch": table["arch"], "model_kwargs": dict(table.get("model_kwargs", {})),
                "title": f"{path.stem} (configs/{path.name})",
            }
    return presets


def _train_settings(presets: Mapping[str, Any]) -> Tuple[ParamSpec, ...]:
    return (
        ParamSpec("model", "choice", "tiny" if "tiny" in presets else next(iter(presets)),
                  "Architecture and size: " + "; ".join(f"{k} = {v['title']}" for k, v in presets.items()),
                  choices=tuple(presets)),
        ParamSpec("epochs", "int", 3, "Training epochs.", min=1, max=1000),
        ParamSpec("batch_size", "int", 32, "Images per optimisation step.", min=1, max=4096),
        ParamSpec("lr", "float", 1e-3, "Adam learning rate (paper 1e-4; 1e-3 converges faster on CPU).",
                  min=1e-7, max=1.0),
        ParamSpec("max_train_images", "int", None,
                  "Class-stratified subset of Training for quick runs (empty: all images).",
                  min=1, max=10**7, nullable=True),
        ParamSpec("max_test_images", "int", None,
                  "Class-stratified subset of Testing (empty: all images).", min=1, max=10**7, nullable=True),
        ParamSpec("val_fraction", "float", 0.1,
                  "Share of Training held out for the learning-rate schedule (never the test split).",
                  min=0.0, max=0.49),
        ParamSpec("seed", "int", 0, "Seed of the data order, initial weights and subsets.", min=0, max=2**31 - 1),
    )


EVALUATE_SETTINGS: Tuple[ParamSpec, ...] = (
    ParamSpec("model_file", "str", "",
              "A training checkpoint (checkpoint.pt, evaluated with torch) or an exported .onnx model "
              "(evaluated with onnxruntime)."),
    ParamSpec("split", "choice", "Testing", "Which split to evaluate.", choices=("Testing", "Training")),
    ParamSpec("dedup", "choice", "none",
              "Also report the split without test images duplicated in Training: exact (SHA-256) or "
              "near (also perceptual near-duplicates).", choices=("none", "exact", "near")),
    ParamSpec("max_images", "int", None, "Class-stratified subset (empty: all images).",
              min=1, max=10**7, nullable=True),
)
AUDIT_SETTINGS: Tuple[ParamSpec, ...] = (
    ParamSpec("near_threshold", "int", 2,
              "Largest Hamming distance between 64-bit perceptual hashes counted as a near-duplicate.",
              min=0, max=64),
)
SWEEP_SETTING = ParamSpec(
    "sweep_values", "str", "0, 0.5, 1, 1.5, 2, 3",
    "DrunkOptimizer scale_strength values, one run each (the paper's Figure 5 family of curves).",
)
#: Single defenses (paper section 5) run as ``python -m training train`` with the defense's
#: TrainConfig keys, then ``evaluate`` - launched like *Train (clean)*, with their own parameter form.
AUGMENT_PARAMS: Tuple[ParamSpec, ...] = (
    ParamSpec("augment", "bool", True,
              "Augment the training split with the section 5.1 pipeline (flips, rotation, colour jitter, "
              "resized crop, erasing); validation and test images are never augmented."),
)
ADVERSARIAL_PARAMS: Tuple[ParamSpec, ...] = (
    ParamSpec("adv", "choice", "fgsm",
              "Adversarial training method (section 5.2): fgsm / pgd append attacked copies to each batch "
              "(the paper), fast = FGSM with random start, trades = TRADES.",
              choices=("fgsm", "pgd", "fast", "trades")),
    ParamSpec("adv_eps_min", "float", 0.001, "Smallest eps per batch, on the [0, 1] pixel scale.", min=0.0, max=1.0),
    ParamSpec("adv_eps_max", "float", 0.01, "Largest eps per batch (eps is drawn uniformly per batch).",
              min=0.0, max=1.0),
    ParamSpec("adv_steps", "int", 5, "PGD / TRADES inner steps.", min=1, max=1000),
    ParamSpec("trades_beta", "float", 6.0, "TRADES weight of the KL term.", min=0.0, max=100.0),
    ParamSpec("init", "str", "",
              "The clean checkpoint.pt adversarial training starts from (its architecture is used). Empty: "
              "random weights, which the paper warns against."),
    ParamSpec("robust_val_images", "int", 128,
              "Robust early stopping: PGD-10 accuracy on this many validation images per epoch (0: off).",
              min=0, max=10**6),
)
#: Settings whose value is a file or folder (the view adds a Browse button).
PATH_SETTINGS = {"model_file": "file", "init": "file"}
#: A backend drill's quick mode (``drill --quick``) and CPU threads (``--threads``).
QUICK_SETTING = ParamSpec(
    "quick", "bool", False,
    "The drill's quick mode (drill --quick): a small real subset and 1-2 epochs, for demos and checks. "
    "The drill's own quick subset and epochs replace the form's epochs and image limits.")
THREADS_SETTING = ParamSpec("threads", "int", None, "Torch CPU threads (empty: torch's choice).",
                            min=1, max=1024, nullable=True)


@dataclass(frozen=True)
class Recipe:
    """Something the Drills view can launch.

    ``kind``: ``command`` (a backend command that exists), ``attack`` (a catalog attack, needs the
    drill command), ``sweep`` (a family of attack runs) or ``backend`` (listed by ``drill --list``).
    ``settings`` are the run's own settings (training, evaluation); ``attack`` names the catalog
    entry whose parameter form is shown.
    """

    name: str
    title: str
    summary: str
    kind: str = "command"
    role: str = "clean"
    settings: Tuple[ParamSpec, ...] = ()
    attack: Optional[str] = None
    params: Optional[Tuple[ParamSpec, ...]] = None  # backend-listed recipes bring their own
    available: bool = True
    unavailable_reason: str = ""
    uses_device: bool = True
    needs_splits: Tuple[str, ...] = ("Training", "Testing")
    drill_settings: Optional[Mapping[str, Any]] = None  # a backend drill's settings and their defaults

    def param_specs(self) -> Tuple[ParamSpec, ...]:
        if self.params is not None:
            return self.params
        return attack_catalog.get_spec(self.attack).params if self.attack else ()


def builtin_recipes(presets: Optional[Mapping[str, Any]] = None) -> List[Recipe]:
    """The backend commands that exist, then every catalog attack and the sweep (unavailable)."""
    presets = presets if presets is not None else model_presets()
    train = _train_settings(presets)
    recipes = [
        Recipe("train-clean", "Train (clean)",
               "Train a classifier on the clean Training split (python -m training train), then "
               "evaluate its checkpoint on Testing for the classification report (evaluate).",
               settings=train),
        Recipe("evaluate", "Evaluate a model",
               "Classification report and confusion matrix of a checkpoint (torch) or an exported "
               "ONNX model (onnxruntime) on a split (python -m training evaluate).",
               settings=EVALUATE_SETTINGS, uses_device=False, needs_splits=()),
        Recipe("audit-data", "Audit data",
               "Counts per class and split, exact and near duplicates, train/test leakage and label "
               "conflicts of a data folder (python -m training audit-data).",
               settings=AUDIT_SETTINGS, uses_device=False, needs_splits=()),
    ]
    recipes += [
        Recipe("defense:augment", "Defense: augmentation (section 5.1)",
               "Train a classifier on the augmented Training split (python -m training train --augment), "
               "then evaluate it on Testing.",
               role="defended", settings=train, params=AUGMENT_PARAMS),
        Recipe("defense:adversarial", "Defense: adversarial training (section 5.2)",
               "Adversarial training (python -m training train --adv ...: FGSM, PGD, fast FGSM or TRADES), "
               "best from a clean checkpoint, then evaluate it on Testing.",
               role="defended", settings=train, params=ADVERSARIAL_PARAMS),
    ]
    for name in attack_catalog.list_attacks():
        spec = attack_catalog.get_spec(name)
        recipes.append(Recipe(
            f"attack:{name}", f"{spec.title} drill ({spec.kind})",
            f"{spec.summary} Paper section {spec.section}.",
            kind="attack", role="attacked", settings=train, attack=name,
            available=False, unavailable_reason=DRILL_COMMAND_NOTE,
        ))
    recipes.append(Recipe(
        "sweep:drunk_optimizer", "DrunkOptimizer scale-strength sweep (Figure 5)",
        "One DrunkOptimizer training run per scale_strength value, plotted as a family of curves.",
        kind="sweep", role="attacked", settings=(SWEEP_SETTING,) + train, attack="drunk_optimizer",
        available=False, unavailable_reason=DRILL_COMMAND_NOTE,
    ))
    return recipes


def _spec_from_dict(d: Mapping[str, Any]) -> ParamSpec:
    return ParamSpec(
        str(d["name"]), str(d.get("type", "str")), d.get("default"), str(d.get("help", "")),
        min=d.get("min"), max=d.get("max"),
        choices=tuple(d["choices"]) if d.get("choices") else None, nullable=bool(d.get("nullable", False)),
    )


def recipes_from_listing(listing: Any, presets: Optional[Mapping[str, Any]] = None) -> List[Recipe]:
    """Recipes from the backend's future ``python -m training drill --list`` output.

    Accepted shapes: a JSON list of recipe objects or ``{"recipes": [...]}``; each object has
    ``name`` and optionally ``title``, ``summary``, ``role`` (clean/attacked/defended), ``attack``
    (a catalog name: its parameter form is used) or ``params`` (catalog-style parameter dicts, as in
    :func:`~.attack_catalog.as_dict`).  Raises ValueError on anything else.
    """
    if isinstance(listing, (str, bytes)):
        listing = json.loads(listing)
    items = listing.get("recipes") if isinstance(listing, dict) else listing
    if not isinstance(items, list):
        raise ValueError("drill --list: expected a JSON list of recipes or {\"recipes\": [...]}")
    train = _train_settings(presets if presets is not None else model_presets())
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError(f"drill --list: every recipe needs a name (got {item!r})")
        role = item.get("role", "attacked")
        if role not in ROLES:
            raise ValueError(f"drill --list: recipe {item['name']!r} has unknown role {role!r}")
        attack = item.get("attack")
        if attack is not None:
            attack_catalog.get_spec(attack)
        params = tuple(_spec_from_dict(p) for p in item["params"]) if item.get("params") is not None else None
        settings = item.get("settings")
        if settings is not None and not isinstance(settings, dict):
            raise ValueError(f"drill --list: recipe {item['name']!r} has settings that are not an object")
        out.append(Recipe(
            f"drill:{item['name']}", str(item.get("title", item["name"])), str(item.get("summary", "")),
            kind="backend", role=role, settings=train + (QUICK_SETTING, THREADS_SETTING), attack=attack,
            params=params, drill_settings=settings,
        ))
    return out


def drill_config(recipe: Recipe, train: Mapping[str, Any], params: Mapping[str, Any]) -> Dict[str, Any]:
    """The ``--config`` object for ``python -m training drill``: the form's values for the settings
    the drill declares (``drill --list``), keeping the drill's own default where the form's value has
    another shape (e.g. the form's single ``eps`` vs the drill's list of eps values)."""
    declared = recipe.drill_settings
    values = {**{k: v for k, v in train.items() if k != "device"}, **params}
    if declared is None:
        return values

    def same_shape(default: Any, value: Any) -> bool:
        if default is None or value is None:
            return True
        if isinstance(default, bool) or isinstance(value, bool):
            return isinstance(default, bool) and isinstance(value, bool)
        if isinstance(default, (int, float)):
            return isinstance(value, (int, float)) and (isinstance(default, float) or isinstance(value, int))
        return isinstance(value, type(default))

    return {k: v for k, v in values.items() if k in declared and same_shape(declared[k], v)}


def defense_config(recipe_name: str, params: Mapping[str, Any]) -> Dict[str, Any]:
    """The TrainConfig keys of a single defense (``python -m training train``); ValueError with a
    message for the user when the parameters do not fit together."""
    if recipe_name == "defense:augment":
        return {"augment": bool(params.get("augment", True))}
    if recipe_name != "defense:adversarial":
        return {}
    lo, hi = params["adv_eps_min"], params["adv_eps_max"]
    if lo > hi:
        raise ValueError(f"adv_eps_min ({lo:g}) must not be larger than adv_eps_max ({hi:g})")
    out: Dict[str, Any] = {"adv": params["adv"], "adv_eps": [lo, hi], "adv_steps": params["adv_steps"],
                           "trades_beta": params["trades_beta"], "robust_val_images": params["robust_val_images"]}
    init = str(params.get("init") or "").strip()
    if init:
        if not Path(init).is_file():
            raise ValueError(f"init: the clean checkpoint {init} does not exist")
        out["init"] = init
    else:
        out["force_random_init"] = True  # the form said so: empty = random weights (the backend warns)
    return out


def parse_sweep_values(text: str) -> List[float]:
    """``"0, 0.5, 1"`` -> [0.0, 0.5, 1.0], each checked against DrunkOptimizer's scale_strength range."""
    parts = [p for p in str(text).replace(";", ",").replace(" ", ",").split(",") if p]
    if not parts:
        raise ValueError("sweep_values: give at least one scale_strength value, e.g. 0, 0.5, 1, 2")
    spec = attack_catalog.get_spec("drunk_optimizer").param("scale_strength")
    return [coerce_value("sweep_values", replace(spec, name="sweep_values"), p) for p in parts]


# --------------------------------------------------------------------------- forms
class FormError(ValueError):
    """Invalid form values; ``errors`` maps field name -> message."""

    def __init__(self, errors: Mapping[str, str]):
        self.errors = dict(errors)
        super().__init__("; ".join(self.errors.values()))


def value_text(value: Any) -> str:
    """A parameter value as the text a form shows."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class ParamForm:
    """Text values for ``specs``, validated with the catalog's rules.

    ``owner`` names the form in messages; with ``attack`` set the whole set is finally checked by
    :func:`~.attack_catalog.validate_params` (cross-field rules included).
    """

    def __init__(self, owner: str, specs: Sequence[ParamSpec], values: Optional[Mapping[str, Any]] = None,
                 attack: Optional[str] = None):
        self.owner = owner
        self.specs = tuple(specs)
        self.attack = attack
        self._text = {p.name: value_text(p.default) for p in self.specs}
        for k, v in (values or {}).items():
            if k in self._text:
                self._text[k] = value_text(v)

    @classmethod
    def for_attack(cls, name: str, values: Optional[Mapping[str, Any]] = None) -> "ParamForm":
        return cls(name, attack_catalog.get_spec(name).params, values, attack=name)

    def spec(self, name: str) -> ParamSpec:
        for p in self.specs:
            if p.name == name:
                return p
        raise KeyError(f"{self.owner}: no field {name!r}")

    def names(self) -> List[str]:
        return [p.name for p in self.specs]

    def text(self, name: str) -> str:
        return self._text[name]

    def set_text(self, name: str, text: Any) -> Optional[str]:
        """Set a field; returns its error message (None when valid)."""
        self.spec(name)
        self._text[name] = value_text(text) if not isinstance(text, str) else text
        return self.error(name)

    def error(self, name: str) -> Optional[str]:
        spec = self.spec(name)
        try:
            value = coerce_value(self.owner, spec, self._text[name])
            if spec.name == "sweep_values":
                parse_sweep_values(value)
        except ValueError as exc:
            return str(exc)
        return None

    def errors(self) -> Dict[str, str]:
        errs = {n: e for n in self.names() if (e := self.error(n))}
        if not errs and self.attack:
            try:
                validate_params(self.attack, self._raw())
            except ValueError as exc:
                errs["*"] = str(exc)
        return errs

    def _raw(self) -> Dict[str, Any]:
        return {n: coerce_value(self.owner, self.spec(n), self._text[n]) for n in self.names()}

    def values(self) -> Dict[str, Any]:
        """Typed values; raises :class:`FormError` listing every invalid field."""
        errs = self.errors()
        if errs:
            raise FormError(errs)
        raw = self._raw()
        return validate_params(self.attack, raw) if self.attack else raw

    def set_values(self, values: Mapping[str, Any]) -> None:
        for k, v in values.items():
            if k in self._text:
                self._text[k] = value_text(v)

