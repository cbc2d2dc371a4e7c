"""benchmarks/bench_drill_ui.py: the --quick smoke run end to end (a fake backend streaming into the
real Drills page through QtBackendJob, heartbeat stalls, curve update cost vs history size), and the
fake backend's stream on its own."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO, run_benchmark

from breakfix_desktop.core.drills import DrillRun


def test_fake_backend_streams_valid_multi_series_events():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "_fake_drill_backend.py"), "--rate", "400",
                           "--seconds", "0.5", "--batches", "20", "--", "drill", "fig6-drunk-curves"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    run = DrillRun("fake", "drill:fig6-drunk-curves", "fake")
    for line in proc.stdout.splitlines():
        run.apply_line(line)
    assert not run.invalid_lines
    assert [d.name for d in run.tagged_series] == ["clean", "attacked", "defended"]
    assert [d.role for d in run.tagged_series] == ["clean", "attacked", "defended"]
    assert sum(len(d.batch_loss) for d in run.tagged_series) > 150  # 200 events, ~10 % epoch ends
    assert all(len(d.epochs) >= 2 for d in run.tagged_series)
    assert run.step_results[-1]["status"] == "ok"


def test_quick_run_measures_stalls_and_plot_cost(tmp_path):
    out = tmp_path / "drill_ui_quick.json"
    proc = run_benchmark("bench_drill_ui.py", "--quick", "--seconds", "1.5", "--sizes", "1000,5000", "--repeats", "2",
                         "--warmup", "1", "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text(encoding="utf-8"))
    assert res["benchmark"] == "drill_ui" and res["quick"] is True
    stalls = res["stalls"]["arms"]
    assert set(stalls) == {"baseline", "backend"}
    backend = stalls["backend"]
    assert backend["all_ok"] and backend["events"] >= 150  # 100/s for 1.5 s, through the real job
    assert backend["curve_updates"] > 0 and stalls["baseline"]["curve_updates"] == 0
    assert stalls["baseline"]["heartbeats"] > 500 and backend["max_ms"] > 0
    rows = {arm: a["rows"] for arm, a in res["plot"]["arms"].items()}
    assert [r["points_per_model"] for r in rows["curves"]] == [1000, 5000]
    # peak downsampling bounds what is drawn; without it every point is
    assert rows["curves"][1]["drawn_points_batch_curve"] < rows["naive"][1]["drawn_points_batch_curve"]
    assert rows["naive"][1]["drawn_points_batch_curve"] >= 5000
    # the envelope handed to setData is bounded (PeakDecimator); the naive arm gets the whole history
    assert rows["curves"][1]["setdata_points_batch_curve"] <= 2 * 4096 + 2 + 64
    assert rows["naive"][1]["setdata_points_batch_curve"] >= 5000
    assert res["plot"]["arms"]["curves"]["ratio_largest_over_smallest"] > 0
    assert "| backend |" in proc.stdout and "Plot update cost ratio" in proc.stdout


def test_one_part_run_keeps_the_other_parts_results(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_drill_ui", REPO / "benchmarks" / "bench_drill_ui.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "drill_ui.json"
    out.write_text(json.dumps({"environment": {"host": "old"}, "config": {"seconds": 25.0},
                               "stalls": {"met": True, "arms": {}}, "plot": {"met": False}}), encoding="utf-8")
    result = {"environment": {"host": "new"}, "config": {}, "plot": {"met": True}}
    bench.keep_previous(result, out)
    assert result["plot"] == {"met": True}  # this run's part wins
    assert result["stalls"] == {"met": True, "arms": {}}
    assert result["kept_from_previous"]["stalls"]["environment"] == {"host": "old"}
    out.write_text(json.dumps(result), encoding="utf-8")  # kept twice: the original origin stays
    again = {"environment": {"host": "newer"}, "config": {}, "plot": {"met": True}}
    bench.keep_previous(again, out)
    assert again["kept_from_previous"]["stalls"]["environment"] == {"host": "old"}
    both = {"stalls": {}, "plot": {}}
    bench.keep_previous(both, out)
    assert "kept_from_previous" not in both
