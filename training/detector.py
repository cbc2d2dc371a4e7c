"""The pattern detector (paper §5.3 "Snooping suspicious patterns", results §6.6, Tables 7-9).

A ResNet-18 binary classifier - "pattern" / "no pattern" - that screens scans *before* the
diagnostic classifier: flagged scans are quarantined for a person to look at (the paper prefers
recall over precision: "catching positives is a critical task").  Patterns come from
:mod:`training.patterns`.

Model (:class:`PatternDetector`): ``build_model("resnet18")`` (normalisation inside, local ImageNet
weights optional - never downloaded) with a 2-logit ``fc``, plus a small segmentation head for
localisation: 1x1 lateral convolutions on layer1 (56 x 56), layer2 (28 x 28) and layer3
(14 x 14) features, summed at 56 x 56, then 3x3 conv - BN - ReLU - 1x1 conv to one channel.
It is trained on the pattern masks, so the map points at the drawn pixels (a class activation map
on layer4 would be 7 x 7 - one cell is 32 px, coarser than a small pattern).

Loss per batch: cross-entropy on the 2 logits + ``seg_weight`` x (binary cross-entropy + soft Dice)
of the 56 x 56 map against the mask max-pooled to 56 x 56 (a 6 px pattern still marks its cells).

Exported graph (:class:`DetectorGraph`, the app's detector contract, ``core/screening.py`` and
``core/localisation.py``): input ``pixels`` float32 N x 3 x 224 x 224 in [0, 1]; outputs

* ``score`` - N in [0, 1], "pattern present", read by the export's *score rule*
  (:data:`SCORE_RULES`): ``mean`` (default) - the mean of the two heads' probabilities;
  ``segmentation`` - the maximum of the localisation map, i.e. the most pattern-like 4 x 4 px cell
  of the scan; ``classifier`` - ``softmax(logits)[:, 1]`` of the 2-logit head, the paper's
  detector.  The app flags ``score >= card["threshold"]``.  Measured on the real data
  (docs/detector.md): after one epoch from random weights the map's maximum already separates
  patterned from clean scans (validation ROC AUC 0.84) while the globally pooled head is still at
  chance (0.52) - a 6-12 px pattern is a few cells of layer4's 7 x 7 grid, averaged away - so
  training's LR schedule watches the ``segmentation`` rule by default; after six epochs the head
  has caught up and the mean of both ranks best on validation;
* ``map`` - N x 1 x 224 x 224 in [0, 1], ``sigmoid`` of the segmentation logits, bilinearly
  upsampled; the review queue overlays it on the scan.

Training uses the engine's :class:`~training.engine.Trainer` through the thin
:class:`DetectorTrainer` (batches carry the mask; checkpoints record the pattern settings).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .detector_metrics import DEFAULT_SCORE_RULE, DEFAULT_TRAIN_RULE, SCORE_MEANING, SCORE_RULES
from .engine import Trainer
from .models import build_model, read_checkpoint

log = logging.getLogger(__name__)

DETECTOR_FORMAT = "breakfix-pattern-detector/1"
OUTPUT_NAMES = ("score", "map")
#: Test-time augmentation of an evaluated detector (not of training): ``none``, or ``hflip`` - both
#: heads averaged over the scan and its left-right mirror (the mirror's map flipped back), one pass
#: of a doubled batch.  Measured on validation (docs/results.md, 2026-12-05; 4 draws, 1144 small
#: patterns): recall at precision 0.95 0.950 -> 0.957, ROC AUC 0.984 -> 0.987 for the shipped
#: weights - the detector's own noise peaks rarely repeat in the mirror image, while a drawn
#: pattern is found in both.
TTA_MODES = ("none", "hflip")
#: Max |torch - onnxruntime| allowed on ``score`` and ``map`` before an export is refused.
PARITY_TOLERANCE = 1e-4


def detector_score(logits: torch.Tensor, seg_logits: torch.Tensor, rule: str = DEFAULT_SCORE_RULE) -> torch.Tensor:
    """N scores in [0, 1] from the 2 logits and the N x 1 x h x w segmentation logits by ``rule``."""
    if rule == "segmentation":
        return torch.sigmoid(seg_logits.float()).flatten(1).amax(1)
    if rule == "classifier":
        return torch.softmax(logits.float(), 1)[:, 1]
    if rule == "mean":
        return 0.5 * (torch.sigmoid(seg_logits.float()).flatten(1).amax(1) + torch.softmax(logits.float(), 1)[:, 1])
    raise ValueError(f"unknown detector score rule {rule!r} (choose from {', '.join(SCORE_RULES)})")


def rule_logits(logits: torch.Tensor, seg_logits: torch.Tensor, rule: str = DEFAULT_SCORE_RULE) -> torch.Tensor:
    """Two logits ("no pattern", "pattern") whose softmax column 1 is :func:`detector_score`: the
    2-logit head itself, or ``(0, max segmentation logit)`` (``softmax`` of that is the ``sigmoid``)."""
    if rule == "classifier":
        return logits
    if rule == "segmentation":
        top = seg_logits.flatten(1).amax(1)
        return torch.stack([torch.zeros_like(top), top], 1)
    if rule == "mean":
        top = torch.logit(detector_score(logits, seg_logits, rule), eps=1e-7)
        return torch.stack([torch.zeros_like(top), top], 1)
    raise ValueError(f"unknown detector score rule {rule!r} (choose from {', '.join(SCORE_RULES)})")


# --------------------------------------------------------------------------- model
class FineBranch(nn.Module):
    """A full-resolution path from the (normalised) pixels to the segmentation head's 56 x 56 grid.

    ResNet-18's stem (7x7 conv, stride 2, then max-pool) hands layer1 a 56 x 56 grid: a 6 px
    pattern drawn over tissue of about its own brightness - the detector's blind spot
    (docs/results.md, recall by contrast) - is then one or two cells whose only trace is a
    little missing texture and a faint edge.  This branch keeps 3x3 convolutions at 224 and
    112 px before it reaches 56 px, where its features are added to the head's lateral sum.
    ``channels`` c: 3 -> c (224) -> c (224) -> 2c (112, stride 2) -> 2c (112) -> 2c (56, stride 2)
    -> 1x1 to the head's width.  Its output convolution starts at zero, so a detector given
    this branch on top of trained weights starts out scoring exactly as before.
    About 0.34 GMAC per scan at c = 16 (ResNet-18 is 1.8).
    """

    def __init__(self, channels: int = 16, out_channels: int = 32):
        super().__init__()
        c, c2 = int(channels), 2 * int(channels)

        def block(cin, cout, stride):
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        self.body = nn.Sequential(*block(3, c, 1), *block(c, c, 1), *block(c, c2, 2), *block(c2, c2, 1),
                                  *block(c2, c2, 2))
        self.out = nn.Conv2d(c2, out_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        y = self.out(self.body(x))
        return y if y.shape[-2:] == size else F.interpolate(y, size=size, mode="bilinear", align_corners=False)


class SegHead(nn.Module):
    """Lateral 1x1 convolutions on ResNet layer1-3, summed at layer1's resolution (plus the
    :class:`FineBranch` when ``fine_channels`` > 0), then 3x3 conv - BN - ReLU - 1x1 conv to one
    logit per cell (N x 1 x H/4 x W/4)."""

    def __init__(self, channels: int = 32, fine_channels: int = 0):
        super().__init__()
        self.fine = FineBranch(fine_channels, channels) if fine_channels > 0 else None
        self.lat1 = nn.Conv2d(64, channels, 1)
        self.lat2 = nn.Conv2d(128, channels, 1)
        self.lat3 = nn.Conv2d(256, channels, 1)
        self.fuse = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 1, 1),
        )

    def forward(self, l1: torch.Tensor, l2: torch.Tensor, l3: torch.Tensor,
                pixels: Optional[torch.Tensor] = None) -> torch.Tensor:
        size = l1.shape[-2:]
        y = (self.lat1(l1)
             + F.interpolate(self.lat2(l2), size=size, mode="bilinear", align_corners=False)
             + F.interpolate(self.lat3(l3), size=size, mode="bilinear", align_corners=False))
        if self.fine is not None:
            if pixels is None:
                raise ValueError("this segmentation head has a fine branch: pass the normalised pixels")
            y = y + self.fine(pixels, size)
        return self.fuse(y)


class PatternDetector(nn.Module):
    """ResNet-18 ("pattern" / "no pattern", 2 logits) with a segmentation head; takes [0, 1] pixels.

    ``forward`` returns 2 logits read by ``score_rule`` (:func:`rule_logits`), so the engine's
    evaluation, the LR schedule and argmax judge the same score the app flags;
    :meth:`forward_all` returns ``(logits of the 2-logit head, seg_logits N x 1 x 56 x 56)``.
    The rule is not a weight: it is not in ``state_dict``.
    """

    def __init__(self, weights: Optional[str] = None, finetune: bool = False, seg_channels: int = 32,
                 score_rule: str = DEFAULT_TRAIN_RULE, fine_channels: int = 0, tta: str = "none"):
        super().__init__()
        if score_rule not in SCORE_RULES:
            raise ValueError(f"unknown detector score rule {score_rule!r} (choose from {', '.join(SCORE_RULES)})")
        self.score_rule = score_rule
        self.tta = check_tta(tta)
        pixel_model = build_model("resnet18", weights=weights or None, finetune=finetune)
        self.normalize = pixel_model.normalize
        self.backbone = pixel_model.backbone
        self.backbone.fc = nn.Linear(self.backbone.fc.in_features, 2)
        self.fine_channels = int(fine_channels)
        self.seg = SegHead(seg_channels, self.fine_channels)
        self.arch = "resnet18+fine" if self.fine_channels else "resnet18"

    @property
    def description(self) -> str:
        """What the card's ``architecture`` says (the Models page shows it)."""
        fine = f" + {self.fine_channels}-channel full-resolution branch" if self.fine_channels else ""
        tta = ", mean over the scan and its mirror image" if self.tta == "hflip" else ""
        return f"resnet18 + segmentation head{fine} (pattern detector{tta})"

    def forward_all(self, pixels: torch.Tensor):
        """``(2 logits, seg logits N x 1 x 56 x 56)``; in eval mode with ``tta = "hflip"`` both are the
        mean of the scan's and its mirror image's (the mirror's map flipped back first)."""
        if self.tta == "hflip" and not self.training:
            logits, seg = self._forward_once(torch.cat([pixels, torch.flip(pixels, [-1])]))
            n = pixels.shape[0]
            return 0.5 * (logits[:n] + logits[n:]), 0.5 * (seg[:n] + torch.flip(seg[n:], [-1]))
        return self._forward_once(pixels)

    def _forward_once(self, pixels: torch.Tensor):
        b = self.backbone
        z = self.normalize(pixels)
        x = b.maxpool(b.relu(b.bn1(b.conv1(z))))
        l1 = b.layer1(x)
        l2 = b.layer2(l1)
        l3 = b.layer3(l2)
        l4 = b.layer4(l3)
        logits = b.fc(torch.flatten(b.avgpool(l4), 1))
        return logits, self.seg(l1, l2, l3, z if self.fine_channels else None)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return rule_logits(*self.forward_all(pixels), self.score_rule)


