"""Compare classifiers (checkpoints or make-ensemble .json files) on the validation split carved
from Training - never on Testing - to choose which one ships:

    python configs/gpu/compare_on_validation.py --robust-images 256 --fgsm-eps 0.1 0.01 -- \
        shipped=runs/ens_members/ensemble.json new=runs/gpu1/ensemble_eps02.json

Prints, per model, the clean accuracy on the whole validation split and the robust accuracy that
robust early stopping measures (PGD-10, eps 0.01, alpha 0.0025, random start, seed 0) on
``--robust-images`` scans spread evenly over the split (every class in proportion).  The split
is the one ``train`` holds out (val_fraction 0.1, seed 0), the scans go through the shared
preprocessing (training.data), and the measurement is ``RobustEarlyStopping.measure`` itself,
so the numbers are those of the training runs' histories.
``--fgsm-eps 0.1 0.01`` adds FGSM accuracy (Eq. 1, the attack of Table 3) at each eps on the same
``--robust-images`` scans (``--robust-images 0`` uses the whole split for FGSM and skips PGD).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from training import data as D  # noqa: E402
from training.attacks import FGSM  # noqa: E402
from training.defenses.adversarial import RobustEarlyStopping  # noqa: E402
from training.engine import evaluate, make_loader  # noqa: E402
from training.models import load_model  # noqa: E402
from training.robust_eval import attack_accuracy, spread_images  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", metavar="NAME=PATH")
    p.add_argument("--data", default="../shared/data/brain-tumor-mri")
    p.add_argument("--robust-images", type=int, default=256, help="0 skips the robust measurement")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fgsm-eps", type=float, nargs="*", default=[], metavar="EPS",
                   help="also FGSM accuracy at these eps (same scans as the robust measurement)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    _, val = D.stratified_holdout(D.scan_split(args.data, "Training"), 0.1, 0)
    loader = make_loader(D.MRIDataset(val), 64, False, 0, 0)
    fgsm_scans = spread_images(loader, args.robust_images or len(val.samples)) if args.fgsm_eps else None
    for spec in args.models:
        name, _, path = spec.partition("=")
        t0 = time.time()
        model = load_model(Path(path)).eval()
        clean = evaluate(model, loader, torch.device("cpu"))["accuracy"]
        robust = (RobustEarlyStopping(loader, eps=0.01, steps=10, max_images=args.robust_images).measure(model)
                  if args.robust_images else None)
        fgsm = [f", FGSM eps {e:g} {attack_accuracy(model, fgsm_scans, FGSM(model, eps=e)):.4f}"
                for e in args.fgsm_eps]
        print(f"{name}: validation acc {clean:.4f} ({len(val.samples)} scans)"
              + (f", robust val {robust:.4f} (PGD-10, eps 0.01, {args.robust_images} scans)" if robust is not None else "")
              + "".join(fgsm) + (f" ({len(fgsm_scans[1])} scans)" if fgsm else "")
              + f"  [{time.time() - t0:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
