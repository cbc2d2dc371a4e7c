"""Rebuild a trainable checkpoint from a shipped ONNX classifier or the pattern detector
(``python -m training import-onnx``).

Why: the defenses of §5.2 start from the clean model ("crucial to use a pre-trained model that
has been trained exclusively on the original clean data"), but a clean clone only has the
shipped ``resources/models/cnn_clean.onnx``, not the ``runs/`` checkpoint behind it. Retraining
costs an hour of CPU and gives a *different* model from the one whose numbers the card reports.
This module turns the shipped graph back into a ``breakfix-checkpoint/1`` with the same
predictions, so adversarial training starts from exactly the model the card describes.

How: the exporter folds every BatchNorm into the convolution before it (ONNX initialisers
``<conv>.weight`` and ``<conv>.weight_bias``), so the BatchNorm's own scale, shift and running
statistics are gone; only their product survives. We rebuild the architecture from the card,
load the folded convolution weights, and *recalibrate* each BatchNorm on real training images:
with ``u`` the convolution output (no bias) and ``b`` the folded bias, measured mean ``m`` and
variance ``v`` of ``u`` per channel, we set ``running_mean = m``, ``running_var = v``,
``weight = sqrt(v + eps)``, ``bias = m + b``. In eval mode that is exactly ``u + b`` (the ONNX
graph; parity is checked on real scans and the import refuses above 1e-4). In train mode, batch
statistics replace ``m`` and ``v``, which stay close on batches of the same data, so fine-tuning
starts from the same function instead of from a BatchNorm that would rescale everything.

The pattern detector (card role ``detector``) is rebuilt the same way inside its export wrapper
(:class:`~training.detector.DetectorGraph`, initialisers ``detector.*``); parity covers both
outputs (``score`` and ``map``), and the checkpoint carries the card's pattern settings
(``detector``), so :func:`~training.detector.load_detector` and the detector drills' ``init_from``
read it.

An ensemble graph (card role ``ensemble``) holds every member under ``ensemble.members.<i>.``
and outputs each member's logits as ``member_<name>``: ``member=<name>`` rebuilds that one member
(its training settings come from the card's ``training.members.<name>``), with parity checked on
its own output. That is how ResNet18_PGD, which ships only inside the ensemble, can be trained on.

The checkpoint records where it came from (``provenance.imported_from``: the ONNX path, its
SHA-256, the card's name, the calibration images); it holds no optimizer state, so it can seed
``--init`` but not ``--resume``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from breakfix_desktop.core.hashing import sha256_file

from .export import graph_sha256, parity
from .models import build_model

PARITY_LIMIT = 1e-4


class ImportErrorOnnx(ValueError):
    """The ONNX file cannot be mapped onto the architecture its card names."""


def _conv_bn_pairs(model: nn.Module) -> List[Tuple[str, nn.Conv2d, nn.BatchNorm2d]]:
    """(conv name, conv, bn) for every Conv2d directly followed by a BatchNorm2d in module order."""
    mods = list(model.named_modules())
    pairs = []
    for (name, mod), (_, nxt) in zip(mods, mods[1:]):
        if isinstance(mod, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
            pairs.append((name, mod, nxt))
    return pairs


def onnx_initializers(path: os.PathLike | str) -> Dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def load_folded_weights(model: nn.Module, inits: Dict[str, np.ndarray],
                        unused: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """Copy every parameter the graph kept by name; BatchNorms become identity plus the folded bias.

    Returns the folded biases by conv name (needed for calibration). Raises if a parameter of
    ``model`` has no initialiser of the same name and shape (a different architecture), except
    under the name prefixes ``unused``: parts of the model the graph's outputs do not depend on
    (the exporter drops them), which keep their initial weights.
    """
    def skipped(name: str) -> bool:
        return any(name.startswith(u) for u in unused) and name not in inits

    pairs = [(c, conv, bn) for c, conv, bn in _conv_bn_pairs(model)
             if not (skipped(f"{c}.weight") and f"{c}.weight_bias" not in inits)]
    bn_ids = {id(bn) for _, _, bn in pairs}
    bn_names = {n for n, m in model.named_modules() if id(m) in bn_ids}
    folded: Dict[str, np.ndarray] = {}
    with torch.no_grad():
        for conv_name, conv, bn in pairs:
            bias = inits.get(f"{conv_name}.weight_bias")
            if bias is None:
                raise ImportErrorOnnx(f"{conv_name}: no folded BatchNorm bias '{conv_name}.weight_bias' in the graph")
            folded[conv_name] = bias.astype(np.float32)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(folded[conv_name].copy()))
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            owner = name.rsplit(".", 1)[0]
            if owner in bn_names or name.endswith("num_batches_tracked") or skipped(name):
                continue
            arr = inits.get(name)
            if arr is None:
                raise ImportErrorOnnx(f"the graph has no initialiser for {name} (is the card's architecture right?)")
            if tuple(arr.shape) != tuple(tensor.shape):
                raise ImportErrorOnnx(f"{name}: graph shape {arr.shape} vs model {tuple(tensor.shape)}")
            tensor.copy_(torch.from_numpy(np.array(arr, dtype=np.float32)))
    return folded


def calibrate_batchnorm(model: nn.Module, folded: Dict[str, np.ndarray], pixels: torch.Tensor,
                        batch_size: int = 64) -> None:
    """Give every BatchNorm statistics measured on ``pixels`` while keeping eval-mode outputs exact."""
    pairs = [p for p in _conv_bn_pairs(model) if p[0] in folded]  # the others are not in the graph
    sums: Dict[str, torch.Tensor] = {}
    sq: Dict[str, torch.Tensor] = {}
    count: Dict[str, int] = {}
    hooks = []
    for conv_name, conv, bn in pairs:
        def hook(mod, inp, out, key=conv_name):
            u = out.detach().double()
            sums[key] = sums.get(key, 0) + u.sum(dim=(0, 2, 3))
            sq[key] = sq.get(key, 0) + (u * u).sum(dim=(0, 2, 3))
            count[key] = count.get(key, 0) + u.shape[0] * u.shape[2] * u.shape[3]
        hooks.append(conv.register_forward_hook(hook))
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(pixels), batch_size):
                model(pixels[i:i + batch_size])
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for conv_name, conv, bn in pairs:
            n = count[conv_name]
            mean = sums[conv_name] / n
            var = (sq[conv_name] / n - mean * mean).clamp_min(0.0)
            bn.running_mean.copy_(mean.float())
            bn.running_var.copy_(var.float())
            bn.weight.copy_(torch.sqrt(var + bn.eps).float())
            bn.bias.copy_(mean.float() + torch.from_numpy(folded[conv_name]))


def import_onnx(onnx_path: os.PathLike | str, card_path: Optional[os.PathLike | str],
                calibration_pixels: np.ndarray, parity_pixels: Optional[np.ndarray] = None,
                calibration_note: str = "", member: Optional[str] = None) -> Dict[str, Any]:
    """A ``breakfix-checkpoint/1`` dict rebuilt from a shipped ONNX classifier and its card.

    ``member``: for an ensemble graph, the name of the member to rebuild (required there, refused
    for other roles).

    ``calibration_pixels``: N x 3 x 224 x 224 float32 in [0, 1] from the *training* split.
    Raises :class:`ImportErrorOnnx` when the card's SHA-256 does not match the file, the card is
    not a single classifier, or ONNX/torch parity exceeds 1e-4.
    """
    onnx_path = Path(onnx_path)
    card_path = Path(card_path) if card_path else onnx_path.with_name(onnx_path.stem + ".card.json")  # as write_card names it
    if not card_path.is_file():
        raise ImportErrorOnnx(f"{onnx_path}: model card {card_path} not found (it names the architecture)")
    card = json.loads(card_path.read_text())
    digest = sha256_file(onnx_path)
    if card.get("sha256") != digest:
        raise ImportErrorOnnx(f"{onnx_path}: SHA-256 {digest[:12]}... does not match its card ({str(card.get('sha256'))[:12]}...)")
    role = card.get("role")
    if role not in ("classifier", "detector", "ensemble"):
        raise ImportErrorOnnx(f"{onnx_path}: role {role!r}; only single classifiers, ensemble members and the "
                              "pattern detector can be imported")
    union = ((card.get("training") or {}).get("detector") or {}).get("union") if role == "detector" else None
    if (role == "ensemble" or bool(union)) != (member is not None):
        raise ImportErrorOnnx(f"{onnx_path}: " + (
            "an ensemble graph: name the member to rebuild (one of "
            f"{', '.join(n for n, _ in _ensemble_members(card)) or 'none listed'})" if role == "ensemble"
            else "a union of pattern detectors: name the member to rebuild by its index (" + ", ".join(
                f"{i}: {u.get('checkpoint')}" for i, u in enumerate(union)) + ")" if union
            else f"role {role!r} has no members; do not name one ({member!r})"))
    training = dict(card.get("training") or {})
    pixels = torch.from_numpy(np.ascontiguousarray(calibration_pixels, dtype=np.float32))
    check = parity_pixels if parity_pixels is not None else calibration_pixels[:64]
    extra: Dict[str, Any] = {}
    if role == "ensemble":
        model, par, training = _import_member(onnx_path, card, member, pixels, check)
        extra["note"] = f"member {member} of the ensemble graph"
    elif role == "detector":
        model, par, extra = _import_detector(onnx_path, card, training, pixels, check, member)
    else:
        arch = training.get("arch") or card.get("architecture")
        model = build_model(arch, **(training.get("model_kwargs") or {}))
        folded = load_folded_weights(model, onnx_initializers(onnx_path))
        calibrate_batchnorm(model, folded, pixels)
        par = parity(model, onnx_path, check)
    worst = max((v for k, v in par.items() if k.startswith("max_abs_")), default=0.0)
    if not worst <= PARITY_LIMIT:
        raise ImportErrorOnnx(f"{onnx_path}: rebuilt model differs from the graph by {worst:.2e} "
                              f"(limit {PARITY_LIMIT:g}; {par})")
    from .engine import TrainConfig

    known = set(TrainConfig().to_dict())
    config = {k: v for k, v in training.items() if k in known}
    return {
        "format": "breakfix-checkpoint/1",
        "config": config,
        "epoch": int(training.get("epochs_done") or training.get("epochs") or 0),
        "model": model.state_dict(),
        # the per-epoch history belongs to these weights: a re-export keeps it in the new card
        "history": [] if role == "ensemble" else list((card.get("metrics") or {}).get("history") or []),
        **{k: v for k, v in extra.items() if k != "note"},
        "provenance": {"imported_from": {
            **({"note": extra["note"]} if "note" in extra else {}),
            "onnx": str(onnx_path), "sha256": digest, "graph_sha256": graph_sha256(onnx_path), "card": card.get("name"),
            **({"member": member} if member is not None else {}),
            "calibration_images": int(len(calibration_pixels)), "calibration": calibration_note,
            "parity": par,
        }},
    }


def _import_detector(onnx_path: Path, card: Dict[str, Any], training: Dict[str, Any], pixels: torch.Tensor,
                     check: np.ndarray, member: Optional[str] = None):
    """The pattern detector (ResNet-18 + segmentation head) behind a shipped ``score``/``map``
    graph: ``(PatternDetector, parity, {"detector": its pattern settings})``.  For a union graph
    (card ``training.detector.union``) the whole union is rebuilt and checked, and member
    ``member`` (its index) is returned with its own settings."""
    from .detector import DETECTOR_FORMAT, DetectorGraph, DetectorUnion, build_detector, graph_parity

    meta = dict(training.get("detector") or {})
    if meta.get("format") != DETECTOR_FORMAT:
        raise ImportErrorOnnx(f"{onnx_path}: the card's training.detector is not '{DETECTOR_FORMAT}' settings")
    rule = card.get("score_rule")
    union = meta.get("union") or []
    if union:
        if not (member or "").isdigit() or int(member) >= len(union):
            raise ImportErrorOnnx(f"{onnx_path}: no member {member!r}; the union has members 0-{len(union) - 1}")
        members = [build_detector(dict(u.get("detector") or {})) for u in union]
        detector = DetectorUnion(members)
        detector.tta = str(meta.get("tta", "none"))
        heads = [f"detector.members.{i}." for i in range(len(members))]
    else:
        detector = build_detector(meta)
        heads = ["detector."]
    try:
        graph = DetectorGraph(detector, rule)
    except ValueError as exc:
        raise ImportErrorOnnx(f"{onnx_path}: {exc}") from exc
    # the graph wraps the detector as ``detector.*``: its initialisers carry that prefix.  Under
    # the segmentation rule the score and map do not use the 2-logit head (layer4 + fc): the
    # exporter drops it, and the rebuilt checkpoint keeps it at its initial weights.
    unused = tuple(h + part for h in heads for part in ("backbone.layer4.", "backbone.fc.")) \
        if rule == "segmentation" else ()
    inits = onnx_initializers(onnx_path)
    if union:
        # the exporter keeps a tensor that two members share (the normalisation constants, a folded
        # bias that came out identical) once, under the first member's name: give the others theirs
        # back.  A wrong guess cannot pass silently: the parity check below compares the whole graph.
        for name, value in list(inits.items()):
            if name.startswith("detector.members."):
                rest = name.split(".", 3)[3]
                for head in heads:
                    inits.setdefault(head + rest, value)
    folded = load_folded_weights(graph, inits, unused)
    calibrate_batchnorm(graph, folded, pixels)
    par = graph_parity(graph, onnx_path, check, ("score", "map"))
    extra: Dict[str, Any] = {"detector": meta}
    if union:
        index = int(member)
        detector = detector.members[index]
        extra = {"detector": {**dict(union[index].get("detector") or {}), "tta": str(meta.get("tta", "none"))},
                 "note": f"member {index} of the detector union ({union[index].get('checkpoint')})"}
    if unused and not any(k.startswith(unused) for k in inits):
        extra["note"] = ((extra["note"] + "; ") if "note" in extra else "") + (
            "the graph scores by the segmentation rule and has no 2-logit head (layer4, fc): "
            "those weights are untrained in this checkpoint")
    return detector, par, extra


def _ensemble_members(card: Dict[str, Any]) -> List[Tuple[str, str]]:
    """``(member name, its output)`` in graph order (``ensemble.members.<i>``), from the card's
    ``ensemble.members`` (older cards: the ``member_<name>`` outputs)."""
    listed = (card.get("ensemble") or {}).get("members")
    if listed:
        return [(str(m["name"]), str(m.get("output") or f"member_{m['name']}")) for m in listed]
    return [(o["name"][len("member_"):], o["name"]) for o in card.get("outputs") or []
            if str(o.get("name", "")).startswith("member_")]


class _Prefixed(nn.Module):
    """``model`` registered as ``ensemble.members.<index>`` so its parameter names match the graph's."""

    def __init__(self, model: nn.Module, index: int, count: int):
        super().__init__()
        self.ensemble = nn.Module()
        self.ensemble.members = nn.ModuleList(model if i == index else nn.Identity() for i in range(count))
        self.index = index

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.ensemble.members[self.index](pixels)


