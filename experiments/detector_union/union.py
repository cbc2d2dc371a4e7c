import sys, numpy as np
sys.path.insert(0, "experiments/detector_union")
from rules import recall_at_p
from training import detector_metrics as M
a, b = np.load("runs/exp/shipped_val4.npz"), np.load("runs/exp/camo3_val4.npz"); y = a["y"]; n = len(y)
sa = ((a["seg"] + a["segf"]) / 2).reshape(n, -1).max(1).astype(np.float64)
sb = ((b["seg"] + b["segf"]) / 2).reshape(n, -1).max(1).astype(np.float64)
for name, s in [("A hflip", sa), ("B hflip", sb), ("max(A,B)", np.maximum(sa, sb)), ("mean", (sa+sb)/2),
                ("mapmean", ((a["seg"] + a["segf"] + b["seg"] + b["segf"]) / 4).reshape(n, -1).max(1).astype(np.float64))]:
    for p in (0.95, 0.96, 0.97):
        r, t = recall_at_p(y, s, p)
        print(f"{name:10s} P>={p} recall {r:.4f} thr {t}")
    print("  auc", M.roc_curve(y, s)["auc"])
