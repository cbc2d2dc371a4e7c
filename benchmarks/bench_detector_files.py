#!/usr/bin/env python3
"""Shipped detector files side by side: screening latency of each ONNX detector the app could load.

What it answers: how much a detector change costs the workstation - e.g. the single detector with
mirror-image TTA against the union of two detectors (``detector export --checkpoint A --checkpoint
B``, docs/detector.md), which runs twice the network.  Every file is opened the way the app opens
it (``breakfix_desktop.core.model_registry.ThreadBudget`` session options, CPU provider), on the
same real Testing scans preprocessed once by the app's one path
(``breakfix_desktop.core.preprocess.preprocess_file``), batch 8 (the screening engine's).  Arms are
interleaved (A, B, A, B, ...) after a warm-up each; the median seconds per scan is reported with
its range.  Needs no torch at run time beyond the shared environment report.

    python benchmarks/bench_detector_files.py old=runs/union/pattern_detector.onnx \\
        new=resources/models/pattern_detector.onnx --out benchmarks/results/detector_files.json
    python benchmarks/bench_detector_files.py --quick new=resources/models/pattern_detector.onnx
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

import _benchutil as U


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="NAME=PATH", help="detector ONNX files to compare")
    p.add_argument("--data", type=Path, default=U.DEFAULT_DATA, help="data folder (Testing scans are read)")
    p.add_argument("--images", type=int, default=64, help="Testing scans per repetition (default 64)")
    p.add_argument("--batch", type=int, default=8, help="batch size (default 8, the screening engine's)")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions per file (default 5)")
    p.add_argument("--threads", type=int, default=U.default_threads(), help="onnxruntime intra-op threads")
    p.add_argument("--quick", action="store_true", help="smoke run: 8 scans, 1 repetition (numbers meaningless)")
    p.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/detector_files.json)")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    U.pin_thread_env(args.threads)
    U.setup_paths()
    import numpy as np
    import onnxruntime as ort

    from breakfix_desktop.core.model_registry import ThreadBudget
    from breakfix_desktop.core.preprocess import preprocess_file

    arms = {}
    for spec in args.files:
        name, sep, path = spec.partition("=")
        if not sep or not Path(path).is_file():
            sys.exit(f"bench_detector_files: expected NAME=PATH of an existing file, got {spec!r}")
        arms[name] = Path(path)
    test = args.data / "Testing"
    if not test.is_dir():
        print(f"SKIPPED: {test} not found (the real data set is needed)")
        return 0
    images, repeats = (8, 1) if args.quick else (args.images, args.repeats)
    files = sorted(p for p in test.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    files = files[:: max(1, len(files) // images)][:images]  # spread over the classes
    pixels = np.stack([preprocess_file(f) for f in files]).astype(np.float32)
    options = ThreadBudget(intra_op=args.threads, spinning=False)
    sessions = {n: ort.InferenceSession(str(p), options.session_options(ort), providers=["CPUExecutionProvider"])
                for n, p in arms.items()}

    def run(sess) -> float:
        t0 = time.perf_counter()
        for i in range(0, len(pixels), args.batch):
            sess.run(None, {"pixels": pixels[i:i + args.batch]})
        return (time.perf_counter() - t0) / len(pixels)

    for sess in sessions.values():  # warm-up
        sess.run(None, {"pixels": pixels[:args.batch]})
    samples = {n: [] for n in sessions}
    for _ in range(repeats):
        for n, sess in sessions.items():
            samples[n].append(run(sess))
    result = {"benchmark": "detector_files", "quick": args.quick, "environment": U.environment(args.threads),
              "images": len(pixels), "batch": args.batch, "repeats": repeats,
              "files": {n: {"path": str(p), "mb": round(p.stat().st_size / 1e6, 1)} for n, p in arms.items()},
              "seconds_per_scan": {n: U.spread(v) for n, v in samples.items()},
              "loadavg_end": U.loadavg()}
    print(U.markdown_table(["file", "MB", "ms / scan (median)", "range %"],
                           [[n, result["files"][n]["mb"], U.fmt(1e3 * result["seconds_per_scan"][n]["median"], 1),
                             U.fmt(result["seconds_per_scan"][n]["rel_range_pct"], 0)] for n in arms]))
    out = args.out or U.RESULTS / ("detector_files_quick.json" if args.quick else "detector_files.json")
    U.write_json(out, result)
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
