"""Export the pattern detector and the feature-squeezing check as shippable ONNX models with cards.

Both follow the app's model contract (``docs/architecture.md``): input ``pixels`` float32
N x 3 x 224 x 224 in [0, 1] (dynamic N); normalisation inside the graph; ONNX opset 18 through
``torch.export`` (:mod:`training.export`), ``onnx.checker`` full check; a card
(``breakfix-model-card/1``) beside the file with the SHA-256, data fingerprint, training settings
and metrics **measured through onnxruntime on the exported file itself**, and the ``threshold``
the screening engine flags at (``score >= threshold``); optionally a manifest entry.

* :func:`export_detector` - role ``detector`` (paper §5.3): outputs ``score`` and ``map``.  With
  the data folder, the threshold is calibrated on the validation split carved from Training (the
  split the training run held out, patterned by the rule it recorded) for ``target_recall``,
  and precision / recall / F1, ROC and precision-recall curves and localisation quality are
  measured on the patterned Testing split.  The torch-vs-onnxruntime parity check must pass
  (max |difference| of ``score`` and ``map`` <= 1e-4) or no card is written.
* :func:`export_squeeze_check` - role ``check`` (Xu et al. 2018): built around a classifier
  checkpoint; threshold calibrated on the classifier's own clean validation split for a false-alarm
  rate; detection measured on clean vs FGSM / PGD (eps 0.01) Testing scans.

CLI: ``python -m training detector export ...`` and ``python -m training detector squeeze ...``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

from breakfix_desktop.core.hashing import sha256_file
from breakfix_desktop.core.preprocess import IMAGE_SIZE
from breakfix_desktop.core.protocol import EventWriter, NullWriter

from . import detector_metrics as M
from .detector import (DEFAULT_SCORE_RULE, OUTPUT_NAMES, SCORE_MEANING, SCORE_RULES, DetectorGraph, check_parity,
                       export_detector_onnx, finite, graph_parity, load_detector, localisation_stats)
from .export import FP16_MIN_AGREEMENT, WEIGHT_STORAGE, stamp_metadata
from .patterns import SIZE_CLASSES, PatternDataset, PatternInjector, PatternSpec, pattern_contrast

log = logging.getLogger(__name__)

DETECTOR_CLASSES = ["no pattern", "pattern"]
#: Contrast bins of the card's ``recall_by_contrast`` (pixel units; the last one is open above).
CONTRAST_BINS = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.4), (0.4, 1.01))


def _context(root: Path, out: Path, cfg: Dict[str, Any], events: EventWriter):
    """The training run's splits, rebuilt exactly as the drill made them (same seed and subsets)."""
    from .drills.base import DrillContext

    settings = {"seed": int(cfg.get("seed", 0)), "max_train_images": cfg.get("max_train_images"),
                "max_test_images": cfg.get("max_test_images"), "val_fraction": cfg.get("val_fraction", 0.1)}
    return DrillContext(Path(root), Path(out), settings, events)


class _Session:
    def __init__(self, path: Path):
        import onnxruntime as ort

        self.sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor, names=("score",)):
        return self.sess.run(list(names), {"pixels": np.ascontiguousarray(x.numpy(), dtype=np.float32)})


def _loader(ds, batch: int = 32):
    from .engine import make_loader

    return make_loader(ds, batch, False, 0, 0)


def _pattern_draws(base, spec: PatternSpec, stream: str, rate: float, seed: int, draws: int) -> list:
    """``draws`` independent patterned copies of ``base`` (streams ``stream``, ``stream-1``, ...; each its
    own patterned share and placements), for calibrating or comparing on more patterns than one draw."""
    return [PatternDataset(base, spec, stream if k == 0 else f"{stream}-{k}", rate, seed, with_mask=False)
            for k in range(draws)]


def _pooled(parts: list):
    """One dataset over ``parts`` (the part itself when there is one, keeping its attributes)."""
    return parts[0] if len(parts) == 1 else torch.utils.data.ConcatDataset(parts)


def _onnx_scores(sess: _Session, dataset, localise: bool = False) -> Dict[str, Any]:
    labels, scores = [], []
    hits = ious = n_loc = 0.0
    for batch in _loader(dataset):
        x, y = batch[0], batch[1]
        if localise:
            score, heat = sess(x, ("score", "map"))
            mask = batch[2]
            pos = mask.flatten(1).amax(1) > 0
            if pos.any():
                h, i, n = localisation_stats(torch.from_numpy(heat)[pos], mask[pos])
                hits, ious, n_loc = hits + h, ious + i, n_loc + n
        else:
            (score,) = sess(x)
        labels.append(y.numpy())
        scores.append(np.asarray(score, dtype=np.float64).reshape(-1))
    out: Dict[str, Any] = {"labels": np.concatenate(labels).astype(np.int64), "scores": np.concatenate(scores)}
    if localise:
        out["localisation"] = {"images": int(n_loc), "pointing_hit_rate": hits / n_loc if n_loc else None,
                               "mean_iou_at_0.5": ious / n_loc if n_loc else None,
                               "rule": "pointing: the map's maximum on a pattern pixel (2 px tolerance); IoU of "
                                       "map >= 0.5 with the pattern mask; patterned images only"}
    return out


def _storage_effect(ref: _Session, sess: _Session, dataset, threshold: float, labels: np.ndarray,
                    scores: np.ndarray) -> Dict[str, Any]:
    """The float16-stored file (``scores`` already measured on ``dataset`` through ``sess``) against
    the float32 graph ``ref``: decisions at ``threshold``, score and map differences."""
    ref_scores, max_map = [], 0.0
    for batch in _loader(dataset):
        a_score, a_map = ref(batch[0], OUTPUT_NAMES)
        _, b_map = sess(batch[0], OUTPUT_NAMES)
        ref_scores.append(np.asarray(a_score, dtype=np.float64).reshape(-1))
        max_map = max(max_map, float(np.abs(np.asarray(a_map) - np.asarray(b_map)).max()))
    r = np.concatenate(ref_scores)
    changed = int(((r >= threshold) != (scores >= threshold)).sum())
    y = labels.astype(bool)
    return {"images": int(len(r)), "threshold": threshold, "decisions_changed": changed,
            "decision_agreement": 1.0 - changed / max(len(r), 1),
            "recall": float((scores[y] >= threshold).mean()) if y.any() else None,
            "recall_float32": float((r[y] >= threshold).mean()) if y.any() else None,
            "false_positive_rate": float((scores[~y] >= threshold).mean()) if (~y).any() else None,
            "false_positive_rate_float32": float((r[~y] >= threshold).mean()) if (~y).any() else None,
            "max_abs_score_diff": float(np.abs(r - scores).max()) if len(r) else 0.0,
            "max_abs_map_diff": max_map}


