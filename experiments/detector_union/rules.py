import sys, numpy as np
from scipy.special import expit
import torch, torch.nn.functional as F
from training import detector_metrics as M

def recall_at_p(y, s, p=0.95):
    pr = M.pr_curve(y, s)
    ok = [(r, t) for p_, r, t in zip(pr["precision"], pr["recall"], pr["thresholds"]) if p_ >= p]
    return max(ok) if ok else (0.0, None)

def rules(d):
    seg, segf = torch.from_numpy(d["seg"])[:, None], torch.from_numpy(d["segf"])[:, None]
    out = {}
    out["max"] = seg.flatten(1).amax(1)
    out["flip_mean_logit_max"] = ((seg + segf) / 2).flatten(1).amax(1)
    out["flip_min_of_max"] = torch.minimum(seg.flatten(1).amax(1), segf.flatten(1).amax(1))
    out["flip_cellmin_max"] = torch.minimum(seg, segf).flatten(1).amax(1)
    for k in (2, 3):
        out[f"avg{k}_max"] = F.avg_pool2d(seg, k, 1, padding=k // 2, count_include_pad=False).flatten(1).amax(1)
        out[f"flip_avg{k}_max"] = F.avg_pool2d((seg + segf) / 2, k, 1, padding=k // 2, count_include_pad=False).flatten(1).amax(1)
    return {k: v.numpy().astype(np.float64) for k, v in out.items()}

for path in (sys.argv[1:] if __name__ == "__main__" else []):
    d = np.load(path); y = d["y"]
    print(path, "n", len(y), "pos", y.sum())
    for name, s in rules(d).items():
        r, t = recall_at_p(y, s)
        print(f"  {name:22s} auc {M.roc_curve(y, s)['auc']:.4f} ap {M.pr_curve(y, s)['average_precision']:.4f} recall@P.95 {r:.4f}")
