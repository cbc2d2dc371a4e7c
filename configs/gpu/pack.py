"""Bring training checkpoints back from a lent GPU machine, whose returned files are limited
(at most 8 files of 16 MiB each, 64 MiB in all), and restore them here.

    python configs/gpu/pack.py pack RUN_DIR NAME OUT_DIR     # there: best.pt (or checkpoint.pt)
    python configs/gpu/pack.py unpack IN_DIR NAME RUN_DIR    # here: RUN_DIR/best.pt again

``pack`` keeps what export, make-ensemble and ``--init`` read (format, config, epoch, model,
history, provenance), drops the optimiser, scheduler and RNG state (resuming is not possible from
the result), stores weight tensors of more than 4096 elements as float16 (BatchNorm statistics and
other small tensors stay float32; the shipped ResNet graphs store float16 weights anyway) and
splits the file into parts of at most 15 MiB.  ``unpack`` joins the parts, casts back to float32,
records the round trip in ``provenance["packed"]`` and writes ``RUN_DIR/best.pt``.
Needs torch only.
"""
from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import torch

PART = 15 * 1024 * 1024
KEEP = ("format", "config", "epoch", "model", "history", "provenance")


def pack(run_dir: Path, name: str, out_dir: Path) -> None:
    src = run_dir / "best.pt"
    if not src.exists():
        src = run_dir / "checkpoint.pt"
    state = torch.load(src, map_location="cpu", weights_only=False)
    slim = {k: state[k] for k in KEEP if k in state}
    slim["model"] = {k: (v.half() if v.is_floating_point() and v.numel() > 4096 else v)
                     for k, v in state["model"].items()}
    slim["packed_from"] = src.name
    buf = io.BytesIO()
    torch.save(slim, buf)
    data = buf.getvalue()
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(data), PART):
        (out_dir / f"{name}.pt.part{i // PART}").write_bytes(data[i:i + PART])
    print(f"{src} (epoch {state.get('epoch')}) -> {out_dir}/{name}.pt.part* "
          f"({len(data) / 2**20:.1f} MiB, sha256 {hashlib.sha256(data).hexdigest()[:12]})")


def unpack(in_dir: Path, name: str, run_dir: Path) -> None:
    parts = sorted(in_dir.glob(f"{name}.pt.part*"), key=lambda p: int(p.name.rsplit("part", 1)[1]))
    if not parts:
        raise SystemExit(f"{in_dir}: no {name}.pt.part* files")
    data = b"".join(p.read_bytes() for p in parts)
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    state["model"] = {k: (v.float() if v.is_floating_point() else v) for k, v in state["model"].items()}
    prov = dict(state.get("provenance") or {})
    prov["packed"] = {"from": state.pop("packed_from", "best.pt"), "float16_weights": True,
                      "sha256": hashlib.sha256(data).hexdigest()}
    state["provenance"] = prov
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(state, run_dir / "best.pt")
    print(f"{len(parts)} parts -> {run_dir}/best.pt (epoch {state.get('epoch')})")


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] not in ("pack", "unpack"):
        raise SystemExit(__doc__)
    (pack if sys.argv[1] == "pack" else unpack)(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
