"""ONNX export, parity check against torch, model cards and the shipped-models manifest.

Export contract (shared with ``breakfix_desktop.core.preprocess``):
input ``pixels`` float32 N x 3 x 224 x 224 in [0, 1] (dynamic N); output ``logits`` N x 4 in the
class order glioma, meningioma, notumor, pituitary; normalisation inside the graph.

Ensembles (paper §5.2) are exported as ONE graph (:class:`EnsembleGraph`): ``logits`` is the
weighted sum of the members' logits divided by the total weight (the decision), and every
member's own logits come out as ``member_<name>`` (N x 4 each), which
``breakfix_desktop.core.screening`` reads to report member agreement.  The parity check compares
every output with torch.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import logging
import os
import platform
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

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


CLASSIFIER_METADATA = {"classes": ",".join(CLASS_NAMES), "normalize_mean": str(NORM_MEAN),
                       "normalize_std": str(NORM_STD)}


#: ``export_onnx(weight_storage=...)``: how the graph stores its float weights on disk.
WEIGHT_STORAGE = ("float32", "float16")
#: float tensors with fewer elements stay float32 (biases, scales: no size to gain, full precision kept)
FP16_MIN_ELEMENTS = 1024
#: ``--weight-storage float16`` exports (classifiers and the detector) refuse a file whose Testing
#: decisions agree with the float32 graph's on fewer than this share of scans
FP16_MIN_AGREEMENT = 0.995


def store_weights_fp16(proto, min_elements: int = FP16_MIN_ELEMENTS) -> Dict[str, Any]:
    """Store the large float32 initialisers of ``proto`` as float16, in place; computation stays float32.

    Every float32 initialiser with at least ``min_elements`` elements (convolution and linear
    weights) is rounded to float16 under its **own name**, and one ``Cast(to=FLOAT)`` node
    (output ``<name>__fp32``) feeds every node that read it.  Inputs, outputs and arithmetic stay
    float32; onnxruntime folds the casts when it loads the graph, so inference runs the float32
    graph's kernels (ResNet-18, 16 scans, 2 threads: 18.2 vs 20.8 ms per scan, measured) - only the
    file halves (a ResNet-18 45 MB -> 22 MB) and the weights
    carry float16's 11-bit mantissa (relative rounding <= 2^-11).  Tensors whose values do not fit
    float16 (|x| > 65504) are left float32.  Keeping the names means ``training.onnx_import`` reads
    the same initialisers back (it converts them to float32).

    Why not ``onnxconverter_common.float16.convert_float_to_float16``: it converts the
    *computation* to float16 (float16 kernels, float16 accumulation), which onnxruntime's CPU
    provider runs slowly or not at all, and changes every activation; here only storage changes.

    Returns ``{"tensors": converted, "kept_float32": n, "bytes_saved": b}``.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    converted, kept, saved = [], 0, 0
    renamed: Dict[str, str] = {}
    new_inits = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            new_inits.append(init)
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < min_elements or not np.isfinite(arr).all() or np.abs(arr).max() > 65504.0:
            kept += 1
            new_inits.append(init)
            continue
        half = numpy_helper.from_array(arr.astype(np.float16), init.name)
        saved += arr.nbytes - arr.size * 2
        new_inits.append(half)
        renamed[init.name] = init.name + "__fp32"
        converted.append(init.name)
    if not renamed:
        return {"tensors": 0, "kept_float32": kept, "bytes_saved": 0}
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    # type annotations of the stored tensors (value_info; graph inputs in older IRs) now say float16
    for info in list(graph.value_info) + list(graph.input):
        if info.name in renamed:
            info.type.tensor_type.elem_type = TensorProto.FLOAT16
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    casts = [helper.make_node("Cast", [name], [renamed[name]], to=TensorProto.FLOAT, name=f"{name}__cast_fp32")
             for name in converted]
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    for out in graph.output:
        if out.name in renamed:  # pragma: no cover - a weight is never a graph output here
            raise RuntimeError(f"initialiser {out.name} is a graph output; cannot store it as float16")
    return {"tensors": len(converted), "kept_float32": kept, "bytes_saved": int(saved)}


