"""Classification metrics (numpy only) and the paper-style report table."""

from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np

from breakfix_desktop.core.labels import CLASS_NAMES


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    return cm


def classification_report(labels, preds, class_names: Sequence[str] = CLASS_NAMES) -> Dict[str, Any]:
    """Per-class precision/recall/F1/support, accuracy, macro and weighted averages, confusion matrix.

    Same definitions as scikit-learn's ``classification_report`` (0 where a ratio is undefined).
    """
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    k = len(class_names)
    cm = confusion_matrix(labels, preds, k)
    tp = np.diag(cm).astype(float)
    pred_pos = cm.sum(0).astype(float)
    support = cm.sum(1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_pos > 0, tp / pred_pos, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    per_class = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
        for i, name in enumerate(class_names)
    }
    n = int(support.sum())
    weights = support / n if n else np.zeros_like(support)
    return {
        "classes": list(class_names),
        "per_class": per_class,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_avg": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean()), "support": n},
        "weighted_avg": {
            "precision": float((precision * weights).sum()),
            "recall": float((recall * weights).sum()),
            "f1": float((f1 * weights).sum()),
            "support": n,
        },
        "confusion_matrix": cm.tolist(),
        "n": n,
    }


def format_report(report: Dict[str, Any], title: str = "") -> str:
    """The report as a table laid out like the paper's Tables 1, 2 and 6."""
    lines = []
    if title:
        lines.append(title)
    lines.append(f"{'':<14}{'precision':>10}{'recall':>10}{'f1-score':>10}{'support':>10}")
    for name in report["classes"]:
        r = report["per_class"][name]
        lines.append(f"{name:<14}{r['precision']:>10.2f}{r['recall']:>10.2f}{r['f1']:>10.2f}{r['support']:>10d}")
    lines.append("")
    lines.append(f"{'accuracy':<14}{'':>10}{'':>10}{report['accuracy']:>10.4f}{report['n']:>10d}")
    for key, label in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        r = report[key]
        lines.append(f"{label:<14}{r['precision']:>10.2f}{r['recall']:>10.2f}{r['f1']:>10.2f}{r['support']:>10d}")
    lines.append("")
    lines.append("confusion matrix (rows: true, columns: predicted)")
    names = report["classes"]
    width = max(len(n) for n in names) + 2
    lines.append(" " * 14 + "".join(f"{n[:width - 1]:>{width}}" for n in names))
    for name, row in zip(names, report["confusion_matrix"]):
        lines.append(f"{name:<14}" + "".join(f"{v:>{width}d}" for v in row))
    return "\n".join(lines)
