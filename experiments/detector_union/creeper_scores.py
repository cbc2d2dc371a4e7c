"""Creeper scores (hflip TTA map maximum) of one detector checkpoint on the validation scans, all four
creeper variants; writes OUT.npz with one array per variant.  Usage: creeper_scores.py CKPT OUT.npz [THREADS]"""
import sys, numpy as np, torch
from pathlib import Path
from training.detector import load_detector
from training.detector_export import _context
from training.drills.detector import CREEPER_VARIANTS, _Stamped
from training.attacks import Backdoor
from breakfix_desktop.core.protocol import NullWriter


def creeper_scores(ckpt):
    """{variant: scores of the 571 validation scans with that creeper stamped on}"""
    model, state = load_detector(ckpt); model.eval(); model.tta = "hflip"
    ctx = _context(Path("../shared/data/brain-tumor-mri"), Path("runs/exp"), state["config"], NullWriter())
    val = ctx.dataset("val")
    res = {}
    for key, (loc, inten, units) in CREEPER_VARIANTS.items():
        bd = Backdoor(trigger="creeper", location=loc, intensity=inten, units=units, seed=0)
        ds = _Stamped(val, lambda x, i, bd=bd: bd.apply(x, index=i))
        sc = []
        with torch.no_grad():
            for xb, _ in torch.utils.data.DataLoader(ds, batch_size=64):
                sc.append(model.forward_all(xb)[1].flatten(1).amax(1).numpy())
        res[key] = np.concatenate(sc).astype(np.float64); print(ckpt, key, flush=True)
    return res


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    np.savez(sys.argv[2], **creeper_scores(sys.argv[1]))
