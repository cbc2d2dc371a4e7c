"""Recall by contrast per shape on validation (2026-12-06, "Where small triangles slip through"):
for a union of detectors (tags of runs/exp/<tag>_val4.npz and <tag>_tri4.npz, dump_maps.py), at the
threshold the shipping rule picks on the 4-shape draws, the recall of each shape in the contrast bins
of the card (training.detector_export.CONTRAST_BINS) and per size; the same for the triangle draws.
Contrast is recomputed from the seeded pattern draws on the clean validation scans (no model runs).
Usage: tri_contrast.py A,B"""
import sys
from pathlib import Path

import numpy as np
import torch

from breakfix_desktop.core.protocol import NullWriter
from training import detector_metrics as M
from training.detector_export import CONTRAST_BINS, _context
from training.patterns import SHAPES, PatternDataset, PatternSpec, pattern_contrast

tags = sys.argv[1].split(",")
ck = "runs/detector_shipped/checkpoint.pt"  # only its config: the data split and the seed
cfg = torch.load(ck, map_location="cpu", weights_only=False)["config"]
ctx = _context(Path("../shared/data/brain-tumor-mri"), Path(ck).parent, cfg, NullWriter())
base, seed = ctx.dataset("val"), int(cfg.get("seed", 0))


def union(kind):
    out = []
    for t in tags:
        d = np.load(f"runs/exp/{t}_{kind}.npz")
        out.append((d["y"], ((d["seg"] + d["segf"]) / 2).reshape(len(d["y"]), -1).max(1)))
    return out[0][0], np.maximum.reduce([s for _, s in out])


yv, sv = union("val4")
thr = M.threshold_for_recall(yv, sv, 0.95, 0.9)
clean = [base[i][0] for i in range(len(base))]
for kind, shapes in (("val4", SHAPES), ("tri4", ("triangle",))):
    y, s = union(kind)
    spec, rows, off = PatternSpec.test(shapes, ("small",)), [], 0
    for k in range(4):  # the 4 draws of dump_maps.py, in its order
        pd = PatternDataset(base, spec, "validate" if k == 0 else f"validate-{k}", 0.5, seed, with_mask=False)
        for i in pd.poisoned_indices:
            p = pd.placements(i)
            rows.append((p[0].shape, p[0].size, pattern_contrast(clean[i], p), s[off + i] >= thr))
        off += len(pd)
    assert off == len(y), "the draws do not match the dumped maps"
    sh, sz, c, hit = (np.array(v) for v in zip(*rows))
    print(f"{'+'.join(tags)} {kind}: threshold {thr:.4f}, {len(rows)} patterned, recall {hit.mean():.4f}")
    for name in sorted(set(sh)):
        sel = sh == name
        cells = " ".join(f"[{lo:g},{min(hi, 1):g}) {hit[q].mean() if q.any() else float('nan'):.3f}/{q.sum()}"
                         for lo, hi in CONTRAST_BINS for q in [sel & (c >= lo) & (c < hi)])
        print(f"  {name:9s} {sel.sum():4d} recall {hit[sel].mean():.3f} | {cells} | 6-8 px "
              f"{hit[sel & (sz <= 8)].mean():.3f} 9-12 px {hit[sel & (sz > 8)].mean():.3f} | missed "
              f"{(~hit[sel]).sum()}, below 0.2: {((~hit[sel]) & (c[sel] < 0.2)).sum()}")
