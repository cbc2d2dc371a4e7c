"""The second check: feature squeezing (Xu, Evans and Qi, "Feature Squeezing: Detecting Adversarial
Examples in Deep Neural Networks", NDSS 2018), built around a shipped classifier.

The pattern detector (paper §5.3) looks for drawn triggers; it is not made for the
imperceptible perturbations of FGSM/PGD (paper §4.2-4.3, §6.2-6.3).  Feature squeezing is: an
adversarial perturbation is tuned to the exact pixel values, so "squeezing" the input (fewer
grey levels, a median filter) changes the classifier's answer a lot for an adversarial scan and
little for a natural one.

Graph (:class:`SqueezeCheck`), the app's ``check`` contract (``core/screening.py``): input
``pixels`` float32 N x 3 x 224 x 224 in [0, 1]; outputs

* ``score`` - N, in [0, 1]: ``max over squeezers of 0.5 * || softmax(f(x)) - softmax(f(squeeze(x))) ||_1``
  (Xu et al.'s joint detector uses the maximum L1 distance; halving it - the total variation
  distance - keeps the score in [0, 1], as the app expects of a score);
* ``distance_bit_depth``, ``distance_median`` - N, each squeezer's own distance (diagnostics).

Squeezers: bit-depth reduction to ``bits`` bits (``round(x * (2^bits - 1)) / (2^bits - 1)``) and a
3 x 3 median filter (edge-replicated border; a 19 min/max-comparator median-of-9 network, so
it exports to plain ONNX ``Min``/``Max``).  The classifier runs once on the three versions stacked
along the batch.  The card's ``threshold`` is calibrated on clean validation scans carved from
Training for a chosen false-alarm rate (:func:`~training.detector_metrics.threshold_for_false_alarm`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

import torch
from torch import nn
from torch.nn import functional as F

OUTPUT_NAMES = ("score", "distance_bit_depth", "distance_median")

#: Paeth's median-of-9 network: 19 compare-exchange steps, the median ends in position 4.
_MED9 = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7),
         (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def bit_depth(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``x`` in [0, 1] reduced to ``2^bits`` grey levels."""
    levels = float(2 ** int(bits) - 1)
    return torch.round(x * levels) / levels


def median3x3(x: torch.Tensor) -> torch.Tensor:
    """3 x 3 median filter per channel (N x C x H x W), border pixels replicated."""
    h, w = x.shape[-2], x.shape[-1]
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    p = [padded[..., dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)]
    for a, b in _MED9:
        lo, hi = torch.minimum(p[a], p[b]), torch.maximum(p[a], p[b])
        p[a], p[b] = lo, hi
    return p[4]


class SqueezeCheck(nn.Module):
    """``classifier`` ([0, 1] pixels -> logits) wrapped into the feature-squeezing detector."""

    def __init__(self, classifier: nn.Module, bits: int = 5, median: bool = True):
        super().__init__()
        if not 1 <= int(bits) <= 8:
            raise ValueError(f"squeeze check: bits must be 1..8 (got {bits!r})")
        self.classifier = classifier
        self.bits = int(bits)
        self.median = bool(median)

    def forward(self, pixels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        versions = [pixels, bit_depth(pixels, self.bits)]
        if self.median:
            versions.append(median3x3(pixels))
        logits = self.classifier(torch.cat(versions, dim=0))
        probs = torch.softmax(logits, dim=1).reshape(len(versions), -1, logits.shape[-1])
        d_bits = 0.5 * (probs[0] - probs[1]).abs().sum(dim=1)
        d_median = 0.5 * (probs[0] - probs[2]).abs().sum(dim=1) if self.median else torch.zeros_like(d_bits)
        return torch.maximum(d_bits, d_median), d_bits, d_median

    def describe(self) -> dict:
        return {"method": "feature squeezing (Xu et al. 2018)",
                "score": "max over squeezers of 0.5 * L1(softmax(x), softmax(squeezed x)) in [0, 1]",
                "squeezers": [f"bit depth {self.bits}"] + (["median 3x3 (edge-replicated)"] if self.median else [])}


def export_squeeze_onnx(check: SqueezeCheck, path: os.PathLike | str) -> Path:
    """Write the check as ONNX (``pixels -> score, distance_bit_depth, distance_median``)."""
    from .export import export_onnx

    return export_onnx(
        check.eval().cpu(), path, list(OUTPUT_NAMES), base_metadata={},
        doc=("BreakFix Desktop second check, feature squeezing (Xu et al. 2018): pixels float32 "
             "Nx3x224x224 in [0,1] -> score N in [0,1] (classifier disagreement under squeezing)"),
        metadata={"role": "check", "bits": str(check.bits), "median": "3x3" if check.median else "off"})