def _recall_by_contrast(base, patterned: PatternDataset, scores: np.ndarray, threshold: float,
                        by_shape: bool = False) -> Dict[str, Any]:
    """Recall at ``threshold`` of the patterned scans of ``patterned`` (a one-pattern test rule over
    the clean dataset ``base``; ``scores`` in dataset order) in the :data:`CONTRAST_BINS` of
    :func:`~training.patterns.pattern_contrast`: which patterns slip through.  With ``by_shape``,
    the same bins per shape too (docs/results.md: small triangles slip through at contrast 0.1-0.2
    where squares do not)."""
    idx = np.asarray(patterned.poisoned_indices, dtype=np.int64)
    drawn = [patterned.placements(int(i)) for i in idx]
    contrast = np.array([pattern_contrast(base[int(i)][0], p) for i, p in zip(idx, drawn)])
    caught = np.asarray(scores)[idx] >= threshold
    shapes = np.array([p[0].shape for p in drawn])

    def bins(keep: np.ndarray) -> list:
        return [{"from": lo, "to": hi, "images": int(sel.sum()), "missed": int((sel & ~caught).sum()),
                 "recall": float(caught[sel].mean()) if sel.any() else None}
                for lo, hi in CONTRAST_BINS for sel in [keep & (contrast >= lo) & (contrast < hi)]]

    out: Dict[str, Any] = {"rule": "mean |pattern value - scan pixel it replaces| over the pattern, patterned "
                                   "Testing scans", "bins": bins(np.ones(len(idx), dtype=bool))}
    if by_shape:
        out["by_shape"] = {name: bins(shapes == name) for name in sorted(set(shapes.tolist()))}
    return out


def _fingerprints(ctx) -> Dict[str, Any]:
    from . import data as D

    train, val, test = ctx.splits()
    out = {"source": ctx.data_root.name, "training": D.fingerprint(train), "testing": D.fingerprint(test)}
    if val is not None:
        out["validation"] = D.fingerprint(val)
    return out


def _parity_pixels(dataset, n: int) -> np.ndarray:
    idx = np.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().astype(int)
    return np.stack([dataset[int(i)][0].numpy() for i in sorted(set(idx.tolist()))]).astype(np.float32)


