"""benchmarks/bench_detector_files.py: the --quick smoke run on the shipped detector, its clean skip
without the real scans, and its refusal of a missing file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_benchmark

DETECTOR = Path(__file__).resolve().parent.parent / "resources" / "models" / "pattern_detector.onnx"


def test_skips_cleanly_without_the_real_scans(tmp_path):
    out = tmp_path / "r.json"
    proc = run_benchmark("bench_detector_files.py", "--quick", "--data", str(tmp_path / "nowhere"), "--out", str(out),
                         f"shipped={DETECTOR}", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "SKIPPED" in proc.stdout and not out.exists()


def test_refuses_a_missing_file(tmp_path):
    proc = run_benchmark("bench_detector_files.py", "--quick", f"gone={tmp_path / 'gone.onnx'}", timeout=120)
    assert proc.returncode != 0 and "gone.onnx" in proc.stderr


def test_quick_run_times_each_file(real_data, tmp_path):
    if not DETECTOR.is_file():
        pytest.skip("resources/models/pattern_detector.onnx is not shipped in this checkout")
    out = tmp_path / "detector_files_quick.json"
    proc = run_benchmark("bench_detector_files.py", "--quick", "--data", str(real_data), "--out", str(out),
                         f"a={DETECTOR}", f"b={DETECTOR}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text(encoding="utf-8"))
    assert res["quick"] and res["images"] == 8 and set(res["seconds_per_scan"]) == {"a", "b"}
    assert all(v["median"] > 0 for v in res["seconds_per_scan"].values())
    assert res["files"]["a"]["mb"] > 1
