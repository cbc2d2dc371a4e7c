"""Drills: the registry, settings, every recipe end to end (synthetic data), CLI, and one real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from breakfix_desktop.core.protocol import decode
from training.drills import DrillError, REPORT_FORMAT, create_drill, list_drills

PAPER_DRILLS = ["table1-backdoor-cnn", "table2-backdoor-resnet50", "table3-fgsm", "table4-pgd",
                "table5-noisy-loss", "table6-fooling-loss", "fig5-drunk-sweep", "fig6-drunk-curves",
                "table7-detector-mixed-sizes", "table8-detector-small", "table9-detector-triangles"]
DETECTOR_DRILLS = PAPER_DRILLS[-3:]
TINY_CNN = {"model_kwargs": {"blocks": 2, "width": 4, "hidden": 16, "pool": 4, "dropout": 0.0}}
ROOT = Path(__file__).resolve().parent.parent


def tiny_settings(name: str) -> dict:
    """Settings that make a drill finish in seconds on the synthetic data (still every code path)."""
    s = {"epochs": 1, "batch_size": 8, "val_fraction": 0.2}
    if name in DETECTOR_DRILLS:
        # ResNet-18 is the detector's fixed backbone; no CNN_clean here, so the FGSM/PGD extra is skipped
        # (with its reason); tests/test_detector.py runs it, and the per-shape recall, on a tiny classifier
        s.update({"eval_batch_size": 16, "adversarial_classifier": "", "per_shape_recall": False})
        return s
    if name == "table2-backdoor-resnet50":
        s["arch"] = "resnet18"  # same code path as ResNet-50, a third of the time
    else:
        s.update(TINY_CNN)
    if name in ("table3-fgsm", "table4-pgd"):
        s["models"] = {"CNN_clean": "", "CNN_FGSM": "", "CNN_PGD": "", "ResNet_PGD": "", "Ensemble": ""}
        s["clean_epochs"] = 1
    if name == "table5-noisy-loss":
        s["runs"] = [[1, 0.1], [2, 2.0]]
    if name == "fig5-drunk-sweep":
        s["scale_strengths"] = [0.0, 3.0]
    if name == "table4-pgd":
        s["settings_grid"] = [[0.01, 0.001, 2]]
    if name == "table3-fgsm":
        s["eps"] = [0.01]
    return s


def test_registry_lists_the_papers_results_in_order():
    assert list_drills() == PAPER_DRILLS


def test_unknown_drill_names_the_known_ones():
    with pytest.raises(KeyError, match="table1-backdoor-cnn"):
        create_drill("table99")


def test_settings_refuse_unknown_keys_and_wrong_types():
    drill = create_drill("table1-backdoor-cnn")
    with pytest.raises(DrillError, match="unknown setting 'epoch'"):
        drill.settings({"epoch": 3})
    with pytest.raises(DrillError, match="'epochs' must be int"):
        drill.settings({"epochs": "five"})
    with pytest.raises(DrillError, match="finetune"):
        create_drill("table2-backdoor-resnet50").settings({"finetune": "yes"})  # needs weights


def test_quick_mode_uses_a_small_subset_and_config_overrides_it():
    drill = create_drill("fig5-drunk-sweep")
    full, quick = drill.settings(), drill.settings(quick=True)
    assert full["max_train_images"] is None and full["epochs"] == 5 and full["lr"] == 1e-4
    assert quick["max_train_images"] == 240 and quick["epochs"] == 2
    assert drill.settings({"epochs": 3}, quick=True)["epochs"] == 3


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from tests.conftest import synthetic_scan  # noqa: F401  (same generator as make_dataset)
    import numpy as np
    from PIL import Image

    from breakfix_desktop.core.labels import CLASS_NAMES

    root = tmp_path_factory.mktemp("drill-data")
    rng = np.random.default_rng(0)
    for split, n in (("Training", 10), ("Testing", 5)):
        for label, cls in enumerate(CLASS_NAMES):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(synthetic_scan(label, rng, 64)).save(root / split / cls / f"{cls}_{i}.png")
    return root


@pytest.mark.parametrize("name", PAPER_DRILLS)
def test_every_drill_runs_end_to_end(name, synthetic, tmp_path):
    from breakfix_desktop.core.protocol import NullWriter

    torch.set_num_threads(2)
    drill = create_drill(name)
    out = tmp_path / name
    report = drill.execute(synthetic, out, NullWriter(), config=tiny_settings(name), device="cpu")
    assert report["format"] == REPORT_FORMAT and report["drill"] == name
    saved = json.loads((out / "report.json").read_text())
    assert saved["table"] == report["table"] == (out / "table.txt").read_text().rstrip("\n")
    events = [decode(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert events[0]["type"] == "run_started" and events[-1] == {**events[-1], "type": "run_finished", "status": "ok"}
    assert any(e["type"] == "epoch_end" for e in events)
    assert report["paper"], "every drill carries the paper's numbers"
    if "curves" in report:
        assert all(len(c["epoch"]) == len(c["test_acc"]) >= 1 for c in report["curves"])
    if name in ("table3-fgsm", "table4-pgd"):  # the strong attack, the longest phase, shows it moving
        worst = [e for e in events if e["type"] == "progress" and "worst case (so far" in (e.get("message") or "")]
        assert worst and worst[-1]["step"] == worst[-1]["total"] and worst[-1]["phase"] == "attack"


def test_backdoor_drill_poisons_exactly_the_planned_images(synthetic, tmp_path):
    from breakfix_desktop.core.protocol import NullWriter

    report = create_drill("table1-backdoor-cnn").execute(
        synthetic, tmp_path / "bd", NullWriter(), config={**tiny_settings("table1-backdoor-cnn")}, device="cpu")
    train = report["data"]["train"]["counts"]
    val = report["data"]["val"]["counts"]
    assert report["poisoned_train_images"] == train["notumor"]  # every notumor training image
    test = report["data"]["test"]["counts"]
    assert report["poisoned_test_images"] == round(0.3 * (sum(test.values()) - test["notumor"]))
    assert report["reports"]["Testing-poisoned"]["n"] == sum(test.values())
    assert 0.0 <= report["attack_success_rate"] <= 1.0 and val["notumor"] >= 1
    # source files untouched: the data folder still hashes the same after the drill
    assert all(p.stat().st_size > 0 for p in synthetic.rglob("*.png"))


def test_drill_resumes_its_trained_models(synthetic, tmp_path):
    from breakfix_desktop.core.protocol import NullWriter

    drill = create_drill("table6-fooling-loss")
    config = {**tiny_settings("table6-fooling-loss"), "epochs": 2}
    first = drill.execute(synthetic, tmp_path / "r", NullWriter(), config=config, device="cpu")
    second = drill.execute(synthetic, tmp_path / "r", NullWriter(), config=config, device="cpu")
    assert second["history"] == first["history"]  # loaded from the checkpoint, not retrained
    assert second["report"]["confusion_matrix"] == first["report"]["confusion_matrix"]


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_cli_lists_drills_as_json():
    proc = _cli("--events", "json", "drill", "--list")
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    assert [r["name"] for r in listing["recipes"]] == PAPER_DRILLS
    from breakfix_desktop.core.drills import recipes_from_listing

    assert len(recipes_from_listing(listing)) == len(PAPER_DRILLS)  # the GUI reads it


@pytest.mark.parametrize("args, message", [
    (["drill", "nope", "--out", "x"], "unknown drill 'nope'"),
    (["drill", "table6-fooling-loss", "--out", "x", "--set", "bogus=1"], "unknown setting 'bogus'"),
    (["drill", "table6-fooling-loss"], "--out DIR is required"),
])
def test_cli_refuses_bad_drill_requests(args, message, tmp_path):
    proc = _cli("--events", "json", *args)
    assert proc.returncode == 2 and message in proc.stderr


def test_quick_drill_on_the_real_data(real_data, tmp_path):
    out = tmp_path / "t6"
    proc = _cli("--events", "json", "drill", "table6-fooling-loss", "--quick", "--out", str(out),
                "--data", str(real_data), "--set", "max_train_images=80", "--set", "max_test_images=40",
                "--threads", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [decode(line) for line in proc.stdout.splitlines()]
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "ok"
    report = json.loads((out / "report.json").read_text())
    assert report["quick"] and 36 <= report["data"]["test"]["images"] <= 40
    assert "Table 6" in proc.stderr and "paper" in proc.stderr  # the table, printed beside the paper's


def test_fooling_loss_can_start_from_a_trained_model(synthetic, tmp_path):
    from breakfix_desktop.core.protocol import NullWriter

    drill = create_drill("table6-fooling-loss")
    config = tiny_settings("table6-fooling-loss")
    drill.execute(synthetic, tmp_path / "a", NullWriter(), config=config, device="cpu")
    ckpt = tmp_path / "a" / "fooling" / "checkpoint.pt"
    report = drill.execute(synthetic, tmp_path / "b", NullWriter(), config={**config, "init": str(ckpt)},
                           device="cpu")
    assert report["settings"]["init"] == str(ckpt)
    with pytest.raises(DrillError, match="init"):
        drill.execute(synthetic, tmp_path / "c", NullWriter(), config={**config, "init": str(tmp_path / "nope.pt")},
                      device="cpu")
