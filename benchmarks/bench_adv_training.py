#!/usr/bin/env python3
"""Adversarial training cost: wall time of fast AT vs PGD AT to reach the same robust accuracy.

Two arms train the same model from the **same clean initial weights** on the **same data subset**
(same images, same batch order per epoch, the same RNG seed at the start of every arm-epoch):

* ``fast`` - :class:`training.defenses.FastAdversarialTraining` (FGSM from a random start,
  alpha = 1.25 eps, batch replaced; Wong et al. 2020): one extra gradient per batch;
* ``pgd``  - :class:`training.defenses.AdversarialTraining` ``("pgd")``, what
  ``python -m training train --adv pgd`` runs (paper §5.2: PGD copies appended to the batch;
  ``--pgd-steps`` steps, alpha = 2.5 eps / steps): ``steps`` extra gradients per batch and a
  doubled batch.

Both draw eps per batch from ``--eps-range`` (default the paper's [0.001, 0.01]); ``--fast-eps``
gives the fast arm its own range, e.g. ``0.01 0.01``: Wong et al. train at the eps they evaluate,
where the paper's recipe (which the pgd arm follows) spreads eps over a range.  Epochs are
interleaved (fast 1, pgd 1, fast 2, pgd 2, ... ; ``--rotate`` alternates who goes first) in one
process, so machine load hits both arms alike.  After each epoch the robust accuracy of each arm
is measured - untimed - with PGD (``--eval-steps`` steps, eps ``--eval-eps``, alpha eps/4, one
seeded random start) on ``--eval-images`` held-out images (a stratified subset of Testing).

The headline: the **training seconds** each arm needs to reach the target robust accuracy, within
one point (``--tolerance`` 0.01).  The target is ``--target`` or, by default, the highest robust
accuracy *both* arms reach (``min(best_fast, best_pgd)``), so both arms reach it by construction
and the ratio ``pgd_seconds / fast_seconds`` compares like with like.  The clean initial model
is ``--init CHECKPOINT`` or is trained here first for ``--clean-epochs`` (its time is reported but
not counted).

Data: the real data set (../shared/data/brain-tumor-mri) when present, otherwise (or with
``--synthetic``) generated scans with a learnable signal (a bright blob in one quadrant per class).

    python benchmarks/bench_adv_training.py --quick               # seconds-long smoke run, numbers meaningless
    python benchmarks/bench_adv_training.py --images 1024 --epochs 8 --init runs/cnn_clean/checkpoint.pt
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _benchutil as U  # noqa: E402

NAME = "adv_training"
ARMS = ("fast", "pgd")
#: the CNN of configs/cnn_clean.toml (the shipped CNN_clean)
CNN_CLEAN_KWARGS = {"blocks": 5, "width": 16, "hidden": 256, "pool": 4, "dropout": 0.3}
TINY_KWARGS = {"blocks": 2, "width": 4, "hidden": 16, "pool": 4, "dropout": 0.0}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="seconds-long smoke run (tiny CNN, 32 images, 2 epochs); numbers are not meaningful")
    p.add_argument("--model", default="cnn", choices=["cnn", "resnet18"], help="architecture (default cnn)")
    p.add_argument("--model-kwargs", type=json.loads,
                   help="JSON model kwargs for the CNN (default configs/cnn_clean.toml's; quick: a tiny CNN)")
    p.add_argument("--init", type=Path, help="clean checkpoint.pt to start both arms from (else trained here)")
    p.add_argument("--clean-epochs", type=int, help="epochs of the clean model trained here (default 3; quick 1)")
    p.add_argument("--images", type=int, help="training images, stratified subset of Training (default 512; quick 32)")
    p.add_argument("--eval-images", type=int, help="held-out images for robust accuracy (default 128; quick 16)")
    p.add_argument("--epochs", type=int, help="adversarial epochs per arm (default 6; quick 2)")
    p.add_argument("--batch-size", type=int, help="default 32 (quick 8)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate of the adversarial phase (default 1e-4)")
    p.add_argument("--clean-lr", type=float, default=1e-3, help="learning rate of the clean phase (default 1e-3)")
    p.add_argument("--eps-range", type=float, nargs=2, default=[0.001, 0.01], metavar=("MIN", "MAX"),
                   help="training eps drawn per batch (default: the paper's 0.001 0.01)")
    p.add_argument("--fast-eps", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="eps range of the fast arm (default: --eps-range); Wong et al.'s recipe is the "
                        "evaluation eps, e.g. 0.01 0.01")
    p.add_argument("--pgd-steps", type=int, default=5, help="PGD steps of the pgd arm (default 5)")
    p.add_argument("--eval-eps", type=float, default=0.01, help="eps of the robust-accuracy measurement (default 0.01)")
    p.add_argument("--eval-steps", type=int, default=10, help="PGD steps of the measurement (default 10)")
    p.add_argument("--target", type=float, help="robust accuracy to reach (default: min of the two arms' best)")
    p.add_argument("--tolerance", type=float, default=0.01, help="'reached' = within this of the target (default 0.01)")
    p.add_argument("--rotate", action="store_true", help="alternate which arm trains first each epoch")
    p.add_argument("--threads", type=int, help="torch threads (default: cores this process may use)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--data", type=Path, default=U.DEFAULT_DATA, help="data root (default %(default)s)")
    p.add_argument("--synthetic", action="store_true", help="generated scans even if the real data is present")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help=f"JSON results (default benchmarks/results/{NAME}.json)")
    a = p.parse_args(argv)
    q = a.quick
    a.images = a.images or (32 if q else 512)
    a.eval_images = a.eval_images or (16 if q else 128)
    a.epochs = a.epochs or (2 if q else 6)
    a.batch_size = a.batch_size or (8 if q else 32)
    a.clean_epochs = a.clean_epochs if a.clean_epochs is not None else (1 if q else 3)
    a.threads = a.threads or U.default_threads()
    if a.model_kwargs is None:
        a.model_kwargs = (TINY_KWARGS if q else CNN_CLEAN_KWARGS) if a.model == "cnn" else {}
    a.out = a.out or (U.RESULTS / f"{NAME}{'_quick' if q else ''}.json")
    for name in ("images", "eval_images", "epochs", "batch_size", "threads", "pgd_steps", "eval_steps"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.fast_eps is not None and not 0 < a.fast_eps[0] <= a.fast_eps[1] <= 1:
        raise SystemExit(f"--fast-eps: need 0 < MIN <= MAX <= 1, got {a.fast_eps}")
    if not 0 < a.eps_range[0] <= a.eps_range[1] <= 1:
        p.error("--eps-range: need 0 < MIN <= MAX <= 1")
    if a.init is not None and not a.init.is_file():
        p.error(f"--init: {a.init} not found")
    return a


def synthetic_images(n: int, seed: int):
    """Grey 224 x 224 'scans' whose class is a bright blob in one quadrant (tests/conftest.py's idea)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    grey = (torch.randn(n, 224, 224, generator=g) * 0.04 + 0.16).clamp(0, 1)
    for i, label in enumerate(labels.tolist()):
        r, c = divmod(label, 2)
        grey[i, r * 112 + 28: r * 112 + 84, c * 112 + 28: c * 112 + 84] += 0.6
    return grey.clamp(0, 1), labels


def load_data(args, log) -> Tuple[Any, Any, str]:
    """(train dataset, eval (images, labels), description)."""
    import torch
    from torch.utils.data import TensorDataset

    from training import cli as C
    from training import data as D

    if not args.synthetic and (Path(args.data) / "Training").is_dir():
        t0 = time.perf_counter()
        train = D.MRIDataset(C._subset(D.scan_split(args.data, "Training"), args.images, args.seed))
        test = D.MRIDataset(C._subset(D.scan_split(args.data, "Testing"), args.eval_images, args.seed))
        log(f"decoded {len(train)} + {len(test)} real images in {time.perf_counter() - t0:.1f}s (not timed)")
        x_eval = test.grey.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
        return train, (x_eval, test.labels), (f"real ({args.data}: {len(train)} Training images, "
                                              f"{len(test)} Testing images for the robust accuracy)")
    grey, labels = synthetic_images(args.images + args.eval_images, args.seed)
    x = grey.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    n = args.images
    return (TensorDataset(x[:n], labels[:n]), (x[n:], labels[n:]),
            f"synthetic ({n} training + {args.eval_images} eval images, quadrant blobs)")


def time_to_target(epochs: List[Dict[str, Any]], target: float, tol: float) -> Optional[Dict[str, Any]]:
    """First epoch whose robust accuracy is within ``tol`` of ``target`` (or above), with its cumulative seconds."""
    for row in epochs:
        if row["robust_acc"] >= target - tol - 1e-12:
            return {"epoch": row["epoch"], "seconds": row["cum_seconds"]}
    return None


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    U.pin_thread_env(args.threads)
    U.setup_paths()

    import torch

    from breakfix_desktop.core.protocol import NullWriter
    from training.attacks import PGD
    from training.defenses import AdversarialTraining, FastAdversarialTraining
    from training.engine import TrainConfig, Trainer, make_loader, resolve_device, seed_everything
    from training.models import build_model, count_parameters
    from training.robust_eval import attack_accuracy

    def log(msg: str) -> None:
        print(f"[{NAME}] {msg}", file=sys.stderr, flush=True)

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    train_ds, eval_set, data_desc = load_data(args, log)
    kwargs = args.model_kwargs if args.model == "cnn" else {}

    def config(lr: float, epochs: int) -> TrainConfig:
        return TrainConfig(arch=args.model, epochs=epochs, batch_size=args.batch_size, lr=lr, seed=args.seed,
                           device=str(device), val_fraction=0.0, model_kwargs=kwargs).validate()

    def loader():
        return make_loader(train_ds, args.batch_size, True, 0, args.seed)

    def robust(model) -> Tuple[float, float]:
        attack = PGD(model, eps=args.eval_eps, alpha=args.eval_eps / 4, steps=args.eval_steps, random_start=True,
                     seed=args.seed)
        return attack_accuracy(model, eval_set, attack, device=device), attack_accuracy(model, eval_set, device=device)

    # -- the clean initial model ------------------------------------------------------------
    clean_info: Dict[str, Any]
    if args.init is not None:
        state = torch.load(args.init, map_location="cpu", weights_only=False)
        if state.get("format") != "breakfix-checkpoint/1":
            log(f"--init: {args.init} is not a BreakFix checkpoint")
            return 2
        cfg = state["config"]
        if cfg["arch"] != args.model or (args.model == "cnn" and cfg.get("model_kwargs", {}) != kwargs):
            log(f"--init: {args.init} is {cfg['arch']} {cfg.get('model_kwargs')}, not {args.model} {kwargs}")
            return 2
        template = build_model(args.model, **kwargs)
        template.load_state_dict(state["model"])
        clean_info = {"source": str(args.init), "epochs_done": state.get("epoch")}
    else:
        torch.manual_seed(args.seed)
        template = build_model(args.model, **kwargs)
        log(f"training the clean initial model: {args.clean_epochs} epoch(s) (not counted)")
        t0 = time.perf_counter()
        Trainer(template, config(args.clean_lr, args.clean_epochs), loader(), events=NullWriter()).fit()
        clean_info = {"source": "trained here", "epochs": args.clean_epochs, "lr": args.clean_lr,
                      "seconds": round(time.perf_counter() - t0, 2)}
    template = template.to(device).eval()
    clean_info["robust_acc"], clean_info["clean_acc"] = robust(template)
    log(f"clean init: accuracy {clean_info['clean_acc']:.3f}, robust accuracy {clean_info['robust_acc']:.3f}")
    init_state = copy.deepcopy(template.state_dict())

    # -- the two arms, epochs interleaved -----------------------------------------------------
    lo, hi = args.eps_range
    fast_lo, fast_hi = args.fast_eps or args.eps_range
    recipes = {"fast": FastAdversarialTraining(fast_lo, fast_hi),
               "pgd": AdversarialTraining("pgd", lo, hi, steps=args.pgd_steps)}
    trainers: Dict[str, Trainer] = {}
    for arm in ARMS:
        model = build_model(args.model, **kwargs)
        model.load_state_dict(init_state)
        trainers[arm] = Trainer(model, config(args.lr, args.epochs), loader(), events=NullWriter(),
                                **recipes[arm].hooks())
    rows: Dict[str, List[Dict[str, Any]]] = {arm: [] for arm in ARMS}
    cum = {arm: 0.0 for arm in ARMS}
    for epoch in range(1, args.epochs + 1):
        order = list(ARMS) if not (args.rotate and epoch % 2 == 0) else list(reversed(ARMS))
        for arm in order:
            tr = trainers[arm]
            torch.manual_seed(args.seed * 1_000_003 + epoch)  # both arms' epoch e start from the same RNG state
            sync()
            t0 = time.perf_counter()
            stats = tr.train_epoch()
            sync()
            dt = time.perf_counter() - t0
            tr.epoch += 1
            cum[arm] += dt
            rob, clean = robust(tr.model)
            rows[arm].append({"epoch": epoch, "train_seconds": round(dt, 3), "cum_seconds": round(cum[arm], 3),
                              "train_loss": stats["train_loss"], "robust_acc": rob, "clean_acc": clean})
            log(f"{arm:<4} epoch {epoch}: {dt:7.1f}s (total {cum[arm]:7.1f}s)  robust {rob:.3f}  clean {clean:.3f}")

    best = {arm: max(r["robust_acc"] for r in rows[arm]) for arm in ARMS}
    target = args.target if args.target is not None else min(best.values())
    notes: List[str] = []
    if target <= clean_info["robust_acc"] + args.tolerance:
        notes.append(f"the target {target:.3f} is not above the clean model's own robust accuracy "
                     f"{clean_info['robust_acc']:.3f}: neither arm had to improve, so the times say nothing; "
                     "train longer / on more images")
        log("WARNING: " + notes[-1])
    reached = {arm: time_to_target(rows[arm], target, args.tolerance) for arm in ARMS}
    ratio = (reached["pgd"]["seconds"] / reached["fast"]["seconds"]
             if reached["fast"] and reached["pgd"] and reached["fast"]["seconds"] > 0 else None)
    result = {
        "benchmark": NAME,
        "quick": args.quick,
        "config": {"model": args.model, "model_kwargs": kwargs, "parameters": count_parameters(template),
                   "images": len(train_ds), "eval_images": len(eval_set[1]), "epochs": args.epochs,
                   "batch_size": args.batch_size, "lr": args.lr, "eps_range": [lo, hi],
                   "fast_eps_range": [fast_lo, fast_hi], "pgd_steps": args.pgd_steps,
                   "pgd_alpha": "2.5 * eps / steps", "fast_alpha": "1.25 * eps",
                   "eval": {"attack": "PGD", "eps": args.eval_eps, "alpha": args.eval_eps / 4,
                            "steps": args.eval_steps, "random_start": "seeded", "timed": False},
                   "target": target, "target_rule": "given" if args.target is not None else "min of the arms' best",
                   "tolerance": args.tolerance, "rotate": args.rotate, "seed": args.seed, "device": str(device),
                   "data": data_desc},
        "clean_init": clean_info,
        "arms": {arm: {"recipe": repr(recipes[arm]), "epochs": rows[arm], "best_robust_acc": best[arm],
                       "reached": reached[arm]} for arm in ARMS},
        "ratio_pgd_over_fast_seconds": ratio,
        "notes": notes,
        "environment": {**U.environment(args.threads), "loadavg_end": U.loadavg()},
    }
    U.write_json(args.out, result)
    log(f"wrote {args.out}")
    table = U.markdown_table(
        ["arm", "best robust acc", "epoch reached", "train seconds to target", "s / epoch (median)"],
        [[arm, f"{best[arm]:.3f}", reached[arm]["epoch"] if reached[arm] else "-",
          U.fmt(reached[arm]["seconds"] if reached[arm] else None),
          U.fmt(U.median([r["train_seconds"] for r in rows[arm]]))] for arm in ARMS])
    print(f"target robust accuracy {target:.3f} (within {args.tolerance:g}); data: {data_desc}")
    print(table)
    print(f"PGD AT / fast AT time to target: {ratio:.2f}x" if ratio else "PGD AT / fast AT: target not reached")
    for note in notes:
        print(f"NOTE: {note}")
    if args.quick:
        print("(--quick: a smoke run; the numbers are not meaningful)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
