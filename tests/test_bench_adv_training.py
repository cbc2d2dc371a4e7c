"""benchmarks/bench_adv_training.py (fast AT vs PGD AT to the same robust accuracy): a tiny run end to
end, and the time-to-target rule."""

from __future__ import annotations

import json

import pytest

from conftest import load_benchmark


def load_bench():
    return load_benchmark("bench_adv_training.py")


def test_time_to_target_takes_the_first_epoch_within_the_tolerance():
    bench = load_bench()
    rows = [{"epoch": 1, "cum_seconds": 10.0, "robust_acc": 0.40},
            {"epoch": 2, "cum_seconds": 20.0, "robust_acc": 0.595},
            {"epoch": 3, "cum_seconds": 30.0, "robust_acc": 0.70}]
    assert bench.time_to_target(rows, 0.60, 0.01) == {"epoch": 2, "seconds": 20.0}
    assert bench.time_to_target(rows, 0.60, 0.001) == {"epoch": 3, "seconds": 30.0}
    assert bench.time_to_target(rows, 0.90, 0.01) is None


def test_tiny_run_writes_results(tmp_path, restore_threads, capsys):
    bench = load_bench()
    out = tmp_path / "adv.json"
    assert bench.main(["--quick", "--synthetic", "--images", "16", "--eval-images", "8", "--epochs", "2",
                       "--pgd-steps", "2", "--eval-steps", "2", "--fast-eps", "0.01", "0.01", "--threads", "1",
                       "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["benchmark"] == "adv_training" and data["quick"] is True
    assert set(data["arms"]) == {"fast", "pgd"}
    for arm in data["arms"].values():
        assert [r["epoch"] for r in arm["epochs"]] == [1, 2]
        assert all(r["train_seconds"] > 0 for r in arm["epochs"])
        assert arm["reached"] is not None  # the default target is one both arms reach
    assert data["config"]["target"] == min(a["best_robust_acc"] for a in data["arms"].values())
    assert data["config"]["images"] == 16 and data["config"]["eval_images"] == 8
    # the fast arm trains at its own eps (Wong et al.: the evaluation eps); the pgd arm keeps the paper's range
    assert data["config"]["fast_eps_range"] == [0.01, 0.01] and data["config"]["eps_range"] == [0.001, 0.01]
    assert "threads" in data["environment"] and data["clean_init"]["source"] == "trained here"
    printed = capsys.readouterr().out
    assert "| fast |" in printed and "| pgd |" in printed


def test_fast_eps_outside_the_unit_range_is_refused(capsys):
    with pytest.raises(SystemExit, match="--fast-eps"):
        load_bench().main(["--quick", "--synthetic", "--fast-eps", "0.02", "0.01"])
