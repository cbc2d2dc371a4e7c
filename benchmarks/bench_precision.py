#!/usr/bin/env python3
"""Training-step speed of ``precision`` fp32 vs bf16 (``TrainConfig.precision``), side by side.

The same ``training.engine.Trainer.train_epoch`` runs for both arms, on the same model
architecture, the same in-memory batch stream and thread count:

* ``fp32`` - the default: float32 forward and backward;
* ``bf16`` - forward passes under ``torch.autocast(dtype=bfloat16)`` with the model in
  ``channels_last`` memory (weights, gradients and Adam state stay float32).

Each measurement is one epoch over ``--images`` synthetic 224 x 224 scans (speed does not depend on
the pixels), batch ``--batch``; one untimed warm-up epoch per arm, then ``--repeats`` epochs
interleaved fp32, bf16, fp32, ... (``--rotate`` alternates who goes first).  Reported per model:
median seconds per image of each arm, the speed-up fp32 / bf16 of the medians and the median of
the paired per-repetition ratios.

``--quality`` also trains the CNN from the same initial weights for ``--quality-epochs`` epochs on
a stratified subset of the real Training split in both precisions and reports Testing accuracy of
each (bf16 must not cost accuracy): a check that the speed-up is usable, not a timing.

    python benchmarks/bench_precision.py --models cnn resnet18 resnet50 --threads 1
    python benchmarks/bench_precision.py --models cnn --quality --quality-images 1024 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _benchutil as U  # noqa: E402

NAME = "precision"
ARMS = ("fp32", "bf16")
CNN_KWARGS = {"blocks": 5, "width": 16, "hidden": 256, "pool": 4, "dropout": 0.3}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["cnn", "resnet18", "resnet50"],
                   choices=["cnn", "resnet18", "resnet50"])
    p.add_argument("--images", type=int, default=64, help="images per timed epoch (default 64)")
    p.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per arm (default 3)")
    p.add_argument("--rotate", action="store_true", help="alternate which arm runs first")
    p.add_argument("--threads", type=int, help="torch threads (default: cores this process may use)")
    p.add_argument("--quality", action="store_true", help="also compare Testing accuracy of real-data CNN runs")
    p.add_argument("--quality-images", type=int, default=1024, help="stratified Training subset (default 1024)")
    p.add_argument("--quality-test-images", type=int, default=400, help="stratified Testing subset (default 400)")
    p.add_argument("--quality-epochs", type=int, default=2)
    p.add_argument("--data", type=Path, default=U.DEFAULT_DATA)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help=f"JSON results (default benchmarks/results/{NAME}.json)")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    threads = args.threads or U.default_threads()
    U.pin_thread_env(threads)
    U.setup_paths()
    import torch

    torch.set_num_threads(threads)
    from training.engine import NullWriter, Trainer, TrainConfig, make_loader
    from training.models import build_model

    def log(msg: str) -> None:
        print(msg, flush=True)

    g = torch.Generator().manual_seed(args.seed)
    xs = torch.rand(args.images, 3, args.image_size, args.image_size, generator=g)
    ys = torch.randint(0, 4, (args.images,), generator=g)
    data = torch.utils.data.TensorDataset(xs, ys)

    def trainer(arch: str, precision: str, init: Dict[str, Any], loader) -> Trainer:
        kwargs = CNN_KWARGS if arch == "cnn" else {}
        cfg = TrainConfig(arch=arch, epochs=1, batch_size=args.batch, lr=1e-4, device="cpu", model_kwargs=kwargs,
                          precision=precision).validate()
        model = build_model(arch, **kwargs)
        model.load_state_dict(init)
        return Trainer(model, cfg, loader, events=NullWriter())

    results: Dict[str, Any] = {}
    for arch in args.models:
        torch.manual_seed(args.seed)
        init = build_model(arch, **(CNN_KWARGS if arch == "cnn" else {})).state_dict()
        loader = make_loader(data, args.batch, False, 0, args.seed)
        trainers = {arm: trainer(arch, arm, init, loader) for arm in ARMS}
        for arm in ARMS:
            trainers[arm].train_epoch()  # warm-up (oneDNN kernel selection, allocator)
        times: Dict[str, List[float]] = {arm: [] for arm in ARMS}
        for rep in range(args.repeats):
            order = list(ARMS) if not (args.rotate and rep % 2) else list(reversed(ARMS))
            for arm in order:
                t0 = time.perf_counter()
                trainers[arm].train_epoch()
                times[arm].append((time.perf_counter() - t0) / args.images)
        paired = sorted(a / b for a, b in zip(times["fp32"], times["bf16"]))
        results[arch] = {
            "seconds_per_image": {arm: U.spread(times[arm]) for arm in ARMS},
            "speedup_fp32_over_bf16": U.median(times["fp32"]) / U.median(times["bf16"]),
            "speedup_paired_median": U.median(paired),
        }
        log(f"{arch:<9} fp32 {U.median(times['fp32']) * 1000:7.1f} ms/image   bf16 "
            f"{U.median(times['bf16']) * 1000:7.1f} ms/image   fp32 / bf16 = "
            f"{results[arch]['speedup_fp32_over_bf16']:.2f}x")

    quality: Optional[Dict[str, Any]] = None
    if args.quality:
        quality = _quality(args, log)

    rows = [[a, U.fmt(r["seconds_per_image"]["fp32"]["median"] * 1000), U.fmt(r["seconds_per_image"]["bf16"]["median"] * 1000),
             f"{r['speedup_fp32_over_bf16']:.2f}x", f"{r['speedup_paired_median']:.2f}x"] for a, r in results.items()]
    print(U.markdown_table(["model", "fp32 ms/image", "bf16 ms/image", "fp32 / bf16", "paired median"], rows))
    out = args.out or (U.RESULTS / f"{NAME}.json")
    U.write_json(out, {"benchmark": NAME, "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                       "models": results, "quality": quality, "environment": U.environment(threads)})
    log(f"results: {out}")
    return 0


def _quality(args, log) -> Dict[str, Any]:
    """Both precisions train the CNN from the same weights on the same real subset; Testing accuracy."""
    import torch

    from training import cli as C
    from training import data as D
    from training.engine import NullWriter, Trainer, TrainConfig, evaluate, make_loader, seed_everything
    from training.models import build_model

    if not (args.data / "Training").is_dir():
        log(f"--quality: no data set at {args.data}; skipped")
        return {"skipped": f"no data set at {args.data}"}
    train = C._subset(D.scan_split(args.data, "Training"), args.quality_images, args.seed)
    test = C._subset(D.scan_split(args.data, "Testing"), args.quality_test_images, args.seed)
    train_ds, test_ds = D.MRIDataset(train), D.MRIDataset(test)
    torch.manual_seed(args.seed)
    init = build_model("cnn", **CNN_KWARGS).state_dict()
    out: Dict[str, Any] = {"train_images": len(train_ds), "test_images": len(test_ds), "epochs": args.quality_epochs}
    for arm in ARMS:
        seed_everything(args.seed)
        cfg = TrainConfig(arch="cnn", epochs=args.quality_epochs, batch_size=32, lr=1e-3, device="cpu",
                          model_kwargs=CNN_KWARGS, precision=arm).validate()
        model = build_model("cnn", **CNN_KWARGS)
        model.load_state_dict(init)
        t0 = time.perf_counter()
        tr = Trainer(model, cfg, make_loader(train_ds, 32, True, 0, args.seed), events=NullWriter())
        tr.fit()
        seconds = time.perf_counter() - t0
        acc = evaluate(tr.model, make_loader(test_ds, 64, False, 0, 0), torch.device("cpu"))["accuracy"]  # fp32 eval
        out[arm] = {"test_accuracy": acc, "train_seconds": seconds,
                    "train_loss": [h["train_loss"] for h in tr.history]}
        log(f"quality {arm}: Testing accuracy {acc:.3f} after {args.quality_epochs} epochs ({seconds:.0f} s)")
    return out


if __name__ == "__main__":
    sys.exit(main())
