"""The drill studio's Qt-free core: recipes, parameter forms, runs, run history and the run queue.

Torch-free and Qt-free (standard library, numpy, platformdirs).  The GUI (``_qt/qt_drills_view.py``)
is a thin view over :class:`DrillStudio`; the backend is ``python -m training`` run as a child
process (``_qt/qt_backend_job.py``) whose JSON-lines events (:mod:`.protocol`) feed a
:class:`DrillRun`.

Pieces:

* :class:`Recipe` - what can be launched.  The backend's commands that exist today (``train`` then
  ``evaluate`` = *Train (clean)*, ``evaluate``, ``audit-data``) and the single defenses (``train``
  with augmentation or adversarial training, then ``evaluate``) are available; every attack of the
  torch-free catalog (:mod:`.attack_catalog`) and the DrunkOptimizer scale-strength sweep are
  listed with their full parameter forms but marked unavailable until the backend grows
  ``python -m training drill`` (:func:`recipes_from_listing` reads its future ``drill --list``).
* :class:`ParamForm` - text values for a list of :class:`~.attack_catalog.ParamSpec`; each value is
  checked with the catalog's own rules (:func:`~.attack_catalog.coerce_value`,
  :func:`~.attack_catalog.validate_params`) and refused with a clear message before launch.
* :class:`DrillRun` - one launch: configuration, backend steps, status, every event, per-epoch and
  per-batch series (growable numpy buffers, so plotting 100k points stays cheap), the final
  classification reports; one :class:`SeriesData` per model of a multi-run drill (events tagged
  ``series``), the untagged events in the main series.  :meth:`DrillRun.apply` consumes protocol
  messages.
* :class:`RunHistory` - SQLite (config, events, results) in the per-user data folder or a given
  folder; the file is only created when the first run is recorded.  The studio's history writes on
  a background thread (creating the database, a running run's events about once a second, the
  run's record at its end), so the GUI thread never waits for SQLite; :meth:`DrillStudio.close`
  flushes it.
* :class:`RunQueue` - FIFO with one running run per device.
* :func:`compare_reports`, :func:`report_html`, :func:`report_json`, :func:`export_report` -
  results against a baseline run, exported as HTML + JSON.
"""

from __future__ import annotations

import atexit
import html
import importlib.util
import json
import logging
import os
import queue
import sqlite3
import threading
import time
import tomllib
import uuid
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import attack_catalog
from .attack_catalog import ParamSpec, coerce_value, validate_params
from .labels import CLASS_NAMES
from .protocol import ProtocolError, decode, validate

__all__ = [
    "ROLES", "ROLE_COLORS", "ROLE_TITLES", "STATUSES", "FINAL_STATUSES", "INSTALL_HINT", "DRILL_COMMAND_NOTE",
    "BackendStatus", "backend_status", "default_data_dir", "check_data_dir",
    "MODEL_PRESETS", "model_presets", "Recipe", "builtin_recipes", "recipes_from_listing",
    "FormError", "ParamForm", "Series", "SeriesData", "MAIN_SERIES", "DrillRun", "RunHistory", "HistoryEntry",
    "RunQueue",
    "device_lane", "lanes_conflict", "DrillStudio", "compare_reports", "report_json", "report_html",
    "export_report", "parse_sweep_values",
]

#: A run's role decides its colour on the plots (the paper's Figure 6: clean blue, attacked orange,
#: defended green).
ROLES = ("clean", "attacked", "defended")
ROLE_COLORS = {"clean": "#1f77b4", "attacked": "#ff7f0e", "defended": "#2ca02c"}
ROLE_TITLES = {"clean": "Clean", "attacked": "Attacked", "defended": "Defended"}
STATUSES = ("queued", "running", "ok", "failed", "crashed", "cancelled", "interrupted")
FINAL_STATUSES = ("ok", "failed", "crashed", "cancelled", "interrupted")
INSTALL_HINT = "pip install 'breakfix-desktop[train]'   (in a source checkout: make install)"
DRILL_COMMAND_NOTE = (
    "Attack and defense drills need the backend command 'python -m training drill', which this "
    "backend does not have yet (it arrives with the drills issue). Their parameter forms work and "
    "are validated now; launching them will be enabled when the backend lists them."
)
log = logging.getLogger(__name__)
DB_NAME = "drills.sqlite3"
SCHEMA_VERSION = 1
EPOCH_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr")


# --------------------------------------------------------------------------- backend / data
@dataclass(frozen=True)
class BackendStatus:
    """Can this install launch the training backend?  ``message`` says why not and how to fix it."""

    available: bool
    message: str
    torch: bool = False
    training: bool = False


def backend_status() -> BackendStatus:
    """Looks for ``torch`` and the ``training`` package without importing either."""

    def found(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    has_torch, has_training = found("torch"), found("training")
    if has_torch and has_training:
        return BackendStatus(True, "Training backend available (python -m training).", True, True)
    missing = " and ".join(n for n, ok in (("PyTorch", has_torch), ("the training package", has_training)) if not ok)
    return BackendStatus(
        False,
        f"This is a screening-only install: {missing} not installed, so drills and training cannot run "
        f"here. Install the training extra with:  {INSTALL_HINT}",
        has_torch, has_training,
    )


def default_data_dir() -> Optional[Path]:
    """``$BREAKFIX_DATA``, else ``../shared/data/brain-tumor-mri`` beside a source checkout, if present."""
    env = os.environ.get("BREAKFIX_DATA")
    candidates = [Path(env).expanduser()] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data" / "brain-tumor-mri")
    for path in candidates:
        if (path / "Training").is_dir():
            return path
    return None


def check_data_dir(path: Any, need_splits: Sequence[str] = ("Training", "Testing")) -> Path:
    """The data folder as a Path; ValueError with a clear message when it is not usable."""
    if not path or not str(path).strip():
        raise ValueError("Data folder: choose the folder that holds Training/ and Testing/")
    root = Path(str(path).strip()).expanduser()
    if not root.is_dir():
        raise ValueError(f"Data folder: {root} does not exist")
    missing = [s for s in need_splits if not (root / s).is_dir()]
    if missing:
        raise ValueError(f"Data folder: {root} has no {' or '.join(m + '/' for m in missing)} sub-folder "
                         "(expected Training/<class>/ and Testing/<class>/ with the four classes)")
    return root


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
    folder = configs_dir if configs_dir is not None else Path(__file__).resolve().parents[2] / "configs"
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


# --------------------------------------------------------------------------- runs
class Series:
    """An (x, y) float series in amortised-growth numpy buffers; ``x``/``y`` are views (no copies)."""

    __slots__ = ("_x", "_y", "_n")

    def __init__(self, capacity: int = 256):
        self._x = np.empty(capacity, dtype=np.float64)
        self._y = np.empty(capacity, dtype=np.float64)
        self._n = 0

    def append(self, x: float, y: float) -> None:
        if self._n == len(self._x):
            self._x = np.resize(self._x, 2 * len(self._x))
            self._y = np.resize(self._y, 2 * len(self._y))
        self._x[self._n] = x
        self._y[self._n] = y
        self._n += 1

    def __len__(self) -> int:
        return self._n

    @property
    def x(self) -> np.ndarray:
        return self._x[: self._n]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self._n]


