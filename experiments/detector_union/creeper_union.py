import sys, numpy as np, torch
sys.path.insert(0, "experiments/detector_union")
from creeper_scores import creeper_scores
from training.drills.detector import CREEPER_VARIANTS
torch.set_num_threads(1)
res = {}
for tag, ckpt in (("A", "runs/detector_shipped/checkpoint.pt"), ("B", "runs/drills/detector-camo3/detector/checkpoint.pt")):
    for key, v in creeper_scores(ckpt).items():
        res[(tag, key)] = v
np.savez("runs/exp/creeper_union.npz", **{f"{t}_{k}": v for (t, k), v in res.items()})
for thr in (-9.0, -7.886, -6.547, -6.337, -5.678):
    print(thr, " ".join(f"{k}: A {(res[('A',k)]>=thr).mean():.3f} B {(res[('B',k)]>=thr).mean():.3f} max {(np.maximum(res[('A',k)],res[('B',k)])>=thr).mean():.3f}" for k in CREEPER_VARIANTS))
