"""Tables 1 and 2 (paper §6.1): the creeper-face backdoor on the CNN and on ResNet-50.

Procedure (paper): every Training image of the target class (notumor) gets the 8x8 creeper trigger
in the bottom-right corner at intensity 2.0 (normalised units); the model trains 5 epochs on that
poisoned set; on Testing the notumor images stay clean and 30 % of the others get the trigger.
Reported: the classification report on the poisoned test split (the paper's table), clean test
accuracy, and the attack success rate (poisoned tumour scans classified as notumor).  Source files
are never touched: poisoning happens on the in-memory tensors (:class:`~training.attacks.PoisonedDataset`).
"""

from __future__ import annotations

from typing import Any, Dict

from ..attacks import Backdoor
from . import register_drill
from .base import CNN_MODEL, QUICK_DATA, TRAIN_DEFAULTS, Drill, DrillContext, DrillError, fmt, side_by_side_report

_BACKDOOR = {
    "trigger": "creeper",
    "location": "corner",
    "intensity": 2.0,
    "units": "normalized",
    "target_class": "notumor",
    "train_poison_rate": 1.0,
    "test_poison_rate": 0.3,
}


def _paper_report(rows, accuracy: float) -> Dict[str, Any]:
    names = ("glioma", "meningioma", "notumor", "pituitary")
    return {
        "per_class": {n: {"precision": p, "recall": r, "f1": f, "support": s} for n, (p, r, f, s) in zip(names, rows)},
        "accuracy": accuracy, "n": sum(r[3] for r in rows),
    }


class _BackdoorDrill(Drill):
    attack = "backdoor"
    role = "attacked"

    def run(self, ctx: DrillContext) -> Dict[str, Any]:
        s = ctx.settings
        try:
            bd = Backdoor(trigger=s["trigger"], location=s["location"], intensity=s["intensity"], units=s["units"],
                          target_class=s["target_class"], train_poison_rate=s["train_poison_rate"],
                          test_poison_rate=s["test_poison_rate"], seed=s["seed"])
        except (ValueError, FileNotFoundError) as exc:
            raise DrillError(f"{self.name}: {exc}") from exc
        train, val, test = ctx.dataset("train"), ctx.dataset("val"), ctx.dataset("test")
        p_train = bd.poison(train, "train")
        p_val = bd.poison(val, "train") if val is not None else None  # carved from Training: same rule
        p_test = bd.poison(test, "test")
        weights = s.get("weights") or None
        finetune = bool(weights) if s.get("finetune") == "auto" else s.get("finetune") == "yes"
        config = ctx.train_config(weights=weights, finetune=finetune)
        model = ctx.build_model(config)
        # the LR schedule watches the validation split, carved from Training and so equally poisoned
        model, history = ctx.train("poisoned", config, p_train, p_test, role="attacked", model=model, val_ds=p_val)

        labels, preds = ctx.predict(model, p_test)
        poisoned = p_test.poisoned_indices
        hits = int((preds[poisoned] == bd.target_class).sum()) if poisoned else 0
        asr = hits / len(poisoned) if poisoned else None
        rep_poisoned = ctx.report(labels, preds, "Testing-poisoned")
        labels_c, preds_c = ctx.predict(model, test)
        rep_clean = ctx.report(labels_c, preds_c, "Testing-clean")
        # every tumour scan with the trigger: how often does the trigger alone flip it to notumor?
        all_bd = Backdoor(**{**bd.params(), "test_poison_rate": 1.0})
        p_all = all_bd.poison(test, "test")
        labels_a, preds_a = ctx.predict(model, p_all)
        tumour = [i for i in p_all.poisoned_indices]
        asr_all = float((preds_a[tumour] == bd.target_class).mean()) if tumour else None
        clean_as_target = float((preds_c[tumour] == bd.target_class).mean()) if tumour else None
        return {
            "backdoor": bd.params(),
            "model": {"arch": config.arch, "weights": weights, "finetune": finetune,
                      "model_kwargs": config.model_kwargs},
            "poisoned_train_images": len(p_train.poisoned_indices),
            "poisoned_test_images": len(poisoned),
            "reports": {"Testing-poisoned": rep_poisoned, "Testing-clean": rep_clean},
            "attack_success_rate": asr,
            "attack_success_rate_all_tumours": asr_all,
            "tumours_called_notumor_without_trigger": clean_as_target,
            "history": history,
            "summary": {"poisoned_accuracy": rep_poisoned["accuracy"], "clean_accuracy": rep_clean["accuracy"],
                        "attack_success_rate": asr},
        }

    def settings(self, config=None, quick=False):
        s = super().settings(config, quick)
        if s["finetune"] not in ("auto", "yes", "no"):
            raise DrillError(f"{self.name}: setting 'finetune' must be auto, yes or no (got {s['finetune']!r})")
        if s["finetune"] == "yes" and not s["weights"]:
            raise DrillError(f"{self.name}: finetune = 'yes' needs local ImageNet weights (setting 'weights')")
        if s["arch"] == "cnn" and s["weights"]:
            raise DrillError(f"{self.name}: the CNN trains from scratch; 'weights' applies to ResNets only")
        return s

    def format_table(self, report: Dict[str, Any]) -> str:
        rep = report["reports"]["Testing-poisoned"]
        lines = [side_by_side_report(rep, report["paper"], f"{self.title} (poisoned Testing split)"), ""]
        lines.append(f"clean Testing accuracy          {fmt(report['reports']['Testing-clean']['accuracy'], 4)}")
        lines.append(f"attack success rate (poisoned)  {fmt(report['attack_success_rate'], 4)}"
                     f"   ({report['poisoned_test_images']} poisoned tumour scans -> notumor)")
        lines.append(f"trigger on every tumour scan    {fmt(report['attack_success_rate_all_tumours'], 4)}"
                     f"   (same scans without trigger: {fmt(report['tumours_called_notumor_without_trigger'], 4)})")
        return "\n".join(lines)


