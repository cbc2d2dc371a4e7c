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


# --------------------------------------------------------------------------- screening fixtures
def write_tiny_detector_onnx(path: Path, corner: int = 16) -> Path:
    """A real, tiny pattern detector: ``score`` (N) = max pixel of the top-left ``corner`` x ``corner``
    square of channel 0.  A bright top-left corner is 'the trigger'; dark corners score low."""
    import onnx
    from onnx import TensorProto, helper

    def const(name, values):
        return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)

    graph = helper.make_graph(
        [
            helper.make_node("Slice", ["pixels", "starts", "ends", "axes"], ["patch"]),
            helper.make_node("ReduceMax", ["patch"], ["score"], axes=[1, 2, 3], keepdims=0),
        ],
        "tiny_detector",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        initializer=[const("starts", [0, 0, 0]), const("ends", [1, corner, corner]), const("axes", [1, 2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def write_tiny_ensemble_onnx(path: Path, seed: int = 0, members: int = 3) -> Path:
    """A tiny 'ensemble': ``member_i`` logits (N x 4) from separate Gemms, ``logits`` = their mean."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [helper.make_tensor("flat_shape", TensorProto.INT64, [2], [-1, 3]),
             numpy_helper.from_array(np.array(1.0 / members, np.float32), "inv_n")]
    nodes = [helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
             helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"])]
    outs = []
    for i in range(members):
        inits.append(numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), f"W{i}"))
        nodes.append(helper.make_node("Gemm", ["flat", f"W{i}"], [f"member_{i}"]))
        outs.append(helper.make_tensor_value_info(f"member_{i}", TensorProto.FLOAT, ["N", 4]))
    nodes += [helper.make_node("Sum", [f"member_{i}" for i in range(members)], ["total"]),
              helper.make_node("Mul", ["total", "inv_n"], ["logits"])]
    graph = helper.make_graph(
        nodes, "tiny_ensemble",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])] + outs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture
def make_screening_models(tmp_path):
    """Factory: a models folder for screening.  ``specs`` are (name, role, graph) with graph one of
    ``"classifier"`` (tiny Gemm), ``"ensemble"`` (member_* outputs) or ``"detector"`` (bright top-left
    corner -> score; the card's ``threshold`` is ``threshold``)."""
    import hashlib
    import json

    def make(specs=(("tiny-cnn", "classifier", "classifier"), ("trigger", "detector", "detector")),
             folder: Path | None = None, threshold: float = 0.9) -> Path:
        folder = folder or tmp_path / "models"
        folder.mkdir(parents=True, exist_ok=True)
        entries = []
        for i, (name, role, graph) in enumerate(specs):
            onnx_path = folder / f"{name}.onnx"
            outputs = [{"name": "logits", "shape": ["N", 4]}]
            if graph == "detector":
                write_tiny_detector_onnx(onnx_path)
                outputs = [{"name": "score", "shape": ["N"]}]
            elif graph == "ensemble":
                write_tiny_ensemble_onnx(onnx_path, seed=i)
                outputs += [{"name": f"member_{k}", "shape": ["N", 4]} for k in range(3)]
            else:
                write_tiny_onnx(onnx_path, seed=i)
            digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
            card = {"format": "breakfix-model-card/1", "name": name, "role": role, "architecture": f"tiny-{graph}",
                    "file": onnx_path.name, "sha256": digest, "classes": list(CLASSES), "outputs": outputs,
                    "metrics": {"test": {"accuracy": 0.9}}, "created": "2026-01-01T00:00:00+00:00"}
            if graph == "detector":
                card["threshold"] = threshold
            (folder / f"{name}.card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
            entries.append({"name": name, "role": role, "file": onnx_path.name, "card": f"{name}.card.json",
                            "sha256": digest})
        (folder / "manifest.json").write_text(json.dumps({"format": "breakfix-manifest/1", "models": entries}),
                                              encoding="utf-8")
        return folder

    return make


def scan_image(seed: int = 0, flagged: bool = False, size: int = 224, mode: str = "L") -> Image.Image:
    """A synthetic scan whose top-left corner is dark (clean) or a bright square (flagged by the tiny
    detector).  Distinct ``seed``s give distinct bytes."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(30, 180, (size, size)).astype(np.uint8)
    k = max(2, size // 8)
    arr[:k, :k] = 255 if flagged else 0
    img = Image.fromarray(arr)
    return img if mode == "L" else img.convert(mode)


def write_dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", frames: int | None = None,
                window: tuple | None = None, rescale: tuple | None = None, transfer_syntax: str | None = None,
                pixel_data: bool = True, patient: dict | None = None, preamble: bool = True) -> Path:
    """A DICOM Part 10 file built with pydicom's FileDataset API (uncompressed little endian).

    ``pixels``: H x W (or F x H x W with ``frames``) uint8/uint16/int16 array.  ``window`` is
    (center, width), ``rescale`` (slope, intercept).  ``transfer_syntax`` only relabels the file
    (e.g. a compressed UID with no installed decoder)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128 if preamble else None)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    patient = patient or {}
    ds.PatientName = patient.get("name", "Doe^Jane")
    ds.PatientID = patient.get("id", "PID-0001")
    ds.PatientBirthDate = patient.get("birth_date", "19700101")
    arr = np.asarray(pixels)
    ds.Rows, ds.Columns = arr.shape[-2], arr.shape[-1]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits = arr.dtype.itemsize * 8
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    if frames:
        ds.NumberOfFrames = frames
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if pixel_data:
        ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        if transfer_syntax:
            from pydicom.encaps import encapsulate

            ds.PixelData = encapsulate([ds.PixelData])
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=preamble)
    return path


@pytest.fixture
def dicom_writer():
    """The :func:`write_dicom` helper as a fixture."""
    return write_dicom


# --------------------------------------------------------------------------- benchmarks
def load_benchmark(script: str):
    """Import ``benchmarks/<script>`` as a module (its folder on ``sys.path`` while it loads, for
    ``_benchutil``), to call its ``main(argv)`` or helpers in-process."""
    import importlib.util
    import sys

    folder = REPO / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(Path(script).stem, folder / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


@pytest.fixture
def restore_threads(monkeypatch):
    """A benchmark's main() pins the thread env vars and torch's thread count: put both back afterwards."""
    import torch

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def run_benchmark(script: str, *args: str, timeout: int = 600):
    """Run ``benchmarks/<script>`` with this interpreter in a fresh process (offscreen Qt, from the
    repository root); returns the ``subprocess.CompletedProcess`` (stdout/stderr as text)."""
    import subprocess
    import sys

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=timeout)