class DetectorUnion(nn.Module):
    """Several pattern detectors read as one: the map is the cell-wise **maximum** of the members'
    segmentation logits (so the score under the ``segmentation`` rule is the highest of the members'
    scores) and the 2-logit head is their mean.  A scan is flagged when any member finds a pattern,
    so a member's blind spot (e.g. a detector fine-tuned on camouflaged patterns that stopped seeing
    a full-contrast creeper) is covered by the others; the union is calibrated as one detector.
    ``tta`` applies to every member.  Measured on validation in docs/results.md (2026-12-06)."""

    def __init__(self, members: Sequence[PatternDetector]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("a detector union needs at least two detectors")
        self.members = nn.ModuleList(members)
        self.arch = "union(" + ", ".join(m.arch for m in members) + ")"

    @property
    def tta(self) -> str:
        return self.members[0].tta

    @tta.setter
    def tta(self, mode: str) -> None:
        for m in self.members:
            m.tta = check_tta(mode)

    @property
    def description(self) -> str:
        return (f"union of {len(self.members)} pattern detectors (map: cell-wise maximum): "
                + "; ".join(m.description for m in self.members))

    def forward_all(self, pixels: torch.Tensor):
        outs = [m.forward_all(pixels) for m in self.members]
        logits = torch.stack([o[0] for o in outs]).mean(0)
        seg = outs[0][1]
        for o in outs[1:]:
            seg = torch.maximum(seg, o[1])
        return logits, seg

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return rule_logits(*self.forward_all(pixels), self.members[0].score_rule)


class DetectorGraph(nn.Module):
    """The exported form: ``pixels -> (score N, map N x 1 x H x W)`` (see the module docstring)."""

    def __init__(self, detector: PatternDetector | DetectorUnion, score_rule: str = DEFAULT_SCORE_RULE):
        super().__init__()
        if score_rule not in SCORE_RULES:
            raise ValueError(f"unknown detector score rule {score_rule!r} (choose from {', '.join(SCORE_RULES)})")
        self.detector = detector
        self.score_rule = score_rule

    def forward(self, pixels: torch.Tensor):
        logits, seg = self.detector.forward_all(pixels)
        score = detector_score(logits, seg, self.score_rule)
        heat = torch.sigmoid(F.interpolate(seg, size=(pixels.shape[-2], pixels.shape[-1]), mode="bilinear",
                                           align_corners=False))
        return score, heat


def detector_loss(logits: torch.Tensor, y: torch.Tensor, seg_logits: torch.Tensor, mask: torch.Tensor,
                  seg_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy + ``seg_weight`` x (BCE + soft Dice) of the map against the max-pooled mask
    (in float32 even under bf16 autocast: the Dice sums run over every map cell)."""
    logits, seg_logits = logits.float(), seg_logits.float()
    loss = F.cross_entropy(logits, y)
    if seg_weight <= 0:
        return loss
    target = F.adaptive_max_pool2d(mask.to(seg_logits.dtype), seg_logits.shape[-2:])
    bce = F.binary_cross_entropy_with_logits(seg_logits, target)
    p = torch.sigmoid(seg_logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    dice = 1.0 - (2.0 * inter + 1.0) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1.0)
    return loss + seg_weight * (bce + dice.mean())


# --------------------------------------------------------------------------- training
class DetectorTrainer(Trainer):
    """The engine's :class:`~training.engine.Trainer` for batches ``(x, is_poisoned, mask)``.

    Only the training step differs (the loss also sees the segmentation map and the mask);
    validation/test loaders yield ``(x, is_poisoned)`` (:meth:`PatternDataset.without_masks`) and go
    through the engine's own evaluation, scheduler, events, checkpoints and resume.  Checkpoints
    carry ``detector`` (the pattern settings; :func:`load_detector` reads them).
    """

    def __init__(self, model: PatternDetector, config, train_loader, *args, seg_weight: float = 1.0,
                 detector_meta: Optional[Dict[str, Any]] = None, **kwargs):
        super().__init__(model, config, train_loader, *args, **kwargs)
        self.seg_weight = float(seg_weight)
        self.detector_meta = {"format": DETECTOR_FORMAT, **(detector_meta or {})}

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state["detector"] = self.detector_meta
        return state

    def prepare_batch(self, batch):
        return tuple(t.to(self.device, non_blocking=True) for t in batch)  # (x, y, mask)

    def compute_loss(self, inputs):
        x, y, mask = inputs
        logits, seg = self.model.forward_all(x)
        # the loss trains both heads; the training accuracy reads the score rule, like evaluation
        return detector_loss(logits, y, seg, mask, self.seg_weight), rule_logits(logits, seg, self.model.score_rule), y


def check_tta(tta: str) -> str:
    """``tta`` if it names a test-time augmentation (:data:`TTA_MODES`), else ``ValueError``."""
    if tta not in TTA_MODES:
        raise ValueError(f"unknown detector test-time augmentation {tta!r} (choose from {', '.join(TTA_MODES)})")
    return tta


def build_detector(meta: Dict[str, Any]) -> PatternDetector:
    return PatternDetector(weights=None, finetune=False, seg_channels=int(meta.get("seg_channels", 32)),
                           score_rule=str(meta.get("score_rule", DEFAULT_TRAIN_RULE)),
                           fine_channels=int(meta.get("fine_channels", 0)), tta=str(meta.get("tta", "none")))


def load_detector(path: os.PathLike | str):
    """``(PatternDetector in eval mode, checkpoint state)`` from a detector ``checkpoint.pt``."""
    path = Path(path)
    state = read_checkpoint(path)
    meta = state.get("detector")
    if not isinstance(meta, dict) or meta.get("format") != DETECTOR_FORMAT:
        raise ValueError(f"{path}: not a pattern-detector checkpoint (no '{DETECTOR_FORMAT}' settings in it); "
                         "train one with a table7/8/9 detector drill")
    model = build_detector(meta)
    model.load_state_dict(state["model"])
    return model.eval(), state


# --------------------------------------------------------------------------- scoring
@torch.no_grad()
def score_batches(model: PatternDetector, loader, device, transform: Optional[Callable] = None,
                  localise: bool = False, should_stop: Callable[[], bool] = lambda: False,
                  score_rule: str = DEFAULT_SCORE_RULE) -> Dict[str, Any]:
    """Scores (by ``score_rule``) of every item of ``loader``, and under ``scores_by_rule`` the
    scores of every rule; with ``localise`` and items ``(x, y, mask)`` also the localisation quality
    on the patterned ones (:func:`localisation_stats`).

    ``transform(x, y) -> x`` changes a batch first (e.g. an evasion attack; it runs with grad on)."""
    model = model.to(device).eval()
    if score_rule not in SCORE_RULES:
        raise ValueError(f"unknown detector score rule {score_rule!r} (choose from {', '.join(SCORE_RULES)})")
    labels, by_rule = [], {rule: [] for rule in SCORE_RULES}
    hits = ious = n_loc = 0.0
    for batch in loader:
        if should_stop():
            from .drills.base import DrillCancelled

            raise DrillCancelled()
        x, y = batch[0].to(device), batch[1].to(device)
        if transform is not None:
            with torch.enable_grad():
                x = transform(x, y)
        logits, seg = model.forward_all(x)
        for rule, acc in by_rule.items():
            acc.append(detector_score(logits, seg, rule).cpu())
        labels.append(y.cpu())
        if localise and len(batch) > 2:
            mask = batch[2].to(device)
            pos = mask.flatten(1).amax(1) > 0
            if pos.any():
                heat = torch.sigmoid(F.interpolate(seg[pos], size=mask.shape[-2:], mode="bilinear",
                                                   align_corners=False))
                h, i, n = localisation_stats(heat, mask[pos])
                hits, ious, n_loc = hits + h, ious + i, n_loc + n
    rules = {rule: torch.cat(acc).numpy().astype(np.float64) for rule, acc in by_rule.items()}
    out: Dict[str, Any] = {"labels": torch.cat(labels).numpy().astype(np.int64), "scores": rules[score_rule],
                           "scores_by_rule": rules}
    if localise:
        out["localisation"] = {
            "images": int(n_loc),
            "pointing_hit_rate": hits / n_loc if n_loc else None,
            "mean_iou_at_0.5": ious / n_loc if n_loc else None,
            "rule": "pointing: the map's maximum lies on a pattern pixel (2 px tolerance); IoU of map >= 0.5 "
                    "with the pattern mask; over patterned images only",
        }
    return out


def localisation_stats(heat: torch.Tensor, mask: torch.Tensor, tolerance: int = 2):
    """(pointing hits, summed IoU, images) for maps and masks N x 1 x H x W."""
    n = heat.shape[0]
    grown = F.max_pool2d(mask, 2 * tolerance + 1, stride=1, padding=tolerance) if tolerance else mask
    flat_idx = heat.flatten(1).argmax(1)
    hit = grown.flatten(1).gather(1, flat_idx[:, None]).squeeze(1) > 0
    pred = heat >= 0.5
    truth = mask > 0
    inter = (pred & truth).flatten(1).sum(1).float()
    union = (pred | truth).flatten(1).sum(1).float()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))
    return float(hit.sum()), float(iou.sum()), float(n)


# --------------------------------------------------------------------------- export


def export_detector_onnx(model: PatternDetector, path: os.PathLike | str,
                         score_rule: str = DEFAULT_SCORE_RULE, weight_storage: str = "float32") -> Path:
    """Write the detector as ONNX (``pixels -> score, map``) through the shared exporter
    (``weight_storage="float16"``: large weights stored as float16, computation float32)."""
    from .export import export_onnx

    return export_onnx(
        DetectorGraph(model.eval().cpu(), score_rule).eval(), path, list(OUTPUT_NAMES),
        doc=("BreakFix Desktop pattern detector (paper §5.3): pixels float32 Nx3x224x224 in [0,1] -> "
             f"score N in [0,1] ({score_rule} rule), map Nx1x224x224 in [0,1] (where)"),
        metadata={"role": "detector", "classes": "no pattern,pattern", "score_rule": score_rule,
                  "score": SCORE_MEANING[score_rule]}, weight_storage=weight_storage)


def onnx_outputs(onnx_path: os.PathLike | str, pixels: np.ndarray, batch: int = 32,
                 names: Sequence[str] = ("score",)) -> Dict[str, np.ndarray]:
    """Run an exported graph over ``pixels`` (N x 3 x 224 x 224) with onnxruntime (CPU)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outs: Dict[str, list] = {n: [] for n in names}
    for i in range(0, len(pixels), batch):
        res = sess.run(list(names), {"pixels": np.ascontiguousarray(pixels[i:i + batch], dtype=np.float32)})
        for n, r in zip(names, res):
            outs[n].append(r)
    return {n: np.concatenate(v) if v else np.zeros((0,), np.float32) for n, v in outs.items()}


def graph_parity(graph: nn.Module, onnx_path: os.PathLike | str, pixels: np.ndarray,
                 names: Sequence[str]) -> Dict[str, Any]:
    """Max |torch - onnxruntime| per output on ``pixels`` (the exported graph vs torch eager)."""
    with torch.no_grad():
        ref = graph.eval().cpu()(torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)))
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    got = onnx_outputs(onnx_path, pixels, names=names)
    out: Dict[str, Any] = {"images": int(len(pixels))}
    for n, r in zip(names, ref):
        diff = np.abs(r.numpy() - got[n])
        out[f"max_abs_{n}_diff"] = float(diff.max()) if diff.size else 0.0
    return out


def check_parity(par: Dict[str, Any], tolerance: float = PARITY_TOLERANCE) -> None:
    bad = {k: v for k, v in par.items() if k.startswith("max_abs_") and not (v <= tolerance)}
    if bad:
        raise RuntimeError(f"parity check failed (onnxruntime vs torch): {bad} > {tolerance:g}")


def finite(value: Any) -> Any:
    """JSON-safe: NaN / infinity -> None (recursively)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
