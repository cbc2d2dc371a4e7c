"""What a model card says, in a few sentences for people (the Models page, reports):
:func:`card_summary` (facts) and :func:`card_warnings` (what a reviewer should know before
trusting the model).  Qt-free; reads only the card dict (``training/export.py: write_card``).
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional

__all__ = ["card_summary", "card_warnings", "ensemble_averages", "ENSEMBLE_MEAN_MARK", "robustness_line", "strongest_attack", "SIZE_RECALL_MARGIN", "ROBUST_WARN_BELOW"]

#: A detector whose recall on some pattern size class falls this far below its calibrated target
#: recall gets a warning: the gate lets those patterns through.
SIZE_RECALL_MARGIN = 0.10
#: A classifier whose accuracy under the strongest attack on its card is below this gets a warning:
#: someone who alters a scan can change most of what it says.
ROBUST_WARN_BELOW = 0.80


def _num(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _pct(value: Any) -> str:
    v = _num(value)
    return "-" if v is None else f"{100 * v:.1f} %"


def _metrics(card: Mapping[str, Any]) -> Mapping[str, Any]:
    m = card.get("metrics")
    return m if isinstance(m, Mapping) else {}


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _data_line(card: Mapping[str, Any]) -> Optional[str]:
    train = _get(card, "data", "training")
    if not isinstance(train, Mapping) or not train.get("images"):
        return None
    sha = str(train.get("sha256") or "")[:12]
    return (f"Data: {train['images']} {train.get('split', 'Training')} scans of "
            f"{_get(card, 'data', 'source') or 'the data set'}" + (f" (fingerprint {sha})" if sha else "") + ".")


#: The words an ensemble card's ``ensemble.rule`` carries when its ``logits`` are the weighted sum of
#: the members' logits divided by the total weight (``training.models.ENSEMBLE_RULE``, since
#: 2026-12-07); cards exported before describe a plain weighted sum.
ENSEMBLE_MEAN_MARK = "divided by the sum of the weights"


def ensemble_averages(card: Mapping[str, Any]) -> bool:
    """True when the ensemble card's graph outputs the weighted mean of its members' logits."""
    return ENSEMBLE_MEAN_MARK in str(_get(card, "ensemble", "rule") or "")


def card_summary(card: Mapping[str, Any]) -> List[str]:
    """A few plain sentences: what the model is, how it was trained, what was measured."""
    if not card:
        return ["No readable model card."]
    role = card.get("role")
    m = _metrics(card)
    lines: List[str] = []
    desc = card.get("description")
    if isinstance(desc, str) and desc.strip():
        lines.append(desc.strip().rstrip(".") + ".")
    if role in ("classifier", "ensemble"):
        acc, dedup = _num(_get(m, "test", "accuracy")), _num(_get(m, "test_dedup", "accuracy"))
        if acc is not None:
            n = _get(m, "test", "n")
            lines.append(f"Testing accuracy {_pct(acc)}" + (f" on {n} scans" if n else "")
                         + (f"; {_pct(dedup)} without the scans that are byte-identical copies of Training scans" if dedup is not None else "")
                         + ".")
        members = _get(card, "ensemble", "members")
        if role == "ensemble" and isinstance(members, list) and members:
            parts = [f"{mem.get('name')} x{mem.get('weight', 1):g}" for mem in members if isinstance(mem, Mapping)]
            how = "weighted mean of their logits" if ensemble_averages(card) else "logits summed with weights"
            lines.append(f"Members ({how}): " + ", ".join(parts) + ".")
        robust = robustness_line(card)
        if robust:
            lines.append(robust)
        flag = confidence_line(card)
        if flag:
            lines.append(flag)
        epochs = _get(card, "training", "epochs_done") or _get(card, "training", "epochs")
        if role == "classifier" and epochs:
            lines.append(f"Architecture {card.get('architecture', '?')}, trained {epochs} epochs.")
    elif role == "detector":
        thr, op = _num(card.get("threshold")), card.get("operating_point") or {}
        target = _num(_get(op, "target_recall"))
        lines.append(f"Flags a scan when its score is >= {thr:.4g}" if thr is not None else "No threshold in the card")
        if target is not None:
            lines[-1] += f", calibrated for recall {target:g} on validation scans."
        else:
            lines[-1] += "."
        union = _get(card, "training", "detector", "union")
        if isinstance(union, list) and len(union) > 1:
            lines.append(f"A union of {len(union)} detectors in one file: a scan is flagged when any of them finds "
                         "a pattern.")
        test = _get(m, "test")
        if isinstance(test, Mapping):
            lines.append(f"Testing ({_describe_rule(card)}): recall {_pct(test.get('recall'))}, precision "
                         f"{_pct(test.get('precision'))}, false alarms {_pct(test.get('false_positive_rate'))} "
                         f"of clean scans.")
        sizes = _get(m, "recall_per_size")
        if isinstance(sizes, Mapping) and sizes:
            lines.append("Recall per pattern size (one pattern per scan): " + ", ".join(
                f"{k} {_pct(_get(v, 'recall'))}" + ("" if _get(v, "in_training") else " (not trained on)")
                for k, v in sizes.items()) + ".")
        creeper = _get(m, "creeper")
        if isinstance(creeper, Mapping) and "corner" in creeper:
            lines.append(f"The §6.1 creeper trigger (never trained on): recall {_pct(_get(creeper, 'corner', 'recall'))} "
                         f"in the corner, {_pct(_get(creeper, 'random', 'recall'))} at random places.")
            if "white_corner" in creeper:
                lines.append(f"The same trigger at full contrast (white on black): recall "
                             f"{_pct(_get(creeper, 'white_corner', 'recall'))} in the corner, "
                             f"{_pct(_get(creeper, 'white_random', 'recall'))} at random places.")
        bins = _get(m, "recall_by_contrast", "bins")
        if isinstance(bins, list) and bins:
            parts = []
            for b in bins:
                if not isinstance(b, Mapping) or not b.get("images"):
                    continue
                lo, hi = _num(b.get("from")), _num(b.get("to"))
                span = f">= {lo:g}" if hi is None or hi > 1 else f"{lo:g}-{hi:g}"
                parts.append(f"{span}: {_pct(b.get('recall'))} of {b['images']}")
            if parts:
                lines.append("Recall by contrast with the pixels a pattern covers: " + ", ".join(parts) + ".")
    elif role == "check":
        test = _get(m, "test")
        if isinstance(test, Mapping):
            lines.append(f"False alarms {_pct(test.get('false_alarm'))} of clean Testing scans; catches "
                         f"{_pct(test.get('detection_fgsm'))} of FGSM and {_pct(test.get('detection_pgd'))} of "
                         f"PGD scans (eps {_get(m, 'attacks', 'eps') or '?'}).")
    data = _data_line(card)
    if data:
        lines.append(data)
    if card.get("created"):
        lines.append(f"Created {card['created']}.")
    return lines


def confidence_line(card: Mapping[str, Any]) -> Optional[str]:
    """How the card's ``training calibrate`` section sets the "needs a closer look" flag and the
    confidences, with what it caught on Testing; ``None`` for a card without one."""
    flag, section = _num(card.get("low_confidence")), card.get("calibration")
    if flag is None or not isinstance(section, Mapping):
        return None
    either = _get(section, "low_confidence", "flag_rule") == "either" and \
        isinstance(_get(section, "low_confidence", "curve_either"), Mapping)
    if either:  # chosen for the app's mark: low confidence or members disagree
        text = (f"Needs a closer look: top probability below {_pct(flag)} or members disagree")
    else:
        text = f"Low confidence (needs a closer look) below {_pct(flag)} top probability"
    target = _num(_get(section, "low_confidence", "catch_errors"))
    if target is not None:
        text += f", set to catch {_pct(target)} of the validation errors"
    test = _get(section, "low_confidence", "curve_either" if either else "curve", "test")
    row = test.get(f"{flag:.2f}") if isinstance(test, Mapping) else None
    if isinstance(row, Mapping) and row.get("images"):
        text += (f"; on Testing {'they flag' if either else 'it flags'} {row.get('flagged')} of {row.get('images')} "
                 f"scans and catch{'' if either else 'es'} {row.get('errors_caught')} of {row.get('errors')} errors")
    temperature = _num(card.get("temperature"))
    if temperature is not None and temperature != 1:
        text += f". Confidences are softmax(logits / {temperature:.3g}) (temperature fitted on validation)"
    return text + "."


def _robust_rows(card: Mapping[str, Any]) -> List[Mapping[str, Any]]:
    """The card's robustness rows, one per attack: the same attack measured on a subset and on more
    scans (or every scan) is quoted from the larger count."""
    rows = _get(_metrics(card), "robustness", "model")
    rows = [r for r in rows if isinstance(r, Mapping) and _num(r.get("accuracy")) is not None] \
        if isinstance(rows, list) else []
    best: dict = {}
    for r in rows:
        key = tuple(r.get(k) for k in ("attack", "eps", "alpha", "steps", "restarts"))
        if key not in best or (_num(r.get("n")) or 0) > (_num(best[key].get("n")) or 0):
            best[key] = r
    return list(best.values())


def strongest_attack(card: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The robustness row to quote: the lowest accuracy among the worst-case rows, or among all rows
    when the card has no worst case (None without any); of one attack measured on samples of two
    sizes, the larger sample's row."""
    rows = _robust_rows(card)
    worst = [r for r in rows if r.get("attack") == "worst case"] or rows
    return min(worst, key=lambda r: _num(r.get("accuracy")) or 0.0) if worst else None


