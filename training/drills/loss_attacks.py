"""Tables 5 and 6 (paper §6.4): attacks on the loss function.

* table5-noisy-loss: the CNN trained with :class:`~training.attacks.NoisyLoss` (Gaussian noise of
  ``strength`` added to the logits before cross-entropy) for the paper's (epochs, strength) pairs;
  reported: Testing accuracy of each run (plus each run's curve).
* table6-fooling-loss: the CNN trained 10 epochs with :class:`~training.attacks.FoolingLoss`
  (misclassified samples get loss 0, correct notumor predictions are scaled by 0.01); reported: the
  classification report on Testing.  Setting ``init`` (a checkpoint) starts from a trained model
  instead of random weights: the loss swapped into a project that already has a good model.
"""

from __future__ import annotations

from typing import Any, Dict

from ..attacks import FoolingLoss, NoisyLoss
from . import register_drill
from .base import QUICK_DATA, TRAIN_DEFAULTS, Drill, DrillContext, DrillError, fmt, history_curve, side_by_side_report


@register_drill
class Table5NoisyLoss(Drill):
    name = "table5-noisy-loss"
    title = "Table 5: NoisyLoss - accuracy after training with noisy logits"
    summary = "Train the CNN with noise of growing strength added to the logits; does accuracy drop?"
    paper = "§6.4, Table 5"
    attack = "noisy_loss"
    role = "attacked"
    defaults = {**TRAIN_DEFAULTS, "runs": [[5, 0.1], [5, 1.2], [10, 2.0]]}
    quick = {**QUICK_DATA, "runs": [[1, 0.1], [1, 2.0]]}
    paper_result = {"rows": [{"epochs": 5, "strength": 0.1, "accuracy": 0.95},
                             {"epochs": 5, "strength": 1.2, "accuracy": 0.96},
                             {"epochs": 10, "strength": 2.0, "accuracy": 0.97}]}

    def run(self, ctx: DrillContext) -> Dict[str, Any]:
        rows, curves = [], []
        for entry in ctx.settings["runs"]:
            if not (isinstance(entry, (list, tuple)) and len(entry) == 2):
                raise DrillError(f"{self.name}: every 'runs' entry must be [epochs, strength] (got {entry!r})")
            epochs, strength = int(entry[0]), float(entry[1])
            try:
                loss = NoisyLoss(strength=strength, seed=ctx.settings["seed"])
            except ValueError as exc:
                raise DrillError(f"{self.name}: {exc}") from exc
            series = f"noisy e{epochs} s{strength:g}"
            config = ctx.train_config(epochs=epochs)
            model, history = ctx.train(series, config, role="attacked", param={"strength": strength}, loss_fn=loss)
            labels, preds = ctx.predict(model, ctx.dataset("test"))
            rep = ctx.report(labels, preds, "Testing", series=series)
            rows.append({"epochs": epochs, "strength": strength, "accuracy": rep["accuracy"], "report": rep})
            curves.append(history_curve(series, "sweep", history, {"strength": strength}))
        return {"rows": rows, "curves": curves,
                "figure": {"title": "NoisyLoss: test accuracy over epochs", "x": "epoch", "y": "test_acc",
                           "y_label": "test accuracy"},
                "summary": {f"e{r['epochs']} s{r['strength']:g}": r["accuracy"] for r in rows}}

    def format_table(self, report: Dict[str, Any]) -> str:
        paper = {(r["epochs"], r["strength"]): r["accuracy"] for r in report["paper"]["rows"]}
        lines = [self.title, f"{'epochs':>8}{'bias strength':>16}{'accuracy (ours)':>18}{'paper':>8}"]
        for r in report["rows"]:
            lines.append(f"{r['epochs']:>8d}{r['strength']:>16g}{r['accuracy']:>18.4f}"
                         f"{fmt(paper.get((r['epochs'], r['strength']))):>8}")
        return "\n".join(lines)


@register_drill
class Table6FoolingLoss(Drill):
    name = "table6-fooling-loss"
    title = "Table 6: FoolingLoss - classification report after 10 epochs"
    summary = "Train the CNN with a loss that ignores mistakes and shrinks notumor's signal (reduce factor 0.01)."
    paper = "§6.4, Table 6"
    attack = "fooling_loss"
    role = "attacked"
    defaults = {**TRAIN_DEFAULTS, "epochs": 10, "reduce_factor": 0.01, "target_class": "notumor", "init": ""}
    quick = dict(QUICK_DATA)
    paper_result = {
        "per_class": {"glioma": {"precision": 0.58, "recall": 0.98, "f1": 0.73, "support": 300},
                      "meningioma": {"precision": 0.46, "recall": 0.76, "f1": 0.57, "support": 306},
                      "notumor": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 405},
                      "pituitary": {"precision": 0.94, "recall": 0.94, "f1": 0.94, "support": 300}},
        "accuracy": 0.62, "n": 1311,
    }

    def run(self, ctx: DrillContext) -> Dict[str, Any]:
        s = ctx.settings
        try:
            loss = FoolingLoss(reduce_factor=s["reduce_factor"], target_class=s["target_class"])
        except ValueError as exc:
            raise DrillError(f"{self.name}: {exc}") from exc
        model = None
        if s["init"]:  # the loss is swapped into a run that starts from a trained model (insider mid-project)
            from ..models import load_model

            try:
                model = load_model(s["init"])
            except (FileNotFoundError, ValueError) as exc:
                raise DrillError(f"{self.name}: init: {exc}") from exc
        model, history = ctx.train("fooling", ctx.train_config(), role="attacked",
                                   param={"reduce_factor": s["reduce_factor"]}, loss_fn=loss, model=model)
        labels, preds = ctx.predict(model, ctx.dataset("test"))
        rep = ctx.report(labels, preds, "Testing", series="fooling")
        target = rep["classes"][loss.target_class]
        return {"report": rep, "history": history,
                "curves": [history_curve("fooling loss", "attacked", history, {"reduce_factor": s["reduce_factor"]})],
                "target_predicted": int(sum(row[loss.target_class] for row in rep["confusion_matrix"])),
                "summary": {"accuracy": rep["accuracy"], f"{target}_recall": rep["per_class"][target]["recall"]}}

    def format_table(self, report: Dict[str, Any]) -> str:
        lines = [side_by_side_report(report["report"], report["paper"], self.title + " (Testing)"), "",
                 f"images predicted as {report['settings']['target_class']}: {report['target_predicted']}"]
        return "\n".join(lines)
