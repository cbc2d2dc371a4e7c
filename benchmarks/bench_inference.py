#!/usr/bin/env python3
"""Inference throughput: onnxruntime vs PyTorch eager, plus achieved FLOP/s vs the machine's matmul FLOP/s.

For each model (default: the CNN and ResNet-18) and each device (CPU; CUDA too when available):

* ``torch`` - PyTorch eager under ``torch.inference_mode()``, ``torch.set_num_threads(threads)``;
* ``ort``   - onnxruntime on the model exported by ``training.export.export_onnx`` (the app's
              contract: pixels N x 3 x 224 x 224 in [0, 1] -> logits), graph optimisation level
              ALL, ``intra_op_num_threads = threads``, sequential execution.

Both get the same float32 batch (default 32 images) from host memory and return logits to host
memory (on CUDA the host<->device copies are inside the timing for both).  Reference rates are
measured in the same run: fp32 matmul FLOP/s of ``torch.matmul`` on two large square matrices
(numpy's ``matmul`` too, for reference; on CUDA with TF32 off unless --tf32).  FLOPs per image come
from ``torch.utils.flop_counter.FlopCounterMode`` (2 x MACs of convolutions and matmuls; a forward
hook counter over Conv2d/Linear is recorded as a cross-check), so

    achieved FLOP/s = FLOPs/image x images/s,   fraction = achieved / torch matmul FLOP/s (same device).

All arms (matmuls included) are interleaved per repetition after a warm-up, and medians reported.
Weights are random (speed does not depend on them) unless --model-file ARCH=PATH gives a BreakFix
checkpoint / state dict (loaded into torch and exported) or an .onnx file (used by onnxruntime as is).

    python benchmarks/bench_inference.py --quick     # seconds-long smoke run
    python benchmarks/bench_inference.py             # batch 32, 5 interleaved reps
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _benchutil as U  # noqa: E402

NAME = "inference"
MODELS = ("cnn", "resnet18", "resnet50")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="seconds-long smoke run (batch 4, 2 reps, small matmul); numbers are not meaningful")
    p.add_argument("--models", default="cnn,resnet18", help=f"comma list from {','.join(MODELS)} (default %(default)s)")
    p.add_argument("--model-file", action="append", default=[], metavar="ARCH=PATH",
                   help="weights for ARCH: a BreakFix checkpoint.pt / torch state dict, or an .onnx file (repeatable)")
    p.add_argument("--batch-size", type=int, help="images per inference call (default 32; quick 4)")
    p.add_argument("--reps", type=int, help="interleaved repetitions (default 5; quick 2)")
    p.add_argument("--iters", type=int, help="min batches per measurement (default 3; quick 1)")
    p.add_argument("--min-seconds", type=float, help="min seconds per measurement (default 1.0; quick 0)")
    p.add_argument("--warmup", type=int, help="untimed warm-up calls per arm (default 2; quick 1)")
    p.add_argument("--threads", type=int, help="torch / onnxruntime intra-op / BLAS threads (default: cores available)")
    p.add_argument("--devices", default="auto", help="auto (cpu, plus cuda when torch sees a GPU), or a list: cpu,cuda")
    p.add_argument("--backends", default="torch,ort", help="comma list from torch,ort (default %(default)s)")
    p.add_argument("--matmul-size", type=int, help="CPU matmul size n for n x n @ n x n (default 2048; quick 512)")
    p.add_argument("--cuda-matmul-size", type=int, default=8192, help="CUDA matmul size (default %(default)s)")
    p.add_argument("--matmul-iters", type=int, help="matmuls per measurement (default 3; quick 1)")
    p.add_argument("--no-numpy-matmul", action="store_true", help="skip the numpy reference matmul")
    p.add_argument("--ort-no-spin", action="store_true",
                   help="onnxruntime: session.intra_op.allow_spinning=0 (default: ORT's default, spinning on)")
    p.add_argument("--tf32", action="store_true",
                   help="CUDA: allow TF32 in torch matmul/cuDNN and onnxruntime (default off: true fp32 everywhere)")
    p.add_argument("--no-cudnn-benchmark", action="store_true",
                   help="CUDA torch: leave cudnn.benchmark off (default on, like onnxruntime's exhaustive conv search)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help=f"JSON results (default benchmarks/results/{NAME}.json)")
    a = p.parse_args(argv)
    q = a.quick
    a.batch_size = a.batch_size or (4 if q else 32)
    a.reps = a.reps or (2 if q else 5)
    a.iters = a.iters or (1 if q else 3)
    a.min_seconds = a.min_seconds if a.min_seconds is not None else (0.0 if q else 1.0)
    a.warmup = a.warmup if a.warmup is not None else (1 if q else 2)
    a.matmul_size = a.matmul_size or (512 if q else 2048)
    a.matmul_iters = a.matmul_iters or (1 if q else 3)
    a.threads = a.threads or U.default_threads()
    a.out = a.out or (U.RESULTS / f"{NAME}{'_quick' if q else ''}.json")
    a.models = [m.strip() for m in a.models.split(",") if m.strip()]
    a.backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    if not a.models or any(m not in MODELS for m in a.models):
        p.error(f"--models: choose from {','.join(MODELS)}")
    if not a.backends or any(b not in ("torch", "ort") for b in a.backends):
        p.error("--backends: choose from torch,ort")
    files: Dict[str, Path] = {}
    for spec in a.model_file:
        arch, sep, path = spec.partition("=")
        if not sep or arch not in MODELS or not Path(path).is_file():
            p.error(f"--model-file {spec!r}: expected ARCH=PATH with ARCH in {','.join(MODELS)} and an existing file")
        files[arch] = Path(path)
    a.model_files = files
    for name in ("batch_size", "reps", "iters", "matmul_size", "matmul_iters", "threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return a


def flops_per_image(model, image_size: int) -> Dict[str, Any]:
    """Forward FLOPs of one image: FlopCounterMode (preferred) and a Conv2d/Linear hook count."""
    import torch
    from torch import nn

    x = torch.rand(1, 3, image_size, image_size)
    out: Dict[str, Any] = {}
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(x)
        out["flop_counter_mode"] = int(counter.get_total_flops())
    except Exception as exc:  # noqa: BLE001 - fall back to the hook counter
        out["flop_counter_mode"] = None
        out["flop_counter_mode_error"] = f"{type(exc).__name__}: {exc}"

    total = [0]

    def conv_hook(mod: nn.Conv2d, inp, outp):
        k = (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        total[0] += 2 * outp.numel() * k

    def linear_hook(mod: nn.Linear, inp, outp):
        total[0] += 2 * outp.numel() * mod.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    with torch.inference_mode():
        model(x)
    for h in handles:
        h.remove()
    out["hooks_conv_linear"] = int(total[0])
    out["used"] = out["flop_counter_mode"] or out["hooks_conv_linear"]
    out["source"] = "FlopCounterMode" if out["flop_counter_mode"] else "forward hooks (Conv2d, Linear)"
    return out


def load_torch_model(arch: str, path: Optional[Path]):
    """(model in eval mode, description of its weights)."""
    import torch

    from training.models import build_model

    if path is None or path.suffix.lower() == ".onnx":
        return build_model(arch).eval(), "random init"
    state = torch.load(path, map_location="cpu", weights_only=False)  # local file given by the user
    if isinstance(state, dict) and state.get("format") == "breakfix-checkpoint/1":
        kwargs = (state.get("config") or {}).get("model_kwargs") or {}
        model = build_model(arch, **kwargs)
        model.load_state_dict(state["model"])
    else:
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        model = build_model(arch)
        model.load_state_dict(state)
    return model.eval(), str(path)


def matmul_arms(n: int, numpy_ref: bool = True, cuda_size: Optional[int] = None) -> List[Dict[str, Any]]:
    """The fp32 matmul reference arms (``kind`` "matmul"): torch ``n x n @ n x n`` on the CPU, numpy's
    too (``numpy_ref``), and torch on CUDA with ``cuda_size`` (synchronised) when given.  Each arm
    is a dict with ``fn`` (one call) and ``flops_per_call`` (2 n^3); other benchmarks import this."""
    import numpy as np
    import torch

    arms: List[Dict[str, Any]] = []
    a_t, b_t = torch.randn(n, n), torch.randn(n, n)
    c_t = torch.empty(n, n)
    arms.append({"kind": "matmul", "model": f"matmul {n}", "backend": "torch", "device": "cpu",
                 "fn": lambda: torch.matmul(a_t, b_t, out=c_t), "flops_per_call": 2 * n ** 3, "images_per_call": 0})
    if numpy_ref:
        a_n, b_n = a_t.numpy().copy(), b_t.numpy().copy()
        c_n = np.empty((n, n), dtype=np.float32)
        arms.append({"kind": "matmul", "model": f"matmul {n}", "backend": "numpy", "device": "cpu",
                     "fn": lambda: np.matmul(a_n, b_n, out=c_n), "flops_per_call": 2 * n ** 3, "images_per_call": 0})
    if cuda_size:
        m = cuda_size
        a_c, b_c = torch.randn(m, m, device="cuda"), torch.randn(m, m, device="cuda")
        c_c = torch.empty(m, m, device="cuda")

        def cuda_mm():
            torch.matmul(a_c, b_c, out=c_c)
            torch.cuda.synchronize()

        arms.append({"kind": "matmul", "model": f"matmul {m}", "backend": "torch", "device": "cuda",
                     "fn": cuda_mm, "flops_per_call": 2 * m ** 3, "images_per_call": 0})
    return arms


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    U.pin_thread_env(args.threads)  # before numpy/torch load their BLAS / OpenMP runtimes
    U.setup_paths()

    import numpy as np
    import onnxruntime as ort
    import torch

    from breakfix_desktop.core.preprocess import IMAGE_SIZE
    from training.export import export_onnx

    def log(msg: str) -> None:
        print(f"[{NAME}] {msg}", file=sys.stderr, flush=True)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ort.set_default_logger_severity(3)  # errors only (a failed CUDA session is reported by us)

    if args.devices == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        if any(d not in ("cpu", "cuda") for d in devices):
            sys.exit("--devices: choose from cpu,cuda")
    notes: List[str] = []
    if "cuda" in devices and not torch.cuda.is_available():
        notes.append("cuda requested but torch sees no GPU: torch CUDA arms and CUDA matmul skipped")
    torch_cuda = "cuda" in devices and torch.cuda.is_available()
    if torch_cuda:
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark

    def session_options() -> "ort.SessionOptions":
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if args.ort_no_spin:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return so

    def cuda_session(path: str):
        """(session or None, note): CUDA only if the session really runs on it."""
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return None, "this onnxruntime build has no CUDAExecutionProvider"
        last = ""
        ort.set_default_logger_severity(4)  # a missing GPU / libcuda is reported below, not as a red log line
        try:
            return _cuda_session(path)
        finally:
            ort.set_default_logger_severity(3)

    def _cuda_session(path: str):
        last = ""
        for opts in ({"device_id": 0, "use_tf32": int(args.tf32)}, {"device_id": 0}):
            try:
                sess = ort.InferenceSession(path, session_options(),
                                            providers=[("CUDAExecutionProvider", opts), "CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001 - unknown option or CUDA failure: try plainer, then give up
                last = f"{type(exc).__name__}: {exc}"
                continue
            if sess.get_providers()[0] == "CUDAExecutionProvider":
                return sess, f"CUDAExecutionProvider {opts}"
            return None, "onnxruntime lists CUDA but the session fell back to CPU (no GPU / libraries?)"
        return None, f"CUDA session failed ({last})"

    env = U.environment(args.threads)
    rng = np.random.default_rng(args.seed)
    batch = rng.random((args.batch_size, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    batch_t = torch.from_numpy(batch)  # shares memory with `batch`
    bs = args.batch_size

    # ------------------------------------------------------------------ arms
    # arm: {"kind": "matmul"|"model", "model", "backend", "device", "fn": callable, "flops_per_call"}
    arms: List[Dict[str, Any]] = []
    models_info: Dict[str, Dict[str, Any]] = {}
    tmp = tempfile.TemporaryDirectory(prefix="bench_inference_")

    arms += matmul_arms(args.matmul_size, numpy_ref=not args.no_numpy_matmul,
                        cuda_size=args.cuda_matmul_size if torch_cuda else None)

    for arch in args.models:
        t0 = time.perf_counter()
        given = args.model_files.get(arch)
        model, weights = load_torch_model(arch, given)
        fl = flops_per_image(model, IMAGE_SIZE)
        if given is not None and given.suffix.lower() == ".onnx":
            onnx_path, onnx_src = str(given), str(given)
        else:
            onnx_path, onnx_src = str(export_onnx(model, Path(tmp.name) / f"{arch}.onnx")), f"exported ({weights})"
        info: Dict[str, Any] = {"torch_weights": weights, "onnx": onnx_src, "flops_per_image": fl,
                                "parameters": sum(p.numel() for p in model.parameters())}
        models_info[arch] = info
        per_call = fl["used"] * bs

        cpu_sess = ort.InferenceSession(onnx_path, session_options(), providers=["CPUExecutionProvider"])
        in_name, out_name = cpu_sess.get_inputs()[0].name, cpu_sess.get_outputs()[0].name
        info["ort_cpu_providers"] = cpu_sess.get_providers()
        if "ort" in args.backends and "cpu" in devices:
            arms.append({"kind": "model", "model": arch, "backend": "ort", "device": "cpu", "flops_per_call": per_call,
                         "images_per_call": bs, "fn": (lambda s=cpu_sess, i=in_name, o=out_name: s.run([o], {i: batch}))})
        if "torch" in args.backends and "cpu" in devices:
            def torch_cpu(m=model):
                with torch.inference_mode():
                    return m(batch_t).numpy()

            arms.append({"kind": "model", "model": arch, "backend": "torch", "device": "cpu", "flops_per_call": per_call,
                         "images_per_call": bs, "fn": torch_cpu})
        # parity: the two backends must compute the same function (when they share weights)
        if onnx_src.startswith("exported"):
            with torch.inference_mode():
                ref = model(batch_t).numpy()
            got = cpu_sess.run([out_name], {in_name: batch})[0]
            info["parity_max_abs_logit_diff"] = float(np.abs(ref - got).max())
            info["parity_argmax_agreement"] = float((ref.argmax(1) == got.argmax(1)).mean())
        if "cuda" in devices:
            if "ort" in args.backends:
                sess, note = cuda_session(onnx_path)
                info["ort_cuda"] = note
                if sess is not None:
                    arms.append({"kind": "model", "model": arch, "backend": "ort", "device": "cuda",
                                 "flops_per_call": per_call, "images_per_call": bs,
                                 "fn": (lambda s=sess, i=in_name, o=out_name: s.run([o], {i: batch}))})
                else:
                    notes.append(f"{arch}: onnxruntime CUDA skipped: {note}")
            if "torch" in args.backends and torch_cuda:
                gpu_model = copy.deepcopy(model).to("cuda")  # same weights as the CPU arms

                def torch_cuda_fn(m=gpu_model):
                    with torch.inference_mode():
                        return m(batch_t.to("cuda")).cpu().numpy()

                arms.append({"kind": "model", "model": arch, "backend": "torch", "device": "cuda",
                             "flops_per_call": per_call, "images_per_call": bs, "fn": torch_cuda_fn})
        log(f"{arch}: {info['parameters']:,} params, {fl['used'] / 1e9:.3f} GFLOP/image ({fl['source']}), "
            f"onnx {onnx_src}, ready in {time.perf_counter() - t0:.1f}s")

    # ------------------------------------------------------------------ timing
    def measure(fn: Callable[[], Any], min_iters: int) -> Tuple[int, float]:
        calls = 0
        t0 = time.perf_counter()
        while True:
            fn()
            calls += 1
            dt = time.perf_counter() - t0
            if calls >= min_iters and dt >= args.min_seconds:
                return calls, dt

    def key(arm: Dict[str, Any]) -> str:
        return f"{arm['model']}|{arm['backend']}|{arm['device']}"

    log(f"{len(arms)} arms, batch {bs}, {args.reps} reps, threads {args.threads}, devices {devices}; warming up")
    for arm in arms:
        for _ in range(args.warmup):
            arm["fn"]()
    samples: Dict[str, List[Dict[str, float]]] = {key(a): [] for a in arms}
    t_start = time.perf_counter()
    for r in range(args.reps):
        for arm in arms:
            calls, dt = measure(arm["fn"], args.matmul_iters if arm["kind"] == "matmul" else args.iters)
            s = {"rep": r, "calls": calls, "seconds": dt, "flop_per_s": arm["flops_per_call"] * calls / dt}
            if arm["kind"] == "model":
                s["images_per_s"] = arm["images_per_call"] * calls / dt
            samples[key(arm)].append(s)
        log(f"rep {r + 1}/{args.reps} done ({time.perf_counter() - t_start:.1f}s)")
    total_s = time.perf_counter() - t_start
    env["loadavg_end"] = U.loadavg()
    tmp.cleanup()

    # ------------------------------------------------------------------ report
    results: Dict[str, Dict[str, Any]] = {}
    for arm in arms:
        k = key(arm)
        rec = {"kind": arm["kind"], "model": arm["model"], "backend": arm["backend"], "device": arm["device"],
               "flop_per_s": U.spread([s["flop_per_s"] for s in samples[k]]), "samples": samples[k]}
        if arm["kind"] == "model":
            rec["images_per_s"] = U.spread([s["images_per_s"] for s in samples[k]])
        results[k] = rec
    peak = {dev: results[k]["flop_per_s"]["median"] for k in results
            for dev in [results[k]["device"]] if results[k]["kind"] == "matmul" and results[k]["backend"] == "torch"}
    numpy_peak = next((r["flop_per_s"]["median"] for r in results.values() if r["backend"] == "numpy"), None)
    for rec in results.values():
        if rec["kind"] != "model":
            continue
        achieved = rec["flop_per_s"]["median"]
        rec["achieved_flop_per_s"] = achieved
        rec["fraction_of_torch_matmul"] = achieved / peak[rec["device"]] if rec["device"] in peak else None
        if rec["device"] == "cpu" and numpy_peak:
            rec["fraction_of_numpy_matmul"] = achieved / numpy_peak
        other = results.get(f"{rec['model']}|torch|{rec['device']}")
        rec["speedup_vs_torch"] = rec["images_per_s"]["median"] / other["images_per_s"]["median"] if other else None

    lines = []
    if args.quick:
        lines.append("> QUICK SMOKE RUN (--quick): tiny batch and matmul, numbers are NOT meaningful.\n")
    lines.append(f"## Inference - batch {bs}, {args.reps} interleaved reps, {args.threads} threads, "
                 f"devices {', '.join(devices)}, CPU {env['cpu']}" + (f", GPU {env['gpu']}" if env.get("gpu") else "") + "\n")
    lines.append("Reference: fp32 matmul throughput (median)\n")
    lines.append(U.markdown_table(
        ["matmul", "backend", "device", "GFLOP/s (median)", "min", "max", "range %"],
        [[r["model"], r["backend"], r["device"], U.fmt(r["flop_per_s"]["median"] / 1e9), U.fmt(r["flop_per_s"]["min"] / 1e9),
          U.fmt(r["flop_per_s"]["max"] / 1e9), U.fmt(r["flop_per_s"]["rel_range_pct"])]
         for r in results.values() if r["kind"] == "matmul"]))
    lines.append("")
    lines.append(U.markdown_table(
        ["model", "backend", "device", "images/s (median)", "min", "max", "range %", "ms/batch",
         "GFLOP/image", "achieved GFLOP/s", "% of torch matmul", "x vs torch"],
        [[r["model"], r["backend"], r["device"], U.fmt(r["images_per_s"]["median"]), U.fmt(r["images_per_s"]["min"]),
          U.fmt(r["images_per_s"]["max"]), U.fmt(r["images_per_s"]["rel_range_pct"]),
          U.fmt(1000.0 * bs / r["images_per_s"]["median"]),
          U.fmt(models_info[r["model"]]["flops_per_image"]["used"] / 1e9, 3), U.fmt(r["achieved_flop_per_s"] / 1e9),
          U.fmt(100.0 * r["fraction_of_torch_matmul"]) if r["fraction_of_torch_matmul"] is not None else "-",
          U.fmt(r["speedup_vs_torch"], 2) if r["speedup_vs_torch"] is not None else "-"]
         for r in results.values() if r["kind"] == "model"]))
    lines.append("")
    for arch, info in models_info.items():
        fl = info["flops_per_image"]
        par = (f"; torch vs onnxruntime max |logit diff| {info['parity_max_abs_logit_diff']:.2e}"
               if "parity_max_abs_logit_diff" in info else "")
        lines.append(f"- {arch}: {fl['used'] / 1e9:.3f} GFLOP/image ({fl['source']}; Conv2d+Linear hooks "
                     f"{fl['hooks_conv_linear'] / 1e9:.3f}), weights {info['torch_weights']}{par}")
    over = [f"{r['model']}/{r['backend']}/{r['device']}" for r in results.values()
            if r["kind"] == "model" and (r["fraction_of_torch_matmul"] or 0) > 1.0]
    if over:
        notes.append(f"achieved > 100 % of the torch matmul reference for {', '.join(over)}: the reference matmul "
                     "is too small (--matmul-size) or was disturbed; treat those fractions as invalid")
    for note in notes:
        lines.append(f"- note: {note}")
    lines.append(f"- FLOP/s = 2 x multiply-accumulates; CUDA TF32 {'on' if args.tf32 else 'off'}; load average "
                 f"start/end {env['loadavg_start']} / {env['loadavg_end']}; timed section {total_s:.1f}s.")
    report = "\n".join(lines)
    print(report)

    out = {
        "benchmark": NAME,
        "quick": args.quick,
        "config": {"models": args.models, "batch_size": bs, "reps": args.reps, "iters": args.iters,
                   "min_seconds": args.min_seconds, "warmup": args.warmup, "threads": args.threads, "devices": devices,
                   "backends": args.backends, "matmul_size": args.matmul_size,
                   "cuda_matmul_size": args.cuda_matmul_size if torch_cuda else None,
                   "matmul_iters": args.matmul_iters, "ort_graph_optimization": "ORT_ENABLE_ALL",
                   "ort_intra_op_threads": args.threads, "ort_spinning": not args.ort_no_spin, "tf32": args.tf32,
                   "cudnn_benchmark": (not args.no_cudnn_benchmark) if torch_cuda else None, "seed": args.seed,
                   "io": "host numpy/torch CPU tensor in, host logits out (CUDA copies timed)"},
        "environment": env,
        "models": models_info,
        "matmul_peak_flop_per_s": {"torch": peak, "numpy_cpu": numpy_peak},
        "arms": results,
        "notes": notes,
        "timed_seconds": total_s,
        "markdown": report,
    }
    path = U.write_json(args.out, out)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
