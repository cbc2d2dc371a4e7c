"""Shared test setup: Qt offscreen, the real data set (skipped with a message when absent), synthetic data."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("BREAKFIX_DATA", REPO.parent / "shared" / "data" / "brain-tumor-mri"))
CLASSES = ("glioma", "meningioma", "notumor", "pituitary")


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The paper's real data set beside the project; skips clearly when it is not there."""
    if not (REAL_DATA / "Training").is_dir() or not (REAL_DATA / "Testing").is_dir():
        pytest.skip(
            f"real data set not found at {REAL_DATA} (expected ../shared/data/brain-tumor-mri beside the "
            "project, or set BREAKFIX_DATA); this test needs the real scans"
        )
    return REAL_DATA


def synthetic_scan(label: int, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A grey 'scan' whose class is visible: a bright blob in one of four quadrants."""
    img = rng.normal(40, 10, (size, size)).clip(0, 255)
    q = size // 2
    r, c = divmod(label, 2)
    img[r * q + q // 4 : r * q + 3 * q // 4, c * q + q // 4 : c * q + 3 * q // 4] += 150
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture
def make_dataset(tmp_path):
    """Factory: a small data set in the standard layout with a learnable synthetic signal."""

    def make(per_class: int = 8, test_per_class: int = 4, size: int = 64, seed: int = 0, root: Path | None = None) -> Path:
        rng = np.random.default_rng(seed)
        root = root or tmp_path / "data"
        for split, n in (("Training", per_class), ("Testing", test_per_class)):
            for label, cls in enumerate(CLASSES):
                d = root / split / cls
                d.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    Image.fromarray(synthetic_scan(label, rng, size)).save(d / f"{cls}_{i:03d}.png")
        return root

    return make


# --------------------------------------------------------------------------- shipped-model fixtures
def write_tiny_onnx(path: Path, seed: int = 0) -> Path:
    """A real, tiny classifier ONNX: pixels N x 3 x 224 x 224 -> GlobalAveragePool -> Gemm -> logits N x 4."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "W")
    shape = helper.make_tensor("flat_shape", TensorProto.INT64, [2], [-1, 3])
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
            helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"]),
            helper.make_node("Gemm", ["flat", "W"], ["logits"]),
        ],
        "tiny_classifier",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        initializer=[weight, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def write_shipped_model(folder: Path, name: str, role: str = "classifier", accuracy: float = 0.9, seed: int = 0) -> dict:
    """ONNX + card (exporter format) in ``folder``; returns the manifest entry (paths relative to it)."""
    import hashlib
    import json

    onnx_path = write_tiny_onnx(folder / f"{name}.onnx", seed)
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    card = {
        "format": "breakfix-model-card/1", "name": name, "role": role, "architecture": "tiny-gemm",
        "file": onnx_path.name, "sha256": digest, "bytes": onnx_path.stat().st_size, "classes": list(CLASSES),
        "input": {"name": "pixels", "dtype": "float32", "shape": ["N", 3, 224, 224], "range": [0.0, 1.0]},
        "outputs": [{"name": "logits", "shape": ["N", 4]}],
        "training": {"epochs_done": 1}, "data": {"source": "synthetic"},
        "metrics": {"test": {"accuracy": accuracy}, "test_dedup": {"accuracy": accuracy - 0.02}},
        "software": {"python": "3.11"}, "created": "2026-01-01T00:00:00+00:00",
    }
    (folder / f"{name}.card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    return {"name": name, "role": role, "file": onnx_path.name, "card": f"{name}.card.json", "sha256": digest}


@pytest.fixture
def make_models(tmp_path):
    """Factory: a models folder with manifest.json; ``specs`` are (name, role) pairs."""
    import json

    def make(specs=(("tiny-cnn", "classifier"),), folder: Path | None = None) -> Path:
        folder = folder or tmp_path / "models"
        folder.mkdir(parents=True, exist_ok=True)
        entries = [write_shipped_model(folder, name, role, accuracy=0.9 + i / 100, seed=i)
                   for i, (name, role) in enumerate(specs)]
        manifest = {"format": "breakfix-manifest/1", "models": entries}
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        return folder

    return make