def _synthetic_parity_pixels(n: int, seed: int = 0) -> np.ndarray:
    """Noise scans with one small pattern each (parity without a data folder)."""
    rng = np.random.default_rng(seed)
    inj = PatternInjector(PatternSpec.test(sizes=("small",)), seed, "parity")
    out = []
    for i in range(n):
        x = np.repeat(rng.uniform(0, 0.6, (1, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32), 3, axis=0)
        out.append(inj.apply(x, i)[0])
    return np.stack(out)


# --------------------------------------------------------------------------- the detector
def _trained_on(meta: Dict[str, Any], field: str) -> set:
    """Pattern ``field`` (``shapes`` or ``sizes``) of the training rule of a detector card's settings;
    for a union, of any member (a union has seen what any member trained on)."""
    metas = [meta] + [u.get("detector") or {} for u in meta.get("union") or []]
    return set().union(*(set((((m.get("patterns") or {}).get("train") or {}).get(field)) or ()) for m in metas))


def _union(first, first_state: Dict[str, Any], paths) -> tuple:
    """``(DetectorUnion of the checkpoints at paths, card entries)``.  Every member must have held out
    the same validation split (seed and fraction of the Training carve-out), or the union would be
    calibrated on scans one of its members trained on."""
    from .detector import DetectorUnion

    members, entries = [first], []
    ref = {k: first_state["config"].get(k) for k in ("seed", "val_fraction")}
    for i, path in enumerate(paths):
        model, state = (first, first_state) if i == 0 else load_detector(path)
        got = {k: state["config"].get(k) for k in ref}
        if got != ref:
            raise ValueError(f"detector export: {path} held out a different validation split ({got}) than "
                             f"{paths[0]} ({ref}); a union is calibrated on scans none of its members trained on")
        if i:
            model.tta = first.tta
            members.append(model)
        entries.append({"checkpoint": str(path), "sha256": sha256_file(path), "epochs_done": int(state.get("epoch", 0)),
                        "architecture": model.description,
                        "detector": {k: v for k, v in state["detector"].items() if k != "union"},
                        **({"provenance": state["provenance"]} if state.get("provenance") else {})})
    return DetectorUnion(members), entries


def export_detector(checkpoint: os.PathLike | str, out: os.PathLike | str, name: str, *,
                    data_root: Optional[os.PathLike | str] = None, manifest: Optional[os.PathLike | str] = None,
                    target_recall: Optional[float] = None, threshold: Optional[float] = None,
                    parity_images: int = 16, description: Optional[str] = None,
                    events: Optional[EventWriter] = None, score_rule: Optional[str] = None,
                    calibrate_on: str = "val", weight_storage: str = "float32",
                    tta: Optional[str] = None, calibration_draws: int = 1,
                    recall_confidence: Optional[float] = None) -> Dict[str, Any]:
    """Export a detector checkpoint to ``out`` (.onnx) + card (+ manifest entry); returns a summary.

    ``weight_storage="float16"`` stores the large weights as float16 (file halved, computation
    float32; :func:`training.export.store_weights_fp16`).  Every metric is still measured on the
    shipped file; the torch parity check runs on a float32 export of the same detector, and the
    float16 file's decisions on the patterned Testing scans are compared with that float32 graph's
    at the calibrated threshold (card ``metrics.weight_storage``): fewer than
    ``FP16_MIN_AGREEMENT`` agreeing refuses the export.

    ``calibrate_on``: the patterns of the validation scans the threshold is calibrated on -
    ``"val"`` the training run's validation rule, ``"test-rule"`` the test rule (one pattern of the
    test sizes per patterned scan: the hardest case the operating point must reach).

    ``calibration_draws`` K > 1 calibrates on K independent pattern draws of the validation scans
    (streams ``val``, ``val-1``, ...: K x ~285 patterned scans, so the threshold moves less with one
    draw's luck); ``recall_confidence`` c asks for recall >= target as a one-sided lower Wilson
    bound at confidence c on those positives (:func:`~training.detector_metrics.threshold_for_recall`)
    instead of on the calibration scans alone.

    ``tta``: the graph's test-time augmentation (:data:`~training.detector.TTA_MODES`; default the
    checkpoint's own, normally ``none``); ``hflip`` averages both heads over the scan and its mirror
    image inside the graph (same input/output contract, twice the compute).  The card records it
    under ``training.detector.tta`` so ``import-onnx`` rebuilds the same graph.

    ``checkpoint`` may be a list of two or more detector checkpoints: the file is then their
    :class:`~training.detector.DetectorUnion` (map = cell-wise maximum, flagged when any member
    flags), calibrated and measured as one detector; the card lists the members under
    ``training.detector.union`` (the first member's training settings and patterns are the card's).

    Without ``data_root`` an explicit ``threshold`` is required (nothing to calibrate on) and the
    card carries no measured metrics."""
    from .detector import check_tta
    from .export import update_manifest, write_card

    events = events or NullWriter()
    out = Path(out)
    paths = [checkpoint] if isinstance(checkpoint, (str, os.PathLike)) else list(checkpoint)
    if not paths:
        raise ValueError("detector export: no checkpoint given")
    model, state = load_detector(paths[0])
    meta, cfg = dict(state["detector"]), state["config"]
    if len(paths) > 1:
        model, meta["union"] = _union(model, state, paths)
    if tta is not None:
        model.tta = meta["tta"] = check_tta(tta)
    if meta.get("tta", "none") == "none":
        meta.pop("tta", None)  # cards of detectors without augmentation stay as they were
    target = float(target_recall if target_recall is not None else meta.get("target_recall", 0.95))
    if data_root is None and threshold is None:
        raise ValueError("detector export: without --data there is nothing to calibrate on; give --threshold")
    if isinstance(calibration_draws, bool) or not isinstance(calibration_draws, int) or calibration_draws < 1:
        raise ValueError(f"detector export: calibration draws must be an integer >= 1 (got {calibration_draws!r})")
    if calibrate_on not in ("val", "test-rule"):
        raise ValueError(f"detector export: calibrate_on must be 'val' or 'test-rule' (got {calibrate_on!r})")
    score_rule = score_rule or DEFAULT_SCORE_RULE
    if score_rule not in SCORE_RULES:
        raise ValueError(f"detector export: unknown score rule {score_rule!r} (choose from {', '.join(SCORE_RULES)})")
    if weight_storage not in WEIGHT_STORAGE:
        raise ValueError(f"detector export: weight storage must be one of {', '.join(WEIGHT_STORAGE)} "
                         f"(got {weight_storage!r})")
    export_detector_onnx(model, out, score_rule, weight_storage)
    events.emit("artifact_written", kind="onnx", path=str(out))
    reference = None
    if weight_storage == "float16":
        import tempfile

        ref_dir = tempfile.TemporaryDirectory(prefix="breakfix-detector-")
        reference = Path(ref_dir.name) / "reference-float32.onnx"
        export_detector_onnx(model, reference, score_rule)
    storage: Optional[Dict[str, Any]] = None
    graph = DetectorGraph(model, score_rule)
    metrics: Dict[str, Any] = {"history": state.get("history", [])}
    data_info: Dict[str, Any] = {}
    op: Dict[str, Any] = {}
    if data_root is not None:
        ctx = _context(Path(data_root), out.parent, cfg, events)
        specs = {k: PatternSpec.from_dict(v) for k, v in meta["patterns"].items()}
        seed = int(meta.get("seed", cfg.get("seed", 0)))
        val, test = ctx.dataset("val"), ctx.dataset("test")
        if val is None and threshold is None:
            raise ValueError("detector export: the training run held out no validation split (val_fraction 0); "
                             "give --threshold")
        p_test = PatternDataset(test, specs["test"], "test", meta["test_poison_rate"], seed)
        sess = _Session(out)
        if val is not None:
            rule = specs["test"] if calibrate_on == "test-rule" else specs["val"]
            parts = _pattern_draws(val, rule, "val", meta["train_poison_rate"], seed, calibration_draws)
            p_val = _pooled(parts)
            v = _onnx_scores(sess, p_val)
            if threshold is None:
                threshold = M.threshold_for_recall(v["labels"], v["scores"], target, recall_confidence)
                named = "test rule: one pattern per scan" if calibrate_on == "test-rule" else \
                    f"{meta.get('val_patterns')} rule"
                draws = f", {calibration_draws} pattern draws of {len(val)} scans" if calibration_draws > 1 else ""
                op["calibrated_on"] = (f"validation split carved from Training ({len(p_val)} scans{draws}, "
                                       f"{sum(len(p.poisoned_indices) for p in parts)} patterned, {named})")
                op["calibration_patterns"] = rule.to_dict()
                op["calibration_draws"] = calibration_draws
                if recall_confidence is not None:
                    tp = int(((v["scores"] >= threshold) & (v["labels"] == 1)).sum())
                    pos = int((v["labels"] == 1).sum())
                    op["recall_confidence"] = float(recall_confidence)
                    op["validation_recall_lower_bound"] = M.wilson_lower(tp, pos, recall_confidence)
                    op["rule"] = (f"highest threshold whose one-sided {recall_confidence:g} lower Wilson bound on "
                                  f"validation recall reaches {target:g}")
            else:
                op["calibrated_on"] = "given by hand (--threshold)"
            op["validation"] = M.rates(v["labels"], v["scores"], threshold)
        t = _onnx_scores(sess, p_test, localise=True)
        y, s = t["labels"], t["scores"]
        rep = M.binary_report(y, s, threshold)
        roc, pr = M.roc_curve(y, s), M.pr_curve(y, s)
        op.update({"target_recall": target, "threshold": float(threshold), "test": M.rates(y, s, threshold)})
        metrics.update({
            "test": {"accuracy": rep["accuracy"], "precision": op["test"]["precision"], "recall": op["test"]["recall"],
                     "f1": op["test"]["f1"], "false_positive_rate": op["test"]["false_positive_rate"],
                     "threshold": float(threshold), "report": rep},
            "test_at_0.5": M.binary_report(y, s, 0.5),
            "roc_auc": roc["auc"], "average_precision": pr["average_precision"],
            "roc": M.json_safe_curve(M.thin(roc)), "pr": M.thin(pr), "localisation": t["localisation"],
            "measured_with": "onnxruntime on the exported file",
        })
        if reference is not None:
            storage = _storage_effect(_Session(reference), sess, p_test, float(threshold), y, s)
            log.info("detector %s: float16 storage on %d patterned Testing scans: %d decisions changed, "
                     "max |dscore| %.2e, max |dmap| %.2e", name, storage["images"], storage["decisions_changed"],
                     storage["max_abs_score_diff"], storage["max_abs_map_diff"])
            if storage["decision_agreement"] < FP16_MIN_AGREEMENT:
                raise RuntimeError(f"float16 weight storage changed {storage['decisions_changed']} of "
                                   f"{storage['images']} Testing decisions (agreement "
                                   f"{storage['decision_agreement']:.4f} < {FP16_MIN_AGREEMENT}); export with "
                                   "--weight-storage float32")
        # recall per size class (one pattern of the test shapes per scan, every scan patterned): the
        # gate must catch patterns larger than the test rule's too; same scans as the drills' numbers
        metrics["recall_per_size"] = {}
        trained_sizes = _trained_on(meta, "sizes")
        for size in SIZE_CLASSES:
            ds = PatternDataset(test, PatternSpec.test(specs["test"].shapes, (size,)), f"size-{size}", 1.0, seed,
                                with_mask=False)
            r = _onnx_scores(sess, ds)["scores"]
            metrics["recall_per_size"][size] = {"images": int(len(r)), "recall": float((r >= threshold).mean()),
                                                "recall_at_0.5": float((r >= 0.5).mean()),
                                                "in_training": size in trained_sizes}
        # which patterns slip through: recall by contrast with the scan pixels they cover
        metrics["recall_by_contrast"] = _recall_by_contrast(test, p_test, t["scores"], threshold, by_shape=True)
        # the §6.1 backdoor trigger (never trained on): 8x8 creeper, intensity 2.0 in normalised units
        from .attacks import Backdoor
        from .drills.detector import CREEPER_VARIANTS, _Stamped

        metrics["creeper"] = {"trigger": "creeper 8x8", "intensity": 2.0, "units": "normalized"}
        for key, (location, intensity, units) in CREEPER_VARIANTS.items():
            bd = Backdoor(trigger="creeper", location=location, intensity=intensity, units=units, seed=seed)
            r = _onnx_scores(sess, _Stamped(test, lambda x, i, bd=bd: bd.apply(x, index=i)))["scores"]
            metrics["creeper"][key] = {"images": int(len(r)), "recall": float((r >= threshold).mean())}
        log.info("detector %s: recall per size %s", name,
                 ", ".join(f"{k} {v['recall']:.3f}" for k, v in metrics["recall_per_size"].items()))
        data_info = {**_fingerprints(ctx), "patterns": {
            "rule": "training.patterns (deterministic from seed, stream and index)", "seed": seed,
            "size_classes_px": {k: list(v) for k, v in SIZE_CLASSES.items()},
            "train": specs["train"].to_dict(), "val": specs["val"].to_dict(), "test": specs["test"].to_dict(),
            "train_poison_rate": meta["train_poison_rate"], "test_poison_rate": meta["test_poison_rate"],
            "test_poisoned": len(p_test.poisoned_indices), "test_images": len(p_test)}}
        pixels = _parity_pixels(p_test, parity_images)
        parity_source = "patterned Testing scans"
        log.info("detector %s: threshold %.6g, test precision %.4f recall %.4f", name, threshold,
                 op["test"]["precision"], op["test"]["recall"])
        events.emit("metrics", split="Testing-patterns@operating-point", report=rep)
    else:
        op = {"threshold": float(threshold), "calibrated_on": "given by hand (--threshold); no data to measure on"}
        pixels = _synthetic_parity_pixels(parity_images)
        parity_source = "synthetic noise scans with one small pattern"
    stamp_metadata(out, {"threshold": repr(float(threshold)), "target_recall": repr(target)})
    par = {**graph_parity(graph, reference or out, pixels, OUTPUT_NAMES), "source": parity_source}
    check_parity(par)
    if reference is not None:
        par["graph"] = "the float32-stored export of the same detector (the shipped file stores weights as float16)"
        px = torch.from_numpy(pixels)
        ref_out, got_out = _Session(reference)(px, OUTPUT_NAMES), _Session(out)(px, OUTPUT_NAMES)
        metrics["weight_storage"] = {
            "dtype": "float16", "rule": "weights with >= 1024 elements stored as float16, cast to float32 in the "
                                        "graph; input, outputs and arithmetic float32",
            **({"testing": storage} if storage is not None else {}),
            "parity_images": {"images": int(len(pixels)), **{
                f"max_abs_{n}_diff": float(np.abs(np.asarray(a) - np.asarray(b)).max())
                for n, a, b in zip(OUTPUT_NAMES, ref_out, got_out)}}}
    metrics["parity"] = par
    card = write_card(
        out, name=name, role="detector", architecture=model.description,
        training={**cfg, "epochs_done": state["epoch"], "detector": meta,
                  **({"provenance": state["provenance"]} if state.get("provenance") else {})}, data=data_info, metrics=finite(metrics),
        extra={
            "classes": DETECTOR_CLASSES,
            "outputs": [{"name": "score", "shape": ["N"], "range": [0.0, 1.0],
                         "meaning": f"a trigger pattern is present ({SCORE_MEANING[score_rule]})"},
                        {"name": "map", "shape": ["N", 1, IMAGE_SIZE, IMAGE_SIZE], "range": [0.0, 1.0],
                         "meaning": "localisation map in model-input space (sigmoid of the segmentation head)"}],
            "threshold": float(threshold),
            "score_rule": score_rule,
            "operating_point": finite(op),
            "paper": "Breaking and Fixing §5.3 (snooping suspicious patterns), §6.6 Tables 7-9",
            **({"description": description} if description else {}),
        })
    events.emit("artifact_written", kind="card", path=str(card))
    if manifest:
        update_manifest(Path(manifest), card)
        events.emit("artifact_written", kind="manifest", path=str(manifest))
    test_summary = {k: metrics["test"][k] for k in ("precision", "recall", "f1", "accuracy")} \
        if "test" in metrics else None
    return {"onnx": str(out), "card": str(card), "threshold": float(threshold), "parity": par, "test": test_summary}


def validate_detectors(checkpoints, data_root: os.PathLike | str, *, sizes=("small",), shapes=None,
                       precision: float = 0.95, score_rule: Optional[str] = None, draws: int = 1,
                       tta=None, events: Optional[EventWriter] = None) -> Dict[str, Any]:
    """Compare detector checkpoints on the **validation** split carved from Training, never Testing.

    Every checkpoint is scored on the same scans: the validation split of the first checkpoint's
    run (the others must have been trained with the same seed, subsets and validation fraction, or
    this raises), half of them carrying one pattern of ``sizes`` (and ``shapes``; default the
    paper's four) - the test rule, so the comparison is about the hardest case the gate must
    catch.  Per checkpoint: ROC AUC, average precision, and the best recall at precision
    >= ``precision`` (with its threshold).  This is how a checkpoint is chosen for shipping
    without looking at Testing.

    ``draws`` > 1 pools that many independent draws (streams ``validate``, ``validate-1``, ...:
    each its own patterned half and placements) of the same scans, so a comparison rests on
    ``draws`` x ~285 patterned scans instead of one set; ``draws = 1`` is the single set.

    ``tta``: test-time augmentations to score every checkpoint under (e.g. ``["none", "hflip"]``:
    one row per checkpoint and mode, same scans); default each checkpoint's own."""
    from .detector import check_tta, score_batches
    from .engine import make_loader
    from .patterns import SHAPES

    events = events or NullWriter()
    checkpoints = [Path(c) for c in checkpoints]
    if not checkpoints:
        raise ValueError("detector validate: give at least one --checkpoint")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"detector validate: draws must be an integer >= 1 (got {draws!r})")
    modes = [check_tta(m) for m in tta] if tta else [None]
    spec = PatternSpec.test(tuple(shapes) if shapes else SHAPES, tuple(sizes))
    ctx = val_key = p_val = None
    rows = []
    for path in checkpoints:
        model, state = load_detector(path)
        cfg = state["config"]
        key = (int(cfg.get("seed", 0)), cfg.get("max_train_images"), cfg.get("val_fraction", 0.1))
        if ctx is None:
            ctx, val_key = _context(Path(data_root), path.parent, cfg, events), key
            val = ctx.dataset("val")
            if val is None:
                raise ValueError(f"detector validate: {path} was trained without a validation split (val_fraction 0)")
            parts = _pattern_draws(val, spec, "validate", 0.5, key[0], draws)
            p_val = _pooled(parts)
        elif key != val_key:
            raise ValueError(f"detector validate: {path} was trained on another split (seed, max_train_images, "
                             f"val_fraction = {key}, not {val_key}): its validation scans differ")
        rule = score_rule or DEFAULT_SCORE_RULE  # what detector export ships
        for mode in modes:
            if mode is not None:
                model.tta = mode
            res = score_batches(model, make_loader(p_val, 64, False, 0, 0), torch.device("cpu"), score_rule=rule)
            y, sc = np.asarray(res["labels"]), np.asarray(res["scores"])
            pr = M.pr_curve(y, sc)
            ok = [(r, t) for p_, r, t in zip(pr["precision"], pr["recall"], pr["thresholds"]) if p_ >= precision]
            best = max(ok) if ok else (0.0, None)
            rows.append({"checkpoint": str(path), "score_rule": rule, "tta": model.tta,
                         "roc_auc": M.roc_curve(y, sc)["auc"], "average_precision": pr["average_precision"],
                         f"recall_at_precision_{precision:g}": best[0], "threshold_there": best[1],
                         "epochs": len(state.get("history", []))})
            log.info("%s (tta %s): validation ROC AUC %.4f, AP %.4f, recall %.3f at precision >= %g", path,
                     model.tta, rows[-1]["roc_auc"], rows[-1]["average_precision"], best[0], precision)
    return {"validation": {"scans": len(p_val), "patterned": sum(len(p.poisoned_indices) for p in parts),
                           "draws": draws, "patterns": spec.to_dict(),
                           "split": "validation split carved from Training (never Testing)"},
            "checkpoints": rows}


