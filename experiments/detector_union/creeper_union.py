import sys, numpy as np, torch
from pathlib import Path
from training.detector import load_detector
from training.detector_export import _context
from training.drills.detector import CREEPER_VARIANTS, _Stamped
from training.attacks import Backdoor
from breakfix_desktop.core.protocol import NullWriter
torch.set_num_threads(1)
res = {}
for tag, ckpt in (("A", "runs/detector_shipped/checkpoint.pt"), ("B", "runs/drills/detector-camo3/detector/checkpoint.pt")):
    model, state = load_detector(ckpt); model.eval(); model.tta = "hflip"
    ctx = _context(Path("../shared/data/brain-tumor-mri"), Path("runs/exp"), state["config"], NullWriter())
    val = ctx.dataset("val")
    for key, (loc, inten, units) in CREEPER_VARIANTS.items():
        bd = Backdoor(trigger="creeper", location=loc, intensity=inten, units=units, seed=0)
        ds = _Stamped(val, lambda x, i, bd=bd: bd.apply(x, index=i))
        sc = []
        with torch.no_grad():
            for xb, _ in torch.utils.data.DataLoader(ds, batch_size=64):
                sc.append(model.forward_all(xb)[1].flatten(1).amax(1).numpy())
        res[(tag, key)] = np.concatenate(sc).astype(np.float64); print(tag, key, flush=True)
np.savez("runs/exp/creeper_union.npz", **{f"{t}_{k}": v for (t, k), v in res.items()})
for thr in (-9.0, -7.886, -6.547, -6.337, -5.678):
    print(thr, " ".join(f"{k}: A {(res[('A',k)]>=thr).mean():.3f} B {(res[('B',k)]>=thr).mean():.3f} max {(np.maximum(res[('A',k)],res[('B',k)])>=thr).mean():.3f}" for k in CREEPER_VARIANTS))
