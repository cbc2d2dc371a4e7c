"""Compare detector unions on validation (2026-12-06, Table 9): for each union (members named by the
tags of runs/exp/<tag>_val4.npz, <tag>_tri4.npz and optionally <tag>_creeper.npz), the threshold that
the shipping rule would pick (recall on the 4-shape validation draws whose 90 % lower Wilson bound
reaches 0.95), then at that threshold: 4-shape recall and precision, small-triangle recall, and the
creeper recall per variant.  ``--recall R`` instead takes the highest threshold whose plain recall on the
4-shape draws reaches R (no confidence bound): what moving the threshold would buy; ``--target T``
the shipping rule's 90 % bound for target recall T (the export's ``--target-recall T``).
Usage: tri_union.py [--recall R | --target T] A,B A,C ..."""
import sys, numpy as np
from pathlib import Path
from training import detector_metrics as M

def score(path):
    d = np.load(path); n = len(d["y"])
    return d["y"], ((d["seg"] + d["segf"]) / 2).reshape(n, -1).max(1).astype(np.float64)

def union(tags, kind):
    ys, ss = zip(*(score(f"runs/exp/{t}_{kind}.npz") for t in tags))
    assert all((y == ys[0]).all() for y in ys)
    return ys[0], np.maximum.reduce(ss)

args = sys.argv[1:]
rule = (0.95, 0.9)  # (target, confidence): the shipping rule
if args[:1] == ["--recall"]:
    rule, args = (float(args[1]), None), args[2:]
elif args[:1] == ["--target"]:  # the shipping rule (90 % bound) for another target recall
    rule, args = (float(args[1]), 0.9), args[2:]
for arg in args:
    tags = arg.split(",")
    y, s = union(tags, "val4")
    thr = M.threshold_for_recall(y, s, *rule)  # the export's calibration rule (detector_metrics)
    r = (s[y == 1] >= thr).mean(); p = (y[s >= thr] == 1).mean(); fa = (s[y == 0] >= thr).mean()
    yt, st = union(tags, "tri4")
    line = (f"{'+'.join(tags):12s} thr {thr:.3f}  4-shape recall {r:.4f} precision {p:.4f} clean flagged {fa:.4f}"
            f"  auc {M.roc_curve(y, s)['auc']:.4f}  triangles recall {(st[yt == 1] >= thr).mean():.4f}"
            f" precision {(yt[st >= thr] == 1).mean():.4f}")
    if all(Path(f"runs/exp/{t}_creeper.npz").exists() for t in tags):
        c = [np.load(f"runs/exp/{t}_creeper.npz") for t in tags]
        line += "  creeper " + " ".join(f"{k} {(np.maximum.reduce([d[k] for d in c]) >= thr).mean():.3f}"
                                        for k in c[0].files)
    print(line, flush=True)
