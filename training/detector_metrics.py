"""Binary detection metrics (numpy only): reports, ROC and precision-recall curves, operating points.

Used by the pattern detector (paper §5.3/§6.6: "pattern" vs "no pattern") and the feature-squeezing
second check.  A scan is *flagged* when ``score >= threshold`` - the same rule the screening engine
applies (``breakfix_desktop.core.screening``), so a threshold calibrated here means the same there.

* :func:`binary_report` - the paper's Tables 7-9 layout: precision / recall / F1 / support for
  "no pattern" and "pattern", plus accuracy, at one threshold;
* :func:`threshold_for_recall` - the highest threshold whose recall on the given positives is at
  least the target (the detector's operating point, calibrated on a validation split);
* :func:`threshold_for_false_alarm` - the lowest threshold that flags at most the given share of
  clean scores (the second check's operating point);
* :func:`roc_curve`, :func:`pr_curve` (all distinct thresholds, scikit-learn's conventions),
  :func:`thin` to keep a report small.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Sequence

import numpy as np

from .metrics import classification_report

#: How the pattern detector's ``score`` is read from its two heads (``training.detector``).
SCORE_RULES = ("mean", "segmentation", "classifier")
#: The score the app flags (drills' operating point, export).
DEFAULT_SCORE_RULE = "mean"
#: The score whose validation accuracy the training's LR schedule watches.
DEFAULT_TRAIN_RULE = "segmentation"
SCORE_MEANING = {
    "mean": "mean of the two heads' probabilities: the localisation map's maximum and the 2-logit head's "
            "softmax (a pattern both heads see scores highest)",
    "segmentation": "maximum of the localisation map (sigmoid of the segmentation head): the most "
                    "pattern-like cell of the scan",
    "classifier": "softmax of the 2-logit classification head, column 'pattern' (the paper's detector)",
}

DETECTOR_CLASSES = ("no pattern", "pattern")


def _arrays(labels, scores):
    y = np.asarray(labels, dtype=np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{len(y)} labels for {len(s)} scores")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (clean) or 1 (pattern / attacked)")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return y, s


def binary_report(labels, scores, threshold: float, class_names: Sequence[str] = DETECTOR_CLASSES) -> Dict[str, Any]:
    """Classification report of ``score >= threshold`` against ``labels`` (1 = positive)."""
    y, s = _arrays(labels, scores)
    rep = classification_report(y, (s >= threshold).astype(np.int64), class_names)
    rep["threshold"] = float(threshold)
    return rep


def rates(labels, scores, threshold: float) -> Dict[str, Any]:
    """Positive-class precision, recall, F1, false-positive rate and counts at ``threshold``."""
    y, s = _arrays(labels, scores)
    flag = s >= threshold
    tp, fp = int((flag & (y == 1)).sum()), int((flag & (y == 0)).sum())
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / pos if pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"threshold": float(threshold), "precision": precision, "recall": recall, "f1": f1,
            "false_positive_rate": fp / neg if neg else 0.0, "tp": tp, "fp": fp, "positives": pos, "negatives": neg}


def wilson_lower(successes: int, n: int, confidence: float) -> float:
    """One-sided lower Wilson score bound of a proportion ``successes / n`` at ``confidence``: the
    lower end of scipy's two-sided Wilson interval at ``2 * confidence - 1``."""
    from scipy.stats import binomtest

    if n <= 0:
        raise ValueError("a proportion of nothing has no bound")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=2 * float(confidence) - 1, method="wilson")
    return float(ci.low)