def _import_member(onnx_path: Path, card: Dict[str, Any], member: str, pixels: torch.Tensor, check: np.ndarray):
    """One member of an ensemble graph: ``(model, parity on member_<name>, its training settings)``."""
    from .detector import graph_parity

    listed = _ensemble_members(card)
    names = [n for n, _ in listed]
    if member not in names:
        raise ImportErrorOnnx(f"{onnx_path}: no member {member!r}; the graph has {', '.join(names) or 'none'}")
    training = dict(((card.get("training") or {}).get("members") or {}).get(member) or {})
    arch = training.get("arch")
    if not arch:
        raise ImportErrorOnnx(f"{onnx_path}: the card does not record member {member}'s architecture")
    index = names.index(member)
    model = build_model(arch, **(training.get("model_kwargs") or {}))
    wrapper = _Prefixed(model, index, len(names))
    inits = onnx_initializers(onnx_path)
    # the members' identical normalisation constants are deduplicated by the exporter (kept once,
    # under the first member's name): read them from wherever they survived
    own = f"ensemble.members.{index}.normalize."
    for leaf in ("mean", "std"):
        found = [v for k, v in inits.items() if k.endswith(f".normalize.{leaf}")]
        if own + leaf not in inits and found:
            inits[own + leaf] = found[0]
    folded = load_folded_weights(wrapper, inits)
    calibrate_batchnorm(wrapper, folded, pixels)
    par = graph_parity(wrapper, onnx_path, check, (listed[index][1],))
    return model, par, training
