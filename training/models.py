"""Classifier architectures: the paper's VGG-like CNN (Figure 1) and torchvision ResNets.

Every model built here takes pixels in [0, 1] (N x 3 x 224 x 224) and normalises inside
(:class:`Normalize`, mean 0.1855 / std 0.1813, paper §5.1), so the exported ONNX graph has the
same contract as the app's preprocessing and attacks can work in pixel space with eps on [0, 1].

Weights are never downloaded: ResNets start from a local ImageNet weights file (``weights=PATH``)
or from scratch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from breakfix_desktop.core.labels import NUM_CLASSES
from breakfix_desktop.core.model_cards import ENSEMBLE_MEAN_MARK
from breakfix_desktop.core.preprocess import NORM_MEAN, NORM_STD


class OfflineError(RuntimeError):
    """Raised when something would need the network."""


class Normalize(nn.Module):
    """(x - mean) / std with constant buffers, so it is part of the exported graph."""

    def __init__(self, mean: float = NORM_MEAN, std: float = NORM_STD, channels: int = 3):
        super().__init__()
        self.register_buffer("mean", torch.full((1, channels, 1, 1), float(mean)))
        self.register_buffer("std", torch.full((1, channels, 1, 1), float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PixelModel(nn.Module):
    """Wraps a backbone that expects normalised input; ``forward`` takes [0, 1] pixels."""

    def __init__(self, backbone: nn.Module, arch: str):
        super().__init__()
        self.normalize = Normalize()
        self.backbone = backbone
        self.arch = arch

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(pixels))


class VGGLikeCNN(nn.Module):
    """The paper's custom CNN (Figure 1).

    ``blocks`` x [Conv3x3 -> BatchNorm -> ReLU -> MaxPool2], channels doubling from ``width``,
    then adaptive average pooling to ``pool`` x ``pool`` (keeps the head small at 224 px),
    then Linear -> ReLU -> Dropout -> Linear to the 4 classes.
    """

    def __init__(self, blocks: int = 3, width: int = 32, hidden: int = 256, pool: int = 4,
                 dropout: float = 0.3, num_classes: int = NUM_CLASSES):
        super().__init__()
        if blocks < 1:
            raise ValueError("blocks must be >= 1")
        layers = []
        cin = 3
        for i in range(blocks):
            cout = width * (2 ** i)
            layers += [
                nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin * pool * pool, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


def _load_state(path: Path) -> Dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} not found. This machine is offline: weights are never "
            "downloaded; copy a torchvision ImageNet .pth file here and pass --weights PATH"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def _resnet(depth: int, weights: Optional[str], finetune: bool) -> nn.Module:
    from torchvision import models as tvm

    if weights in ("imagenet", "IMAGENET1K_V1", "DEFAULT", "download"):
        raise OfflineError(
            f"--weights {weights!r} would download ImageNet weights, but this workstation is "
            "offline. Pass --weights PATH to a local torchvision .pth file, or omit it to train "
            "from scratch."
        )
    net = {18: tvm.resnet18, 50: tvm.resnet50}[depth](weights=None)
    if weights:
        state = _load_state(Path(weights))
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.startswith("fc.")]
        if bad or unexpected:
            raise ValueError(
                f"{weights}: not a torchvision resnet{depth} state dict "
                f"(missing {bad[:3]}..., unexpected {list(unexpected)[:3]}...)"
            )
    net.fc = nn.Linear(net.fc.in_features, NUM_CLASSES)
    if finetune:
        for name, p in net.named_parameters():
            p.requires_grad = name.startswith(("layer4.", "fc."))
    return net


ARCHITECTURES: Dict[str, Callable[..., nn.Module]] = {
    "cnn": lambda weights=None, finetune=False, **kw: VGGLikeCNN(**kw),
    "resnet18": lambda weights=None, finetune=False, **kw: _resnet(18, weights, finetune),
    "resnet50": lambda weights=None, finetune=False, **kw: _resnet(50, weights, finetune),
}


def build_model(arch: str, weights: Optional[str] = None, finetune: bool = False, **kwargs) -> PixelModel:
    """Build ``arch`` wrapped in :class:`PixelModel` (takes [0, 1] pixels)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    if arch == "cnn" and (weights or finetune):
        raise ValueError("the CNN trains from scratch: --weights and --finetune apply to ResNets only")
    return PixelModel(ARCHITECTURES[arch](weights=weights, finetune=finetune, **kwargs), arch)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class WeightedEnsemble(nn.Module):
    """Weighted sum of the members' logits (paper §5.2: ResNet_PGD counts double), divided by the
    sum of the weights.

    ``forward`` returns ``sum_i w_i * z_i / sum_i w_i``; :meth:`member_logits` returns every
    member's own logits (the exported ensemble graph outputs both).  The division changes no
    decision (the paper's sum has the same argmax) but keeps the logits on one model's scale.  The
    plain sum multiplies them by the total weight (10 for weights 1, 1, 8): softmax saturates, the
    cross-entropy gradient every attack follows shrinks toward zero on confidently classified
    scans, FGSM and PGD measure robustness that is not there (gradient masking; docs/results.md,
    2026-12-07), and the app's softmax confidences read 100.0 % on almost every scan.  Members
    take [0, 1] pixels like every model here.
    """

    def __init__(self, members: Dict[str, nn.Module], weights: Optional[Dict[str, float]] = None):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.names = list(members)
        self.members = nn.ModuleList(members[n] for n in self.names)
        w = [float((weights or {}).get(n, 1.0)) for n in self.names]
        if any(v <= 0 for v in w):
            raise ValueError(f"ensemble weights must be > 0 (got {dict(zip(self.names, w))})")
        self.register_buffer("weights", torch.tensor(w, dtype=torch.float32))

    def member_logits(self, pixels: torch.Tensor) -> List[torch.Tensor]:
        return [m(pixels) for m in self.members]

    def combine(self, member_logits: List[torch.Tensor]) -> torch.Tensor:
        """The ensemble's logits from its members': ``sum_i w_i * z_i / sum_i w_i``."""
        out = None
        for w, logits in zip(self.weights, member_logits):
            out = w * logits if out is None else out + w * logits
        return out / self.weights.sum()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.combine(self.member_logits(pixels))


