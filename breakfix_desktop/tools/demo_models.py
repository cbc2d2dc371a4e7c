"""Tiny, real ONNX demo models for screenshots and GUI tests (needs the ``onnx`` package).

They follow the model contract (``pixels`` float32 N x 3 x 224 x 224 in [0, 1]) and the card /
manifest formats, so the real registry verifies them and the real engine runs them - but they
are NOT trained: their classes mean nothing.  Their names start with ``demo-`` and their cards
say so, so a screenshot never passes them off as a diagnostic model.

* ``demo-ensemble`` (role ``ensemble``): quadrant means minus the scan's mean -> three slightly different linear
  members (``member_0..2``) -> ``logits`` = their mean.
* ``demo-trigger-detector`` (role ``detector``): ``score`` = the brightest pixel of the top-left
  16 x 16 corner (a bright corner stamp is "the trigger"; the threshold is 0.9), plus a ``map``
  output (N x 1 x 224 x 224): channel 0 inside the top-left 40 x 40 corner - a localisation map
  the review queue overlays.

    python -m breakfix_desktop.tools.demo_models OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..core.hashing import sha256_file
from ..core.labels import CLASS_NAMES
from ..core.model_registry import CARD_FORMAT, MANIFEST_FORMAT

__all__ = ["write_demo_ensemble", "write_demo_detector", "make_demo_models", "TRIGGER_CORNER"]

#: The detector looks at this top-left square (model-input pixels) for the trigger.
TRIGGER_CORNER = 16
MAP_CORNER = 40
_INPUT = ["N", 3, 224, 224]


def _save(model, path: Path) -> Path:
    import onnx

    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def write_demo_ensemble(path: Path, seed: int = 8, members: int = 3, scale: float = 80.0,
                        noise: float = 0.15) -> Path:
    """An untrained 'ensemble' over the four quadrant means (see the module docstring)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(12, 4))
    inits = [helper.make_tensor("flat_shape", TensorProto.INT64, [2], [-1, 12]),
             numpy_helper.from_array(np.array(1.0 / members, np.float32), "inv_n")]
    nodes = [helper.make_node("AveragePool", ["pixels"], ["quadrants"], kernel_shape=[112, 112], strides=[112, 112]),
             helper.make_node("GlobalAveragePool", ["pixels"], ["mean"]),
             helper.make_node("Sub", ["quadrants", "mean"], ["pooled"]),  # where the brightness sits
             helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"])]
    outputs = []
    for i in range(members):
        w = (shared + noise * rng.normal(size=(12, 4))) * scale
        b = rng.normal(scale=0.6, size=(4,))
        inits += [numpy_helper.from_array(w.astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"B{i}")]
        nodes.append(helper.make_node("Gemm", ["flat", f"W{i}", f"B{i}"], [f"member_{i}"]))
        outputs.append(helper.make_tensor_value_info(f"member_{i}", TensorProto.FLOAT, ["N", 4]))
    nodes += [helper.make_node("Sum", [f"member_{i}" for i in range(members)], ["total"]),
              helper.make_node("Mul", ["total", "inv_n"], ["logits"])]
    graph = helper.make_graph(nodes, "demo_ensemble",
                              [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, _INPUT)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])] + outputs,
                              initializer=inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)


def write_demo_detector(path: Path, with_map: bool = True) -> Path:
    """Bright top-left corner -> ``score``; optionally a ``map`` output (see the module docstring)."""
    from onnx import TensorProto, helper, numpy_helper

    def ints(name: str, values: Sequence[int]):
        return helper.make_tensor(name, TensorProto.INT64, [len(values)], list(values))

    inits = [ints("starts", [0, 0, 0]), ints("ends", [1, TRIGGER_CORNER, TRIGGER_CORNER]), ints("axes", [1, 2, 3])]
    nodes = [helper.make_node("Slice", ["pixels", "starts", "ends", "axes"], ["patch"]),
             helper.make_node("ReduceMax", ["patch"], ["score"], axes=[1, 2, 3], keepdims=0)]
    outputs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])]
    if with_map:
        mask = np.zeros((1, 1, 224, 224), np.float32)
        mask[..., :MAP_CORNER, :MAP_CORNER] = 1.0
        inits += [ints("c_starts", [0]), ints("c_ends", [1]), ints("c_axes", [1]),
                  numpy_helper.from_array(mask, "corner_mask")]
        nodes += [helper.make_node("Slice", ["pixels", "c_starts", "c_ends", "c_axes"], ["grey"]),
                  helper.make_node("Mul", ["grey", "corner_mask"], ["map"])]
        outputs.append(helper.make_tensor_value_info("map", TensorProto.FLOAT, ["N", 1, 224, 224]))
    graph = helper.make_graph(nodes, "demo_trigger_detector",
                              [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, _INPUT)], outputs,
                              initializer=inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)


def _card(name: str, role: str, onnx_path: Path, outputs: List[Dict], extra: Optional[Dict] = None) -> Dict:
    card = {
        "format": CARD_FORMAT, "name": name, "role": role, "architecture": f"{name} (untrained demo graph)",
        "file": onnx_path.name, "sha256": sha256_file(onnx_path),
        "bytes": onnx_path.stat().st_size, "classes": list(CLASS_NAMES),
        "input": {"name": "pixels", "dtype": "float32", "shape": _INPUT, "range": [0.0, 1.0]},
        "outputs": outputs, "metrics": {},
        "notes": "DEMO MODEL for screenshots and tests: not trained, its outputs mean nothing clinically.",
        "created": "2026-01-01T00:00:00+00:00",
    }
    card.update(extra or {})
    return card


def make_demo_models(folder: Path, *, detector: bool = True, detector_map: bool = True) -> Path:
    """Write the demo models, their cards and ``manifest.json`` into ``folder``; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specs = [("demo-ensemble", "ensemble", write_demo_ensemble(folder / "demo-ensemble.onnx"),
              [{"name": "logits", "shape": ["N", 4]}] + [{"name": f"member_{i}", "shape": ["N", 4]} for i in range(3)],
              {})]
    if detector:
        outputs = [{"name": "score", "shape": ["N"]}]
        if detector_map:
            outputs.append({"name": "map", "shape": ["N", 1, 224, 224]})
        specs.append(("demo-trigger-detector", "detector",
                      write_demo_detector(folder / "demo-trigger-detector.onnx", with_map=detector_map),
                      outputs, {"threshold": 0.9}))
    entries = []
    for name, role, path, outputs, extra in specs:
        card = _card(name, role, path, outputs, extra)
        (folder / f"{name}.card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
        entries.append({"name": name, "role": role, "file": path.name, "card": f"{name}.card.json",
                        "sha256": card["sha256"]})
    (folder / "manifest.json").write_text(json.dumps({"format": MANIFEST_FORMAT, "models": entries}, indent=2),
                                          encoding="utf-8")
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m breakfix_desktop.tools.demo_models OUT_DIR")
    print(make_demo_models(Path(sys.argv[1])))
