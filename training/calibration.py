"""Temperature scaling of a shipped classifier's confidences (``python -m training calibrate``).

Paper: Guo, Pleiss, Sun, Weinberger, "On Calibration of Modern Neural Networks", ICML 2017, §4.2.

The workstation shows each scan's softmax probabilities and flags a result whose top probability is
under :data:`breakfix_desktop.core.screening.LOW_CONFIDENCE` for a second look.  Adversarial
training, large ensemble weights and weight averaging all change the scale of the logits, and with
it how far those probabilities can be trusted.  This command measures it (NLL, expected calibration
error, results printed as "100.0 %" and wrong ones among them, errors the low-confidence flag
catches) and fits one temperature ``T > 0`` by minimising the negative log-likelihood of
``softmax(logits / T)`` on the validation split that training held out of Training (never on
Testing).  ``T`` changes no decision (the argmax of ``logits / T`` is the argmax of ``logits``), so
every accuracy and attack number of the card stands.  ``--dry-run`` measures without writing: seal
a temperature only where Testing confirms the gain (docs/results.md, "Confidence calibration").

The same run chooses the low-confidence flag's operating point: the lowest top-probability threshold
(0.50 to 0.99 in steps of 0.01) at which "needs a closer look" catches at least ``--catch-errors``
(default 80 %) of the validation split's wrong answers, so the mark catches most errors by design
instead of by luck.  The app marks a result for a closer look when either flag is up (low
confidence, or for an ensemble members disagree), so by default (``--flag-rule either``) the
threshold is chosen for that union: the disagreement flag already catches some errors, and the
threshold need only catch the rest.  ``--flag-rule low-confidence`` chooses it for the
low-confidence flag alone (the rule until 2026-12-07; a single model has no other flag, and both
rules agree).  The section lists flagged scans and errors caught at each threshold on validation
and on Testing, for the low-confidence flag and for either flag.  ``--no-temperature`` keeps the
probabilities as they are (T = 1) and seals only the flag.

Where ``T`` lives: sealed in the ONNX file's metadata (``temperature``, inside the bytes the card and
the manifest hash) and in the card (``temperature``, with the fit's before/after measurements under
``calibration``).  The app divides the decision logits by it and refuses a card that disagrees with
the sealed value (:mod:`breakfix_desktop.core.model_registry`).  The flag's threshold lives the same
way (metadata and card ``low_confidence``); the screening engine flags below it.

Example::

    python -m training calibrate --model resources/models/ensemble.onnx --manifest resources/models/manifest.json
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from breakfix_desktop.core.fsutil import atomic_write_bytes
from breakfix_desktop.core.hashing import sha256_file

log = logging.getLogger(__name__)

#: the temperatures the fit may choose from (a wider range means the logits are broken, not miscalibrated)
T_BOUNDS = (0.05, 50.0)
#: reliability bins of the expected calibration error (Guo et al.'s M = 15)
ECE_BINS = 15
#: the top probability the app prints as "100.0 %" (one decimal)
SHOWN_AS_CERTAIN = 0.9995


#: thresholds the low-confidence flag may be set to
FLAG_GRID = tuple(round(0.5 + 0.01 * i, 2) for i in range(50))
#: the share of validation errors the flag must catch by default
CATCH_ERRORS = 0.8
#: what the threshold is chosen for: the app's closer-look mark (either flag) or the low-confidence flag alone
FLAG_RULES = ("either", "low-confidence")


class CalibrationError(ValueError):
    """The model or its card cannot be calibrated (the message says which file and why)."""


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """What the app shows: its own softmax of ``logits / temperature``."""
    from breakfix_desktop.core.screening import softmax

    return softmax(np.asarray(logits, dtype=np.float64) / temperature)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    logp = _log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return float(-logp[np.arange(len(labels)), np.asarray(labels)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: Tuple[float, float] = T_BOUNDS) -> float:
    """The ``T`` in ``bounds`` that minimises :func:`nll` (bounded Brent search over log T; the NLL is
    convex in 1/T, so the minimum is the global one)."""
    from scipy.optimize import minimize_scalar

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise CalibrationError(f"need N x classes logits and N labels (got {logits.shape} and {labels.shape})")
    if not np.isfinite(logits).all():
        raise CalibrationError("the logits contain NaN or infinity")
    res = minimize_scalar(lambda log_t: nll(logits, labels, math.exp(log_t)),
                          bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-5})
    return float(math.exp(res.x))


def calibration_stats(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0,
                      low_confidence: Optional[float] = None) -> Dict[str, Any]:
    """What a doctor would see at ``temperature``: accuracy, NLL, expected calibration error (15 bins,
    torchmetrics), mean top probability, how many results read "100.0 %", and how many are flagged as
    low confidence (top probability < ``low_confidence``, default the app's) and how many of the errors
    those flags catch."""
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    from breakfix_desktop.core.screening import LOW_CONFIDENCE

    low_confidence = LOW_CONFIDENCE if low_confidence is None else low_confidence
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    probs = _probabilities(logits, temperature)
    top, pred = probs.max(axis=1), probs.argmax(axis=1)
    wrong = pred != labels
    low = top < low_confidence
    ece = multiclass_calibration_error(torch.from_numpy(probs), torch.from_numpy(labels), num_classes=probs.shape[1],
                                       n_bins=ECE_BINS, norm="l1")
    return {
        "images": int(len(labels)),
        "accuracy": float((~wrong).mean()),
        "nll": nll(logits, labels, temperature),
        "ece": float(ece),
        "mean_confidence": float(top.mean()),
        "shown_as_100_percent": int((top >= SHOWN_AS_CERTAIN).sum()),
        "errors": int(wrong.sum()),
        "errors_shown_as_100_percent": int((wrong & (top >= SHOWN_AS_CERTAIN)).sum()),
        "low_confidence": int(low.sum()),
        "errors_flagged_low_confidence": int((wrong & low).sum()),
    }


def flag_curve(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0,
               grid: Tuple[float, ...] = FLAG_GRID, also: Optional[np.ndarray] = None) -> Dict[str, Dict[str, int]]:
    """Per threshold ``t`` of ``grid``: results with top probability < ``t`` (``flagged``) and the wrong
    answers among them (``errors_caught``), out of ``errors``.  With ``also`` (a boolean per result: the
    other flag, members disagree) a result counts as flagged when either is up, as the app marks it."""
    probs = _probabilities(logits, temperature)
    top, wrong = probs.max(axis=1), probs.argmax(axis=1) != np.asarray(labels)
    other = np.zeros(len(top), dtype=bool) if also is None else np.asarray(also, dtype=bool)
    if other.shape != top.shape:
        raise CalibrationError(f"the other flag has {other.size} values for {len(top)} results")
    curve = {}
    for t in grid:
        flagged = (top < t) | other
        curve[f"{t:.2f}"] = {"flagged": int(flagged.sum()), "errors_caught": int((wrong & flagged).sum()),
                             "errors": int(wrong.sum()), "images": int(len(labels))}
    return curve


def choose_flag(curve: Dict[str, Dict[str, int]], catch: float = CATCH_ERRORS) -> Optional[float]:
    """The lowest threshold of ``curve`` (:func:`flag_curve`) whose flags catch at least ``catch`` of the
    errors; ``None`` when there are no errors to catch or no threshold catches enough."""
    for key, row in sorted(curve.items(), key=lambda kv: float(kv[0])):
        if row["errors"] and row["errors_caught"] >= catch * row["errors"]:
            return float(key)
    return None


def _decision_and_disagreement(outputs: Dict[str, np.ndarray]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """The decision logits and, for an ensemble, per scan whether the app flags "members disagree"
    (``None`` without members): the engine's own rule."""
    from breakfix_desktop.core.screening import MIN_AGREEMENT, decision_and_agreement

    logits, agreement = decision_and_agreement(outputs)
    return logits, None if agreement is None else agreement < MIN_AGREEMENT


def _disagreement_stats(logits: np.ndarray, labels: np.ndarray, temperature: float, flag: float,
                        disagree: np.ndarray) -> Dict[str, int]:
    """Scans the member-disagreement flag marks and errors among them (the union with every threshold
    at 0); the same for either flag at ``flag`` (:func:`flag_curve`'s union)."""
    alone = flag_curve(logits, labels, temperature, grid=(0.0,), also=disagree)["0.00"]
    either = flag_curve(logits, labels, temperature, grid=(flag,), also=disagree)[f"{flag:.2f}"]
    return {**alone, "either_flagged": either["flagged"], "either_errors_caught": either["errors_caught"]}


def holdout_of(card: Dict[str, Any], card_path: Path) -> Tuple[int, float]:
    """``(seed, val_fraction)`` of the validation split the card's model (every member of an ensemble)
    was trained without; refused when members disagree or the card does not say."""
    training = card.get("training") or {}
    configs = list((training.get("members") or {}).values()) or [training]
    keys = {(c.get("seed"), c.get("val_fraction")) for c in configs}
    if len(keys) != 1:
        raise CalibrationError(f"{card_path}: the members were trained with different validation splits "
                               f"(seed, val_fraction) {sorted(keys, key=str)}; no split is held out of all of them")
    seed, fraction = keys.pop()
    if not isinstance(seed, int) or not isinstance(fraction, (int, float)) or not 0 < fraction < 0.5:
        raise CalibrationError(f"{card_path}: the card does not give the seed and val_fraction of a validation "
                               f"split (seed {seed!r}, val_fraction {fraction!r}); it cannot be calibrated")
    return seed, float(fraction)


def calibrate_shipped(model_path: Path, data_root: Path, manifest: Optional[Path] = None,
                      on_skip: Optional[Callable] = None, seal: bool = True, fit: bool = True,
                      catch_errors: float = CATCH_ERRORS, flag_rule: str = "either",
                      evaluate: Optional[Callable[[Path, np.ndarray], Dict[str, np.ndarray]]] = None) -> Dict[str, Any]:
    """Fit the temperature of the classifier ``model_path`` (its card beside it) on its validation
    split, measure before/after on validation and on Testing (all, byte-deduplicated, near-deduplicated),
    and (``seal``) seal it in the file, rewrite the card (``temperature``, ``calibration``, ``sha256``,
    ``bytes``) and, with ``manifest``, its entry.  Returns the ``calibration`` section (the card's when
    sealed; without ``seal`` no file changes).  Without ``fit`` the temperature stays 1.  The
    low-confidence flag's threshold (:func:`choose_flag` on validation, ``catch_errors``) is sealed
    with it (``low_confidence``).  An ensemble's other flag, member disagreement (any ``member_*``
    output voting for another class, as the app flags it), is measured beside it; with ``flag_rule``
    ``"either"`` the threshold is chosen so that the two flags together catch ``catch_errors`` of the
    validation errors (``"low-confidence"``: that flag alone).  ``evaluate(path,
    grey)`` returns the graph's outputs by name (default: onnxruntime on CPU)."""
    from . import data as D
    from .audit import dedup_near
    from .export import graph_sha256, stamp_metadata, update_manifest

    if evaluate is None:
        from .cli import evaluate_onnx

        def evaluate(path: Path, grey: np.ndarray) -> Dict[str, np.ndarray]:
            return evaluate_onnx(path, grey, all_outputs=True)
    if flag_rule not in FLAG_RULES:
        raise CalibrationError(f"flag rule {flag_rule!r}: one of {', '.join(FLAG_RULES)}")
    model_path = Path(model_path)
    card_path = model_path.with_name(model_path.stem + ".card.json")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{card_path}: cannot read the model card ({exc})") from exc
    if card.get("role") not in ("classifier", "ensemble"):
        raise CalibrationError(f"{card_path}: role {card.get('role')!r}; only classifiers and ensembles are calibrated")
    if sha256_file(model_path) != card.get("sha256"):
        raise CalibrationError(f"{model_path}: its SHA-256 differs from its card's; calibrate the file the card describes")
    seed, fraction = holdout_of(card, card_path)

    train_all = D.scan_split(data_root, "Training", on_skip)
    test = D.scan_split(data_root, "Testing", on_skip)
    _, val = D.stratified_holdout(train_all, fraction, seed)
    grey, val_labels, _ = D.load_arrays(val, on_skip=on_skip)
    val_logits, val_disagree = _decision_and_disagreement(evaluate(model_path, grey))
    fitted = fit_temperature(val_logits, val_labels)
    temperature = fitted if fit else 1.0
    log.info("temperature %.4f fitted on %d validation scans%s", fitted, len(val_labels),
             "" if fit else " (not applied: --no-temperature)")
    if not T_BOUNDS[0] * 1.01 < fitted < T_BOUNDS[1] / 1.01:
        log.warning("the fitted temperature %.4g is at the edge of %s: the logits carry little information about "
                    "the labels; do not seal it", fitted, T_BOUNDS)
    union = flag_rule == "either" and val_disagree is not None
    flag = choose_flag(flag_curve(val_logits, val_labels, temperature, also=val_disagree if union else None),
                       catch_errors)
    if flag is None:
        raise CalibrationError(f"{model_path}: no low-confidence threshold up to {FLAG_GRID[-1]} catches "
                               f"{catch_errors:.0%} of the validation errors{' with the disagreement flag' if union else ''}; "
                               f"nothing sealed")

    grey, test_labels, kept = D.load_arrays(test, on_skip=on_skip)
    test_logits, test_disagree = _decision_and_disagreement(evaluate(model_path, grey))
    index = {s.path: i for i, s in enumerate(kept.samples)}
    dedup = D.dedup_against(test, train_all, D.file_hashes([s.path for s in test.samples]),
                            D.file_hashes([s.path for s in train_all.samples]))
    sets = {"validation": (val_logits, val_labels), "test": (test_logits, test_labels)}
    disagree = {"validation": val_disagree, "test": test_disagree}
    for name, split in (("test_dedup", dedup), ("test_dedup_near", dedup_near(test, train_all))):
        rows = [index[s.path] for s in split.samples if s.path in index]
        sets[name] = (test_logits[rows], test_labels[rows])
        disagree[name] = None if test_disagree is None else test_disagree[rows]
    measured = {name: {"before": calibration_stats(z, y, 1.0), "after": calibration_stats(z, y, temperature, flag)}
                for name, (z, y) in sets.items()}

    shown = tuple(sorted({0.6, 0.7, 0.8, 0.9, 0.95, flag}))
    caught = ("low confidence or members disagree (the app's closer-look mark)" if union
              else "top probability below it")
    section = {
        "method": "temperature scaling (Guo et al. 2017): probabilities = softmax(logits / temperature)",
        "temperature": temperature,
        "temperature_fitted": fitted,
        "low_confidence": {
            "threshold": flag, "catch_errors": catch_errors, "flag_rule": "either" if union else "low-confidence",
            "rule": f"the lowest top probability in {FLAG_GRID[0]:.2f}..{FLAG_GRID[-1]:.2f} (step 0.01) at which "
                    f"at least {catch_errors:.0%} of the validation errors are flagged ({caught}); results below "
                    f"it need a closer look",
            "curve": {name: flag_curve(z, y, temperature, grid=shown) for name, (z, y) in sets.items()},
            **({"curve_either": {name: flag_curve(z, y, temperature, grid=shown, also=disagree[name])
                                 for name, (z, y) in sets.items()}} if val_disagree is not None else {}),
        },
        "fitted_on": f"the validation split held out of Training (seed {seed}, val_fraction {fraction:g}), "
                     f"{len(val_labels)} scans; minimum NLL",
        **({"members_disagree": {name: _disagreement_stats(z, y, temperature, flag, disagree[name])
                                 for name, (z, y) in sets.items()}} if val_disagree is not None else {}),
        "ece_bins": ECE_BINS,
        "shown_as_100_percent": f"top probability >= {SHOWN_AS_CERTAIN} (printed as 100.0 %)",
        "sealed": "ONNX metadata 'temperature' and 'low_confidence'",
        "measured": measured,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if not seal:
        return section
    stamp_metadata(model_path, {"temperature": repr(temperature), "low_confidence": repr(flag)})
    card.update(temperature=temperature, low_confidence=flag, calibration=section, sha256=sha256_file(model_path),
                graph_sha256=graph_sha256(model_path), bytes=model_path.stat().st_size)
    atomic_write_bytes(card_path, (json.dumps(card, indent=2) + "\n").encode("utf-8"))
    if manifest is not None:
        update_manifest(manifest, card_path)
    return section


def format_section(section: Dict[str, Any]) -> str:
    """The before/after table :func:`calibrate_shipped` measured, for the terminal."""
    flag = section["low_confidence"]
    lines = [f"temperature {section['temperature']:.4f} (fitted {section['temperature_fitted']:.4f}; "
             f"{section['fitted_on']})",
             f"low-confidence flag below {flag['threshold']:.2f} ({flag['rule']}); 'after' rows flag at it",
             f"{'split':<16} {'':>6} {'NLL':>7} {'ECE':>7} {'mean top p':>10} {'100.0 %':>9} "
             f"{'errors':>7} {'err 100 %':>9} {'low conf':>9} {'errors low':>10}"]
    for name, pair in section["measured"].items():
        for when in ("before", "after"):
            s = pair[when]
            lines.append(f"{name:<16} {when:>6} {s['nll']:7.4f} {s['ece']:7.4f} {s['mean_confidence']:10.4f} "
                         f"{s['shown_as_100_percent']:>4}/{s['images']:<4} {s['errors']:>7} "
                         f"{s['errors_shown_as_100_percent']:>9} {s['low_confidence']:>9} "
                         f"{s['errors_flagged_low_confidence']:>10}")
    for name, row in (section.get("members_disagree") or {}).items():
        lines.append(f"{name:<16} members disagree: {row['flagged']} flagged / {row['errors_caught']} of "
                     f"{row['errors']} errors; either flag: {row['either_flagged']} / {row['either_errors_caught']}")
    for key, title in (("curve", "low-confidence flag"), ("curve_either", "either flag (low confidence or members disagree)")):
        if key not in flag:
            continue
        lines.append(f"{title}: scans flagged / errors caught of errors, per threshold")
        for name, curve in flag[key].items():
            lines.append(f"{name:<16} " + "  ".join(f"<{t}: {r['flagged']} / {r['errors_caught']} of {r['errors']}"
                                                  for t, r in curve.items()))
    return "\n".join(lines)