ENSEMBLE_FORMAT = "breakfix-ensemble/1"
#: How an ensemble's ``logits`` come from its members' (recorded in ensemble files and cards).
ENSEMBLE_RULE = (f"logits = sum over members of weight * member logits, {ENSEMBLE_MEAN_MARK} "
                 "(paper §5.2: ResNet_PGD counts double; the division keeps one model's logit scale and "
                 "changes no decision)")

#: Paper §5.2: "summed together, giving double the weight to ResNet_PGD, as it generally performs
#: better"; every other member counts once.  Keys are compared case-insensitively.
PAPER_ENSEMBLE_WEIGHTS: Dict[str, float] = {"resnet18_pgd": 2.0, "resnet_pgd": 2.0}


def default_member_weight(name: str) -> float:
    """The paper's weight for an ensemble member called ``name`` (2 for ResNet(18)_PGD, else 1)."""
    return PAPER_ENSEMBLE_WEIGHTS.get(name.strip().lower(), 1.0)


def read_ensemble_spec(path: os.PathLike | str) -> List[Dict[str, Any]]:
    """The members of a ``breakfix-ensemble/1`` file, checked: ``[{"name", "checkpoint", "weight", "sha256"}]``.

    ``checkpoint`` comes back as an absolute :class:`Path` (the file stores it relative to itself);
    ``sha256`` is the hash recorded by ``make-ensemble`` (``None`` when the file has none).  Raises
    ``ValueError`` naming the problem: wrong format, no members, a duplicate or empty name, a
    weight that is not > 0, a missing checkpoint, or a checkpoint whose SHA-256 no longer matches
    the recorded one (a swapped member is a poisoning vector; it is never loaded).
    """
    import json

    from breakfix_desktop.core.hashing import sha256_file

    path = Path(path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(spec, dict) or spec.get("format") != ENSEMBLE_FORMAT:
        raise ValueError(f"{path}: not a BreakFix ensemble file (format {ENSEMBLE_FORMAT})")
    raw = spec.get("members")
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{path}: an ensemble needs at least one member")
    out, seen = [], set()
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or not str(m.get("name", "")).strip() or not m.get("checkpoint"):
            raise ValueError(f"{path}: member {i + 1} needs a name and a checkpoint")
        name = str(m["name"]).strip()
        if name in seen:
            raise ValueError(f"{path}: member name {name!r} appears twice")
        seen.add(name)
        try:
            weight = float(m.get("weight", 1.0))
        except (TypeError, ValueError):
            raise ValueError(f"{path}: member {name}: weight must be a number (got {m.get('weight')!r})") from None
        if not weight > 0:
            raise ValueError(f"{path}: member {name}: weight must be > 0 (got {weight})")
        ckpt = (path.parent / m["checkpoint"]).resolve()
        if not ckpt.is_file():
            raise ValueError(f"{path}: member {name}: checkpoint {ckpt} not found")
        recorded = m.get("sha256")
        if recorded:
            actual = sha256_file(ckpt)
            if actual != str(recorded).lower():
                raise ValueError(f"{path}: member {name}: {ckpt} has SHA-256 {actual[:12]}..., the ensemble file "
                                 f"records {str(recorded)[:12]}...; the checkpoint changed since the ensemble was "
                                 "made and will not be loaded (run make-ensemble again if the change is intended)")
        out.append({"name": name, "checkpoint": ckpt, "weight": weight, "sha256": recorded or None})
    return out


CHECKPOINT_FORMAT = "breakfix-checkpoint/1"


def read_checkpoint(path: os.PathLike | str) -> Dict[str, Any]:
    """The dict inside a BreakFix ``checkpoint.pt`` (``CHECKPOINT_FORMAT``), read on the CPU.

    Raises ``FileNotFoundError`` or ``ValueError`` naming the file: missing, unreadable (truncated
    or foreign) or not a BreakFix checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: name it
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a BreakFix checkpoint")
    return state


def load_model(path: os.PathLike | str) -> nn.Module:
    """A trained torch model from a BreakFix ``checkpoint.pt`` or an ensemble ``.json`` file.

    The ensemble file lists its members (checkpoints, paths relative to the file) and weights
    (``python -m training make-ensemble`` writes it, with each checkpoint's SHA-256, which
    :func:`read_ensemble_spec` verifies)::

        {"format": "breakfix-ensemble/1",
         "members": [{"name": "ResNet18_PGD", "checkpoint": "../resnet18_pgd/checkpoint.pt", "weight": 2.0,
                      "sha256": "..."}, ...]}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found")
    if path.suffix.lower() == ".json":
        members, weights = {}, {}
        for m in read_ensemble_spec(path):
            members[m["name"]] = load_model(m["checkpoint"])
            weights[m["name"]] = m["weight"]
        return WeightedEnsemble(members, weights).eval()
    state = read_checkpoint(path)
    cfg = state["config"]
    model = build_model(cfg["arch"], **cfg.get("model_kwargs", {}))
    model.load_state_dict(state["model"])
    return model.eval()
