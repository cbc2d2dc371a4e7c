#!/usr/bin/env python3
"""Evasion-attack throughput: our PGD (``training.attacks.PGD``) vs ``torchattacks.PGD``, side by side.

Both attacks run PGD-10 (eps 0.01, alpha 0.0025 = 2.5 x eps / steps, Madry et al.'s step rule;
10 steps; uniform random start in the eps-ball) against the SAME model object in eval mode, on the
SAME batch of pixels in [0, 1] with the same labels (the model's clean predictions), on the same
device and thread count:

* ``ours``         - ``PGD(model, eps, alpha, steps, random_start=True)(x, y)``;
* ``torchattacks`` - ``torchattacks.PGD(model, eps, alpha, steps, random_start=True)(x, y)``
                     (torchattacks 3.5.1, the dev-dependency peer of ``tests/test_attacks.py``).

Same start: the peer test compares the two with ``random_start=False``; here the random start is
kept and aligned instead.  Both draw their start as ``torch.empty_like(x).uniform_(-eps, eps)`` from
torch's global generator (ours with ``seed=None``), so ``torch.manual_seed(seed)`` right before every
call gives both the identical start.  The outputs of the last repetition are compared (max and
mean |ours - torchattacks|, share of pixels that differ by more than 1e-6); only the rounding of
the projection differs (ours ``min(max(x', x - eps), x + eps)``, torchattacks
``x + clamp(x' - x, -eps, eps)``), so differences are ~1e-7 unless a rounding difference flips the
sign of a near-zero gradient component at a later step (then that pixel moves by up to 2 x alpha).

Timing: one untimed warm-up call per arm, then ``--repeats`` repetitions interleaved
ours, torchattacks, ours, torchattacks, ... (``--rotate``: ours-first and torchattacks-first
alternate), one full attack call per measurement, so machine noise hits both arms alike.
Reported: median adversarial images/s per arm with min/max/range, the ratio ours / torchattacks
of the medians and the median of the per-repetition paired ratios.  Goal: ratio >= 1.0.  The
process CPU time of each call (user and system, ``os.times``) is recorded too: CPU seconds per
image are less sensitive than wall time to other jobs taking the cores.

Weights are random (speed does not depend on them) unless --model-file gives a BreakFix
checkpoint / state dict.  The CNN is the shipped configuration (blocks 5, width 16, hidden 256,
pool 4, dropout 0.3, as ``runs/cnn_clean/config.json``).

    python benchmarks/bench_attacks.py --model cnn --batch 32 --threads 2
    python benchmarks/bench_attacks.py --model resnet18 --batch 16 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _benchutil as U  # noqa: E402

NAME = "attacks"
MODELS = ("cnn", "resnet18")
ARMS = ("ours", "torchattacks")
#: the shipped CNN_clean configuration (runs/cnn_clean/config.json, model_kwargs)
CNN_KWARGS = {"blocks": 5, "width": 16, "hidden": 256, "pool": 4, "dropout": 0.3}
AGREE_TOL = 1e-6


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="cnn", help="architecture (default %(default)s)")
    p.add_argument("--model-file", type=Path, help="BreakFix checkpoint.pt or torch state dict (default: random weights)")
    p.add_argument("--batch", type=int, default=32, help="images per attack call (default %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per arm, interleaved (default %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per arm before timing (default %(default)s)")
    p.add_argument("--rotate", action="store_true",
                   help="alternate the order per repetition (ours first, then torchattacks first, ...)")
    p.add_argument("--eps", type=float, default=0.01, help="L-inf budget, pixel scale (default %(default)s)")
    p.add_argument("--steps", type=int, default=10, help="PGD steps (default %(default)s)")
    p.add_argument("--alpha", type=float, help="step size (default 2.5 x eps / steps = 0.0025)")
    p.add_argument("--image-size", type=int, help="image side in pixels (default 224, the models' input size)")
    p.add_argument("--threads", type=int, help="torch / BLAS threads (default: cores this process may use)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights, the batch and every random start")
    p.add_argument("--out", type=Path, help=f"JSON results (default benchmarks/results/{NAME}-<model>.json)")
    a = p.parse_args(argv)
    a.threads = a.threads or U.default_threads()
    a.alpha = a.alpha if a.alpha is not None else 2.5 * a.eps / a.steps
    a.out = a.out or (U.RESULTS / f"{NAME}-{a.model}.json")
    for name in ("batch", "repeats", "steps", "threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.warmup < 0:
        p.error("--warmup must be >= 0")
    if a.image_size is not None and a.image_size < 8:
        p.error("--image-size must be >= 8")
    if not (0 < a.eps <= 1 and 0 < a.alpha <= 1):
        p.error("--eps and --alpha must be in (0, 1]")
    if a.model_file is not None and not a.model_file.is_file():
        p.error(f"--model-file {a.model_file}: no such file")
    return a


def load_model(arch: str, path: Optional[Path]):
    """(model in eval mode, description of its weights)."""
    import torch

    from training.models import build_model

    kwargs: Dict[str, Any] = dict(CNN_KWARGS) if arch == "cnn" else {}
    if path is None:
        return build_model(arch, **kwargs).eval(), "random init"
    state = torch.load(path, map_location="cpu", weights_only=False)  # local file given by the user
    if isinstance(state, dict) and state.get("format") == "breakfix-checkpoint/1":
        kwargs = (state.get("config") or {}).get("model_kwargs") or kwargs
        state = state["model"]
    elif isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    model = build_model(arch, **kwargs)
    model.load_state_dict(state)
    return model.eval(), str(path)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    U.pin_thread_env(args.threads)  # before numpy/torch load their BLAS / OpenMP runtimes
    U.setup_paths()

    import torch

    try:
        import torchattacks
    except ImportError:
        sys.exit("torchattacks is not installed (it is a dev dependency: pip install torchattacks)")

    from breakfix_desktop.core.preprocess import IMAGE_SIZE
    from training.attacks import PGD
    from training.engine import resolve_device

    def log(msg: str) -> None:
        print(f"[{NAME}] {msg}", file=sys.stderr, flush=True)

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    size = args.image_size or IMAGE_SIZE

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    env = U.environment(args.threads)
    env["torchattacks"] = getattr(torchattacks, "__version__", "unknown")

    torch.manual_seed(args.seed)
    model, weights = load_model(args.model, args.model_file)
    model = model.to(device)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.batch, 3, size, size, generator=g).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    params = sum(p.numel() for p in model.parameters())

    ours = PGD(model, eps=args.eps, alpha=args.alpha, steps=args.steps, random_start=True, seed=None)
    peer = torchattacks.PGD(model, eps=args.eps, alpha=args.alpha, steps=args.steps, random_start=True)
    attacks: Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"ours": ours, "torchattacks": peer}

    first: Dict[str, torch.Tensor] = {}
    last: Dict[str, torch.Tensor] = {}

    def run(arm: str) -> Dict[str, float]:
        torch.manual_seed(args.seed)  # identical random start for both arms (global generator)
        sync()
        c0 = os.times()
        t0 = time.perf_counter()
        adv = attacks[arm](x, y)
        sync()
        dt = time.perf_counter() - t0
        c1 = os.times()
        first.setdefault(arm, adv)
        last[arm] = adv
        user, system = c1.user - c0.user, c1.system - c0.system
        return {"seconds": dt, "images_per_s": args.batch / dt, "cpu_user_s": user, "cpu_sys_s": system,
                "cpu_s_per_image": (user + system) / args.batch}

    log(f"{args.model} ({params:,} params, {weights}), batch {args.batch} x {size}px, PGD-{args.steps} eps {args.eps:g} "
        f"alpha {args.alpha:g}, device {device}, threads {args.threads}, {args.repeats} reps; warming up")
    for _ in range(args.warmup):
        for arm in ARMS:
            run(arm)
    samples: Dict[str, List[Dict[str, float]]] = {arm: [] for arm in ARMS}
    paired: List[float] = []
    t_start = time.perf_counter()
    for r in range(args.repeats):
        order = ARMS if not (args.rotate and r % 2) else ARMS[::-1]
        secs: Dict[str, float] = {}
        for arm in order:
            s = run(arm)
            secs[arm] = s["seconds"]
            samples[arm].append({"rep": r, "first": arm == order[0], **s})
        paired.append(secs["torchattacks"] / secs["ours"])
        log(f"rep {r + 1}/{args.repeats}: ours {args.batch / secs['ours']:.2f} img/s, "
            f"torchattacks {args.batch / secs['torchattacks']:.2f} img/s ({time.perf_counter() - t_start:.1f}s)")
    total_s = time.perf_counter() - t_start
    env["loadavg_end"] = U.loadavg()

    # ------------------------------------------------------------------ agreement (same start)
    diff = (last["ours"] - last["torchattacks"]).abs()
    agreement = {
        "same_start": f"torch.manual_seed({args.seed}) before every call; both draw uniform_(-eps, eps) from the global generator",
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "pixels_over_tol_pct": 100.0 * float((diff > AGREE_TOL).float().mean()),
        "tol": AGREE_TOL,
        # each arm against itself (first call vs last, same seed): kernels' run-to-run determinism
        "ours_rerun_max_abs_diff": float((first["ours"] - last["ours"]).abs().max()),
        "torchattacks_rerun_max_abs_diff": float((first["torchattacks"] - last["torchattacks"]).abs().max()),
        "ours_max_perturbation": float((last["ours"] - x).abs().max()),
        "torchattacks_max_perturbation": float((last["torchattacks"] - x).abs().max()),
    }
    with torch.no_grad():
        for arm in ARMS:
            agreement[f"{arm}_accuracy_vs_clean_pred"] = float((model(last[arm]).argmax(1) == y).float().mean())

    # ------------------------------------------------------------------ report
    results = {arm: {"images_per_s": U.spread([s["images_per_s"] for s in samples[arm]]),
                     "cpu_s_per_image": U.spread([s["cpu_s_per_image"] for s in samples[arm]]),
                     "cpu_sys_share_pct": 100.0 * sum(s["cpu_sys_s"] for s in samples[arm])
                     / max(1e-9, sum(s["cpu_user_s"] + s["cpu_sys_s"] for s in samples[arm])),
                     "samples": samples[arm]}
               for arm in ARMS}
    ratio = results["ours"]["images_per_s"]["median"] / results["torchattacks"]["images_per_s"]["median"]
    ratio_cpu = results["torchattacks"]["cpu_s_per_image"]["median"] / results["ours"]["cpu_s_per_image"]["median"]
    ratio_paired = U.median(paired)
    verdict = "met" if ratio >= 1.0 else "NOT met"

    lines = [f"## Attacks - PGD-{args.steps} (eps {args.eps:g}, alpha {args.alpha:g}, random start), {args.model} "
             f"({weights}), batch {args.batch} x {size}px, {args.repeats} interleaved reps, {args.threads} threads, "
             f"device {device}, CPU {env['cpu']}" + (f", GPU {env['gpu']}" if cuda and env.get("gpu") else "") + "\n"]
    lines.append(U.markdown_table(
        ["arm", "adv images/s (median)", "min", "max", "range %", "s / batch", "CPU s / image", "system CPU %"],
        [[arm, U.fmt(results[arm]["images_per_s"]["median"], 2), U.fmt(results[arm]["images_per_s"]["min"], 2),
          U.fmt(results[arm]["images_per_s"]["max"], 2), U.fmt(results[arm]["images_per_s"]["rel_range_pct"]),
          U.fmt(args.batch / results[arm]["images_per_s"]["median"], 2),
          U.fmt(results[arm]["cpu_s_per_image"]["median"], 3), U.fmt(results[arm]["cpu_sys_share_pct"])]
         for arm in ARMS]))
    lines.append("")
    lines.append(f"- ours / torchattacks: **{ratio:.3f}x** (medians; median of paired per-rep ratios {ratio_paired:.3f}x); "
                 f"goal >= 1.0x: {verdict}; by CPU time per image {ratio_cpu:.3f}x")
    lines.append(f"- agreement (same random start): max |ours - torchattacks| {agreement['max_abs_diff']:.2e}, "
                 f"mean {agreement['mean_abs_diff']:.2e}, {agreement['pixels_over_tol_pct']:.4f} % of values differ by "
                 f"> {AGREE_TOL:g}; rerun max diff ours {agreement['ours_rerun_max_abs_diff']:.2e}, torchattacks "
                 f"{agreement['torchattacks_rerun_max_abs_diff']:.2e}; max perturbation ours {agreement['ours_max_perturbation']:.4g}, "
                 f"torchattacks {agreement['torchattacks_max_perturbation']:.4g}")
    lines.append(f"- load average start/end {env['loadavg_start']} / {env['loadavg_end']}; timed section {total_s:.1f}s.")
    report = "\n".join(lines)
    print(report)

    out = {
        "benchmark": NAME,
        "config": {"model": args.model, "model_kwargs": CNN_KWARGS if args.model == "cnn" else {}, "weights": weights,
                   "parameters": params, "batch": args.batch, "image_size": size, "repeats": args.repeats,
                   "warmup": args.warmup, "rotate": args.rotate, "eps": args.eps, "alpha": args.alpha,
                   "steps": args.steps, "random_start": True, "threads": args.threads, "device": str(device),
                   "seed": args.seed, "data": "synthetic torch.rand pixels in [0, 1]; labels = clean predictions"},
        "environment": env,
        "arms": results,
        "ratio_ours_over_torchattacks": ratio,
        "ratio_paired_median": ratio_paired,
        "ratio_cpu_time": ratio_cpu,
        "paired_ratios": paired,
        "goal": "ours >= 1.0x torchattacks",
        "goal_met": ratio >= 1.0,
        "agreement": agreement,
        "timed_seconds": total_s,
        "markdown": report,
    }
    path = U.write_json(args.out, out)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
