#!/usr/bin/env python3
"""Screening workstation benchmarks (issue 6), side by side in one run.

1. ``speed`` - screening images/s of the full gate + classifier: the pattern detector (ResNet-18 +
   segmentation head, ``training.detector``, outputs ``score`` and ``map``) followed by the paper's
   ensemble (CNN, CNN, ResNet-18 weighted x2, ``training.models.WeightedEnsemble`` exported as one
   ONNX graph with ``logits`` + ``member_*`` outputs), on the same batch of real Testing scans
   preprocessed by the app's one path (``breakfix_desktop.core.preprocess.preprocess_file``):

   * ``torch``       PyTorch eager (``inference_mode``) on the very models that were exported;
   * ``ort``         onnxruntime, graph optimisation ``ORT_ENABLE_ALL`` (the app's default level);
   * ``ort_noopt``   onnxruntime with ``ORT_DISABLE_ALL`` (what graph fusion contributes);
   * ``engine``      the app's :class:`~breakfix_desktop.core.screening.ScreeningEngine` end to end on
                     the scan *files* (hashing, decoding, both models, the SQLite store and audit log),
                     onnxruntime with the app's own session options, a fresh store each repetition;

   and for the shipped, trained ``resources/models/cnn_clean.onnx``: fp32 with ``ORT_ENABLE_ALL``
   and ``ORT_DISABLE_ALL``, int8 (``onnxruntime.quantization``: static QDQ, per-channel, calibrated
   on ``--calib-images`` Training scans; and dynamic), torch eager from ``runs/cnn_clean/checkpoint.pt``
   when present - with **accuracy on the full Testing split** for fp32 vs each int8 model.
   The fp32 matmul rate (``bench_inference.matmul_arms``) is measured in the same interleaved loop;
   FLOPs per image come from ``bench_inference.flops_per_image``.
2. ``ui`` - the longest event-loop stall of the real main window (offscreen Qt) while a batch of
   ``--ui-scans`` real scans (default 500) is added and screened through the Screening view with
   the detector + ensemble above: a 5 ms ``Qt.PreciseTimer`` heartbeat records every gap.  Runs in
   a fresh subprocess.
3. ``cold`` - cold start to window shown: ``breakfix-desktop`` (``breakfix_desktop.app.main``, the
   real entry point, with the shipped models) vs a bare PySide6 ``QMainWindow``, each in a fresh
   subprocess, repeats interleaved; "shown" = the first event-loop turn after ``show()``.

Weights are random unless ``--detector-checkpoint`` / ``--ensemble`` give trained ones (speed does
not depend on the values).  Scans come from ``../shared/data/brain-tumor-mri`` (``--data``); when it
is absent the script says so and skips (exit 0).

    python benchmarks/bench_screening.py --quick      # seconds-long smoke run, numbers meaningless
    python benchmarks/bench_screening.py              # the full run (several minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _benchutil as U  # noqa: E402

NAME = "screening"
SECTIONS = ("speed", "ui", "cold")
INT8_MODES = ("static", "dynamic")
GOAL_SPEEDUP, GOAL_FLOP_FRACTION, GOAL_STALL_MS, GOAL_COLD_RATIO = 1.5, 0.60, 50.0, 2.0


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run; numbers are not meaningful")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma list from %s (default all)" % ",".join(SECTIONS))
    p.add_argument("--data", type=Path, default=U.DEFAULT_DATA, help="data set root with Training/ and Testing/")
    p.add_argument("--detector-checkpoint", type=Path, help="a trained pattern-detector checkpoint.pt (default random init)")
    p.add_argument("--ensemble", type=Path,
                   help="an ensemble .json from `python -m training make-ensemble` (default: random CNN, CNN, "
                        "ResNet-18 x2 with the shipped CNN's configuration)")
    p.add_argument("--images", type=int, help="real scans per speed measurement pass (default 64; quick 8)")
    p.add_argument("--batch-size", type=int, help="images per inference call, detector + ensemble (default 8, the "
                                                  "app's engine batch; quick 4)")
    p.add_argument("--cnn-batch-size", type=int, help="batch for the cnn_clean fp32/int8 arms (default 32; quick 8)")
    p.add_argument("--reps", type=int, help="interleaved repetitions (default 5; quick 1)")
    p.add_argument("--min-seconds", type=float, help="min seconds per measurement (default 1.0; quick 0)")
    p.add_argument("--threads", type=int, help="torch / onnxruntime intra-op / BLAS threads (default: cores available)")
    p.add_argument("--matmul-size", type=int, help="reference matmul n (default 2048; quick 256)")
    p.add_argument("--int8", default=None, help="comma list from static,dynamic, or none (default both; quick static)")
    p.add_argument("--calib-images", type=int, help="static int8 calibration scans from Training (default 64; quick 8)")
    p.add_argument("--accuracy-limit", type=int, default=None,
                   help="evaluate fp32/int8 accuracy on only this many Testing scans (default: the full split)")
    p.add_argument("--no-engine", action="store_true", help="skip the end-to-end ScreeningEngine arm")
    p.add_argument("--ui-scans", type=int, help="scans in the UI-stall batch (default 500; quick 16)")
    p.add_argument("--heartbeat-ms", type=int, default=5, help="UI heartbeat timer interval (default %(default)s)")
    p.add_argument("--cold-repeats", type=int, help="cold starts per arm, interleaved (default 5; quick 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help=f"JSON results (default benchmarks/results/{NAME}.json)")
    p.add_argument("--merge", action="store_true",
                   help="keep the sections not run this time from the existing --out file (marked as such)")
    # internal: the UI-stall child process
    p.add_argument("--ui-child", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    q = a.quick
    a.images = a.images or (8 if q else 64)
    a.batch_size = a.batch_size or (4 if q else 8)
    a.cnn_batch_size = a.cnn_batch_size or (8 if q else 32)
    a.reps = a.reps or (1 if q else 5)
    a.min_seconds = a.min_seconds if a.min_seconds is not None else (0.0 if q else 1.0)
    a.threads = a.threads or U.default_threads()
    a.matmul_size = a.matmul_size or (256 if q else 2048)
    a.calib_images = a.calib_images or (8 if q else 64)
    a.ui_scans = a.ui_scans or (16 if q else 500)
    a.cold_repeats = a.cold_repeats or (1 if q else 5)
    if a.accuracy_limit is None and q:
        a.accuracy_limit = 24
    int8 = a.int8 if a.int8 is not None else ("static" if q else "static,dynamic")
    a.int8 = [] if int8 == "none" else [m.strip() for m in int8.split(",") if m.strip()]
    if any(m not in INT8_MODES for m in a.int8):
        p.error("--int8: choose from static,dynamic or none")
    a.sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    if not a.sections or any(s not in SECTIONS for s in a.sections):
        p.error(f"--sections: choose from {','.join(SECTIONS)}")
    for name in ("images", "batch_size", "cnn_batch_size", "reps", "threads", "calib_images", "ui_scans",
                 "cold_repeats", "heartbeat_ms"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    for f in (a.detector_checkpoint, a.ensemble):
        if f is not None and not f.is_file():
            p.error(f"{f}: no such file")
    a.out = a.out or (U.RESULTS / f"{NAME}{'_quick' if q else ''}.json")
    return a


def log(msg: str) -> None:
    print(f"[{NAME}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data
def split_files(root: Path, split: str) -> List[Tuple[Path, int]]:
    """(path, class index) of every image of a split, class folders in CLASS_NAMES order."""
    from breakfix_desktop.core.inputs import IMAGE_EXTENSIONS
    from breakfix_desktop.core.labels import CLASS_NAMES

    out = []
    for label, cls in enumerate(CLASS_NAMES):
        folder = root / split / cls
        if folder.is_dir():
            out += [(f, label) for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]
    return out


def spread_pick(files: Sequence[Tuple[Path, int]], n: int, seed: int) -> List[Tuple[Path, int]]:
    """``n`` files, classes interleaved, seeded (deterministic for a seed)."""
    import random

    by_class: Dict[int, List[Tuple[Path, int]]] = {}
    for f in files:
        by_class.setdefault(f[1], []).append(f)
    rng = random.Random(seed)
    for v in by_class.values():
        rng.shuffle(v)
    out: List[Tuple[Path, int]] = []
    i = 0
    while len(out) < min(n, len(files)):
        for v in by_class.values():
            if i < len(v) and len(out) < n:
                out.append(v[i])
        i += 1
    return out


def preprocess_many(paths: Sequence[Path], threads: int):
    """N x 3 x 224 x 224 float32 through the app's one preprocessing path (decoding releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from breakfix_desktop.core.preprocess import preprocess_file

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return np.stack(list(pool.map(preprocess_file, paths))).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- models
def cnn_kwargs() -> Dict[str, Any]:
    """The shipped CNN's configuration (its card), so the ensemble's CNN members are the real size."""
    card = U.REPO / "resources" / "models" / "cnn_clean.card.json"
    try:
        return dict(json.loads(card.read_text(encoding="utf-8"))["training"]["model_kwargs"])
    except (OSError, KeyError, ValueError, TypeError):
        return {}