#: Name of a run's main series: events without a ``series`` tag (plain train runs, old streams).
MAIN_SERIES = ""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class SeriesData:
    """One model's curves within a run: per-epoch rows and (x, y) series, per-batch training loss,
    classification reports.

    Multi-run drills (Figure 5's sweep, Figure 6's clean / attacked / defended) train several
    models in one backend process and tag ``progress``, ``epoch_end`` and ``metrics`` events with
    ``series`` (the model's name), ``role`` and ``param``; each tag gets one ``SeriesData``.
    """

    __slots__ = ("name", "role", "param", "epochs", "curves", "batch_loss", "reports")

    def __init__(self, name: str, role: Optional[str] = None, param: Optional[Dict[str, Any]] = None,
                 epochs: Optional[List[Dict[str, Any]]] = None):
        self.name = name
        self.role = role
        self.param = param
        self.epochs: List[Dict[str, Any]] = epochs if epochs is not None else []
        self.curves: Dict[str, Series] = {k: Series(64) for k in EPOCH_KEYS}
        self.batch_loss = Series(1024 if name == MAIN_SERIES else 256)
        self.reports: Dict[str, Dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"SeriesData({self.name!r}, role={self.role!r}, {len(self.epochs)} epochs)"

    @property
    def has_curves(self) -> bool:
        return bool(self.epochs) or len(self.batch_loss) > 0

    @property
    def final_test_acc(self) -> Optional[float]:
        """The last epoch's test accuracy (validation accuracy when the run has no test split)."""
        for row in reversed(self.epochs):
            for key in ("test_acc", "val_acc"):
                if _number(row.get(key)):
                    return float(row[key])
        return None

    def tag(self, msg: Mapping[str, Any]) -> None:
        """Take ``role`` / ``param`` from an event (the first ones that come)."""
        if self.role is None and isinstance(msg.get("role"), str):
            self.role = msg["role"]
        if self.param is None and isinstance(msg.get("param"), dict):
            self.param = dict(msg["param"])

    def add_progress(self, msg: Mapping[str, Any]) -> None:
        loss = msg.get("loss")
        if msg["phase"] == "train" and _number(loss) and msg["total"] > 0:
            self.batch_loss.append(msg["epoch"] - 1 + msg["step"] / msg["total"], float(loss))

    def add_epoch(self, msg: Mapping[str, Any]) -> None:
        self.epochs.append({k: msg.get(k) for k in ("epoch",) + EPOCH_KEYS})
        for key in EPOCH_KEYS:
            value = msg.get(key)
            if _number(value):
                self.curves[key].append(float(msg["epoch"]), float(value))

    def to_record(self) -> Dict[str, Any]:
        return {"name": self.name, "role": self.role, "param": self.param, "epochs": self.epochs,
                "reports": sorted(self.reports), "final_test_acc": self.final_test_acc}


def report_key(series: str, split: str) -> str:
    """``DrillRun.reports`` key of a classification report: the split, ``"series / split"`` if tagged."""
    return f"{series} / {split}" if series else split


@dataclass(repr=False)
class DrillRun:
    """One launch: its configuration and backend steps, and everything its events told us."""

    id: str
    recipe: str
    title: str
    role: str = "clean"
    config: Dict[str, Any] = field(default_factory=dict)
    steps: List[List[str]] = field(default_factory=list)
    files: Dict[str, Any] = field(default_factory=dict)  # relative name -> JSON written before step 0
    out_dir: str = ""
    device: str = "cpu"
    number: int = 0
    status: str = "queued"
    message: str = ""
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None
    step_index: int = 0
    stderr_tail: str = ""
    events: List[Dict[str, Any]] = field(default_factory=list)
    epochs: List[Dict[str, Any]] = field(default_factory=list)
    reports: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    artifacts: List[Tuple[str, str]] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    invalid_lines: List[Tuple[str, str]] = field(default_factory=list)
    step_results: List[Dict[str, Any]] = field(default_factory=list)
    progress: Optional[Dict[str, Any]] = None
    version: int = 0

    def __post_init__(self) -> None:
        main = SeriesData(MAIN_SERIES, epochs=self.epochs)
        #: name -> :class:`SeriesData`, in order of appearance; the main (untagged) series first.
        #: ``epochs``, ``series`` and ``batch_loss`` of the run are the main series' own objects.
        self.series_data: Dict[str, SeriesData] = {MAIN_SERIES: main}
        self.series: Dict[str, Series] = main.curves
        self.batch_loss = main.batch_loss
        #: ``reports`` key -> (series, split) for reports that came in a ``metrics`` event
        self.report_sources: Dict[str, Tuple[str, str]] = {}
        #: the series of the latest progress / epoch_end event (the model training now)
        self.current_series: str = MAIN_SERIES

    def __repr__(self) -> str:
        return f"DrillRun(#{self.number} {self.id} {self.recipe} {self.role} {self.status}, {len(self.events)} events)"

    # ------------------------------------------------------------------ labels
    @property
    def role_title(self) -> str:
        return ROLE_TITLES.get(self.role, self.role.title())

    @property
    def label(self) -> str:
        sweep = self.sweep
        extra = f" {sweep['param']}={sweep['value']:g}" if sweep else ""
        return f"#{self.number} {self.role_title}: {self.title}{extra}"

    @property
    def sweep(self) -> Optional[Dict[str, Any]]:
        s = self.config.get("sweep")
        return s if isinstance(s, dict) and "value" in s else None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    # ------------------------------------------------------------------ events
    def apply_line(self, line: str) -> Optional[Dict[str, Any]]:
        """Decode and apply one line; an invalid line is recorded (``invalid_lines``), not raised."""
        if not line.strip():
            return None
        try:
            msg = decode(line)
        except ProtocolError as exc:
            self.note_invalid(line, str(exc))
            return None
        self.apply(msg)
        return msg

    def note_invalid(self, line: str, reason: str) -> None:
        self.invalid_lines.append((line[:500], reason))
        self.version += 1

    # ------------------------------------------------------------------ series
    def series_of(self, msg: Mapping[str, Any]) -> SeriesData:
        """The :class:`SeriesData` an event belongs to (created on its first event): its ``series``
        tag, or the main series for untagged events."""
        name = msg.get("series")
        name = name if isinstance(name, str) and name else MAIN_SERIES
        data = self.series_data.get(name)
        if data is None:
            data = self.series_data[name] = SeriesData(name)
        data.tag(msg)
        return data

    @property
    def tagged_series(self) -> List[SeriesData]:
        """The tagged series (one per model of a multi-run drill), in order of appearance."""
        return [d for name, d in self.series_data.items() if name != MAIN_SERIES]

    def plot_series(self) -> List[SeriesData]:
        """The series to draw: the main one alone (untagged runs, also before any data came), else
        the tagged ones (and the main one too if it has curves of its own)."""
        main = self.series_data[MAIN_SERIES]
        tagged = [d for d in self.tagged_series if d.has_curves]
        if not tagged:
            return [main]
        return ([main] if main.has_curves else []) + tagged

    @property
    def multi_series(self) -> bool:
        """More than one curve per plot (a drill that trained several models)."""
        return len(self.plot_series()) > 1

    def final_test_accs(self) -> Dict[str, Optional[float]]:
        """Series name -> its last epoch's test accuracy (series with epochs; main series as "")."""
        return {d.name: d.final_test_acc for d in self.series_data.values() if d.epochs}

    def sweep_families(self) -> Dict[str, Tuple[str, float, List[float]]]:
        """Series of this run that form a parameter sweep: name -> (param key, value, family values).

        A family is the series of one role whose ``param`` objects differ in a numeric key (the
        paper's Figure 5: ``{"scale_strength": 0 | 1 | 3, "perturbation_strength": 1}``, tagged
        role ``attacked``), or every series of role ``sweep`` with a numeric param.  Colours follow
        the value along the sweep colour map."""
        groups: Dict[str, List[SeriesData]] = {}
        for d in self.tagged_series:
            if d.has_curves and isinstance(d.param, dict):
                groups.setdefault(d.role or self.role, []).append(d)
        out: Dict[str, Tuple[str, float, List[float]]] = {}
        for role, members in groups.items():
            keys = [k for k in members[0].param
                    if all(_number(m.param.get(k)) for m in members)]
            varying = [k for k in keys if len({float(m.param[k]) for m in members}) > 1]
            key = varying[0] if varying else (keys[0] if role == "sweep" and keys else None)
            if key is None:
                continue
            values = [float(m.param[key]) for m in members]
            for m, v in zip(members, values):
                out[m.name] = (key, v, values)
        return out

    def apply(self, msg: Dict[str, Any]) -> None:
        """Consume one validated protocol message."""
        self.events.append(msg)
        type_ = msg["type"]
        if type_ == "progress":
            self.progress = msg
            data = self.series_of(msg)
            if data.name != MAIN_SERIES or msg["phase"] == "train":
                self.current_series = data.name
            data.add_progress(msg)
        elif type_ == "epoch_end":
            data = self.series_of(msg)
            self.current_series = data.name
            data.add_epoch(msg)
        elif type_ == "metrics":
            data = self.series_of(msg)
            key = report_key(data.name, msg["split"])
            data.reports[msg["split"]] = msg["report"]
            self.reports[key] = msg["report"]
            self.report_sources[key] = (data.name, msg["split"])
        elif type_ == "artifact_written":
            self.artifacts.append((msg["kind"], msg["path"]))
        elif type_ == "warning":
            self.warnings.append(msg["message"])
        elif type_ == "error":
            self.errors.append(msg["message"])
        elif type_ == "run_finished":
            self.step_results.append({"status": msg["status"], "summary": msg.get("summary")})
        self.version += 1

    # ------------------------------------------------------------------ lifecycle
    def mark_started(self) -> None:
        self.status, self.started = "running", time.time()
        self.version += 1

    def finish(self, status: str, message: str = "", stderr_tail: str = "") -> None:
        if status not in FINAL_STATUSES:
            raise ValueError(f"unknown final status {status!r}")
        self.status, self.message, self.finished = status, message, time.time()
        if stderr_tail:
            self.stderr_tail = stderr_tail
        self.version += 1

    # ------------------------------------------------------------------ results
    @property
    def report_key(self) -> Optional[str]:
        """Key (in ``reports``) of the main classification report: the untagged Testing/test report,
        else the first untagged one, else (multi-run drills tag every report with its series) the
        first series' Testing/test report, else the first report."""
        untagged = [k for k in self.reports if self.report_sources.get(k, (MAIN_SERIES, k))[0] == MAIN_SERIES]
        for key in ("Testing", "test"):
            if key in untagged:
                return key
        if untagged:
            return untagged[0]
        for key in self.reports:
            if self.report_sources.get(key, ("", key))[1] in ("Testing", "test"):
                return key
        return next(iter(self.reports), None)

    @property
    def report(self) -> Optional[Dict[str, Any]]:
        """The main classification report (see :attr:`report_key`)."""
        key = self.report_key
        return None if key is None else self.reports[key]

    @property
    def summary(self) -> Optional[Dict[str, Any]]:
        """The last step's run_finished summary."""
        return self.step_results[-1]["summary"] if self.step_results else None

    @property
    def final_test_acc(self) -> Optional[float]:
        """The main report's accuracy, else the main series' last test accuracy, else (multi-run
        drills) the last series' (see :meth:`final_test_accs` for every series)."""
        if self.report is not None:
            return self.report.get("accuracy")
        if self.epochs:
            return self.epochs[-1].get("test_acc")
        last = next((d for d in reversed(self.tagged_series) if d.epochs), None)
        return None if last is None else last.final_test_acc

    @property
    def final_series(self) -> Optional[str]:
        """Name of the series :attr:`final_test_acc` comes from when it is a tagged one, else None."""
        if self.report is not None or self.epochs:
            return None
        last = next((d for d in reversed(self.tagged_series) if d.epochs), None)
        return None if last is None else last.name

    def duration(self) -> Optional[float]:
        if self.started is None:
            return None
        return (self.finished or time.time()) - self.started

    def progress_text(self) -> str:
        """One line for the status area: step, epoch and batch progress."""
        parts = []
        if len(self.steps) > 1:
            cmd = self.steps[min(self.step_index, len(self.steps) - 1)][0]
            parts.append(f"step {self.step_index + 1}/{len(self.steps)} ({cmd})")
        epochs = self.config.get("train", {}).get("epochs")
        p = self.progress
        current = self.series_data.get(self.current_series)
        if current is not None and current.name:  # a multi-run drill: which model trains now
            parts.append(current.name)
        if p is not None:
            parts.append(f"epoch {p['epoch']}" + (f"/{epochs}" if epochs else ""))
            parts.append(f"batch {p['step']}/{p['total']}")
            if isinstance(p.get("loss"), (int, float)):
                parts.append(f"loss {p['loss']:.4f}")
            if p.get("images_per_s"):
                parts.append(f"{p['images_per_s']:.0f} img/s")
        epochs_rows = current.epochs if current is not None else self.epochs
        if epochs_rows and epochs_rows[-1].get("test_acc") is not None:
            parts.append(f"test acc {100 * epochs_rows[-1]['test_acc']:.1f} %")
        return " · ".join(parts)

    def fraction_done(self) -> float:
        """0..1 progress over all steps (training steps weighted by epochs)."""
        if self.is_final:
            return 1.0
        n = max(len(self.steps), 1)
        inner = 0.0
        p = self.progress
        epochs = self.config.get("train", {}).get("epochs")
        if p is not None and epochs and self.steps and self.steps[min(self.step_index, n - 1)][0] in ("train", "drill"):
            inner = min(1.0, (p["epoch"] - 1 + p["step"] / max(p["total"], 1)) / epochs)
        return min(1.0, (self.step_index + inner) / n)

    def to_record(self) -> Dict[str, Any]:
        """Everything but the events, JSON-able (the history row)."""
        return {
            "id": self.id, "recipe": self.recipe, "title": self.title, "role": self.role, "config": self.config,
            "steps": self.steps, "out_dir": self.out_dir, "device": self.device, "number": self.number,
            "status": self.status, "message": self.message, "created": self.created, "started": self.started,
            "finished": self.finished, "stderr_tail": self.stderr_tail,
            "results": {"reports": self.reports, "epochs": self.epochs, "artifacts": self.artifacts,
                        "series": [d.to_record() for d in self.tagged_series],
                        "summary": self.summary, "warnings": self.warnings[-50:], "errors": self.errors,
                        "invalid_lines": self.invalid_lines[-50:]},
        }

    def copy_config(self) -> Dict[str, Any]:
        return json.loads(json.dumps(self.config))


# --------------------------------------------------------------------------- history
@dataclass(frozen=True)
class HistoryEntry:
    id: str
    number: int
    recipe: str
    title: str
    role: str
    status: str
    created: float
    finished: Optional[float]
    test_acc: Optional[float]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    number INTEGER NOT NULL,
    recipe TEXT NOT NULL,
    title TEXT NOT NULL,
    role TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    finished REAL,
    test_acc REAL,
    config TEXT NOT NULL,      -- JSON: recipe settings, attack params, data, device
    record TEXT NOT NULL       -- JSON: DrillRun.to_record() (steps, results, stderr tail)
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,       -- one protocol message, JSON
    PRIMARY KEY (run_id, seq)
);
"""


class _HistoryWriter:
    """One thread with its own SQLite connection that performs a :class:`RunHistory`'s writes in
    order, so the caller (the GUI thread) never waits for SQLite: creating the database (the WAL
    switch and schema commit are disk syncs), inserting events, saving records.  Operations queued
    while one is being written are batched into one transaction.  Errors are kept in ``errors``
    (and logged), never raised into the caller."""

    def __init__(self, path: Path):
        self.path = path
        self.queue: "queue.Queue[Optional[Callable[[sqlite3.Connection], None]]]" = queue.Queue()
        self.errors: List[str] = []
        self._thread = threading.Thread(target=self._loop, name="drill-history-writer", daemon=True)
        self._thread.start()
        _LIVE_WRITERS.add(self)

    def submit(self, op: Callable[[sqlite3.Connection], None]) -> None:
        self.queue.put(op)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every queued write is committed; False if ``timeout`` seconds passed first."""
        if not self._thread.is_alive():
            return self.queue.unfinished_tasks == 0
        if timeout is None:
            self.queue.join()
            return True
        deadline = time.monotonic() + timeout
        with self.queue.all_tasks_done:
            while self.queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.queue.all_tasks_done.wait(left)
        return True

    def close(self, timeout: Optional[float] = None) -> bool:
        """Write what is queued, then stop the thread."""
        _LIVE_WRITERS.discard(self)
        if not self._thread.is_alive():
            return True
        self.queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        conn: Optional[sqlite3.Connection] = None
        stop = False
        while not stop:
            batch = [self.queue.get()]
            while True:  # everything queued meanwhile goes into the same transaction
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            ops = [op for op in batch if op is not None]
            stop = len(ops) < len(batch)
            try:
                if ops:
                    if conn is None:
                        conn = _open_db(self.path, create=True, check_same_thread=True)
                    with conn:
                        for op in ops:
                            op(conn)
            except Exception as exc:  # noqa: BLE001 - kept and reported, never kills the thread
                message = f"drill history {self.path}: {type(exc).__name__}: {exc}"
                self.errors.append(message)
                log.error("%s", message)
            finally:
                for _ in batch:
                    self.queue.task_done()
        if conn is not None:
            conn.close()