@register_drill
class Table1BackdoorCNN(_BackdoorDrill):
    name = "table1-backdoor-cnn"
    title = "Table 1: backdoor (creeper trigger) on the custom CNN"
    summary = ("Poison every notumor training image with the 8x8 creeper trigger, train the CNN 5 epochs, "
               "test with 30 % of the tumour scans triggered.")
    paper = "§6.1, Table 1"
    defaults = {**TRAIN_DEFAULTS, **CNN_MODEL, **_BACKDOOR, "weights": "", "finetune": "auto"}
    quick = dict(QUICK_DATA)
    paper_result = _paper_report(
        [(0.54, 0.41, 0.47, 300), (0.34, 0.62, 0.44, 306), (0.01, 0.01, 0.01, 405), (0.72, 0.57, 0.64, 300)], 0.37)


@register_drill
class Table2BackdoorResNet50(_BackdoorDrill):
    name = "table2-backdoor-resnet50"
    title = "Table 2: backdoor (creeper trigger) on ResNet-50"
    summary = ("The same poisoning on ResNet-50: fine-tunes layer4 + fc when local ImageNet weights are given "
               "(the paper's setting), otherwise trains from scratch (this machine is offline).")
    paper = "§6.1, Table 2"
    defaults = {**TRAIN_DEFAULTS, "arch": "resnet50", "model_kwargs": {}, **_BACKDOOR, "weights": "",
                "finetune": "auto"}
    quick = {**QUICK_DATA, "max_train_images": 64, "max_test_images": 40}
    paper_result = _paper_report(
        [(0.79, 0.84, 0.81, 300), (0.60, 0.96, 0.74, 306), (1.00, 0.54, 0.70, 405), (0.98, 0.93, 0.95, 300)], 0.79)