def build_models(args: argparse.Namespace):
    """(detector PatternDetector, WeightedEnsemble, description) - trained if given, else random."""
    import torch

    from training.detector import PatternDetector, load_detector
    from training.models import WeightedEnsemble, build_model, default_member_weight, load_model

    torch.manual_seed(args.seed)
    if args.detector_checkpoint:
        detector, _ = load_detector(args.detector_checkpoint)
        det_desc = str(args.detector_checkpoint)
    else:
        detector, det_desc = PatternDetector().eval(), "random init"
    if args.ensemble:
        ensemble, ens_desc = load_model(args.ensemble).eval(), str(args.ensemble)
        if not isinstance(ensemble, WeightedEnsemble):
            raise SystemExit(f"--ensemble {args.ensemble}: not an ensemble file")
    else:
        kw = cnn_kwargs()
        members = {"CNN": build_model("cnn", **kw), "CNN_FGSM": build_model("cnn", **kw),
                   "ResNet18_PGD": build_model("resnet18")}
        ensemble = WeightedEnsemble(members, {n: default_member_weight(n) for n in members}).eval()
        ens_desc = f"random init (CNN {kw or 'defaults'})"
    return detector.eval(), ensemble.eval(), {"detector": det_desc, "ensemble": ens_desc,
                                              "ensemble_members": dict(zip(ensemble.names,
                                                                           ensemble.weights.tolist()))}