def export_onnx(model: nn.Module, path: os.PathLike | str, output_names: Sequence[str] = ("logits",),
                metadata: Optional[Dict[str, str]] = None, doc: Optional[str] = None,
                base_metadata: Optional[Dict[str, str]] = None, weight_storage: str = "float32") -> Path:
    """Export ``model`` (pixels in [0,1] -> logits, or a tuple of outputs named ``output_names``) to
    ONNX with a dynamic batch dimension, checked with ``onnx.checker``; every BreakFix graph (classifier,
    ensemble, detector, squeeze check) goes through here.  The graph's metadata is ``input_range``,
    ``base_metadata`` (default: the classifier's classes and normalisation) and ``metadata``; ``doc``
    replaces the classifier's doc string.  ``weight_storage="float16"`` stores the large weights as
    float16 (:func:`store_weights_fp16`; metadata ``weight_storage``), computation stays float32."""
    if weight_storage not in WEIGHT_STORAGE:
        raise ValueError(f"weight_storage must be one of {WEIGHT_STORAGE}, got {weight_storage!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    dummy = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    import onnx

    proto = _export_proto(model, dummy, list(output_names))
    onnx.checker.check_model(proto, full_check=True)
    if weight_storage == "float16":
        info = store_weights_fp16(proto)
        log.info("float16 weight storage: %d tensors, %.1f MB saved (%d small tensors kept float32)",
                 info["tensors"], info["bytes_saved"] / 1e6, info["kept_float32"])
        onnx.checker.check_model(proto, full_check=True)
        if info["tensors"]:  # a graph with no tensor large enough stays plain float32 and says nothing
            metadata = {**(metadata or {}), "weight_storage": "float16"}
    got = [o.name for o in proto.graph.output]
    if got != list(output_names):
        raise RuntimeError(f"exported graph has outputs {got}, expected {list(output_names)}")
    if doc is None:
        doc = "BreakFix Desktop classifier: pixels float32 Nx3x224x224 in [0,1] -> logits"
        if len(output_names) > 1:
            doc += " (weighted mean of the members' logits) + " + ", ".join(output_names[1:])
    proto.doc_string = doc
    base = CLASSIFIER_METADATA if base_metadata is None else base_metadata
    for k, v in {"input_range": "0..1", **base, **(metadata or {})}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, str(v)
    return atomic_write_bytes(path, proto.SerializeToString())


def stamp_metadata(path: os.PathLike | str, entries: Dict[str, str]) -> Path:
    """Set ``entries`` in an ONNX file's metadata (the graph is unchanged), atomically.

    The detector export writes its calibrated ``threshold`` here, and ``calibrate`` a classifier's
    ``temperature``, as well as into the card: the file is what the manifest and the card hash, so the
    operating point travels inside the verified bytes."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for k, v in keep + sorted(entries.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, str(v)
    return atomic_write_bytes(path, proto.SerializeToString())


def graph_sha256(path: os.PathLike | str) -> str:
    """SHA-256 of an ONNX file's model with its metadata properties left out.

    Two files with the same graph and weights that differ only in what :func:`stamp_metadata` writes
    (a calibrated temperature, a flag threshold) get the same value, though their file SHA-256
    differs.  Cards record it (``graph_sha256``) and ``import-onnx`` records it for the file a
    checkpoint was rebuilt from, so numbers measured on a graph stay tied to it across re-seals."""
    import hashlib

    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    return hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()


def parity(model: nn.Module, onnx_path: os.PathLike | str, pixels: np.ndarray) -> Dict[str, Any]:
    """Max |logit difference| between onnxruntime (CPU) and torch eager on ``pixels`` (N x 3 x 224 x 224).

    The headline numbers are over **every** output (an ensemble's ``logits`` and each
    ``member_*``); ``argmax_agreement`` is the decision's (the first output); a model with several
    outputs also gets ``per_output`` (name -> max |difference|).
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    model = model.eval().cpu()
    x = np.ascontiguousarray(pixels, dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    refs = [r.numpy() for r in ref] if isinstance(ref, (tuple, list)) else [ref.numpy()]
    gots = sess.run(None, {"pixels": x})
    if len(refs) != len(gots):
        raise RuntimeError(f"{onnx_path}: {len(gots)} ONNX outputs but the torch model gives {len(refs)}")
    diffs = [np.abs(r - g) for r, g in zip(refs, gots)]
    out: Dict[str, Any] = {
        "max_abs_logit_diff": float(max(d.max() for d in diffs)),
        "mean_abs_logit_diff": float(np.mean([d.mean() for d in diffs])),
        "argmax_agreement": float((refs[0].argmax(1) == gots[0].argmax(1)).mean()),
        "images": int(len(pixels)),
    }
    if len(names) > 1:
        out["per_output"] = {n: float(d.max()) for n, d in zip(names, diffs)}
    return out


# --------------------------------------------------------------------------- ensembles
def member_output_names(names: Sequence[str]) -> List[str]:
    """ONNX output names for ensemble members: ``member_<name>`` (non ``[A-Za-z0-9_]`` -> ``_``), unique."""
    out: List[str] = []
    for name in names:
        base = "member_" + (re.sub(r"[^A-Za-z0-9_]", "_", str(name)) or "x")
        cand, k = base, 2
        while cand in out:
            cand, k = f"{base}_{k}", k + 1
        out.append(cand)
    return out


class EnsembleGraph(nn.Module):
    """A :class:`~training.models.WeightedEnsemble` as one exportable graph.

    ``forward(pixels) -> (logits, member_1, ..., member_k)`` where ``logits = sum_i w_i * member_i /
    sum_i w_i`` (paper §5.2: the members' outputs summed, ResNet_PGD counting double; divided by the
    total weight, see :class:`~training.models.WeightedEnsemble`); the members run once.
    :attr:`output_names` are the ONNX output names (``logits`` then :func:`member_output_names`).
    """

    def __init__(self, ensemble: nn.Module):
        super().__init__()
        if not hasattr(ensemble, "member_logits") or not hasattr(ensemble, "names"):
            raise TypeError(f"expected a WeightedEnsemble, got {type(ensemble).__name__}")
        self.ensemble = ensemble
        self.output_names = ["logits", *member_output_names(ensemble.names)]

    def forward(self, pixels: torch.Tensor):
        members = self.ensemble.member_logits(pixels)
        return (self.ensemble.combine(members), *members)


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
    outputs: Optional[Sequence[str]] = None,
) -> Path:
    """Write ``<model>.card.json`` beside the ONNX file; returns its path.

    ``outputs`` lists the graph's output names (default ``["logits"]``; an ensemble adds its
    ``member_*`` outputs), each N x classes.
    """
    onnx_path = Path(onnx_path)
    card = {
        "format": CARD_FORMAT,
        "name": name,
        "role": role,
        "architecture": architecture,
        "file": onnx_path.name,
        "sha256": sha256_file(onnx_path),
        "graph_sha256": graph_sha256(onnx_path),
        "bytes": onnx_path.stat().st_size,
        "classes": list(CLASS_NAMES),
        "input": {"name": "pixels", "dtype": "float32", "shape": ["N", 3, IMAGE_SIZE, IMAGE_SIZE], "range": [0.0, 1.0],
                  "channels": "grey replicated to 3", "normalization": {"mean": NORM_MEAN, "std": NORM_STD, "in_graph": True},
                  "preprocessing": "breakfix_desktop.core.preprocess.preprocess_file"},
        "outputs": [{"name": n, "shape": ["N", len(CLASS_NAMES)]} for n in (outputs or ["logits"])],
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
