"""Weight averaging of checkpoints from one training trajectory (``python -m training average``).

The uniform mean of the weights *and* the BatchNorm running statistics of several checkpoints of
the same architecture, written as a new ``breakfix-checkpoint/1`` that trains, exports and drills
like any other.  Averaging the weights along a trajectory finds a flatter point than any one of
its epochs (SWA, Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima and Better
Generalization"); in adversarial training it is one of the most reliable ways to gain robust
accuracy (Gowal et al. 2020, "Uncovering the Limits of Adversarial Training against Norm-Bounded
Adversarial Examples"; Rebuffi et al. 2021).  Measured here on the ResNet-18 member (docs/results.md,
"Weight averaging"): the mean of the shipped member and three further fast-AT epochs beat the
member on validation, clean and under every attack, and each of those epochs under PGD-10.

The averaging itself is ``torch.optim.swa_utils.AveragedModel(use_buffers=True)``; BatchNorm
statistics are averaged with the weights (not recomputed on clean scans: adversarially trained
models saw adversarial copies in their batches, and their statistics include them).

Example::

    python -m training average --out runs/avg/resnet18.pt \\
        runs/ensemble_members/ResNet18_PGD.pt runs/resnet18_fast_eps04_lowlr/epoch{1,2,3}.pt
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Sequence

RULE = "uniform mean of weights and BatchNorm buffers (torch.optim.swa_utils.AveragedModel, use_buffers=True)"


def average_checkpoints(paths: Sequence[os.PathLike | str]) -> Dict[str, Any]:
    """A checkpoint whose weights and buffers are the mean of ``paths``' (two or more, one architecture).

    Its ``config`` and ``epoch`` are the last checkpoint's (the end of the trajectory); its
    ``provenance.averaged`` lists every input with its SHA-256, epoch and own provenance.
    Raises ``ValueError`` naming the file whose architecture differs from the first's.
    """
    from torch.optim.swa_utils import AveragedModel

    from breakfix_desktop.core.hashing import sha256_file

    from .models import CHECKPOINT_FORMAT, build_model, read_checkpoint

    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ValueError("averaging needs two or more checkpoints")
    first = read_checkpoint(paths[0])
    arch, kwargs = first["config"]["arch"], first["config"].get("model_kwargs", {})
    model = build_model(arch, **kwargs)
    averaged = AveragedModel(model, use_buffers=True)
    inputs: List[Dict[str, Any]] = []
    last = first
    for i, path in enumerate(paths):
        state = first if i == 0 else read_checkpoint(path)
        cfg = state["config"]
        if cfg["arch"] != arch or cfg.get("model_kwargs", {}) != kwargs:
            raise ValueError(f"{path}: architecture {cfg['arch']} {cfg.get('model_kwargs', {})} differs from "
                             f"{paths[0]}'s ({arch} {kwargs}); only one architecture can be averaged")
        model.load_state_dict(state["model"])
        averaged.update_parameters(model)
        entry = {"path": str(path), "sha256": sha256_file(path), "epoch": state.get("epoch")}
        if state.get("provenance"):
            entry["provenance"] = state["provenance"]
        inputs.append(entry)
        last = state
    return {
        "format": CHECKPOINT_FORMAT,
        "config": last["config"],
        "epoch": last.get("epoch"),
        "model": averaged.module.state_dict(),
        "provenance": {"averaged": {"rule": RULE, "checkpoints": inputs}},
    }