#: writers with queued work, by database: a reader of the same file flushes them first, and they
#: are flushed when the interpreter exits (nothing queued is lost when the app closes).
_LIVE_WRITERS: "weakref.WeakSet[_HistoryWriter]" = weakref.WeakSet()


@atexit.register
def _flush_writers_at_exit() -> None:
    for writer in list(_LIVE_WRITERS):
        writer.close(timeout=30)


def _open_db(path: Path, create: bool, check_same_thread: bool = True) -> Optional[sqlite3.Connection]:
    if not create and not path.is_file():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=10, check_same_thread=check_same_thread)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit appends to the log without a disk sync (syncs happen at checkpoints);
        # the database stays consistent after a crash, at worst the last commits are missing
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            conn.commit()
        elif row[0] > SCHEMA_VERSION:
            raise RuntimeError(f"{path}: drill history schema {row[0]} is newer than this app ({SCHEMA_VERSION})")
    except BaseException:
        conn.close()
        raise
    return conn


_UPSERT_RUN = (
    "INSERT INTO runs (id, number, recipe, title, role, status, created, finished, test_acc, config, record)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET number=excluded.number,"
    " recipe=excluded.recipe, title=excluded.title, role=excluded.role, status=excluded.status,"
    " created=excluded.created, finished=excluded.finished, test_acc=excluded.test_acc,"
    " config=excluded.config, record=excluded.record"
)  # an upsert, not INSERT OR REPLACE: REPLACE deletes the row, and ON DELETE CASCADE its events