def measure_detector(onnx_path: os.PathLike | str, data_root: os.PathLike | str, *, sizes=None, shapes=None,
                     card_path: Optional[os.PathLike | str] = None, adversarial: Optional[os.PathLike | str] = None,
                     squeeze_check: Optional[os.PathLike | str] = None, adversarial_max_images: Optional[int] = None,
                     eps: float = 0.01, pgd_alpha: float = 0.001, pgd_steps: int = 5,
                     events: Optional[EventWriter] = None) -> Dict[str, Any]:
    """Measure a shipped detector file on **Testing** under another test rule, at its card's threshold.

    The export measures the training run's own test rule (one small pattern of every shape); the
    paper's Table 9 tests on small *triangles* only, and a held-out-shape check on the shapes never
    trained on.  This scores the ONNX file (onnxruntime, as the card's numbers) on the Testing split
    of its training run, ``test_poison_rate`` of the scans carrying one pattern of ``shapes`` x
    ``sizes`` (each defaults to the card's test rule; the same patterned scans as the card's test
    rule, seed from the card), and reports
    precision, recall, F1 and false alarms at the card's calibrated threshold and at 0.5 (the
    paper's argmax), plus ROC AUC, and recall per shape.  Which of ``shapes`` the detector was
    trained on is recorded.

    With ``adversarial`` (a classifier checkpoint or ensemble ``.json``, e.g. CNN_clean rebuilt by
    ``import-onnx``) it also measures the gate against evasion attacks (issue 5, "recall on FGSM/PGD
    scans"): the *clean* Testing scans (no pattern; every ``k``-th one when ``adversarial_max_images``
    caps them) perturbed by FGSM and PGD (``eps``, ``pgd_alpha``, ``pgd_steps``) against that
    classifier, and the share the detector flags at its card's threshold.  With ``squeeze_check`` (a
    shipped second-check ONNX file with its card) the same copies are scored by that check at its
    own threshold too, and the report gives what the workstation's two gates catch together
    (flagged by either) and their joint false alarms on the same clean scans - see
    :func:`gate_on_attacks`."""
    import json

    from breakfix_desktop.core.hashing import sha256_file

    from .patterns import SHAPES

    events = events or NullWriter()
    onnx_path = Path(onnx_path)
    card_path = Path(card_path) if card_path else onnx_path.with_name(onnx_path.stem + ".card.json")
    if not card_path.is_file():
        raise ValueError(f"detector measure: model card {card_path} not found (it holds the threshold)")
    card = json.loads(card_path.read_text())
    if card.get("role") != "detector":
        raise ValueError(f"detector measure: {card_path} is a {card.get('role')!r} card, not a detector's")
    if card.get("sha256") != sha256_file(onnx_path):
        raise ValueError(f"detector measure: {onnx_path} does not match the SHA-256 in its card")
    training = card.get("training") or {}
    meta = training.get("detector") or {}
    specs = {k: PatternSpec.from_dict(v) for k, v in (meta.get("patterns") or {}).items()}
    if "train" not in specs:
        raise ValueError(f"detector measure: {card_path} does not record the training patterns")
    seed = int(meta.get("seed", training.get("seed", 0)))
    own = specs.get("test") or PatternSpec.test(SHAPES)
    spec = PatternSpec.test(tuple(shapes) if shapes else own.shapes, tuple(sizes) if sizes else own.sizes)
    ctx = _context(Path(data_root), onnx_path.parent, training, events)
    test = ctx.dataset("test")
    rate = float(meta.get("test_poison_rate", 0.5))
    p_test = PatternDataset(test, spec, "test", rate, seed, with_mask=False)
    res = _onnx_scores(_Session(onnx_path), p_test)
    y, sc = res["labels"], res["scores"]
    threshold = float(card["threshold"])
    trained = _trained_on(meta, "shapes")
    by_shape: Dict[str, Dict[str, Any]] = {}
    for i in p_test.poisoned_indices:  # dataset order = score order; one pattern per test scan
        row = by_shape.setdefault(p_test.placements(i)[0].shape, {"images": 0, "caught": 0, "caught_at_0.5": 0})
        row["images"] += 1
        row["caught"] += int(sc[i] >= threshold)
        row["caught_at_0.5"] += int(sc[i] >= 0.5)
    recall_by_shape = {k: {"images": v["images"], "recall": v["caught"] / v["images"],
                           "recall_at_0.5": v["caught_at_0.5"] / v["images"], "in_training": k in trained}
                       for k, v in sorted(by_shape.items())}
    gate = None
    if adversarial is not None:
        gate = gate_on_attacks(_Session(onnx_path), threshold, test, adversarial, squeeze_check=squeeze_check,
                               max_images=adversarial_max_images, eps=eps, pgd_alpha=pgd_alpha,
                               pgd_steps=pgd_steps, seed=seed)
    return {**({"attacks": gate} if gate is not None else {}),
            "detector": str(onnx_path), "sha256": card["sha256"], "threshold": threshold,
            "split": "Testing", "scans": int(len(p_test)), "patterned": int(len(p_test.poisoned_indices)),
            "patterns": spec.to_dict(), "poison_rate": rate,
            "shapes_in_training": {s_: s_ in trained for s_ in spec.shapes},
            "recall_by_shape": recall_by_shape,
            "recall_by_contrast": _recall_by_contrast(test, p_test, sc, threshold, by_shape=True),
            "at_threshold": M.rates(y, sc, threshold), "at_0.5": M.rates(y, sc, 0.5),
            "report_at_0.5": M.binary_report(y, sc, 0.5), "roc_auc": M.roc_curve(y, sc)["auc"],
            "average_precision": M.pr_curve(y, sc)["average_precision"],
            "measured_with": "onnxruntime on the shipped file"}