def threshold_for_recall(labels, scores, target: float, confidence: float | None = None) -> float:
    """The highest threshold ``t`` with recall(``score >= t``) >= ``target`` on the positives.

    With ``confidence`` (e.g. 0.9) the recall on the positives is not enough: the threshold is the
    highest whose one-sided lower Wilson bound (:func:`wilson_lower`) on that recall reaches
    ``target``, so the recall on scans like these, not just on these, is at least ``target`` with
    that confidence - the calibration's own sampling error is paid for with a lower threshold.
    ``ValueError`` when even flagging every positive cannot give that bound (too few positives)."""
    if not 0.0 < float(target) <= 1.0:
        raise ValueError(f"target recall must be in (0, 1] (got {target!r})")
    if confidence is not None and not 0.5 <= float(confidence) < 1.0:
        raise ValueError(f"recall confidence must be in [0.5, 1) (got {confidence!r})")
    y, s = _arrays(labels, scores)
    pos = np.sort(s[y == 1])[::-1]
    if pos.size == 0:
        raise ValueError("cannot calibrate for recall: no positive (patterned) scans in the calibration split")
    k = max(1, math.ceil(float(target) * pos.size - 1e-9))
    if confidence is not None:
        while k <= pos.size and wilson_lower(k, pos.size, confidence) < float(target):
            k += 1
        if k > pos.size:
            raise ValueError(f"cannot calibrate for recall {target:g} at confidence {confidence:g}: "
                             f"{pos.size} positive scans are too few (use more calibration draws)")
    return float(pos[k - 1])


def threshold_for_false_alarm(clean_scores, rate: float) -> float:
    """The lowest threshold that flags at most ``floor(rate * n)`` of the ``n`` clean scores."""
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"false-alarm rate must be in [0, 1) (got {rate!r})")
    c = np.sort(np.asarray(clean_scores, dtype=np.float64).ravel())[::-1]
    if c.size == 0:
        raise ValueError("cannot calibrate a false-alarm rate without clean scans")
    allowed = int(math.floor(float(rate) * c.size + 1e-9))
    if allowed >= c.size:
        return float(c[-1])
    return float(np.nextafter(c[allowed], np.inf))


def _sorted_counts(y: np.ndarray, s: np.ndarray):
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # the last index of every distinct score
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1 - tps).astype(np.float64)
    return s[last], tps, fps


def roc_curve(labels, scores) -> Dict[str, Any]:
    """``fpr``, ``tpr``, ``thresholds`` (descending; the first point is (0, 0) at +inf) and ``auc``."""
    y, s = _arrays(labels, scores)
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    if pos == 0 or neg == 0:
        return {"fpr": [], "tpr": [], "thresholds": [], "auc": None,
                "note": "ROC needs both clean and positive scans"}
    thr, tps, fps = _sorted_counts(y, s)
    tpr = np.r_[0.0, tps / pos]
    fpr = np.r_[0.0, fps / neg]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": [math.inf] + thr.tolist(), "auc": auc}


def pr_curve(labels, scores) -> Dict[str, Any]:
    """``precision``, ``recall``, ``thresholds`` (descending) and ``average_precision``
    (sum over thresholds of (R_n - R_{n-1}) P_n, as scikit-learn)."""
    y, s = _arrays(labels, scores)
    pos = int((y == 1).sum())
    if pos == 0:
        return {"precision": [], "recall": [], "thresholds": [], "average_precision": None,
                "positive_rate": 0.0, "note": "a precision-recall curve needs positive scans"}
    thr, tps, fps = _sorted_counts(y, s)
    precision = tps / (tps + fps)
    recall = tps / pos
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return {"precision": precision.tolist(), "recall": recall.tolist(), "thresholds": thr.tolist(),
            "average_precision": ap, "positive_rate": pos / y.size}


def thin(curve: Dict[str, Any], max_points: int = 200) -> Dict[str, Any]:
    """The curve with at most ``max_points`` points (evenly spaced by index, ends kept)."""
    keys = [k for k, v in curve.items() if isinstance(v, list)]
    n = len(curve[keys[0]]) if keys else 0
    if n <= max_points:
        return dict(curve)
    idx = np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    out = dict(curve)
    for k in keys:
        out[k] = [curve[k][i] for i in idx]
    out["thinned_from"] = n
    return out


def json_safe_curve(curve: Dict[str, Any]) -> Dict[str, Any]:
    """Infinite thresholds become ``None`` (JSON has no infinity)."""
    out = dict(curve)
    if "thresholds" in out:
        out["thresholds"] = [None if not math.isfinite(t) else t for t in out["thresholds"]]
    return out