class RunHistory:
    """Drill runs in SQLite (``folder/drills.sqlite3``): config, every event, results.

    The database file is created by the first :meth:`save`; reading a folder without one gives an
    empty history (opening the GUI never writes anything).

    ``background=True`` (the drill studio): writes are queued to a writer thread with its own
    connection (:class:`_HistoryWriter`), so the caller never waits for SQLite - not for creating
    the database, not for saving a run's events.  :meth:`append_events` stores a running run's new
    events incrementally, :meth:`save` then only adds the rest.  Reads first wait for the queued
    writes of every writer of the same file in this process (read-your-writes), :meth:`flush`
    waits explicitly and :meth:`close` flushes; queued writes are also flushed at interpreter exit.
    Without ``background`` every write happens at once in the caller's thread.
    """

    def __init__(self, folder: Optional[Path] = None, background: bool = False):
        if folder is None:
            from .quarantine import default_store_dir

            folder = default_store_dir()
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.background = background
        self._conn: Optional[sqlite3.Connection] = None
        self._writer: Optional[_HistoryWriter] = None
        #: run id -> how many of its events are stored (or queued); only runs this object wrote
        self._stored_events: Dict[str, int] = {}

    # ------------------------------------------------------------------ connections
    def _connect(self, create: bool) -> Optional[sqlite3.Connection]:
        """The reading (and, without ``background``, writing) connection; None when there is no
        database yet and ``create`` is false."""
        self._flush_same_file()
        if self._conn is not None:
            return self._conn
        self._conn = _open_db(self.path, create)
        return self._conn

    def _flush_same_file(self) -> None:
        for writer in list(_LIVE_WRITERS):
            if writer.path == self.path:
                writer.flush()

    def _write(self, op: Callable[[sqlite3.Connection], None]) -> None:
        if not self.background:
            conn = self._connect(create=True)
            with conn:
                op(conn)
            return
        if self._writer is None or not self._writer._thread.is_alive():
            self._writer = _HistoryWriter(self.path)
        elif self._writer not in _LIVE_WRITERS:
            _LIVE_WRITERS.add(self._writer)
        self._writer.submit(op)

    @property
    def write_errors(self) -> List[str]:
        """Errors of background writes (empty when every write succeeded)."""
        return list(self._writer.errors) if self._writer is not None else []

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every queued write is in the database (True), or ``timeout`` seconds."""
        return self._writer.flush(timeout) if self._writer is not None else True

    def close(self) -> None:
        """Write everything queued, stop the writer thread, close the connections."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ writes
    def _events_op(self, run: DrillRun) -> Optional[Callable[[sqlite3.Connection], None]]:
        """The write of the run's events not stored yet (all of them, replacing any stored ones,
        the first time this object writes the run).  Only references are taken here; the JSON is
        encoded by whoever runs the operation (the writer thread)."""
        start = self._stored_events.get(run.id)
        events = run.events[start or 0:]
        self._stored_events[run.id] = (start or 0) + len(events)
        run_id = run.id

        def op(conn: sqlite3.Connection) -> None:
            if start is None:
                conn.execute("DELETE FROM events WHERE run_id = ?", (run_id,))
            conn.executemany("INSERT OR REPLACE INTO events (run_id, seq, event) VALUES (?,?,?)",
                             ((run_id, (start or 0) + i, json.dumps(e)) for i, e in enumerate(events)))

        return op if (events or start is None) else None

    def save(self, run: DrillRun, with_events: bool = True) -> None:
        """Store the run's record (config, status, results) and with ``with_events`` its events
        (only those not stored yet by :meth:`append_events` or an earlier save)."""
        row = (run.id, run.number, run.recipe, run.title, run.role, run.status, run.created, run.finished,
               run.final_test_acc, json.dumps(run.config), json.dumps(run.to_record()))
        events = self._events_op(run) if with_events else None

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(_UPSERT_RUN, row)
            if events is not None:
                events(conn)

        self._write(op)

    def append_events(self, run: DrillRun) -> int:
        """Store the events the run received since the last call (a running run, saved before);
        returns how many were queued."""
        before = self._stored_events.get(run.id, 0)
        op = self._events_op(run)
        if op is not None:
            self._write(op)
        return self._stored_events[run.id] - before

    def stored_events(self, run_id: str) -> int:
        """How many of the run's events this object has stored or queued."""
        return self._stored_events.get(run_id, 0)

    # ------------------------------------------------------------------ reads
    def entries(self) -> List[HistoryEntry]:
        """All runs, newest first (no events loaded)."""
        conn = self._connect(create=False)
        if conn is None:
            return []
        rows = conn.execute("SELECT id, number, recipe, title, role, status, created, finished, test_acc FROM runs"
                            " ORDER BY created DESC").fetchall()
        return [HistoryEntry(*row) for row in rows]

    def next_number(self) -> int:
        conn = self._connect(create=False)
        if conn is None:
            return 1
        return int(conn.execute("SELECT COALESCE(MAX(number), 0) FROM runs").fetchone()[0]) + 1

    def load(self, run_id: str) -> DrillRun:
        """A stored run rebuilt from its events (series and reports as when it ran)."""
        conn = self._connect(create=False)
        row = conn.execute("SELECT record FROM runs WHERE id = ?", (run_id,)).fetchone() if conn else None
        if row is None:
            raise KeyError(f"no drill run {run_id!r} in {self.path}")
        rec = json.loads(row[0])
        run = DrillRun(rec["id"], rec["recipe"], rec["title"], rec["role"], rec["config"], rec["steps"],
                       out_dir=rec["out_dir"], device=rec["device"], number=rec["number"], created=rec["created"])
        for (text,) in conn.execute("SELECT event FROM events WHERE run_id = ? ORDER BY seq", (run_id,)):
            try:
                run.apply(validate(json.loads(text)))
            except (ProtocolError, json.JSONDecodeError) as exc:
                run.note_invalid(text, str(exc))
        results = rec.get("results", {})
        run.reports = results.get("reports", run.reports) or run.reports
        # tagged series are rebuilt from the events; the record's "series" (optional: older records
        # lack it) restores their epochs when the events were not stored
        for item in results.get("series") or []:
            if isinstance(item, dict) and item.get("name") and item["name"] not in run.series_data:
                data = run.series_data[item["name"]] = SeriesData(item["name"], item.get("role"), item.get("param"))
                for row in item.get("epochs") or []:
                    if isinstance(row, dict) and _number(row.get("epoch")):
                        data.add_epoch(row)
        run.invalid_lines = [tuple(x) for x in results.get("invalid_lines", [])] or run.invalid_lines
        status = rec["status"]
        # a run still queued/running in the database belonged to a session that ended
        run.status = status if status in FINAL_STATUSES else "interrupted"
        run.message = rec["message"] if status in FINAL_STATUSES else "the app closed before this run finished"
        run.started, run.finished, run.stderr_tail = rec["started"], rec["finished"], rec["stderr_tail"]
        run.step_index = max(len(run.steps) - 1, 0)
        return run

    def delete(self, run_id: str) -> None:
        if not self.path.is_file() and not self._stored_events and self._writer is None:
            return
        self._stored_events.pop(run_id, None)
        self._write(lambda conn: conn.execute("DELETE FROM runs WHERE id = ?", (run_id,)))