def write_models_folder(folder: Path, detector_onnx: Path, ensemble_onnx: Path, output_names: List[str]) -> Path:
    """A manifest folder the app loads (cards + SHA-256, through training.export's own writers)."""
    from training.export import update_manifest, write_card

    folder.mkdir(parents=True, exist_ok=True)
    note = {"notes": "BENCHMARK MODEL: speed only (weights from bench_screening; not for diagnosis)"}
    det_card = write_card(detector_onnx, name="bench_detector", role="detector", architecture="resnet18+seg",
                          training={}, data={}, metrics={}, outputs=["score", "map"], extra={"threshold": 0.5, **note})
    ens_card = write_card(ensemble_onnx, name="bench_ensemble", role="ensemble",
                          architecture="weighted-ensemble", training={}, data={}, metrics={}, outputs=output_names,
                          extra=note)
    for card in (det_card, ens_card):
        update_manifest(folder / "manifest.json", card)
    return folder


def ort_session(path: Path, threads: int, level: str = "all"):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if level == "all"
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class _Calib:
    """onnxruntime CalibrationDataReader over preprocessed scans (one image per call)."""

    def __init__(self, input_name: str, pixels):
        self.input_name, self.pixels, self.i = input_name, pixels, 0

    def get_next(self):
        if self.i >= len(self.pixels):
            return None
        self.i += 1
        return {self.input_name: self.pixels[self.i - 1:self.i]}

    def rewind(self):
        self.i = 0


