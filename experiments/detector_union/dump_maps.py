"""Dump segmentation logits (plain + hflip TTA) of a detector checkpoint on validation draws or Testing."""
import sys, time, json
from pathlib import Path
import numpy as np, torch
from training.detector import load_detector
from training.detector_export import _context
from training.patterns import PatternDataset, PatternSpec, SHAPES
from breakfix_desktop.core.protocol import NullWriter

ckpt, split, draws, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
shapes = tuple(sys.argv[5].split(",")) if len(sys.argv) > 5 else SHAPES
torch.set_num_threads(2)
model, state = load_detector(ckpt)
model.eval()
cfg = state["config"]
ctx = _context(Path("../shared/data/brain-tumor-mri"), Path(ckpt).parent, cfg, NullWriter())
seed = int(cfg.get("seed", 0))
spec = PatternSpec.test(shapes, ("small",))
if split == "val":
    base = ctx.dataset("val")
    parts = [PatternDataset(base, spec, "validate" if k == 0 else f"validate-{k}", 0.5, seed, with_mask=True) for k in range(draws)]
else:
    base = ctx.dataset("test")
    parts = [PatternDataset(base, spec, "test", 0.5, seed, with_mask=True)]
ds = torch.utils.data.ConcatDataset(parts)
loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=False)
Y, S, SF, L, MK = [], [], [], [], []
t = time.time()
with torch.no_grad():
    for x, y, m in loader:
        lg, seg = model.forward_all(x)
        _, segf = model.forward_all(torch.flip(x, [-1]))
        Y.append(y.numpy()); S.append(seg[:, 0].numpy().astype(np.float32)); SF.append(torch.flip(segf, [-1])[:, 0].numpy().astype(np.float32))
        L.append(lg.numpy()); MK.append(torch.nn.functional.max_pool2d(m, 4)[:, 0].numpy() > 0)
print("scored", len(ds), "in", time.time() - t, "s", flush=True)
np.savez_compressed(out, y=np.concatenate(Y), seg=np.concatenate(S), segf=np.concatenate(SF), logits=np.concatenate(L), mask=np.concatenate(MK))
