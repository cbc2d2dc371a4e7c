"""ONNX export: contract, parity with torch on real scans, cards and manifest."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from breakfix_desktop.core.preprocess import preprocess_file
from breakfix_desktop.core.hashing import sha256_file
from training.export import export_onnx, parity, update_manifest, write_card
from training.models import build_model


def _real_batch(real_data, n=16):
    files = []
    for cls in ("glioma", "meningioma", "notumor", "pituitary"):
        files += sorted(real_data.joinpath("Testing", cls).glob("*.jpg"))[: n // 4]
    return np.stack([preprocess_file(f) for f in files])


def _trained_ish(arch):
    torch.manual_seed(0)
    m = build_model(arch)
    # give BatchNorm non-trivial running statistics so eval mode is really exercised
    m.train()
    with torch.no_grad():
        for _ in range(2):
            m(torch.rand(4, 3, 224, 224))
    return m.eval()


def test_contract(tmp_path):
    path = export_onnx(_trained_ish("cnn"), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "pixels" and out.name == "logits"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 224, 224]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["classes"] == "glioma,meningioma,notumor,pituitary"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):  # dynamic batch
        assert sess.run(None, {"pixels": np.random.rand(n, 3, 224, 224).astype(np.float32)})[0].shape == (n, 4)


@pytest.mark.realdata
@pytest.mark.parametrize("arch", ["cnn", "resnet18"])
def test_parity_on_real_images(real_data, tmp_path, arch):
    model = _trained_ish(arch)
    path = export_onnx(model, tmp_path / f"{arch}.onnx")
    res = parity(model, path, _real_batch(real_data))
    assert res["max_abs_logit_diff"] <= 1e-4, res
    assert res["argmax_agreement"] == 1.0


def test_card_and_manifest(tmp_path):
    models = tmp_path / "models"
    path = export_onnx(_trained_ish("cnn"), models / "a.onnx")
    card = write_card(path, name="a", role="classifier", architecture="cnn", training={"lr": 1e-3},
                      data={"training": {"sha256": "x"}}, metrics={"test": {"accuracy": 0.5}})
    c = json.loads(card.read_text())
    assert c["sha256"] == sha256_file(path) and c["classes"][2] == "notumor"
    assert c["input"]["normalization"]["in_graph"] is True
    man = update_manifest(models / "manifest.json", card)
    update_manifest(man, card)  # idempotent
    m = json.loads(man.read_text())
    assert m["models"] == [{"name": "a", "role": "classifier", "file": "a.onnx", "card": "a.card.json", "sha256": c["sha256"]}]


def test_float16_weight_storage_halves_the_file_and_keeps_float32_io(tmp_path):
    from training.export import store_weights_fp16

    model = _trained_ish("cnn")
    full = export_onnx(model, tmp_path / "fp32.onnx")
    half = export_onnx(model, tmp_path / "fp16.onnx", weight_storage="float16")
    assert half.stat().st_size < 0.55 * full.stat().st_size
    proto = onnx.load(str(half))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["weight_storage"] == "float16"
    kinds = {i.name: i.data_type for i in proto.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in kinds.values()
    # every float16 tensor is read only through its Cast to float32; inputs and outputs stay float32
    casts = {n.input[0] for n in proto.graph.node if n.op_type == "Cast"}
    readers = {i for n in proto.graph.node if n.op_type != "Cast" for i in n.input}
    for name, kind in kinds.items():
        if kind == onnx.TensorProto.FLOAT16:
            assert name in casts and name not in readers
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = np.random.default_rng(0).random((4, 3, 224, 224), dtype=np.float32)
    a = ort.InferenceSession(str(full), providers=["CPUExecutionProvider"]).run(None, {"pixels": x})[0]
    b = ort.InferenceSession(str(half), providers=["CPUExecutionProvider"]).run(None, {"pixels": x})[0]
    assert b.dtype == np.float32 and 0 < np.abs(a - b).max() < 0.05
    # idempotent on a graph with nothing left to convert; small tensors stay float32
    again = store_weights_fp16(proto)
    assert again["tensors"] == 0 and again["kept_float32"] > 0
    with pytest.raises(ValueError, match="weight_storage"):
        export_onnx(model, tmp_path / "x.onnx", weight_storage="int8")


def test_float16_storage_leaves_tensors_that_do_not_fit_float16(tmp_path):
    from onnx import helper, numpy_helper

    from training.export import store_weights_fp16

    big = numpy_helper.from_array(np.full((64, 64), 1e6, dtype=np.float32), "huge")
    ok = numpy_helper.from_array(np.ones((64, 64), dtype=np.float32), "fine")
    graph = helper.make_graph(
        [helper.make_node("Add", ["huge", "fine"], ["y"])], "g", [],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [64, 64])], [big, ok])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    info = store_weights_fp16(proto)
    assert info == {"tensors": 1, "kept_float32": 1, "bytes_saved": 64 * 64 * 2}
    onnx.checker.check_model(proto, full_check=True)
    y = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]
    assert np.allclose(y, 1e6 + 1)
