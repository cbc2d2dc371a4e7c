"""benchmarks/bench_screening.py: the --quick smoke run end to end (speed arms, int8, UI stall in the
real main window, cold start), and its clean skip without the real scans."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import run_benchmark

def run_bench(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_benchmark("bench_screening.py", *args, timeout=timeout)


def test_skips_cleanly_without_the_real_scans(tmp_path):
    out = tmp_path / "r.json"
    proc = run_bench("--quick", "--data", str(tmp_path / "nowhere"), "--out", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "SKIPPED" in proc.stdout and not out.exists()


def test_quick_run_measures_every_section(real_data, tmp_path):
    out = tmp_path / "screening_quick.json"
    proc = run_bench("--quick", "--images", "4", "--ui-scans", "8", "--accuracy-limit", "8", "--data", str(real_data),
                     "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text(encoding="utf-8"))
    assert res["quick"] and "QUICK SMOKE RUN" in proc.stdout
    arms = res["speed"]["results"]
    for name in ("pipeline torch eager", "pipeline onnxruntime ALL", "pipeline onnxruntime DISABLE_ALL",
                 "cnn_clean onnxruntime fp32 ALL", "cnn_clean onnxruntime int8 static ALL"):
        assert arms[name]["images_per_s"]["median"] > 0, name
    assert arms["pipeline onnxruntime ALL"]["speedup_vs_torch"] > 0
    assert 0 < arms["pipeline onnxruntime ALL"]["fraction_of_matmul"]
    assert res["speed"]["parity"]["ensemble_logit_max_abs_diff"] < 1e-3
    assert set(res["speed"]["cnn_clean"]["accuracy"]) == {"fp32", "int8 static"}
    assert res["speed"]["engine"]["verdicts"]["error"] == 0
    ui = res["ui"]
    assert ui["scans"] == 8 and not ui["timed_out"] and sum(ui["verdicts"].values()) == 8
    assert ui["whole_batch"]["max_gap_ms"] > 0
    assert res["cold_start"]["ratio"] > 0