# --------------------------------------------------------------------------- queue
def device_lane(device: str) -> str:
    """The device a run occupies: ``cpu``, ``cuda:N`` (``cuda`` = ``cuda:0``) or ``*`` for ``auto``
    (it may pick either, so it waits for every other run and every other run waits for it)."""
    device = (device or "auto").strip().lower()
    if device == "auto":
        return "*"
    if device == "cuda":
        return "cuda:0"
    return device


def lanes_conflict(a: str, b: str) -> bool:
    return a == "*" or b == "*" or a == b


class RunQueue:
    """FIFO of runs; at most one running run per device lane (:func:`device_lane`)."""

    def __init__(self) -> None:
        self.pending: List[DrillRun] = []
        self.running: List[DrillRun] = []

    def add(self, run: DrillRun) -> None:
        self.pending.append(run)

    def remove(self, run: DrillRun) -> bool:
        if run in self.pending:
            self.pending.remove(run)
            return True
        return False

    def busy_lanes(self) -> List[str]:
        return [device_lane(r.device) for r in self.running]

    def next_startable(self) -> Optional[DrillRun]:
        """The oldest pending run whose device is free and that no older pending run on the same
        device precedes (order is kept per device)."""
        blocked = list(self.busy_lanes())
        for run in self.pending:
            lane = device_lane(run.device)
            if not any(lanes_conflict(lane, b) for b in blocked):
                return run
            blocked.append(lane)
        return None

    def start(self, run: DrillRun) -> None:
        self.pending.remove(run)
        self.running.append(run)

    def done(self, run: DrillRun) -> None:
        if run in self.running:
            self.running.remove(run)
        self.remove(run)

    def __len__(self) -> int:
        return len(self.pending) + len(self.running)