def _shipped_check(path: os.PathLike | str):
    """(session, threshold, sha256) of a shipped second-check file, verified against its card."""
    import json

    from breakfix_desktop.core.hashing import sha256_file

    path = Path(path)
    card_path = path.with_name(path.stem + ".card.json")
    if not path.is_file() or not card_path.is_file():
        raise ValueError(f"squeeze check {path}: the .onnx file or its card {card_path.name} is missing")
    card = json.loads(card_path.read_text())
    if card.get("role") != "check":
        raise ValueError(f"squeeze check: {card_path} is a {card.get('role')!r} card, not a second check's")
    digest = sha256_file(path)
    if card.get("sha256") != digest:
        raise ValueError(f"squeeze check: {path} does not match the SHA-256 in its card")
    return _Session(path), float(card["threshold"]), digest


def gate_on_attacks(detector: _Session, threshold: float, test, classifier: os.PathLike | str, *,
                    squeeze_check: Optional[os.PathLike | str] = None, max_images: Optional[int] = None,
                    eps: float = 0.01, pgd_alpha: float = 0.001, pgd_steps: int = 5, seed: int = 0,
                    batch: int = 32) -> Dict[str, Any]:
    """How much of an evasion attack the workstation's gates withhold (paper §6.2-6.3 attacks
    against the §5.3 gate).

    ``test`` holds clean scans with their diagnosis labels; each is perturbed by FGSM and by PGD
    against ``classifier`` (white box, untargeted).  Per attack: the share of the attacked copies the
    detector flags (score >= ``threshold``), the classifier's accuracy before and after, how many
    scans the attack *fooled* (right before, wrong after) and the share of those flagged; with
    ``squeeze_check`` the same for that check at its card's threshold and for both gates together
    (flagged by either).  ``clean`` gives the false alarms of each gate and of both on the same
    unattacked scans, so a catch rate is read against its cost."""
    from .attacks import FGSM, PGD
    from .models import load_model

    if isinstance(max_images, bool) or (max_images is not None and (not isinstance(max_images, int) or max_images < 1)):
        raise ValueError(f"adversarial max images must be an integer >= 1 (got {max_images!r})")
    path = Path(classifier)
    if not path.is_file():
        raise ValueError(f"adversarial classifier {path} not found (rebuild one from a shipped file with "
                         f"'python -m training import-onnx resources/models/cnn_clean.onnx --out ...')")
    clf = load_model(path).eval()
    n = len(test)
    if max_images and max_images < n:
        subset = torch.utils.data.Subset(test, sorted(set(np.linspace(0, n - 1, max_images).round().astype(int).tolist())))
    else:
        subset = test
    check = _shipped_check(squeeze_check) if squeeze_check else None
    gates = {"detector": (detector, threshold)}
    if check is not None:
        gates["squeeze_check"] = (check[0], check[1])

    def flags(x: torch.Tensor) -> Dict[str, np.ndarray]:
        out = {}
        for name, (sess, thr) in gates.items():
            (score,) = sess(x)
            out[name] = np.asarray(score, dtype=np.float64).reshape(-1) >= thr
        if len(out) > 1:
            out["either"] = np.logical_or.reduce(list(out.values()))
        return out

    attacks = {"fgsm": FGSM(clf, eps=eps), "pgd": PGD(clf, eps=eps, alpha=pgd_alpha, steps=pgd_steps, seed=seed)}
    acc: Dict[str, Dict[str, list]] = {k: {} for k in ("clean", *attacks)}
    right = {k: [] for k in ("clean", *attacks)}
    ys = []
    for x, y in _loader(subset, batch):
        ys.append(y.numpy())
        with torch.no_grad():
            right["clean"].append((clf(x).argmax(1) == y).numpy())
        for k, v in flags(x).items():
            acc["clean"].setdefault(k, []).append(v)
        for aname, atk in attacks.items():
            x_adv = atk(x, y)
            with torch.no_grad():
                right[aname].append((clf(x_adv).argmax(1) == y).numpy())
            for k, v in flags(x_adv).items():
                acc[aname].setdefault(k, []).append(v)
    ok = {k: np.concatenate(v) for k, v in right.items()}
    out: Dict[str, Any] = {
        "classifier": str(path), "images": int(len(subset)), "eps": eps, "pgd_alpha": pgd_alpha,
        "pgd_steps": pgd_steps, "seed": seed,
        "scans": "clean Testing scans (no pattern)" + (f", every {n / len(subset):.1f}-th of {n}" if len(subset) < n else ""),
        "gates": {"detector": {"threshold": threshold}, **({"squeeze_check": {
            "file": str(squeeze_check), "sha256": check[2], "threshold": check[1]}} if check else {})},
        "note": "'flagged' = share withheld for review; 'flagged_among_fooled' = among the scans the attack "
                "turned from right to wrong; 'either' = the detector or the second check flags it",
        "clean": {"classifier_accuracy": float(ok["clean"].mean()),
                  "flagged": {k: float(np.concatenate(v).mean()) for k, v in acc["clean"].items()}},
    }
    for aname in attacks:
        fooled = ok["clean"] & ~ok[aname]
        f = {k: np.concatenate(v) for k, v in acc[aname].items()}
        out[aname] = {"classifier_accuracy": float(ok[aname].mean()), "fooled": int(fooled.sum()),
                      "flagged": {k: float(v.mean()) for k, v in f.items()},
                      "flagged_among_fooled": {k: (float(v[fooled].mean()) if fooled.any() else None)
                                               for k, v in f.items()}}
    return out


