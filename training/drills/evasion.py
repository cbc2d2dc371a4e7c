"""Tables 3 and 4 (paper §6.2, §6.3): FGSM and PGD accuracy on the Testing split, per model.

The models are named in the ``models`` setting (name -> ``checkpoint.pt`` or ensemble ``.json``);
the defaults point at the run folders of the training recipes (``runs/...``).  CNN_clean is trained
by the drill itself when its checkpoint is missing (``clean_epochs``); any other missing model gets
a "-" column with the reason, never a made-up number.  The robust models (CNN_FGSM, CNN_PGD,
ResNet_PGD, Ensemble) come from the defenses (adversarial training).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from ..attacks import FGSM, PGD
from . import register_drill
from .base import QUICK_DATA, TRAIN_DEFAULTS, Drill, DrillContext, DrillError, fmt

MODEL_ORDER = ("CNN_clean", "CNN_FGSM", "CNN_PGD", "ResNet_PGD", "Ensemble")
DEFAULT_MODELS = {
    "CNN_clean": "runs/cnn_clean/checkpoint.pt",
    "CNN_FGSM": "runs/cnn_fgsm/checkpoint.pt",
    "CNN_PGD": "runs/cnn_pgd/checkpoint.pt",
    "ResNet_PGD": "runs/resnet18_pgd/checkpoint.pt",
    "Ensemble": "runs/ensemble/ensemble.json",
}
_EVASION = {
    "models": dict(DEFAULT_MODELS),
    "clean_epochs": 12,
    "attack_batch_size": 64,
    "targeted": False,
    "target_class": "notumor",
}
# quick: no stored models; CNN_clean is trained on the small subset
_QUICK = {**QUICK_DATA, "max_test_images": 64, "models": {k: "" for k in DEFAULT_MODELS}, "clean_epochs": 1}


class _EvasionDrill(Drill):
    role = "attacked"

    def load_models(self, ctx: DrillContext) -> tuple[Dict[str, Any], Dict[str, str]]:
        """name -> torch model for every available model; name -> reason for the missing ones."""
        from ..models import load_model

        models, missing = {}, {}
        for name, ref in ctx.settings["models"].items():
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
        labels, preds = ctx.predict(model, ctx.dataset("test"), transform=attack,
                                    batch_size=ctx.settings["attack_batch_size"])
        rep = ctx.report(labels, preds, split, series=series)
        return {"accuracy": rep["accuracy"], "n": rep["n"], "per_class_recall":
                {c: rep["per_class"][c]["recall"] for c in rep["classes"]}}

    def attack_kwargs(self, ctx: DrillContext) -> Dict[str, Any]:
        s = ctx.settings
        return {"targeted": s["targeted"], "target_class": s["target_class"]}


def _column_names(report: Dict[str, Any]) -> List[str]:
    return list(report["results"]) + [n for n in report["missing"] if n not in report["results"]]


@register_drill
class Table3FGSM(_EvasionDrill):
    name = "table3-fgsm"
    title = "Table 3: accuracy under FGSM, per model and eps"
    summary = "FGSM (Eq. 1) at eps 0.1 ... 0.001 on the Testing split against CNN_clean and the robust models."
    paper = "§6.2, Table 3"
    attack = "fgsm"
    defaults = {**TRAIN_DEFAULTS, **_EVASION, "eps": [0.1, 0.01, 0.005, 0.002, 0.001]}
    quick = {**_QUICK, "eps": [0.01, 0.001]}
    paper_result = {
        "columns": ["CNN_clean", "CNN_FGSM", "CNN_PGD", "ResNet_PGD", "Ensemble"],
        "rows": {"0.1": [0.0, 0.82, 0.46, 0.67, 0.76], "0.01": [0.07, 0.84, 0.84, 0.93, 0.97],
                 "0.005": [0.23, 0.86, 0.88, 0.98, 0.98], "0.002": [0.61, 0.87, 0.87, 0.96, 0.98],
                 "0.001": [0.81, 0.87, 0.90, 0.96, 0.98]},
    }

    def run(self, ctx: DrillContext) -> Dict[str, Any]:
        models, missing = self.load_models(ctx)
        results: Dict[str, Dict[str, Any]] = {}
        for name, model in models.items():
            rows = {"clean": self.accuracy(ctx, model, None, name, "Testing")}
            for eps in ctx.settings["eps"]:
                try:
                    atk = FGSM(model, eps=float(eps), **self.attack_kwargs(ctx))
                except ValueError as exc:
                    raise DrillError(f"{self.name}: {exc}") from exc
                rows[f"{eps:g}"] = self.accuracy(ctx, model, atk, name, f"Testing-fgsm-eps{eps:g}")
            results[name] = rows
        summary = {f"{n} eps={e}": r["accuracy"] for n, rows in results.items() for e, r in rows.items()}
        return {"results": results, "missing": missing, "summary": summary}

    def format_table(self, report: Dict[str, Any]) -> str:
        cols = _column_names(report)
        paper = report["paper"]
        head = f"{'eps':<8}" + "".join(f"{c:>22}" for c in cols)
        sub = f"{'':<8}" + "".join(f"{'ours':>11}{'paper':>11}" for _ in cols)
        lines = [self.title + " (accuracy on Testing)", head, sub]
        keys = ["clean"] + [f"{e:g}" for e in report["settings"]["eps"]]
        for key in keys:
            cells = []
            for c in cols:
                ours = report["results"].get(c, {}).get(key, {}).get("accuracy")
                p_row = paper["rows"].get(key)
                p = p_row[paper["columns"].index(c)] if p_row and c in paper["columns"] else None
                cells.append(f"{fmt(ours):>11}{fmt(p):>11}")
            lines.append(f"{key:<8}" + "".join(cells))
        for name, why in report["missing"].items():
            lines.append(f"{name}: {why}")
        return "\n".join(lines)


@register_drill
class Table4PGD(_EvasionDrill):
    name = "table4-pgd"
    title = "Table 4: accuracy under PGD, per model and (eps, alpha, steps)"
    summary = "PGD (Eq. 2, random start) at the paper's four settings on the Testing split, per model."
    paper = "§6.3, Table 4"
    attack = "pgd"
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

    def run(self, ctx: DrillContext) -> Dict[str, Any]:
        grid = ctx.settings["settings_grid"]
        for row in grid:
            if not (isinstance(row, (list, tuple)) and len(row) == 3):
                raise DrillError(f"{self.name}: every settings_grid entry must be [eps, alpha, steps] (got {row!r})")
        models, missing = self.load_models(ctx)
        results: Dict[str, Dict[str, Any]] = {}
        for name, model in models.items():
            rows = {"clean": self.accuracy(ctx, model, None, name, "Testing")}
            for eps, alpha, steps in grid:
                try:
                    atk = PGD(model, eps=float(eps), alpha=float(alpha), steps=int(steps),
                              random_start=ctx.settings["random_start"], seed=ctx.settings["seed"],
                              **self.attack_kwargs(ctx))
                except ValueError as exc:
                    raise DrillError(f"{self.name}: {exc}") from exc
                key = self._key(eps, alpha, steps)
                rows[key] = self.accuracy(ctx, model, atk, name, f"Testing-pgd-{key}")
            results[name] = rows
        summary = {f"{n} {k}": r["accuracy"] for n, rows in results.items() for k, r in rows.items()}
        return {"results": results, "missing": missing, "summary": summary}

    def format_table(self, report: Dict[str, Any]) -> str:
        cols = _column_names(report)
        paper = report["paper"]
        lines = [self.title + " (accuracy on Testing)",
                 f"{'eps/alpha/steps':<17}" + "".join(f"{c:>22}" for c in cols),
                 f"{'':<17}" + "".join(f"{'ours':>11}{'paper':>11}" for _ in cols)]
        keys = ["clean"] + [self._key(*row) for row in report["settings"]["settings_grid"]]
        for key in keys:
            cells = []
            for c in cols:
                ours = report["results"].get(c, {}).get(key, {}).get("accuracy")
                p_row: Optional[list] = paper["rows"].get(key)
                p = p_row[paper["columns"].index(c)] if p_row and c in paper["columns"] else None
                cells.append(f"{fmt(ours):>11}{fmt(p):>11}")
            lines.append(f"{key:<17}" + "".join(cells))
        for name, why in report["missing"].items():
            lines.append(f"{name}: {why}")
        return "\n".join(lines)
