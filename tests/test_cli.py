"""`python -m training`: help, clear errors, and train -> evaluate -> export end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from breakfix_desktop.core import protocol as proto


def run(*args, check=True):
    res = subprocess.run([sys.executable, "-m", "training", "--events", "json", *args], capture_output=True, text=True)
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.parametrize("cmd", ["train", "evaluate", "export", "audit-data"])
def test_help(cmd):
    res = run(cmd, "--help")
    assert "usage" in res.stdout.lower()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--lr", "fast"], "--lr must be a number"),
        (["--arch", "vgg"], "arch"),
        (["--device", "tpu"], "device"),
        (["--data", "/no/such/dir"], "--data"),
    ],
)
def test_bad_values_name_the_parameter(tmp_path, args, needle):
    res = run("train", "--out", str(tmp_path / "r"), *args, check=False)
    assert res.returncode == 2
    assert needle in res.stderr


def test_config_file_errors(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text('[train]\nepochs = "many"\n')
    res = run("train", "--out", str(tmp_path / "r"), "--config", str(bad), check=False)
    assert res.returncode == 2 and "epochs" in res.stderr
    unknown = tmp_path / "u.json"
    unknown.write_text('{"learning_rate": 1}')
    res = run("train", "--out", str(tmp_path / "r"), "--config", str(unknown), check=False)
    assert res.returncode == 2 and "learning_rate" in res.stderr


@pytest.mark.slow
def test_train_evaluate_export_end_to_end(make_dataset, tmp_path):
    root = make_dataset(per_class=6, test_per_class=3)
    (root / "Training" / "glioma" / "broken.jpg").write_bytes(b"")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('[train]\narch = "cnn"\nbatch_size = 8\nlr = 0.003\nval_fraction = 0.2\n'
                   'model_kwargs = { blocks = 2, width = 4, hidden = 16, pool = 2 }\n')
    out = tmp_path / "run"
    res = run("train", "--data", str(root), "--out", str(out), "--config", str(cfg), "--epochs", "2")
    events = list(proto.iter_events(res.stdout.splitlines()))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("epoch_end") == 2
    assert any(e["type"] == "warning" and "broken.jpg" in e["message"] for e in events)
    assert (out / "checkpoint.pt").is_file()
    # refuses to overwrite, resumes when asked
    assert run("train", "--data", str(root), "--out", str(out), "--config", str(cfg), check=False).returncode == 2
    res = run("train", "--data", str(root), "--out", str(out), "--config", str(cfg), "--epochs", "3", "--resume")
    assert [e["epoch"] for e in proto.iter_events(res.stdout.splitlines()) if e["type"] == "epoch_end"] == [3]

    rep = tmp_path / "eval.json"
    run("evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--data", str(root), "--dedup", "--out", str(rep))
    reports = json.loads(rep.read_text())
    assert set(reports) == {"Testing", "Testing-dedup"} and reports["Testing"]["n"] == 12

    models = tmp_path / "models"
    run("export", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(models / "tiny.onnx"), "--name", "tiny",
        "--data", str(root), "--manifest", str(models / "manifest.json"), "--parity-images", "8")
    card = json.loads((models / "tiny.card.json").read_text())
    assert card["metrics"]["parity"]["max_abs_logit_diff"] <= 1e-4
    assert card["data"]["training"]["images"] == 25  # the 0-byte file is not counted
    from breakfix_desktop.core.hashing import sha256_file  # the card names the checkpoint it came from
    assert card["training"]["source_checkpoint"]["sha256"] == sha256_file(out / "checkpoint.pt")
    onnx_rep = tmp_path / "eval_onnx.json"
    run("evaluate", "--onnx", str(models / "tiny.onnx"), "--data", str(root), "--out", str(onnx_rep))
    assert json.loads(onnx_rep.read_text())["Testing"]["accuracy"] == pytest.approx(card["metrics"]["test"]["accuracy"])
    assert json.loads((models / "manifest.json").read_text())["models"][0]["name"] == "tiny"


def test_export_float16_storage_records_its_effect_on_the_card(make_dataset, tmp_path):
    root = make_dataset(per_class=4, test_per_class=3)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('[train]\narch = "cnn"\nbatch_size = 8\nval_fraction = 0.0\n'
                   'model_kwargs = { blocks = 2, width = 16, hidden = 64, pool = 2 }\n')
    out = tmp_path / "run"
    run("train", "--data", str(root), "--out", str(out), "--config", str(cfg), "--epochs", "1", "--no-eval")
    path = tmp_path / "models" / "tiny16.onnx"
    run("export", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(path), "--name", "tiny16",
        "--data", str(root), "--parity-images", "8", "--weight-storage", "float16")
    card = json.loads(path.with_name("tiny16.card.json").read_text())
    ws = card["metrics"]["weight_storage"]
    assert ws["dtype"] == "float16" and ws["testing"]["images"] == 12
    assert ws["testing"]["accuracy"] == pytest.approx(card["metrics"]["test"]["accuracy"])
    assert 0 <= ws["testing"]["predictions_changed"] <= 12 and ws["testing"]["max_abs_logit_diff"] > 0
    assert card["metrics"]["parity"]["max_abs_logit_diff"] <= 1e-4
    import onnx

    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in onnx.load(str(path)).graph.initializer)