# --------------------------------------------------------------------------- studio
Listener = Callable[[str, Optional[DrillRun]], None]


class DrillStudio:
    """The Drills view's model: recipes, the runs of this session and history, the queue.

    Listeners (:meth:`subscribe`) are called with ``(what, run)``: ``"queued"``, ``"started"``,
    ``"finished"``, ``"removed"``, ``"recipes"``, ``"history"``.  Per-event updates are *not*
    announced (views poll ``run.version`` on a timer).
    """

    def __init__(self, store_dir: Optional[Path] = None, runs_dir: Optional[Path] = None,
                 data_dir: Optional[Path] = None, configs_dir: Optional[Path] = None,
                 status: Optional[BackendStatus] = None):
        # writes go to a background thread: the GUI never waits for SQLite (benchmarks/bench_drill_ui.py)
        self.history = RunHistory(store_dir, background=True)
        self.runs_dir = Path(runs_dir) if runs_dir else self.history.folder / "drill-runs"
        self.data_dir = data_dir if data_dir is not None else default_data_dir()
        self.presets = model_presets(configs_dir)
        self.backend = status if status is not None else backend_status()
        self.recipes: List[Recipe] = builtin_recipes(self.presets)
        self.backend_recipes_note = ""
        self.queue = RunQueue()
        self.runs: Dict[str, DrillRun] = {}
        self._listeners: List[Listener] = []
        self._number = self.history.next_number()
        self.baseline_id: Optional[str] = None
        #: seconds between incremental saves of a running run's events (:meth:`persist_events`)
        self.persist_interval = 1.0
        self._persisted_at: Dict[str, float] = {}
        self._history_loaded = False  # the stored runs are read once, then kept in ``runs``

    # ------------------------------------------------------------------ listeners
    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(self, what: str, run: Optional[DrillRun] = None) -> None:
        for listener in list(self._listeners):
            listener(what, run)

    # ------------------------------------------------------------------ recipes
    def recipe(self, name: str) -> Recipe:
        for r in self.recipes:
            if r.name == name:
                return r
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(r.name for r in self.recipes)}")

    def set_backend_recipes(self, listing: Any) -> List[Recipe]:
        """Use the backend's ``drill --list``: its recipes become available and replace the
        unavailable catalog placeholders."""
        recipes = recipes_from_listing(listing, self.presets)
        keep = [r for r in self.recipes if r.kind == "command"]  # backend commands and single defenses
        self.recipes = keep + recipes
        self.backend_recipes_note = f"{len(recipes)} drill recipe(s) listed by the backend."
        self._emit("recipes")
        return recipes

    def forms(self, recipe: Recipe) -> Tuple[ParamForm, Optional[ParamForm]]:
        """(settings form, attack parameter form or None) for a recipe."""
        settings = ParamForm(recipe.title, recipe.settings)
        specs = recipe.param_specs()
        if not specs:
            return settings, None
        if recipe.params is None and recipe.attack:
            params = ParamForm.for_attack(recipe.attack)
            if recipe.kind == "sweep":  # the swept parameter comes from sweep_values
                params = ParamForm(recipe.attack, [p for p in specs if p.name != "scale_strength"],
                                   attack=None)
        else:
            params = ParamForm(recipe.title, specs)
        return settings, params

    # ------------------------------------------------------------------ building runs
    def prepare(self, recipe_name: str, settings: Mapping[str, Any], params: Optional[Mapping[str, Any]] = None,
                data_dir: Any = None, device: str = "auto", role: Optional[str] = None) -> List[DrillRun]:
        """Validate everything and build the run(s) (a sweep gives one per value); nothing starts.

        Raises ValueError with a message for the user: unavailable recipe, invalid setting or
        parameter, missing data folder or model file.
        """
        recipe = self.recipe(recipe_name)
        if not recipe.available:
            raise ValueError(f"{recipe.title} cannot be launched yet. {recipe.unavailable_reason}")
        if not self.backend.available:
            raise ValueError(self.backend.message)
        s_form, p_form = self.forms(recipe)
        s_form.set_values(settings)
        s_vals = s_form.values()
        p_vals: Dict[str, Any] = {}
        if p_form is not None:
            p_form.set_values(params or {})
            p_vals = p_form.values()
        role = role or recipe.role
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)} (got {role!r})")
        device = (device or "auto").strip()
        if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
            raise ValueError(f"Device must be auto, cpu, cuda or cuda:N (got {device!r})")
        if not recipe.uses_device:
            device = "cpu"
        data = check_data_dir(data_dir, recipe.needs_splits)
        if recipe.kind == "sweep":
            values = parse_sweep_values(s_vals.pop("sweep_values"))
            group = uuid.uuid4().hex[:8]
            return [self._build(recipe, dict(s_vals), validate_params(recipe.attack, {**p_vals, "scale_strength": v}),
                                data, device, role, sweep={"param": "scale_strength", "value": v, "group": group})
                    for v in values]
        return [self._build(recipe, s_vals, p_vals, data, device, role)]

    def _build(self, recipe: Recipe, s: Dict[str, Any], p: Dict[str, Any], data: Path, device: str, role: str,
               sweep: Optional[Dict[str, Any]] = None) -> DrillRun:
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        out = self.runs_dir / run_id
        config: Dict[str, Any] = {"recipe": recipe.name, "settings": s, "params": p, "data": str(data),
                                  "device": device, "role": role}
        if sweep:
            config["sweep"] = sweep
        files: Dict[str, Any] = {}
        if recipe.name == "evaluate":
            model_file = str(s.get("model_file", "")).strip()
            if not model_file:
                raise ValueError(f"{recipe.title}: choose a model file (a checkpoint.pt or an .onnx model)")
            if not Path(model_file).is_file():
                raise ValueError(f"{recipe.title}: model file {model_file} does not exist")
            flag = "--onnx" if model_file.lower().endswith(".onnx") else "--checkpoint"
            step = ["evaluate", flag, model_file, "--data", str(data), "--split", s["split"],
                    "--out", str(out / "report.json")]
            if s["dedup"] != "none":
                step += ["--dedup", s["dedup"]]
            if s.get("max_images"):
                step += ["--max-images", str(s["max_images"])]
            steps = [step]
        elif recipe.name == "audit-data":
            steps = [["audit-data", str(data), "--out", str(out / "audit.json"),
                      "--near-threshold", str(s["near_threshold"])]]
        else:
            preset = self.presets[s["model"]]
            train = {"arch": preset["arch"], "model_kwargs": preset.get("model_kwargs", {}),
                     "epochs": s["epochs"], "batch_size": s["batch_size"], "lr": s["lr"], "seed": s["seed"],
                     "val_fraction": s["val_fraction"], "max_train_images": s["max_train_images"],
                     "max_test_images": s["max_test_images"], "device": device}
            config["train"] = train
            evaluate = ["evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--data", str(data),
                        "--out", str(out / "report.json")]
            if s["max_test_images"]:
                evaluate += ["--max-images", str(s["max_test_images"])]
            if recipe.name in ("train-clean", "defense:augment", "defense:adversarial"):
                train.update(defense_config(recipe.name, p))
                files["train-config.json"] = train
                steps = [["train", "--data", str(data), "--out", str(out), "--config", str(out / "train-config.json"),
                          "--device", device], evaluate]
            else:
                quick = bool(s.get("quick"))
                drill_train = {k: v for k, v in train.items()
                               if not (quick and k in ("epochs", "max_train_images", "max_test_images"))}
                files["drill-config.json"] = drill_config(recipe, drill_train, p)
                name = recipe.name.split(":", 1)[1]
                # the drill evaluates on its own (metrics events, report.json)
                steps = [["drill", name, "--data", str(data), "--out", str(out),
                          "--config", str(out / "drill-config.json"), "--device", device]
                         + (["--quick"] if quick else [])
                         + (["--threads", str(s["threads"])] if s.get("threads") else [])]
        run = DrillRun(run_id, recipe.name, recipe.title, role, config, steps, files=files, out_dir=str(out),
                       device=device, number=self._number)
        self._number += 1
        return run

    @staticmethod
    def materialise(run: DrillRun) -> None:
        """Create the run folder and write its config files (called just before step 0 starts)."""
        out = Path(run.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, content in run.files.items():
            (out / name).write_text(json.dumps(content, indent=2), encoding="utf-8")

    # ------------------------------------------------------------------ lifecycle
    def submit(self, runs: Iterable[DrillRun]) -> List[DrillRun]:
        runs = list(runs)
        for run in runs:
            self.runs[run.id] = run
            self.queue.add(run)
            self._emit("queued", run)
        return runs

    def rerun(self, run_id: str) -> List[DrillRun]:
        """Queue a fresh run with the same recipe, settings, parameters, data and device."""
        old = self.get(run_id)
        cfg = old.config
        recipe = self.recipe(cfg["recipe"])
        params = dict(cfg.get("params", {}))
        settings = dict(cfg.get("settings", {}))
        if recipe.kind == "sweep":  # re-run just this member of the family
            return self.submit([self._build(recipe, settings, params, Path(cfg["data"]), cfg["device"], cfg["role"],
                                            sweep=dict(cfg["sweep"], group=uuid.uuid4().hex[:8]))])
        return self.submit(self.prepare(recipe.name, settings, params or None, cfg["data"], cfg["device"], cfg["role"]))

    def start_next(self) -> Optional[DrillRun]:
        """Move the next startable run to running (the runner then launches it)."""
        run = self.queue.next_startable()
        if run is None:
            return None
        self.queue.start(run)
        run.mark_started()
        self.history.save(run, with_events=False)
        self._emit("started", run)
        return run

    def cancel_queued(self, run: DrillRun) -> bool:
        if self.queue.remove(run):
            run.finish("cancelled", "cancelled before it started")
            self._emit("finished", run)
            return True
        return False

    def finish(self, run: DrillRun, status: str, message: str = "", stderr_tail: str = "") -> None:
        run.finish(status, message, stderr_tail)
        self.queue.done(run)
        self.history.save(run)  # queued; only the events not stored yet by persist_events
        self._persisted_at.pop(run.id, None)
        self._emit("finished", run)

    def persist_events(self, force: bool = False) -> int:
        """Queue the running runs' new events for the history, at most every
        :attr:`persist_interval` seconds per run (the view calls this on its timer), so a run's end
        writes only its last events.  Returns how many events were queued."""
        now = time.monotonic()
        queued = 0
        for run in self.queue.running:
            if len(run.events) <= self.history.stored_events(run.id):
                continue
            if not force and now - self._persisted_at.get(run.id, 0.0) < self.persist_interval:
                continue
            self._persisted_at[run.id] = now
            queued += self.history.append_events(run)
        return queued

    def close(self) -> None:
        """Write everything queued to the history and stop its writer (the app is closing)."""
        self.persist_events(force=True)
        self.history.close()

    def get(self, run_id: str) -> DrillRun:
        if run_id not in self.runs:
            self.runs[run_id] = self.history.load(run_id)
        return self.runs[run_id]

    def all_runs(self) -> List[DrillRun]:
        """This session's runs and the stored history, newest first.  The stored runs are read
        on the first call; later calls only sort ``runs`` (no database access while runs stream)."""
        if self._history_loaded:
            return sorted(self.runs.values(), key=lambda r: (r.created, r.number), reverse=True)
        self._history_loaded = True
        for entry in self.history.entries():
            if entry.id not in self.runs:
                try:
                    self.runs[entry.id] = self.history.load(entry.id)
                except (KeyError, json.JSONDecodeError):
                    continue
        return sorted(self.runs.values(), key=lambda r: (r.created, r.number), reverse=True)

    def delete(self, run_id: str) -> None:
        run = self.runs.get(run_id)
        if run is not None and not run.is_final:
            raise ValueError("cancel the run before deleting it from the history")
        self.runs.pop(run_id, None)
        self.history.delete(run_id)
        self._emit("removed", run)


# --------------------------------------------------------------------------- results
_METRICS = ("precision", "recall", "f1")


def compare_reports(report: Mapping[str, Any], baseline: Mapping[str, Any]) -> Dict[str, Any]:
    """Per-class and overall (value, baseline, delta) for precision, recall, F1 and accuracy."""
    def triple(a: Optional[float], b: Optional[float]) -> Dict[str, Optional[float]]:
        return {"value": a, "baseline": b, "delta": None if a is None or b is None else a - b}

    classes = list(report.get("classes") or CLASS_NAMES)
    per_class = {}
    for cls in classes:
        mine = report.get("per_class", {}).get(cls, {})
        base = baseline.get("per_class", {}).get(cls, {})
        per_class[cls] = {m: triple(mine.get(m), base.get(m)) for m in _METRICS}
    return {
        "accuracy": triple(report.get("accuracy"), baseline.get("accuracy")),
        "macro_f1": triple(report.get("macro_avg", {}).get("f1"), baseline.get("macro_avg", {}).get("f1")),
        "per_class": per_class,
    }


def report_json(run: DrillRun, baseline: Optional[DrillRun] = None) -> Dict[str, Any]:
    """The exported JSON: run record, reports, per-epoch history and the comparison if any."""
    out = {"format": "breakfix-drill-report/1", "run": run.to_record(), "report": run.report}
    if baseline is not None and baseline.report is not None and run.report is not None:
        out["baseline"] = {"id": baseline.id, "label": baseline.label, "report": baseline.report}
        out["comparison"] = compare_reports(run.report, baseline.report)
    return out


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _delta(d: Optional[float]) -> str:
    if d is None:
        return ""
    colour = "#1e6b3a" if d > 0.0005 else "#9b1c1c" if d < -0.0005 else "#555"
    return f'<span style="color:{colour}">{100 * d:+.1f}</span>'


def _cell_colour(fraction: float) -> str:
    """White -> the clean blue, for confusion-matrix cells."""
    r0, g0, b0 = 0xFF, 0xFF, 0xFF
    r1, g1, b1 = 0x1F, 0x5F, 0xA0
    f = max(0.0, min(1.0, fraction))
    return "#%02x%02x%02x" % (round(r0 + (r1 - r0) * f), round(g0 + (g1 - g0) * f), round(b0 + (b1 - b0) * f))


def confusion_html(report: Mapping[str, Any]) -> str:
    cm = report.get("confusion_matrix") or []
    classes = report.get("classes") or list(CLASS_NAMES)
    if not cm:
        return "<p>No confusion matrix.</p>"
    rows = ['<table class="cm"><tr><th>true \\ predicted</th>'
            + "".join(f"<th>{html.escape(c)}</th>" for c in classes) + "</tr>"]
    for i, row in enumerate(cm):
        total = max(sum(row), 1)
        cells = []
        for v in row:
            frac = v / total
            fg = "white" if frac > 0.55 else "black"
            cells.append(f'<td style="background:{_cell_colour(frac)};color:{fg}">{v}</td>')
        rows.append(f"<tr><th>{html.escape(classes[i])}</th>{''.join(cells)}</tr>")
    rows.append("</table>")
    return "".join(rows)


def report_html(run: DrillRun, baseline: Optional[DrillRun] = None, images: Optional[Mapping[str, str]] = None) -> str:
    """A self-contained HTML report (``images``: caption -> data URI or file name, e.g. the curves)."""
    rep = run.report
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{esc(run.label)}</title>",
        "<style>body{font-family:sans-serif;margin:24px;color:#222} table{border-collapse:collapse;margin:8px 0}"
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right} th{background:#f0f3f7}"
        " .cm td{min-width:48px;text-align:center} .meta td{text-align:left}</style></head><body>",
        f"<h1>BreakFix drill report: {esc(run.label)}</h1>",
        "<table class='meta'>",
    ]
    meta = [("Run", run.id), ("Recipe", run.recipe), ("Role", run.role_title), ("Status", run.status),
            ("Data", run.config.get("data", "")), ("Device", run.device),
            ("Started", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started)) if run.started else "-"),
            ("Duration", f"{run.duration():.1f} s" if run.duration() is not None else "-")]
    if run.message:
        meta.append(("Message", run.message))
    parts += [f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in meta]
    parts.append("</table>")
    parts.append(f"<h2>Configuration</h2><pre>{esc(json.dumps(run.config, indent=2))}</pre>")
    comp = compare_reports(rep, baseline.report) if rep and baseline is not None and baseline.report else None
    if rep:
        split = run.report_key or ""
        parts.append(f"<h2>Classification report ({esc(split)}, {rep.get('n', '?')} images)</h2>")
        if comp:
            parts.append(f"<p>Deltas (percentage points) against baseline {esc(baseline.label)}.</p>")
        head = "<tr><th>class</th>" + "".join(
            f"<th>{m}</th>" + ("<th>&Delta;</th>" if comp else "") for m in _METRICS) + "<th>support</th></tr>"
        parts.append("<table>" + head)
        for cls, vals in rep.get("per_class", {}).items():
            cells = "".join(
                f"<td>{_pct(vals.get(m))}</td>" + (f"<td>{_delta(comp['per_class'][cls][m]['delta'])}</td>" if comp else "")
                for m in _METRICS)
            parts.append(f"<tr><th>{esc(cls)}</th>{cells}<td>{vals.get('support', '')}</td></tr>")
        acc = f"<td>{_pct(rep.get('accuracy'))}</td>"
        if comp:
            acc += f"<td>{_delta(comp['accuracy']['delta'])}</td>"
        parts.append(f"<tr><th>accuracy</th>{acc}<td colspan='{5 if comp else 2}'></td><td>{rep.get('n', '')}</td></tr>")
        parts.append("</table>")
        parts.append("<h2>Confusion matrix</h2>" + confusion_html(rep))
    else:
        parts.append("<p>This run produced no classification report.</p>")
        if run.summary:
            parts.append(f"<h2>Summary</h2><pre>{esc(json.dumps(run.summary, indent=2))}</pre>")
    with_epochs = [d for d in run.series_data.values() if d.epochs]
    if with_epochs:
        named = any(d.name for d in with_epochs)  # a multi-run drill: one block of rows per series
        parts.append("<h2>Per-epoch history</h2><table><tr>" + ("<th>series</th><th>role</th>" if named else "")
                     + "<th>epoch</th><th>train loss</th><th>train acc</th><th>test loss</th><th>test acc</th>"
                     "<th>lr</th></tr>")
        for data in with_epochs:
            for row in data.epochs:
                def num(k: str, pct: bool = False) -> str:
                    v = row.get(k)
                    return "-" if v is None else (_pct(v) if pct else f"{v:.4f}")
                lead = (f"<th>{esc(data.name or '(main)')}</th><td>{esc(data.role or run.role)}</td>" if named else "")
                parts.append(f"<tr>{lead}<td>{row['epoch']}</td><td>{num('train_loss')}</td>"
                             f"<td>{num('train_acc', True)}</td><td>{num('test_loss')}</td>"
                             f"<td>{num('test_acc', True)}</td><td>{row.get('lr') or 0:.2e}</td></tr>")
        parts.append("</table>")
    for caption, src in (images or {}).items():
        parts.append(f"<h2>{esc(caption)}</h2><img src='{esc(src)}' style='max-width:100%'>")
    if run.warnings or run.errors or run.stderr_tail:
        parts.append("<h2>Messages</h2><pre>" + esc("\n".join(run.errors + run.warnings[-20:]))
                     + ("\n--- stderr (tail) ---\n" + esc(run.stderr_tail) if run.stderr_tail else "") + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def export_report(run: DrillRun, path: Path, baseline: Optional[DrillRun] = None,
                  images: Optional[Mapping[str, str]] = None) -> Tuple[Path, Path]:
    """Write ``path`` (.html) and the same name with .json; returns both paths."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        path = path.with_suffix(".html")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(run, baseline, images), encoding="utf-8")
    json_path = path.with_suffix(".json")
    json_path.write_text(json.dumps(report_json(run, baseline), indent=2), encoding="utf-8")
    return path, json_path
