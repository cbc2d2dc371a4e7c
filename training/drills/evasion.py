"""Tables 3 and 4 (paper §6.2, §6.3): FGSM and PGD accuracy on the Testing split, per model.

The models are named in the ``models`` setting (name -> ``checkpoint.pt`` or ensemble ``.json``);
the defaults point at the run folders of the training recipes (``runs/...``).  CNN_clean is trained
by the drill itself when its checkpoint is missing (``clean_epochs``); any other missing model gets
a "-" column with the reason, never a made-up number.  A model set to ``null`` (JSON) is skipped
outright, CNN_clean included (``--set 'models={"CNN_clean": null}'``), to measure only some
columns.  The robust models (CNN_FGSM, CNN_PGD,
ResNet_PGD, Ensemble) come from the defenses (adversarial training, ``docs/defenses.md``).

Beyond the paper, both tables get one more row per model: the **per-image worst case** of
:func:`training.robust_eval.worst_case_accuracy` - an image counts as correct only if its clean
prediction, FGSM and every one of ``restarts`` PGD runs (``steps`` steps of ``alpha``, eps
``eps``, each from its own random start) leave it correct.  The ``strong_attack`` setting
(default ``{"steps": 20, "restarts": 3, "eps": 0.01, "alpha": 0.0025}``; quick mode a cheap
``5`` steps x ``1`` restart) controls it; ``restarts = 0`` skips the row.  A single PGD run
over-states robustness; this row is the number to quote for a robust model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from ..attacks import FGSM, PGD
from . import register_drill
from .base import QUICK_DATA, TRAIN_DEFAULTS, Drill, DrillContext, DrillError, fmt

#: The adversarially trained models are read from ``best.pt``: the most robust epoch on validation
#: (robust early stopping, ``docs/defenses.md``), the file the recipes export and the ensemble uses.
MODEL_ORDER = ("CNN_clean", "CNN_FGSM", "CNN_PGD", "ResNet_PGD", "Ensemble")
DEFAULT_MODELS = {
    "CNN_clean": "runs/cnn_clean/checkpoint.pt",
    "CNN_FGSM": "runs/cnn_fgsm/best.pt",
    "CNN_PGD": "runs/cnn_pgd/best.pt",
    "ResNet_PGD": "runs/resnet18_pgd/best.pt",
    "Ensemble": "runs/ensemble/ensemble.json",
}
#: The worst-case row (robust_eval.worst_case_accuracy); restarts 0 skips it.
STRONG_ATTACK = {"steps": 20, "restarts": 3, "eps": 0.01, "alpha": 0.0025}
_EVASION = {
    "models": dict(DEFAULT_MODELS),
    "clean_epochs": 12,
    "attack_batch_size": 64,
    "targeted": False,
    "target_class": "notumor",
    "strong_attack": dict(STRONG_ATTACK),
}
# quick: no stored models; CNN_clean is trained on the small subset; a cheap worst case
_QUICK = {**QUICK_DATA, "max_test_images": 64, "models": {k: "" for k in DEFAULT_MODELS}, "clean_epochs": 1,
          "strong_attack": {"steps": 5, "restarts": 1, "eps": 0.01, "alpha": 0.0025}}


class _EvasionDrill(Drill):
    role = "attacked"

    def load_models(self, ctx: DrillContext) -> tuple[Dict[str, Any], Dict[str, str]]:
        """name -> torch model for every available model; name -> reason for the missing ones."""
        from ..models import load_model

        models, missing = {}, {}
        for name, ref in ctx.settings["models"].items():
            if ref is None:
                missing[name] = "skipped (set to null)"
                continue
            path = Path(ref) if ref else None
            if path is not None and path.is_file():
                try:
                    models[name] = load_model(path)
                    continue
                except (ValueError, KeyError, RuntimeError) as exc:
                    raise DrillError(f"{self.name}: model {name}: {exc}") from exc
            if name == "CNN_clean":
                config = ctx.train_config(epochs=ctx.settings["clean_epochs"])
                models[name], _ = ctx.train("CNN_clean", config, role="clean")
                continue
            missing[name] = f"{ref} not found (trained by the defense recipes)" if ref else "not given"
        order = [n for n in MODEL_ORDER if n in models] + [n for n in models if n not in MODEL_ORDER]
        return {n: models[n] for n in order}, missing

    def accuracy(self, ctx: DrillContext, model, attack=None, series: str = "", split: str = "") -> Dict[str, Any]:
        labels, preds = ctx.predict(model, ctx.dataset("test"), transform=attack, label=f"{series} {split}",
                                    batch_size=ctx.settings["attack_batch_size"])
        rep = ctx.report(labels, preds, split, series=series)
        return {"accuracy": rep["accuracy"], "n": rep["n"], "per_class_recall":
                {c: rep["per_class"][c]["recall"] for c in rep["classes"]}}

    def attack_kwargs(self, ctx: DrillContext) -> Dict[str, Any]:
        s = ctx.settings
        return {"targeted": s["targeted"], "target_class": s["target_class"]}

    def strong_attack(self, settings: Dict[str, Any]) -> Dict[str, Any]:
        """The checked ``strong_attack`` setting (DrillError naming the bad key)."""
        sa = settings["strong_attack"]
        unknown = sorted(set(sa) - set(STRONG_ATTACK))
        if unknown:
            raise DrillError(f"{self.name}: strong_attack: unknown key(s) {', '.join(unknown)}; "
                             f"known: {', '.join(STRONG_ATTACK)}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        checks = {"steps": (is_int(sa["steps"]) and sa["steps"] >= 1, "an integer >= 1"),
                  "restarts": (is_int(sa["restarts"]) and sa["restarts"] >= 0, "an integer >= 0 (0 skips the row)"),
                  "eps": (is_num(sa["eps"]) and 0 < sa["eps"] <= 1, "a number in (0, 1]"),
                  "alpha": (is_num(sa["alpha"]) and 0 < sa["alpha"] <= 1, "a number in (0, 1]")}
        for key, (ok, what) in checks.items():
            if not ok:
                raise DrillError(f"{self.name}: strong_attack.{key} must be {what} (got {sa[key]!r})")
        return sa

    @staticmethod
    def worst_key(sa: Dict[str, Any]) -> Optional[str]:
        """Row key of the worst case, e.g. ``PGD-20 x3 worst case`` (``None`` when skipped)."""
        return f"PGD-{int(sa['steps'])} x{int(sa['restarts'])} worst case" if sa["restarts"] > 0 else None

    def worst_case(self, ctx: DrillContext, model, series: str) -> Optional[Dict[str, Any]]:
        """The worst-case row for one model (clean, FGSM and every PGD restart must all fail to fool it)."""
        from ..engine import Cancelled, resolve_device
        from ..robust_eval import worst_case_accuracy
        from .base import DrillCancelled

        sa = self.strong_attack(ctx.settings)
        key = self.worst_key(sa)
        if key is None:
            return None
        device = resolve_device(ctx.device)

        def on_batch(step: int, total: int, accuracy: float) -> None:
            ctx.events.emit("progress", phase="attack", epoch=0, step=step, total=total,
                            message=f"{series}: {key} (so far {accuracy:.3f})")

        try:
            res = worst_case_accuracy(model.to(device), ctx.dataset("test"), eps=float(sa["eps"]),
                                      alpha=float(sa["alpha"]), steps=int(sa["steps"]), restarts=int(sa["restarts"]),
                                      batch_size=ctx.settings["attack_batch_size"], device=device,
                                      seed=ctx.settings["seed"], should_stop=ctx.should_stop, on_batch=on_batch,
                                      **self.attack_kwargs(ctx))
        except ValueError as exc:
            raise DrillError(f"{self.name}: strong_attack: {exc}") from exc
        except Cancelled as exc:
            raise DrillCancelled() from exc
        split = f"Testing-worst-pgd{int(sa['steps'])}x{int(sa['restarts'])}-eps{float(sa['eps']):g}"
        rep = ctx.report(res["labels"], res["predictions"], split, series=series, stages=res["stages"])
        return {"accuracy": rep["accuracy"], "n": rep["n"],
                "per_class_recall": {c: rep["per_class"][c]["recall"] for c in rep["classes"]},
                "stages": res["stages"], "attack": res["settings"]}


    # -- one table: rows of attacks, a column per model ------------------------------
    row_label = ""

    def check_settings(self, settings: Dict[str, Any]) -> None:
        """Refuse bad drill-specific settings before any work (DrillError)."""

    def row_keys(self, settings: Dict[str, Any]) -> List[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def attacks(self, ctx: DrillContext, model):  # pragma: no cover - abstract
        """Yields ``(row key, split name, make_attack)`` for ``model``."""
        raise NotImplementedError

    def run(self, ctx: DrillContext) -> Dict[str, Any]:
        self.check_settings(ctx.settings)
        self.strong_attack(ctx.settings)  # refuse a bad setting before any training
        models, missing = self.load_models(ctx)
        results: Dict[str, Dict[str, Any]] = {}
        for name, model in models.items():
            rows = {"clean": self.accuracy(ctx, model, None, name, "Testing")}
            for key, split, make in self.attacks(ctx, model):
                try:
                    atk = make()
                except ValueError as exc:
                    raise DrillError(f"{self.name}: {exc}") from exc
                rows[key] = self.accuracy(ctx, model, atk, name, split)
            worst = self.worst_case(ctx, model, name)
            if worst is not None:
                rows[self.worst_key(ctx.settings["strong_attack"])] = worst
            results[name] = rows
        summary = {f"{n} {k}": r["accuracy"] for n, rows in results.items() for k, r in rows.items()}
        return {"results": results, "missing": missing, "summary": summary,
                "model_files": self.model_files(ctx, models)}

    @staticmethod
    def model_files(ctx: DrillContext, models: Dict[str, Any]) -> Dict[str, Dict[str, str]]:
        """name -> path and SHA-256 of each stored model the drill attacked, so a model card can be
        tied to these numbers later (``python -m training card-robustness``)."""
        from breakfix_desktop.core.hashing import sha256_file

        out = {}
        for name in models:
            ref = ctx.settings["models"].get(name)
            if ref and Path(ref).is_file():
                out[name] = {"path": str(ref), "sha256": sha256_file(Path(ref))}
        return out

    def format_table(self, report: Dict[str, Any]) -> str:
        cols = _column_names(report)
        paper = report["paper"]
        keys = ["clean"] + self.row_keys(report["settings"]) + _worst_keys(self, report)
        w = max(len(self.row_label) + 2, max(len(k) for k in keys) + 1)
        lines = [self.title + " (accuracy on Testing)",
                 f"{self.row_label:<{w}}" + "".join(f"{c:>22}" for c in cols),
                 f"{'':<{w}}" + "".join(f"{'ours':>11}{'paper':>11}" for _ in cols)]
        for key in keys:
            cells = []
            for c in cols:
                ours = report["results"].get(c, {}).get(key, {}).get("accuracy")
                p_row: Optional[list] = paper["rows"].get(key)
                p = p_row[paper["columns"].index(c)] if p_row and c in paper["columns"] else None
                cells.append(f"{fmt(ours):>11}{fmt(p):>11}")
            lines.append(f"{key:<{w}}" + "".join(cells))
        lines += _worst_note(self, report)
        for name, why in report["missing"].items():
            lines.append(f"{name}: {why}")
        return "\n".join(lines)


def _column_names(report: Dict[str, Any]) -> List[str]:
    return list(report["results"]) + [n for n in report["missing"] if n not in report["results"]]


def _worst_keys(drill: "_EvasionDrill", report: Dict[str, Any]) -> List[str]:
    key = drill.worst_key(report["settings"]["strong_attack"])
    return [key] if key else []


def _worst_note(drill: "_EvasionDrill", report: Dict[str, Any]) -> List[str]:
    sa = report["settings"]["strong_attack"]
    if not drill.worst_key(sa):
        return []
    return [f"Note: '{drill.worst_key(sa)}' is the per-image worst case over the clean prediction, FGSM and "
            f"{sa['restarts']} PGD run(s) of {sa['steps']} steps (eps {sa['eps']:g}, alpha {sa['alpha']:g}, random "
            "starts); not in the paper"]


@register_drill
class Table3FGSM(_EvasionDrill):
    name = "table3-fgsm"
    title = "Table 3: accuracy under FGSM, per model and eps"
    summary = "FGSM (Eq. 1) at eps 0.1 ... 0.001 on the Testing split against CNN_clean and the robust models."
    paper = "§6.2, Table 3"
    attack = "fgsm"
    row_label = "eps"
    defaults = {**TRAIN_DEFAULTS, **_EVASION, "eps": [0.1, 0.01, 0.005, 0.002, 0.001]}
    quick = {**_QUICK, "eps": [0.01, 0.001]}
    paper_result = {
        "columns": ["CNN_clean", "CNN_FGSM", "CNN_PGD", "ResNet_PGD", "Ensemble"],
        "rows": {"0.1": [0.0, 0.82, 0.46, 0.67, 0.76], "0.01": [0.07, 0.84, 0.84, 0.93, 0.97],
                 "0.005": [0.23, 0.86, 0.88, 0.98, 0.98], "0.002": [0.61, 0.87, 0.87, 0.96, 0.98],
                 "0.001": [0.81, 0.87, 0.90, 0.96, 0.98]},
    }

    def row_keys(self, settings: Dict[str, Any]) -> List[str]:
        return [f"{e:g}" for e in settings["eps"]]

    def attacks(self, ctx: DrillContext, model):
        for eps in ctx.settings["eps"]:
            yield f"{eps:g}", f"Testing-fgsm-eps{eps:g}", lambda: FGSM(model, eps=float(eps), **self.attack_kwargs(ctx))


@register_drill
class Table4PGD(_EvasionDrill):
    name = "table4-pgd"
    title = "Table 4: accuracy under PGD, per model and (eps, alpha, steps)"
    summary = "PGD (Eq. 2, random start) at the paper's four settings on the Testing split, per model."
    paper = "§6.3, Table 4"
    attack = "pgd"
    row_label = "eps/alpha/steps"
    defaults = {**TRAIN_DEFAULTS, **_EVASION, "random_start": True,
                "settings_grid": [[0.3, 0.008, 20], [0.01, 0.001, 5], [0.01, 0.0005, 5], [0.01, 0.0001, 5]]}
    quick = {**_QUICK, "settings_grid": [[0.01, 0.001, 2]]}
    paper_result = {
        "columns": ["CNN_clean", "CNN_PGD", "CNN_FGSM", "ResNet_PGD", "Ensemble"],
        "rows": {"0.3/0.008/20": [0.0, 0.5, None, None, None], "0.01/0.001/5": [0.1, 0.83, 0.89, 0.96, 0.96],
                 "0.01/0.0005/5": [0.31, 0.9, 0.87, 0.96, 0.98], "0.01/0.0001/5": [0.86, 0.92, 0.88, 0.96, 0.99]},
    }

    @staticmethod
    def _key(eps: float, alpha: float, steps: int) -> str:
        return f"{eps:g}/{alpha:g}/{int(steps)}"

    def check_settings(self, settings: Dict[str, Any]) -> None:
        for row in settings["settings_grid"]:
            if not (isinstance(row, (list, tuple)) and len(row) == 3):
                raise DrillError(f"{self.name}: every settings_grid entry must be [eps, alpha, steps] (got {row!r})")

    def row_keys(self, settings: Dict[str, Any]) -> List[str]:
        return [self._key(*row) for row in settings["settings_grid"]]

    def attacks(self, ctx: DrillContext, model):
        s = ctx.settings
        for eps, alpha, steps in s["settings_grid"]:
            key = self._key(eps, alpha, steps)
            yield key, f"Testing-pgd-{key}", lambda eps=eps, alpha=alpha, steps=steps: PGD(
                model, eps=float(eps), alpha=float(alpha), steps=int(steps), random_start=s["random_start"],
                seed=s["seed"], **self.attack_kwargs(ctx))