# --------------------------------------------------------------------------- the squeeze check
def _adversarial_batches(dataset, attack_fn: Callable, batch: int = 32):
    """Yields (clean x, adversarial x, labels) batches."""
    for x, y in _loader(dataset, batch):
        yield x, attack_fn(x, y), y


def export_squeeze_check(classifier: os.PathLike | str, out: os.PathLike | str, name: str, *,
                         data_root: Optional[os.PathLike | str] = None, manifest: Optional[os.PathLike | str] = None,
                         false_alarm: float = 0.05, threshold: Optional[float] = None, bits: int = 5,
                         median: bool = True, eps: float = 0.01, pgd_alpha: float = 0.001, pgd_steps: int = 5,
                         max_test_images: Optional[int] = None, parity_images: int = 16,
                         description: Optional[str] = None, seed: int = 0,
                         events: Optional[EventWriter] = None) -> Dict[str, Any]:
    """Build the feature-squeezing check around ``classifier`` (a BreakFix checkpoint or ensemble
    .json), export it to ``out`` with a card; returns a summary (see the module docstring)."""
    from .attacks import FGSM, PGD
    from .export import update_manifest, write_card
    from .models import load_model
    from .squeeze import OUTPUT_NAMES as SQ_OUTPUTS, SqueezeCheck, export_squeeze_onnx

    events = events or NullWriter()
    out = Path(out)
    classifier = Path(classifier)
    if data_root is None and threshold is None:
        raise ValueError("squeeze check: without --data there is nothing to calibrate on; give --threshold")
    clf = load_model(classifier).eval()
    check = SqueezeCheck(clf, bits=bits, median=median).eval()
    export_squeeze_onnx(check, out)
    events.emit("artifact_written", kind="onnx", path=str(out))
    cfg: Dict[str, Any] = {}
    if classifier.suffix != ".json":
        cfg = torch.load(classifier, map_location="cpu", weights_only=False).get("config", {})
    metrics: Dict[str, Any] = {}
    data_info: Dict[str, Any] = {}
    op: Dict[str, Any] = {"false_alarm_target": float(false_alarm)}
    if data_root is not None:
        own_split = bool(cfg.get("val_fraction"))  # the classifier held a validation split out of its training
        run_cfg = {**cfg, "val_fraction": cfg.get("val_fraction") or 0.1,
                   "max_test_images": max_test_images if max_test_images is not None else cfg.get("max_test_images")}
        ctx = _context(Path(data_root), out.parent, run_cfg, events)
        val, test = ctx.dataset("val"), ctx.dataset("test")
        sess = _Session(out)
        v = _onnx_scores(sess, val)
        if threshold is None:
            threshold = M.threshold_for_false_alarm(v["scores"], false_alarm)
            op["calibrated_on"] = (
                f"clean validation split carved from Training ({len(val)} scans; " +
                ("seed and fraction of the classifier's own training run, so it never trained on them)" if own_split
                 else "10 %, seed 0: the classifier's checkpoint records no validation split, it MAY have "
                      "trained on these scans)"))
        else:
            op["calibrated_on"] = "given by hand (--threshold)"
        op["threshold"] = float(threshold)
        op["validation_false_alarm"] = float((v["scores"] >= threshold).mean())
        clean = _onnx_scores(sess, test)["scores"]
        attacks = {"fgsm": FGSM(clf, eps=eps), "pgd": PGD(clf, eps=eps, alpha=pgd_alpha, steps=pgd_steps, seed=seed)}
        per: Dict[str, Any] = {"clean": {"images": int(len(clean)), "flagged": float((clean >= threshold).mean())}}
        curves: Dict[str, Any] = {}
        for aname, atk in attacks.items():
            scores, fooled_mask = [], []
            for x, x_adv, y in _adversarial_batches(test, atk):
                (s,) = sess(x_adv)
                scores.append(np.asarray(s, dtype=np.float64))
                with torch.no_grad():
                    fooled_mask.append(((clf(x).argmax(1) == y) & (clf(x_adv).argmax(1) != y)).numpy())
            s_adv, fooled = np.concatenate(scores), np.concatenate(fooled_mask)
            y_all = np.r_[np.zeros(len(clean), np.int64), np.ones(len(s_adv), np.int64)]
            s_all = np.r_[clean, s_adv]
            roc = M.roc_curve(y_all, s_all)
            per[aname] = {"images": int(len(s_adv)), "flagged": float((s_adv >= threshold).mean()),
                          "fooled": int(fooled.sum()),
                          "flagged_among_fooled": float((s_adv[fooled] >= threshold).mean()) if fooled.any() else None,
                          "roc_auc_vs_clean": roc["auc"],
                          "report": M.binary_report(y_all, s_all, threshold, ("clean", aname))}
            curves[aname] = {"roc": M.json_safe_curve(M.thin(roc)), "pr": M.thin(M.pr_curve(y_all, s_all))}
        pgd = per["pgd"]["report"]
        metrics = {
            "test": {"accuracy": pgd["accuracy"], "false_alarm": per["clean"]["flagged"],
                     "detection_fgsm": per["fgsm"]["flagged"], "detection_pgd": per["pgd"]["flagged"],
                     "threshold": float(threshold),
                     "accuracy_rule": "clean Testing scans (label 0) + their PGD copies (label 1), score >= threshold"},
            "attacks": {"eps": eps, "pgd_alpha": pgd_alpha, "pgd_steps": pgd_steps, "seed": seed,
                        "against": str(classifier)},
            "per_set": per, "curves": curves, "measured_with": "onnxruntime on the exported file",
        }
        data_info = _fingerprints(ctx)
        pixels = _parity_pixels(test, parity_images)
        parity_source = "Testing scans"
        log.info("squeeze check %s: threshold %.6g, false alarms %.4f, FGSM %.4f, PGD %.4f", name, threshold,
                 per["clean"]["flagged"], per["fgsm"]["flagged"], per["pgd"]["flagged"])
    else:
        op.update({"threshold": float(threshold), "calibrated_on": "given by hand (--threshold)"})
        pixels = _synthetic_parity_pixels(parity_images)
        parity_source = "synthetic noise scans"
    stamp_metadata(out, {"threshold": repr(float(threshold)), "false_alarm_target": repr(float(false_alarm))})
    par = {**graph_parity(check, out, pixels, SQ_OUTPUTS), "source": parity_source}
    check_parity(par)
    metrics["parity"] = par
    card = write_card(
        out, name=name, role="check", architecture=f"feature squeezing around {cfg.get('arch', classifier.name)}",
        training={"classifier": str(classifier), "classifier_config": cfg, **check.describe()},
        data=data_info, metrics=finite(metrics),
        extra={
            "classes": ["clean", "adversarial"],
            "outputs": [{"name": "score", "shape": ["N"], "range": [0.0, 1.0],
                         "meaning": "max over squeezers of the total variation distance between the classifier's "
                                    "softmax on the scan and on the squeezed scan"},
                        {"name": "distance_bit_depth", "shape": ["N"], "range": [0.0, 1.0]},
                        {"name": "distance_median", "shape": ["N"], "range": [0.0, 1.0]}],
            "threshold": float(threshold),
            "operating_point": finite(op),
            "paper": "second check beside §5.3; Xu, Evans, Qi: Feature Squeezing (NDSS 2018)",
            **({"description": description} if description else {}),
        })
    events.emit("artifact_written", kind="card", path=str(card))
    if manifest:
        update_manifest(Path(manifest), card)
        events.emit("artifact_written", kind="manifest", path=str(manifest))
    return {"onnx": str(out), "card": str(card), "threshold": float(threshold), "parity": par,
            "per_set": {k: {kk: vv for kk, vv in v.items() if kk != "report"} for k, v in
                        metrics.get("per_set", {}).items()}}