def robustness_line(card: Mapping[str, Any]) -> Optional[str]:
    """One sentence on the accuracy measured under attack (``metrics.robustness``, written by
    ``python -m training card-robustness``); None when the card has none."""
    rows = _robust_rows(card)
    if not rows:
        return None
    order = {"FGSM": 0, "PGD": 1, "worst case": 2}
    rows = sorted(rows, key=lambda r: (order.get(str(r.get("attack")), 3), -(_num(r.get("eps")) or 0)))
    parts = []
    for r in rows:
        n = r.get("n")
        subset = r.get("scans") != "all Testing scans"
        parts.append(f"{r.get('label') or r.get('attack')} {_pct(r.get('accuracy'))}"
                     + (f" ({n} scans)" if subset and n else ""))
    return "Accuracy under white-box attack on Testing: " + "; ".join(parts) + "."


def _describe_rule(card: Mapping[str, Any]) -> str:
    test = _get(card, "data", "patterns", "test")
    if not isinstance(test, Mapping):
        return "patterned scans"
    per = "one" if test.get("max_patterns") == 1 else f"up to {test.get('max_patterns')}"
    return f"{per} {'/'.join(test.get('sizes') or [])} pattern per patterned scan"


def card_warnings(card: Mapping[str, Any]) -> List[str]:
    """What a reviewer should know before trusting the model (empty when nothing stands out)."""
    out: List[str] = []
    m = _metrics(card)
    if card.get("role") in ("classifier", "ensemble"):
        low = strongest_attack(card)
        if low is not None:
            acc = _num(low.get("accuracy")) or 0.0
            if acc < ROBUST_WARN_BELOW:
                out.append(f"Under the strongest attack measured ({low.get('label') or low.get('attack')}) only "
                           f"{_pct(acc)} of its answers hold: a scan altered by someone who has the model can "
                           "change the diagnosis it shows. Screen scans from trusted sources only.")
    if card.get("role") == "detector":
        target = _num(_get(card, "operating_point", "target_recall")) or 0.95
        sizes = _get(m, "recall_per_size")
        if isinstance(sizes, Mapping):
            weak = {k: _num(_get(v, "recall")) for k, v in sizes.items()}
            weak = {k: v for k, v in weak.items() if v is not None and v < target - SIZE_RECALL_MARGIN}
            if weak:
                out.append("Misses patterns of some sizes: recall " + ", ".join(
                    f"{k} {_pct(v)}" for k, v in weak.items()) + f" (target {target:g}); scans carrying "
                    "them reach the classifier unflagged.")
        elif card.get("metrics"):
            out.append("The card reports no recall per pattern size: whether larger patterns are caught was "
                       "not measured.")
        creeper = _get(m, "creeper")
        if isinstance(creeper, Mapping):
            weak = {k: _num(_get(creeper, k, "recall")) for k in ("corner", "random", "white_corner", "white_random")}
            weak = {k: v for k, v in weak.items() if v is not None and v < target - SIZE_RECALL_MARGIN}
            if weak:
                out.append("Misses the §6.1 creeper trigger: recall " + ", ".join(
                    f"{k.replace('white_', '') + (' (full contrast)' if k.startswith('white_') else '')} {_pct(v)}"
                    for k, v in weak.items()) + "; a backdoor drill's poisoned scans often pass.")
        fpr = _num(_get(m, "test", "false_positive_rate"))
        if fpr is not None and fpr > 0.10:
            out.append(f"{_pct(fpr)} of clean scans are flagged for review.")
    return out
