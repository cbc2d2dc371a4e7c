"""Figures 5 and 6 (paper §6.5): DrunkOptimizer, the attack on the gradient.

* fig5-drunk-sweep: the CNN trained 5 epochs with Adam (lr 1e-4, paper §6.5) wrapped in
  :class:`~training.attacks.DrunkOptimizer`, once per ``scale_strength`` value; the figure is
  test accuracy over epochs, one curve per strength.
* fig6-drunk-curves: three 5-epoch runs - clean (plain Adam), attacked (DrunkOptimizer, scale 3,
  perturbation 1) and defended (the same DrunkOptimizer behind :class:`~training.defenses.UpdateGuard`,
  which rolls back every update that does not descend and reports how many it caught).
"""

from __future__ import annotations

from typing import Any, Dict

from ..attacks import DrunkOptimizer
from ..defenses import UpdateGuard
from . import register_drill
from .base import QUICK_DATA, TRAIN_DEFAULTS, Drill, DrillContext, DrillError, fmt, history_curve

_DRUNK = {**TRAIN_DEFAULTS, "lr": 1e-4, "epochs": 5, "perturbation_strength": 1.0}


def _wrapper(scale: float, perturbation: float, seed: int, guard: bool = False, holder: dict | None = None):
    def wrap(opt):
        try:
            drunk = DrunkOptimizer(opt, scale_strength=scale, perturbation_strength=perturbation, seed=seed)
        except ValueError as exc:
            raise DrillError(str(exc)) from exc
        out = UpdateGuard(drunk) if guard else drunk
        if holder is not None:
            holder["optimizer"] = out
        return out
    return wrap


def _curve_table(title: str, curves, paper_note: str) -> str:
    epochs = max((len(c["epoch"]) for c in curves), default=0)
    width = max((len(c["series"]) for c in curves), default=6) + 2
    lines = [title, f"{'run':<{width}}" + "".join(f"{'ep ' + str(e + 1):>8}" for e in range(epochs))]
    for c in curves:
        lines.append(f"{c['series']:<{width}}" + "".join(f"{fmt(v, 3):>8}" for v in c["test_acc"]))
    lines.append("(test accuracy after each epoch)")
    lines.append(f"paper: {paper_note}")
    return "\n".join(lines)


@register_drill
class Fig5DrunkSweep(Drill):
    name = "fig5-drunk-sweep"
    title = "Figure 5: test accuracy over epochs per DrunkOptimizer scale strength"
    summary = "Train the CNN with DrunkOptimizer at several scale strengths; watch the accuracy curves."
    paper = "§6.5, Figure 5"
    attack = "drunk_optimizer"
    role = "attacked"
    defaults = {**_DRUNK, "scale_strengths": [0.0, 0.5, 1.0, 2.0, 3.0]}
    quick = {**QUICK_DATA, "epochs": 2, "scale_strengths": [0.0, 3.0]}
    paper_result = {"note": "stable up to scale strength 1 (which freezes the accuracy); higher strengths are "
                            "comparably catastrophic"}

    def run(self, ctx: DrillContext) -> Dict[str, Any]:
        s = ctx.settings
        curves, final = [], {}
        for scale in s["scale_strengths"]:
            scale = float(scale)
            series = f"scale {scale:g}"
            param = {"scale_strength": scale, "perturbation_strength": s["perturbation_strength"]}
            _, history = ctx.train(series, ctx.train_config(), role="attacked", param=param,
                                   optimizer_wrapper=_wrapper(scale, s["perturbation_strength"], s["seed"]))
            curves.append(history_curve(series, "sweep", history, {"scale_strength": scale}))
            final[series] = history[-1]["test_acc"] if history else None
        return {"curves": curves, "final_test_acc": final,
                "figure": {"title": "DrunkOptimizer: test accuracy per scale strength", "x": "epoch",
                           "y": "test_acc", "y_label": "test accuracy"},
                "summary": final}

    def format_table(self, report: Dict[str, Any]) -> str:
        return _curve_table(self.title + f" (perturbation strength {report['settings']['perturbation_strength']:g})",
                            report["curves"], report["paper"]["note"])


@register_drill
class Fig6DrunkCurves(Drill):
    name = "fig6-drunk-curves"
    title = "Figure 6: clean vs attacked (DrunkOptimizer) vs defended (UpdateGuard) accuracy curves"
    summary = "Three CNN runs: plain Adam, DrunkOptimizer (scale 3), and DrunkOptimizer behind the update guard."
    paper = "§6.5, Figure 6"
    attack = "drunk_optimizer"
    role = "defended"
    defaults = {**_DRUNK, "scale_strength": 3.0, "min_cosine": 0.0}
    quick = {**QUICK_DATA, "epochs": 2}
    paper_result = {"note": "clean high; attacked declines considerably; defended reaches accuracy similar to clean"}

    def run(self, ctx: DrillContext) -> Dict[str, Any]:
        s = ctx.settings
        param = {"scale_strength": s["scale_strength"], "perturbation_strength": s["perturbation_strength"]}
        _, clean = ctx.train("clean", ctx.train_config(), role="clean")
        _, attacked = ctx.train("attacked", ctx.train_config(), role="attacked", param=param,
                                optimizer_wrapper=_wrapper(s["scale_strength"], s["perturbation_strength"], s["seed"]))
        holder: Dict[str, Any] = {}

        def guarded(opt):
            out = _wrapper(s["scale_strength"], s["perturbation_strength"], s["seed"], guard=True, holder=holder)(opt)
            out.min_cosine = float(s["min_cosine"])
            return out

        _, defended = ctx.train("defended", ctx.train_config(), role="defended", param=param,
                                optimizer_wrapper=guarded)
        guard = holder.get("optimizer")
        curves = [history_curve("clean", "clean", clean), history_curve("attacked", "attacked", attacked, param),
                  history_curve("defended", "defended", defended, param)]
        final = {c["series"]: (c["test_acc"][-1] if c["test_acc"] else None) for c in curves}
        return {"curves": curves, "final_test_acc": final,
                "guard": {"steps": guard.steps, "rejected": guard.rejected,
                          "rejection_rate": guard.rejection_rate} if guard else None,
                "figure": {"title": "Clean vs attacked vs defended: test accuracy", "x": "epoch", "y": "test_acc",
                           "y_label": "test accuracy"},
                "summary": final}

    def format_table(self, report: Dict[str, Any]) -> str:
        text = _curve_table(self.title, report["curves"], report["paper"]["note"])
        g = report.get("guard")
        if g:
            text += (f"\nupdate guard: {g['rejected']} of {g['steps']} steps rejected and replaced "
                     f"({100 * g['rejection_rate']:.1f} %) in the defended run")
        return text