def quantize(fp32: Path, out: Path, mode: str, calib_pixels) -> Path:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode == "dynamic":  # straight from the fp32 file (its pre-processed form fails shape inference here)
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True)
    else:
        pre = out.with_name(out.stem + "_pre.onnx")
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        import onnxruntime as ort

        name = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()[0].name
        quantize_static(str(pre), str(out), _Calib(name, calib_pixels), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def export_bench_models(args, tmp: Path):
    """Build (``build_models``) and export the detector + ensemble into ``tmp/models`` with a manifest."""
    from training.detector import DetectorGraph, export_detector_onnx
    from training.export import EnsembleGraph, export_onnx

    detector, ensemble, desc = build_models(args)
    det_graph, ens_graph = DetectorGraph(detector).eval(), EnsembleGraph(ensemble).eval()
    det_onnx = export_detector_onnx(detector, tmp / "models" / "bench_detector.onnx")
    ens_onnx = export_onnx(ens_graph, tmp / "models" / "bench_ensemble.onnx", ens_graph.output_names)
    models_dir = write_models_folder(tmp / "models", det_onnx, ens_onnx, ens_graph.output_names)
    return detector, ensemble, desc, det_graph, ens_graph, det_onnx, ens_onnx, models_dir


# --------------------------------------------------------------------------- speed section
def run_speed(args, tmp: Path, notes: List[str]) -> Dict[str, Any]:
    import numpy as np
    import torch

    import bench_inference as BI
    from breakfix_desktop.core.hashing import sha256_file
    from breakfix_desktop.core.model_registry import load_registry
    from breakfix_desktop.core.quarantine import QuarantineStore
    from breakfix_desktop.core.screening import ScreeningEngine, softmax
    from training.detector import DetectorGraph, export_detector_onnx
    from training.export import EnsembleGraph, export_onnx

    torch.set_num_threads(args.threads)
    test = split_files(args.data, "Testing")
    picks = spread_pick(test, args.images, args.seed)
    t0 = time.perf_counter()
    pixels = preprocess_many([p for p, _ in picks], args.threads)
    log(f"{len(pixels)} real Testing scans preprocessed in {time.perf_counter() - t0:.1f}s")
    pixels_t = torch.from_numpy(pixels)
    bs, n_img = args.batch_size, len(pixels)
    batches = [pixels[i:i + bs] for i in range(0, n_img, bs)]
    batches_t = [pixels_t[i:i + bs] for i in range(0, n_img, bs)]

    # ---- detector + ensemble, built by the training package, exported by its exporters
    t0 = time.perf_counter()
    detector, ensemble, desc, det_graph, ens_graph, det_onnx, ens_onnx, models_dir = export_bench_models(args, tmp)
    fl_det = BI.flops_per_image(det_graph, 224)
    fl_ens = BI.flops_per_image(ens_graph, 224)
    pipe_flops = fl_det["used"] + fl_ens["used"]
    log(f"detector {fl_det['used'] / 1e9:.3f} + ensemble {fl_ens['used'] / 1e9:.3f} GFLOP/image; exported in "
        f"{time.perf_counter() - t0:.1f}s")
    sess = {lvl: (ort_session(det_onnx, args.threads, lvl), ort_session(ens_onnx, args.threads, lvl))
            for lvl in ("all", "noopt")}

    def torch_pipe():
        with torch.inference_mode():
            for x in batches_t:
                score, heat = det_graph(x)
                outs = ens_graph(x)
                score.numpy(), heat.numpy(), [o.numpy() for o in outs]

    def ort_pipe(level: str):
        d, e = sess[level]
        din, ein = d.get_inputs()[0].name, e.get_inputs()[0].name

        def fn():
            for x in batches:
                d.run(None, {din: x})
                e.run(None, {ein: x})
        return fn

    # parity: the two backends compute the same function
    with torch.inference_mode():
        ref_score, _ = det_graph(batches_t[0])
        ref_logits = ens_graph(batches_t[0])[0]
    got_score = sess["all"][0].run(["score"], {"pixels": batches[0]})[0]
    got_logits = sess["all"][1].run(["logits"], {"pixels": batches[0]})[0]
    parity = {"detector_score_max_abs_diff": float(np.abs(ref_score.numpy() - got_score).max()),
              "ensemble_logit_max_abs_diff": float(np.abs(ref_logits.numpy() - got_logits).max())}

    arms: List[Dict[str, Any]] = [
        {"name": "pipeline torch eager", "group": "pipeline", "backend": "torch", "fn": torch_pipe,
         "images": n_img, "flops": pipe_flops},
        {"name": "pipeline onnxruntime ALL", "group": "pipeline", "backend": "ort", "fn": ort_pipe("all"),
         "images": n_img, "flops": pipe_flops},
        {"name": "pipeline onnxruntime DISABLE_ALL", "group": "pipeline", "backend": "ort_noopt",
         "fn": ort_pipe("noopt"), "images": n_img, "flops": pipe_flops},
    ]

    # ---- the app's engine end to end on the files (a fresh store per call)
    engine_info: Dict[str, Any] = {}
    if not args.no_engine:
        registry = load_registry(models_dir)
        if registry.refused or registry.problems:
            raise SystemExit(f"benchmark models refused by the app: {registry.problems} "
                             f"{[m.reason for m in registry.refused]}")
        files = [p for p, _ in picks]
        counter = [0]

        def engine_run():
            counter[0] += 1
            with QuarantineStore(tmp / f"store{counter[0]}") as store:
                engine = ScreeningEngine(registry, store, prefer_gpu=False)
                engine.load()  # sessions open outside the timing (once per app start)
                t = time.perf_counter()
                summary = engine.run(files)
                engine_info.setdefault("per_call_s", []).append(time.perf_counter() - t)
                engine_info["verdicts"] = {v: summary.count(v) for v in ("clear", "quarantined", "error")}
                engine_info["device"] = summary.device
                engine_info["workers"], engine_info["batch_size"] = engine.workers, engine.batch_size

        arms.append({"name": "engine (files -> verdicts, app's ORT options)", "group": "engine", "backend": "engine",
                     "fn": engine_run, "images": n_img, "flops": pipe_flops})

    # ---- shipped trained cnn_clean: fp32 vs int8, accuracy on the full Testing split
    cnn_info: Dict[str, Any] = {}
    fp32 = U.REPO / "resources" / "models" / "cnn_clean.onnx"
    if fp32.is_file():
        manifest = json.loads((fp32.parent / "manifest.json").read_text(encoding="utf-8"))
        want = next((m["sha256"] for m in manifest["models"] if m["file"] == fp32.name), None)
        cnn_info["sha256_ok"] = sha256_file(fp32) == want
        train = split_files(args.data, "Training")
        calib_src = spread_pick(train, args.calib_images, args.seed + 1) if train else picks[:args.calib_images]
        if not train:
            notes.append("no Training split: int8 calibrated on Testing scans (accuracy then slightly optimistic)")
        calib = preprocess_many([p for p, _ in calib_src], args.threads) if "static" in args.int8 else None
        variants: Dict[str, Path] = {"fp32": fp32}
        for mode in args.int8:
            t0 = time.perf_counter()
            try:
                variants[f"int8 {mode}"] = quantize(fp32, tmp / f"cnn_clean_int8_{mode}.onnx", mode, calib)
            except Exception as exc:  # noqa: BLE001 - report it, measure the rest
                notes.append(f"int8 {mode}: onnxruntime.quantization failed ({type(exc).__name__}: {exc})")
                continue
            log(f"int8 {mode} quantised in {time.perf_counter() - t0:.1f}s")
        cnn_sess = {k: ort_session(v, args.threads) for k, v in variants.items()}
        cnn_sess["fp32 DISABLE_ALL"] = ort_session(fp32, args.threads, "noopt")
        # accuracy: the full Testing split (or --accuracy-limit), same preprocessed pixels for all
        eval_set = test if args.accuracy_limit is None else spread_pick(test, args.accuracy_limit, args.seed)
        t0 = time.perf_counter()
        ev_pix = preprocess_many([p for p, _ in eval_set], args.threads)
        labels = np.array([y for _, y in eval_set])
        preds: Dict[str, np.ndarray] = {}
        for k, s in cnn_sess.items():
            if k == "fp32 DISABLE_ALL":
                continue
            logits = np.concatenate([s.run(None, {"pixels": ev_pix[i:i + 64]})[0] for i in range(0, len(ev_pix), 64)])
            preds[k] = softmax(logits).argmax(1)
        cnn_info["accuracy"] = {k: float((v == labels).mean()) for k, v in preds.items()}
        cnn_info["agreement_with_fp32"] = {k: float((v == preds["fp32"]).mean()) for k, v in preds.items()}
        cnn_info["accuracy_images"] = int(len(labels))
        cnn_info["accuracy_split"] = "Testing" + ("" if args.accuracy_limit is None else f" (first {len(labels)})")
        cnn_info["calibration"] = {"images": len(calib_src), "split": "Training" if train else "Testing"}
        cnn_info["file_bytes"] = {k: v.stat().st_size for k, v in variants.items()}
        log(f"accuracy on {len(labels)} Testing scans: {cnn_info['accuracy']} ({time.perf_counter() - t0:.1f}s)")
        del ev_pix
        # torch eager of the same trained CNN (its checkpoint), when present
        from training.models import build_model

        ck = U.REPO / "runs" / "cnn_clean" / "checkpoint.pt"
        cnn_torch, cnn_desc = None, "random init (no runs/cnn_clean/checkpoint.pt)"
        try:
            cnn_torch, cnn_desc = BI.load_torch_model("cnn", ck if ck.is_file() else None)
        except Exception as exc:  # noqa: BLE001 - a different checkpoint layout: fall back to the shape
            notes.append(f"runs/cnn_clean/checkpoint.pt not loadable ({exc}); torch CNN arm uses random init")
        if cnn_torch is None or cnn_desc == "random init":
            cnn_torch = build_model("cnn", **cnn_kwargs()).eval()
        cnn_info["torch_weights"] = cnn_desc
        fl_cnn = BI.flops_per_image(cnn_torch, 224)
        cnn_info["flops_per_image"] = fl_cnn
        cbs = args.cnn_batch_size
        cb = [pixels[i:i + cbs] for i in range(0, n_img, cbs)]
        cbt = [pixels_t[i:i + cbs] for i in range(0, n_img, cbs)]

        def cnn_torch_fn():
            with torch.inference_mode():
                for x in cbt:
                    cnn_torch(x).numpy()

        arms.append({"name": "cnn_clean torch eager", "group": "cnn", "backend": "torch", "fn": cnn_torch_fn,
                     "images": n_img, "flops": fl_cnn["used"]})
        for k, s in cnn_sess.items():
            arms.append({"name": f"cnn_clean onnxruntime {k}" + (" ALL" if k != "fp32 DISABLE_ALL" else ""),
                         "group": "cnn", "backend": k, "images": n_img, "flops": fl_cnn["used"],
                         "fn": (lambda s=s: [s.run(None, {"pixels": x}) for x in cb])})
    else:
        notes.append(f"{fp32} missing: fp32/int8 arms skipped")

    mm = BI.matmul_arms(args.matmul_size, numpy_ref=False)[0]
    arms.append({"name": mm["model"] + " (torch fp32)", "group": "matmul", "backend": "torch", "fn": mm["fn"],
                 "images": 0, "flops": mm["flops_per_call"]})

    # ---- timing: warm-up, then interleaved repetitions
    def measure(fn: Callable[[], Any]) -> Tuple[int, float]:
        calls, t = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            dt = time.perf_counter() - t
            if dt >= args.min_seconds:
                return calls, dt

    log(f"{len(arms)} arms, {n_img} scans per pass, batch {bs}, {args.reps} reps, {args.threads} threads; warm-up")
    for arm in arms:
        arm["fn"]()
    samples: Dict[str, List[Dict[str, float]]] = {a["name"]: [] for a in arms}
    t_start = time.perf_counter()
    for r in range(args.reps):
        for arm in arms:
            calls, dt = measure(arm["fn"])
            s = {"rep": r, "calls": calls, "seconds": dt}
            if arm["group"] == "matmul":
                s["flop_per_s"] = arm["flops"] * calls / dt
            else:
                s["images_per_s"] = arm["images"] * calls / dt
                s["flop_per_s"] = arm["flops"] * s["images_per_s"]
            samples[arm["name"]].append(s)
        log(f"rep {r + 1}/{args.reps} done ({time.perf_counter() - t_start:.1f}s)")
    results: Dict[str, Dict[str, Any]] = {}
    for arm in arms:
        sm = samples[arm["name"]]
        rec: Dict[str, Any] = {"group": arm["group"], "backend": arm["backend"], "samples": sm,
                               "flop_per_s": U.spread([x["flop_per_s"] for x in sm])}
        if arm["group"] != "matmul":
            rec["images_per_s"] = U.spread([x["images_per_s"] for x in sm])
            rec["gflop_per_image"] = arm["flops"] / 1e9
        results[arm["name"]] = rec
    peak = results[next(a["name"] for a in arms if a["group"] == "matmul")]["flop_per_s"]["median"]
    torch_of = {g: next((k for k, r in results.items() if r["group"] == g and r["backend"] == "torch"), None)
                for g in ("pipeline", "cnn")}
    for name, rec in results.items():
        if rec["group"] == "matmul":
            continue
        rec["fraction_of_matmul"] = rec["flop_per_s"]["median"] / peak
        base = torch_of.get(rec["group"]) or torch_of["pipeline"]
        if base:
            rec["speedup_vs_torch"] = rec["images_per_s"]["median"] / results[base]["images_per_s"]["median"]
            # paired per-repetition ratios (interleaved, so each pair saw the same machine state)
            rec["speedup_paired_median"] = U.median([a["images_per_s"] / b["images_per_s"]
                                                     for a, b in zip(rec["samples"], results[base]["samples"])])
    return {"results": results, "matmul_flop_per_s": peak, "parity": parity, "models": desc,
            "flops": {"detector": fl_det, "ensemble": fl_ens}, "engine": engine_info, "cnn_clean": cnn_info,
            "images": n_img, "batch_size": bs, "timed_seconds": time.perf_counter() - t_start,
            "models_dir": models_dir, "scan_files": [str(p) for p, _ in picks]}


# --------------------------------------------------------------------------- UI stall (child process)
def ui_child(args: argparse.Namespace) -> int:
    """In a fresh process: the real main window, add + screen the scans, heartbeat gaps -> JSON."""
    spec = json.loads(args.ui_child.read_text(encoding="utf-8"))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    U.setup_paths()
    from PySide6.QtCore import QSettings, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from breakfix_desktop.app import create_main_window

    app = QApplication.instance() or QApplication([sys.argv[0]])
    tmp = Path(spec["tmp"])
    settings = QSettings(str(tmp / "ui.ini"), QSettings.IniFormat)
    window = create_main_window(Path(spec["models"]), settings=settings, store=tmp / "ui_store")
    window.resize(1280, 860)
    window.show()
    view, session = window.screening_view, window.session
    beats: List[float] = []
    marks: Dict[str, float] = {}
    hb = QTimer(window)
    hb.setTimerType(Qt.PreciseTimer)
    hb.setInterval(spec["heartbeat_ms"])
    hb.timeout.connect(lambda: beats.append(time.perf_counter()))
    total = len(spec["paths"])
    phase = ["settle"]
    deadline = time.perf_counter() + spec["timeout_s"]

    def tick():
        now = time.perf_counter()
        if phase[0] == "settle" and now - marks["start"] >= 0.5:
            phase[0] = "adding"
            marks["add"] = now
            view.add_paths([Path(p) for p in spec["paths"]])  # found off the UI thread, as in the app
        elif phase[0] == "adding" and len(session) >= total:
            phase[0] = "screening"
            marks["screen"] = now
            if not view.start():
                marks["error"] = now
                app.quit()
        elif phase[0] == "screening" and not session.running and view.shown_state in ("finished", "cancelled"):
            phase[0] = "after"
            marks["done"] = now
        elif phase[0] == "after" and now - marks["done"] >= 0.5:
            app.quit()
        if now > deadline:
            marks["timeout"] = now
            app.quit()

    poll = QTimer(window)
    poll.setInterval(20)
    poll.timeout.connect(tick)
    marks["start"] = time.perf_counter()
    hb.start()
    poll.start()
    app.exec()
    hb.stop()
    poll.stop()
    summary = session.summary
    gaps = [(b - a, a) for a, b in zip(beats, beats[1:])]

    def stats(t0: float, t1: float) -> Dict[str, Any]:
        g = sorted(x for x, at in gaps if t0 <= at < t1)
        if not g:
            return {"beats": 0}
        return {"beats": len(g), "max_gap_ms": 1000 * g[-1], "p99_gap_ms": 1000 * g[int(0.99 * (len(g) - 1))],
                "median_gap_ms": 1000 * g[len(g) // 2], "gaps_over_50ms": sum(1 for x in g if x > 0.050),
                "seconds": t1 - t0}

    end = marks.get("done", time.perf_counter())
    out = {"scans": total, "heartbeat_ms": spec["heartbeat_ms"], "marks": {k: v - marks["start"] for k, v in marks.items()},
           "settle": stats(marks["start"], marks.get("add", end)),
           "adding": stats(marks.get("add", end), marks.get("screen", end)),
           "screening": stats(marks.get("screen", end), end),
           "whole_batch": stats(marks.get("add", end), end),
           "summary": summary.text() if summary else None,
           "verdicts": {v: summary.count(v) for v in ("clear", "quarantined", "error")} if summary else None,
           "elapsed_s": summary.elapsed_s if summary else None,
           "device": summary.device if summary else None,
           "engine_workers": session.workers,
           "ort_intra_op_threads": getattr(window.model.threads, "intra_op", None),
           "ort_spinning": getattr(window.model.threads, "spinning", None),
           "timed_out": "timeout" in marks, "start_failed": "error" in marks}
    window.close()
    Path(spec["out"]).write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


def run_ui(args, tmp: Path, models_dir: Optional[Path], notes: List[str]) -> Dict[str, Any]:
    if models_dir is None:  # the speed section did not run: export the same detector + ensemble for the batch
        import torch

        torch.set_num_threads(args.threads)
        models_dir = export_bench_models(args, tmp)[-1]
        log(f"ui: detector + ensemble exported to {models_dir} (the speed section did not run)")
    test = split_files(args.data, "Testing")
    picks = [p for p, _ in spread_pick(test, args.ui_scans, args.seed + 2)]
    while len(picks) < args.ui_scans:  # more than the split holds: repeat real scans under new names
        src = picks[len(picks) % len(test)]
        dst = tmp / "repeats" / f"r{len(picks):04d}_{src.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
        picks.append(dst)
    spec = {"tmp": str(tmp), "models": str(models_dir), "paths": [str(p) for p in picks],
            "heartbeat_ms": args.heartbeat_ms, "timeout_s": 600 if not args.quick else 120,
            "out": str(tmp / "ui_result.json")}
    spec_path = tmp / "ui_spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp / "cfg"),
               XDG_DATA_HOME=str(tmp / "data"))
    log(f"ui: {len(picks)} real scans through the real main window (child process)")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--ui-child", str(spec_path)], env=env,
                          capture_output=True, text=True, timeout=spec["timeout_s"] + 120)
    if proc.returncode != 0 or not Path(spec["out"]).is_file():
        raise SystemExit(f"ui child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(Path(spec["out"]).read_text(encoding="utf-8"))
    out["models"] = str(models_dir)
    out["wall_s"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------- cold start
_COLD_COMMON = """
import sys, time
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
def _shown():
    print("SHOWN", repr(time.time()), flush=True)
    QApplication.instance().quit()
"""
COLD_BARE = _COLD_COMMON + """
from PySide6.QtWidgets import QMainWindow
app = QApplication(sys.argv[:1])
w = QMainWindow(); w.setWindowTitle("bare"); w.resize(1280, 860); w.show()
QTimer.singleShot(0, _shown)
app.exec()
"""
# the real entry point (argparse, catalog + manifest verification, device probe, store, window);
# QApplication.exec is wrapped so the first event-loop turn after show() reports and quits
COLD_APP = _COLD_COMMON + """
_exec = QApplication.exec
def _exec_and_report(*_):  # app.exec() binds the instance; the original is static
    QTimer.singleShot(0, _shown)
    return _exec()
QApplication.exec = _exec_and_report
from breakfix_desktop.app import main
sys.exit(main(["--store", sys.argv[1]]))
"""


def run_cold(args, tmp: Path, notes: List[str]) -> Dict[str, Any]:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp / "cold_cfg"),
               XDG_DATA_HOME=str(tmp / "cold_data"), PYTHONPATH=str(U.REPO))
    arms = {"bare PySide6 QMainWindow": COLD_BARE, "breakfix-desktop": COLD_APP}
    samples: Dict[str, List[float]] = {k: [] for k in arms}
    order = list(arms)
    for r in range(args.cold_repeats + 1):  # repetition 0 is a warm-up (page cache, .pyc), not counted
        for name in (order if r % 2 == 0 else order[::-1]):
            t0 = time.time()
            proc = subprocess.run([sys.executable, "-c", arms[name], str(tmp / "cold_store")], env=env,
                                  capture_output=True, text=True, timeout=120, cwd=str(tmp))
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("SHOWN ")), None)
            if proc.returncode != 0 or line is None:
                raise SystemExit(f"cold start {name} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
            if r > 0:
                samples[name].append(float(line.split()[1]) - t0)
        log(f"cold start rep {r}/{args.cold_repeats}" + (" (warm-up)" if r == 0 else ""))
    res = {k: U.spread(v) for k, v in samples.items()}
    bare, full = res["bare PySide6 QMainWindow"]["median"], res["breakfix-desktop"]["median"]
    return {"arms": res, "samples": samples, "ratio": full / bare if bare else None,
            "paired_ratio_median": U.median([a / b for a, b in zip(samples["breakfix-desktop"],
                                                                   samples["bare PySide6 QMainWindow"])]),
            "how": "fresh subprocess each, offscreen Qt, interleaved with alternating order after one uncounted "
                   "warm-up round; time from just before spawning to the first event-loop turn after show()"}


# --------------------------------------------------------------------------- report
def verdict(ok: Optional[bool]) -> str:
    return "-" if ok is None else ("PASS" if ok else "FAIL")


def report(args, env, speed, ui, cold, notes) -> str:
    L: List[str] = []
    if args.quick:
        L.append("> QUICK SMOKE RUN (--quick): tiny sizes, numbers are NOT meaningful.\n")
    L.append(f"## Screening workstation - {args.threads} threads, CPU {env['cpu']}, load average at start "
             f"{env['loadavg_start']}\n")
    if speed:
        peak = speed["matmul_flop_per_s"]
        L.append(f"Speed: {speed['images']} real Testing scans per pass (preprocessed once by the app's path), "
                 f"batch {speed['batch_size']} (cnn_clean arms {args.cnn_batch_size}), {args.reps} interleaved reps; "
                 f"torch fp32 matmul {args.matmul_size}: {peak / 1e9:.1f} GFLOP/s (same run).\n")
        rows = []
        for name, r in speed["results"].items():
            if r["group"] == "matmul":
                continue
            ips = r["images_per_s"]
            rows.append([name, U.fmt(ips["median"], 1), U.fmt(ips["min"], 1), U.fmt(ips["max"], 1),
                         U.fmt(r["gflop_per_image"], 3), U.fmt(r["flop_per_s"]["median"] / 1e9, 1),
                         U.fmt(100 * r["fraction_of_matmul"], 1),
                         U.fmt(r.get("speedup_vs_torch"), 2) + (f" ({U.fmt(r.get('speedup_paired_median'), 2)})"
                                                               if r.get("speedup_paired_median") else "")])
        L.append(U.markdown_table(["arm", "images/s (median)", "min", "max", "GFLOP/image", "achieved GFLOP/s",
                                   "% of matmul", "x vs torch (paired)"], rows))
        L.append("")
        ort = speed["results"].get("pipeline onnxruntime ALL")
        if ort:
            sp = ort["speedup_vs_torch"]
            L.append(f"- **detector + ensemble, onnxruntime vs torch eager: {sp:.2f}x** (goal >= {GOAL_SPEEDUP}x: "
                     f"{verdict(sp >= GOAL_SPEEDUP)}); achieved {100 * ort['fraction_of_matmul']:.1f} % of the fp32 "
                     f"matmul rate (goal >= {100 * GOAL_FLOP_FRACTION:.0f} %: "
                     f"{verdict(ort['fraction_of_matmul'] >= GOAL_FLOP_FRACTION)})")
        c = speed["cnn_clean"]
        if c.get("accuracy"):
            acc = ", ".join(f"{k} {100 * v:.2f} %" for k, v in c["accuracy"].items())
            agr = ", ".join(f"{k} {100 * v:.2f} %" for k, v in c["agreement_with_fp32"].items() if k != "fp32")
            L.append(f"- cnn_clean accuracy on {c['accuracy_images']} {c['accuracy_split']} scans: {acc}; "
                     f"predictions equal to fp32: {agr}; int8 calibrated on {c['calibration']['images']} "
                     f"{c['calibration']['split']} scans (static QDQ, per-channel)")
        p = speed["parity"]
        L.append(f"- parity torch vs onnxruntime: detector score max |diff| {p['detector_score_max_abs_diff']:.1e}, "
                 f"ensemble logits {p['ensemble_logit_max_abs_diff']:.1e}; models: {speed['models']}")
        e = speed["engine"]
        if e:
            L.append(f"- engine arm: {e.get('workers')} worker threads, batch {e.get('batch_size')}, device "
                     f"{e.get('device')}, verdicts of the last pass {e.get('verdicts')}")
    if ui:
        s, a = ui["screening"], ui["adding"]
        L.append("")
        stall = ui["whole_batch"].get("max_gap_ms")
        L.append(f"UI: {ui['scans']} real scans added and screened in the real main window (offscreen), "
                 f"{ui['heartbeat_ms']} ms heartbeat; screening took {U.fmt(ui['elapsed_s'])} s, verdicts "
                 f"{ui['verdicts']}.\n")
        L.append(U.markdown_table(["phase", "seconds", "beats", "longest gap ms", "p99 gap ms", "gaps > 50 ms"],
                                  [[k, U.fmt(ui[k].get("seconds")), ui[k].get("beats"), U.fmt(ui[k].get("max_gap_ms")),
                                    U.fmt(ui[k].get("p99_gap_ms")), ui[k].get("gaps_over_50ms")]
                                   for k in ("settle", "adding", "screening", "whole_batch")]))
        if stall is not None:
            L.append(f"\n- **longest event-loop stall during the batch: {stall:.1f} ms** (a gap between heartbeats; "
                     f"goal <= {GOAL_STALL_MS:.0f} ms: {verdict(stall <= GOAL_STALL_MS)})")
    if cold:
        L.append("")
        L.append(U.markdown_table(["cold start", "median s", "min", "max", "n"],
                                  [[k, U.fmt(v["median"], 3), U.fmt(v["min"], 3), U.fmt(v["max"], 3), v["n"]]
                                   for k, v in cold["arms"].items()]))
        r = cold["ratio"]
        L.append(f"\n- **breakfix-desktop / bare window: {r:.2f}x** (paired {cold['paired_ratio_median']:.2f}x; goal "
                 f"<= {GOAL_COLD_RATIO:.0f}x: {verdict(r <= GOAL_COLD_RATIO)})")
    for n in notes:
        L.append(f"- note: {n}")
    L.append(f"- load average start/end {env['loadavg_start']} / {env.get('loadavg_end')}")
    return "\n".join(L)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.ui_child:
        return ui_child(args)
    U.pin_thread_env(args.threads)
    U.setup_paths()
    test_dir = args.data / "Testing"
    if not test_dir.is_dir():
        print(f"[{NAME}] SKIPPED: real scans not found at {test_dir} (give --data); nothing measured")
        return 0
    env = U.environment(args.threads)
    notes: List[str] = []
    speed = ui = cold = None
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_screening_") as td:
        tmp = Path(td)
        if "speed" in args.sections:
            speed = run_speed(args, tmp, notes)
        if "ui" in args.sections:
            ui = run_ui(args, tmp, speed["models_dir"] if speed else None, notes)
        if "cold" in args.sections:
            cold = run_cold(args, tmp, notes)
        if speed:
            speed["models_dir"] = None  # a temporary folder: gone after the run
    env["loadavg_end"] = U.loadavg()
    kept: Dict[str, Any] = {}
    if args.merge and args.out.is_file():
        prev = json.loads(args.out.read_text(encoding="utf-8"))
        for section, key in (("speed", "speed"), ("ui", "ui"), ("cold", "cold_start")):
            if section not in args.sections and prev.get(key) is not None:
                kept[key] = prev[key]
                notes.append(f"{section}: kept from the earlier run recorded in {args.out.name} (load average "
                             f"{prev.get('environment', {}).get('loadavg_start')} at its start), not re-measured")
        speed = speed or kept.get("speed")
        ui = ui or kept.get("ui")
        cold = cold or kept.get("cold_start")
    text = report(args, env, speed, ui, cold, notes)
    print(text)
    out = {"benchmark": NAME, "quick": args.quick, "argv": sys.argv[1:] if argv is None else list(argv),
           "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "environment": env, "speed": speed, "ui": ui, "cold_start": cold, "notes": notes,
           "goals": {"speedup": GOAL_SPEEDUP, "flop_fraction": GOAL_FLOP_FRACTION, "stall_ms": GOAL_STALL_MS,
                     "cold_ratio": GOAL_COLD_RATIO},
           "total_seconds": time.perf_counter() - t_all, "markdown": text}
    path = U.write_json(args.out, out)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
