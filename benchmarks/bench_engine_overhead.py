#!/usr/bin/env python3
"""Training-engine overhead: ``Trainer.train_epoch`` vs a bare PyTorch loop, measured side by side.

Three arms train the same model (``build_model("cnn")``, identical initial weights) with the same
optimizer (Adam, same lr), batch size, data, batch order, number of batches and torch thread count:

* ``engine``       - ``training.engine.Trainer(...).train_epoch()`` over ``make_loader(...)``
                     (what ``python -m training train`` runs, events to a NullWriter by default);
* ``bare_loader``  - a minimal ``zero_grad / forward / loss / backward / step`` loop over the
                     *same* DataLoader: engine minus the Trainer's per-batch bookkeeping
                     (``.item()`` syncs, accuracy, progress events);
* ``bare_tensor``  - the same minimal loop, batches gathered straight from the in-memory tensor
                     (no Dataset/DataLoader per-item Python): the strictest baseline, the "bare loop".

Repetitions are interleaved (engine, bare_loader, bare_tensor, engine, ...) after a warm-up, and
the median images/s of each arm is reported, because the machine is noisy.  The headline is
``overhead % = (bare - engine) / bare`` against ``bare_tensor``; goal: <= 5 %.

Data: the real Training split (a seeded random subset of batches x batch-size images) when it is
present at ../shared/data/brain-tumor-mri, else (or with --synthetic) random pixels.  Either way
the images sit in memory in an ``MRIDataset`` (grey N x 224 x 224, expanded to 3 channels per
item), exactly like a real training run; no JPEG decoding is timed.

    python benchmarks/bench_engine_overhead.py --quick          # seconds-long smoke run
    python benchmarks/bench_engine_overhead.py                  # 30 batches x 3 reps per arm
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _benchutil as U  # noqa: E402

NAME = "engine_overhead"
GOAL_PCT = 5.0
ARMS = ("engine", "bare_loader", "bare_tensor")
ARM_DOC = {
    "engine": "Trainer.train_epoch over make_loader",
    "bare_loader": "bare loop over the same DataLoader",
    "bare_tensor": "bare loop, batches gathered from the tensor",
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="seconds-long smoke run (batch 4, 2 batches x 2 reps); numbers are not meaningful")
    p.add_argument("--batches", type=int, help="batches per repetition (default 30; quick 2)")
    p.add_argument("--reps", type=int, help="timed repetitions per arm (default 3; quick 2)")
    p.add_argument("--warmup-batches", type=int, help="untimed warm-up batches per arm (default 3; quick 1)")
    p.add_argument("--batch-size", type=int, help="default 32 (quick 4)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (configs/cnn_clean.toml: 1e-3)")
    p.add_argument("--threads", type=int, help="torch threads (default: cores this process may use)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (TrainConfig default 0)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma list from {','.join(ARMS)} (engine required)")
    p.add_argument("--rotate", action="store_true",
                   help="rotate the arm order each repetition (ABC, BCA, CAB) instead of fixed ABC, ABC")
    p.add_argument("--events", choices=("null", "devnull"), default="null",
                   help="engine events: NullWriter (validates only; default) or a real EventWriter writing "
                        "JSON lines to os.devnull (adds encode + flush per event)")
    p.add_argument("--progress-every", type=int, default=1,
                   help="Trainer progress_every (Trainer default 1 = an event per batch; the CLI uses 20)")
    p.add_argument("--data", type=Path, default=U.DEFAULT_DATA, help="data root with Training/ (default %(default)s)")
    p.add_argument("--synthetic", action="store_true", help="random pixels even if the real data is present")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help=f"exit 1 if the headline overhead exceeds {GOAL_PCT:g} %%")
    p.add_argument("--out", type=Path, help=f"JSON results (default benchmarks/results/{NAME}.json)")
    a = p.parse_args(argv)
    q = a.quick
    a.batches = a.batches or (2 if q else 30)
    a.reps = a.reps or (2 if q else 3)
    a.warmup_batches = a.warmup_batches if a.warmup_batches is not None else (1 if q else 3)
    a.batch_size = a.batch_size or (4 if q else 32)
    a.threads = a.threads or U.default_threads()
    a.out = a.out or (U.RESULTS / f"{NAME}{'_quick' if q else ''}.json")
    a.arms = [s.strip() for s in a.arms.split(",") if s.strip()]
    bad = [s for s in a.arms if s not in ARMS]
    if bad or "engine" not in a.arms or len(a.arms) < 2:
        p.error(f"--arms: choose engine and at least one of bare_loader, bare_tensor (got {a.arms})")
    for name in ("batches", "reps", "batch_size", "threads", "progress_every"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return a


def load_images(args, n: int, log: Callable[[str], None]):
    """(grey float32 n x 224 x 224 in [0,1], labels int64 n, description)."""
    import numpy as np
    import torch

    from breakfix_desktop.core.labels import NUM_CLASSES
    from breakfix_desktop.core.preprocess import IMAGE_SIZE

    if not args.synthetic and (Path(args.data) / "Training").is_dir():
        from training.data import MRIDataset, scan_split

        skipped: List[str] = []
        split = scan_split(args.data, "Training", on_skip=lambda path, reason: skipped.append(path))
        if len(split.samples) >= n:
            rng = np.random.default_rng(args.seed)
            take = min(len(split.samples), n + 16)  # a few spare in case some files fail to decode
            idx = sorted(rng.choice(len(split.samples), size=take, replace=False).tolist())
            t0 = time.perf_counter()
            ds = MRIDataset(split.subset(idx), workers=2, on_skip=lambda path, reason: skipped.append(path))
            if len(ds) >= n:
                log(f"decoded {len(ds)} real images in {time.perf_counter() - t0:.1f}s (not timed)")
                g = torch.Generator().manual_seed(args.seed)
                order = torch.randperm(len(ds), generator=g)[:n]  # mix the classes
                return ds.grey[order].contiguous(), ds.labels[order].contiguous(), f"real ({args.data}/Training, {n} images)"
        log(f"real data has too few usable images for {n}; using synthetic data")
    g = torch.Generator().manual_seed(args.seed)
    grey = torch.rand(n, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return grey, labels, f"synthetic (torch.rand, {n} images)"


def as_mri_dataset(grey, labels):
    """An ``MRIDataset`` over tensors already in memory (skips decoding, same ``__getitem__``)."""
    from training.data import MRIDataset

    ds = MRIDataset.__new__(MRIDataset)
    ds.grey, ds.labels, ds.transform, ds.split = grey, labels, None, None
    return ds


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    U.pin_thread_env(args.threads)
    U.setup_paths()

    import torch
    from torch import nn

    from breakfix_desktop.core.protocol import EventWriter, NullWriter
    from training.engine import EpochShuffle, TrainConfig, Trainer, make_loader, resolve_device, seed_everything
    from training.models import build_model, count_parameters

    def log(msg: str) -> None:
        print(f"[{NAME}] {msg}", file=sys.stderr, flush=True)

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)  # as `python -m training train` does (deterministic algorithms on)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    bs, nb = args.batch_size, args.batches
    grey, labels, data_desc = load_images(args, nb * bs, log)
    warm_n = max(1, args.warmup_batches) * bs
    if warm_n > len(labels):
        warm_grey, warm_labels = grey.repeat(-(-warm_n // len(labels)), 1, 1)[:warm_n], labels.repeat(-(-warm_n // len(labels)))[:warm_n]
    else:
        warm_grey, warm_labels = grey[:warm_n], labels[:warm_n]

    torch.manual_seed(args.seed)
    template = build_model("cnn")
    init_state = copy.deepcopy(template.state_dict())
    params = count_parameters(template)
    config = TrainConfig(arch="cnn", epochs=1, batch_size=bs, lr=args.lr, workers=args.workers, seed=args.seed,
                         device=args.device).validate()
    devnull = open(os.devnull, "w", encoding="utf-8") if args.events == "devnull" else None

    def fresh_model() -> nn.Module:
        m = build_model("cnn")
        m.load_state_dict(init_state)
        return m.to(device)

    def epoch_order(n: int) -> torch.Tensor:
        s = EpochShuffle(n, args.seed)
        s.set_epoch(1)  # what a fresh Trainer's first train_epoch uses
        return torch.tensor(list(iter(s)), dtype=torch.long)

    # One loader per data set, shared by the engine and bare_loader arms (persistent workers stay warm).
    loaders = {
        "main": make_loader(as_mri_dataset(grey, labels), bs, True, args.workers, args.seed),
        "warm": make_loader(as_mri_dataset(warm_grey, warm_labels), bs, True, args.workers, args.seed),
    }
    tensors = {"main": (grey, labels, epoch_order(len(labels))), "warm": (warm_grey, warm_labels, epoch_order(len(warm_labels)))}

    def run_engine(which: str) -> Tuple[float, int, float]:
        model = fresh_model()
        writer = EventWriter(devnull) if devnull else NullWriter()
        trainer = Trainer(model, config, loaders[which], events=writer, progress_every=args.progress_every)
        sync()
        t0 = time.perf_counter()
        stats = trainer.train_epoch()
        sync()
        dt = time.perf_counter() - t0
        return dt, len(loaders[which].dataset), float(stats["train_loss"])

    def bare_step(model, opt, loss_fn, x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    def run_bare_loader(which: str) -> Tuple[float, int, float]:
        model = fresh_model()
        model.train()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
        loss_fn = nn.CrossEntropyLoss()
        loader = loaders[which]
        loader.sampler.set_epoch(1)
        losses = []
        sync()
        t0 = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            losses.append(bare_step(model, opt, loss_fn, x, y))
        sync()
        dt = time.perf_counter() - t0
        return dt, len(loader.dataset), float(torch.stack(losses).mean())

    def run_bare_tensor(which: str) -> Tuple[float, int, float]:
        g, lab, order = tensors[which]
        model = fresh_model()
        model.train()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
        loss_fn = nn.CrossEntropyLoss()
        losses = []
        n = len(lab)
        # A DataLoader iterator draws one base seed from the global RNG; mirror that draw so this
        # arm's dropout masks (and hence its work and losses) match the other two arms exactly.
        torch.empty((), dtype=torch.int64).random_()
        sync()
        t0 = time.perf_counter()
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            # same batch the DataLoader would collate: contiguous N x 3 x 224 x 224 float32
            x = g[idx].unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
            x, y = x.to(device, non_blocking=True), lab[idx].to(device, non_blocking=True)
            losses.append(bare_step(model, opt, loss_fn, x, y))
        sync()
        dt = time.perf_counter() - t0
        return dt, n, float(torch.stack(losses).mean())

    runners = {"engine": run_engine, "bare_loader": run_bare_loader, "bare_tensor": run_bare_tensor}

    def run(arm: str, which: str) -> Tuple[float, int, float]:
        torch.manual_seed(args.seed + 1)  # same dropout masks in every arm: identical work, comparable losses
        return runners[arm](which)

    env = U.environment(args.threads)
    log(f"{data_desc}; cnn ({params:,} params), batch {bs}, {nb} batches x {args.reps} reps, "
        f"threads {args.threads}, device {device}, arms {','.join(args.arms)}")
    for arm in args.arms:  # warm-up: allocator, oneDNN primitive caches, Adam state creation paths
        dt, n, _ = run(arm, "warm")
        log(f"warm-up {arm}: {n / dt:.1f} images/s")

    samples: Dict[str, List[Dict[str, float]]] = {arm: [] for arm in args.arms}
    t_start = time.perf_counter()
    for r in range(args.reps):
        order = args.arms[r % len(args.arms):] + args.arms[:r % len(args.arms)] if args.rotate else args.arms
        for arm in order:
            dt, n, loss = run(arm, "main")
            samples[arm].append({"rep": r, "seconds": dt, "images": n, "images_per_s": n / dt, "mean_loss": loss})
            log(f"rep {r + 1}/{args.reps} {arm}: {n / dt:.1f} images/s ({dt:.2f}s)")
    total_s = time.perf_counter() - t_start
    if devnull:
        devnull.close()
    env["loadavg_end"] = U.loadavg()

    ips = {arm: [s["images_per_s"] for s in samples[arm]] for arm in args.arms}
    stats = {arm: U.spread(ips[arm]) for arm in args.arms}

    def overhead(fast: str, slow: str) -> Optional[Dict[str, Any]]:
        if fast not in ips or slow not in ips:
            return None
        b, e = stats[fast]["median"], stats[slow]["median"]
        paired = [100.0 * (bf - sl) / bf for bf, sl in zip(ips[fast], ips[slow])]
        return {"baseline": fast, "measured": slow, "overhead_pct": 100.0 * (b - e) / b,
                "paired_overhead_pct_median": U.median(paired), "paired_overhead_pct": paired,
                "baseline_noise_pct": stats[fast]["rel_range_pct"]}

    baseline = "bare_tensor" if "bare_tensor" in args.arms else "bare_loader"
    comps = {
        "engine_vs_bare": overhead(baseline, "engine"),
        "engine_vs_bare_loader": overhead("bare_loader", "engine") if baseline != "bare_loader" else None,
        "loader_vs_tensor": overhead("bare_tensor", "bare_loader"),
    }
    head = comps["engine_vs_bare"]
    passed = head["overhead_pct"] <= GOAL_PCT
    losses = [s["mean_loss"] for arm in args.arms for s in samples[arm]]
    loss_diff = max(losses) - min(losses)

    title = (f"## Engine overhead - cnn, batch {bs}, {nb} batches x {args.reps} reps per arm, "
             f"{args.threads} threads, {device}, data {data_desc}")
    lines = []
    if args.quick:
        lines.append("> QUICK SMOKE RUN (--quick): tiny batches, numbers are NOT meaningful.\n")
    lines.append(title + "\n")
    lines.append(U.markdown_table(
        ["arm", "what", "images/s (median)", "min", "max", "range % of median", "s/rep (median)"],
        [[arm, ARM_DOC[arm], U.fmt(stats[arm]["median"]), U.fmt(stats[arm]["min"]), U.fmt(stats[arm]["max"]),
          U.fmt(stats[arm]["rel_range_pct"]), U.fmt(U.median([s["seconds"] for s in samples[arm]]), 2)]
         for arm in args.arms]))
    lines.append("")
    rows = []
    labels_ = {"engine_vs_bare": f"engine vs bare loop ({baseline})",
               "engine_vs_bare_loader": "engine vs bare loop over the same DataLoader (Trainer bookkeeping)",
               "loader_vs_tensor": "DataLoader vs tensor gather (both bare; data pipeline)"}
    for key, c in comps.items():
        if c is None:
            continue
        goal = f"<= {GOAL_PCT:g} %" if key == "engine_vs_bare" else "(informational)"
        verdict = ("PASS" if passed else "FAIL") if key == "engine_vs_bare" else ""
        rows.append([labels_[key], U.fmt(c["overhead_pct"], 2), U.fmt(c["paired_overhead_pct_median"], 2), goal, verdict])
    lines.append(U.markdown_table(
        ["comparison", "overhead % (from medians)", "overhead % (median of paired reps)", "goal", "verdict"], rows))
    lines.append("")
    lines.append(f"Goal: engine overhead <= {GOAL_PCT:g} % vs the bare loop. Measured "
                 f"{head['overhead_pct']:.2f} % -> {'PASS' if passed else 'FAIL'} "
                 f"(baseline arm's own run-to-run range: {head['baseline_noise_pct']:.1f} % of its median; "
                 f"an overhead smaller than that is within noise).")
    lines.append(f"Same work in every arm: mean training losses agree to {loss_diff:.2e} "
                 f"(same init, batch order and dropout seed; ~1e-7 expected with --workers 0). Load average start/end: "
                 f"{env['loadavg_start']} / {env['loadavg_end']}. Timed section: {total_s:.1f}s.")
    report = "\n".join(lines)
    print(report)

    result = {
        "benchmark": NAME,
        "quick": args.quick,
        "goal": {"overhead_pct_max": GOAL_PCT, "passed": passed},
        "config": {"model": "cnn", "parameters": params, "batch_size": bs, "batches_per_rep": nb, "reps": args.reps,
                   "warmup_batches": args.warmup_batches, "lr": args.lr, "optimizer": "Adam", "threads": args.threads,
                   "device": str(device), "workers": args.workers, "arms": args.arms, "rotate": args.rotate,
                   "events": args.events, "progress_every": args.progress_every, "data": data_desc,
                   "seed": args.seed, "deterministic_algorithms": True},
        "environment": env,
        "arms": {arm: {"description": ARM_DOC[arm], "images_per_s": stats[arm], "samples": samples[arm]}
                 for arm in args.arms},
        "comparisons": {k: v for k, v in comps.items() if v is not None},
        "max_mean_loss_diff_across_runs": loss_diff,
        "timed_seconds": total_s,
        "markdown": report,
    }
    path = U.write_json(args.out, result)
    log(f"wrote {path}")
    return 1 if (args.check and not passed) else 0


if __name__ == "__main__":
    sys.exit(main())
