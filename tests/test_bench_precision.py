"""benchmarks/bench_precision.py (fp32 vs bf16 training steps) end to end on a tiny run."""

from __future__ import annotations

import json

from conftest import load_benchmark


def test_bench_precision_tiny_run_writes_both_arms(tmp_path, restore_threads, make_dataset, capsys):
    bench = load_benchmark("bench_precision.py")
    out = tmp_path / "precision.json"
    root = make_dataset(per_class=6, test_per_class=2)
    assert bench.main(["--models", "cnn", "--images", "4", "--batch", "2", "--image-size", "64", "--repeats", "2",
                       "--rotate", "--threads", "1", "--quality", "--quality-images", "16", "--quality-test-images",
                       "8", "--quality-epochs", "1", "--data", str(root), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    r = data["models"]["cnn"]
    assert set(r["seconds_per_image"]) == {"fp32", "bf16"} and r["seconds_per_image"]["bf16"]["n"] == 2
    assert r["speedup_fp32_over_bf16"] > 0
    q = data["quality"]
    assert q["train_images"] == 16 and 0.0 <= q["fp32"]["test_accuracy"] <= 1.0 and "bf16" in q
    assert "fp32 / bf16" in capsys.readouterr().out
