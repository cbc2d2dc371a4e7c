"""ONNX export, parity check against torch, model cards and the shipped-models manifest.

Export contract (shared with ``breakfix_desktop.core.preprocess``):
input ``pixels`` float32 N x 3 x 224 x 224 in [0, 1] (dynamic N); output ``logits`` N x 4 in the
class order glioma, meningioma, notumor, pituitary; normalisation inside the graph.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import logging
import os
import platform
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn

from breakfix_desktop.core.fsutil import atomic_write_bytes
from breakfix_desktop.core.hashing import sha256_file
from breakfix_desktop.core.labels import CLASS_NAMES
from breakfix_desktop.core.preprocess import IMAGE_SIZE, NORM_MEAN, NORM_STD

log = logging.getLogger(__name__)

OPSET = 18
CARD_FORMAT = "breakfix-model-card/1"
MANIFEST_FORMAT = "breakfix-manifest/1"


def _export_proto(model: nn.Module, dummy: torch.Tensor, output_names: list):
    """torch -> ONNX ModelProto with a dynamic batch axis named ``batch``.

    The dynamo exporter (torch.export) handles every op we use, including adaptive average
    pooling to a size that does not divide the input (the CNN's 7 -> 4), which the TorchScript
    exporter refuses; the latter stays as a fallback.  The exporters print progress on stdout,
    which belongs to the JSON-lines event stream, so their output is sent to stderr.
    """
    import onnx

    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                model, (dummy,), input_names=["pixels"], output_names=output_names,
                dynamic_shapes={"pixels": {0: torch.export.Dim("batch")}}, opset_version=OPSET,
                dynamo=True, verbose=False,
            )
            return program.model_proto
        except Exception as exc:  # pragma: no cover - depends on the torch version
            log.warning("dynamo ONNX exporter failed (%s); trying the TorchScript exporter", exc)
        buf = io.BytesIO()
        dynamic = {"pixels": {0: "batch"}, **{name: {0: "batch"} for name in output_names}}
        torch.onnx.export(
            model, (dummy,), buf, input_names=["pixels"], output_names=output_names,
            dynamic_axes=dynamic, opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )
        return onnx.load_from_string(buf.getvalue())


def export_onnx(model: nn.Module, path: os.PathLike | str, output_names: Sequence[str] = ("logits",)) -> Path:
    """Export ``model`` (pixels in [0,1] -> logits) to ONNX with a dynamic batch dimension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    dummy = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    import onnx

    proto = _export_proto(model, dummy, list(output_names))
    onnx.checker.check_model(proto, full_check=True)
    proto.doc_string = "BreakFix Desktop classifier: pixels float32 Nx3x224x224 in [0,1] -> logits"
    meta = {"classes": ",".join(CLASS_NAMES), "normalize_mean": str(NORM_MEAN), "normalize_std": str(NORM_STD),
            "input_range": "0..1"}
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    return atomic_write_bytes(path, proto.SerializeToString())


def parity(model: nn.Module, onnx_path: os.PathLike | str, pixels: np.ndarray) -> Dict[str, float]:
    """Max |logit difference| between onnxruntime (CPU) and torch eager on ``pixels`` (N x 3 x 224 x 224)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model = model.eval().cpu()
    with torch.no_grad():
        ref = model(torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))).numpy()
    got = sess.run(None, {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})[0]
    diff = np.abs(ref - got)
    return {
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "argmax_agreement": float((ref.argmax(1) == got.argmax(1)).mean()),
        "images": int(len(pixels)),
    }


def software_versions() -> Dict[str, str]:
    import onnx
    import onnxruntime
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


def write_card(
    onnx_path: os.PathLike | str,
    *,
    name: str,
    role: str,
    architecture: str,
    training: Dict[str, Any],
    data: Dict[str, Any],
    metrics: Dict[str, Any],
    extra: Optional[Dict[str, Any]] = None,
) -> Path:
    """Write ``<model>.card.json`` beside the ONNX file; returns its path."""
    onnx_path = Path(onnx_path)
    card = {
        "format": CARD_FORMAT,
        "name": name,
        "role": role,
        "architecture": architecture,
        "file": onnx_path.name,
        "sha256": sha256_file(onnx_path),
        "bytes": onnx_path.stat().st_size,
        "classes": list(CLASS_NAMES),
        "input": {"name": "pixels", "dtype": "float32", "shape": ["N", 3, IMAGE_SIZE, IMAGE_SIZE], "range": [0.0, 1.0],
                  "channels": "grey replicated to 3", "normalization": {"mean": NORM_MEAN, "std": NORM_STD, "in_graph": True},
                  "preprocessing": "breakfix_desktop.core.preprocess.preprocess_file"},
        "outputs": [{"name": "logits", "shape": ["N", len(CLASS_NAMES)]}],
        "training": training,
        "data": data,
        "metrics": metrics,
        "software": software_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        card.update(extra)
    card_path = onnx_path.with_name(onnx_path.stem + ".card.json")
    atomic_write_bytes(card_path, (json.dumps(card, indent=2) + "\n").encode("utf-8"))
    return card_path


def update_manifest(manifest_path: os.PathLike | str, card_path: os.PathLike | str) -> Path:
    """Add or replace the entry for ``card_path``'s model in the manifest (paths relative to it)."""
    manifest_path = Path(manifest_path)
    card_path = Path(card_path)
    card = json.loads(card_path.read_text(encoding="utf-8"))
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    else:
        manifest = {"format": MANIFEST_FORMAT, "models": []}
    base = manifest_path.parent.resolve()
    entry = {
        "name": card["name"],
        "role": card["role"],
        "file": os.path.relpath(card_path.parent.resolve() / card["file"], base),
        "card": os.path.relpath(card_path.resolve(), base),
        "sha256": card["sha256"],
    }
    manifest["models"] = [m for m in manifest["models"] if m["name"] != entry["name"]] + [entry]
    manifest["models"].sort(key=lambda m: (m["role"], m["name"]))
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return manifest_path
