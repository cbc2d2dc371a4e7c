"""Drill studio core (Qt-free): forms from the catalog, runs fed by recorded events, history, queue."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from breakfix_desktop.core import drill_runs as D
from breakfix_desktop.core.protocol import LineBuffer

FIXTURES = Path(__file__).parent / "fixtures"
TRAIN = FIXTURES / "drill_train_tiny.jsonl"
EVALUATE = FIXTURES / "drill_evaluate_tiny.jsonl"
AVAILABLE = D.BackendStatus(True, "ok", True, True)


def feed_in_chunks(run: D.DrillRun, data: bytes, seed: int = 0) -> None:
    """Feed ``data`` through a LineBuffer in random chunk sizes (1 byte to 200)."""
    rng = random.Random(seed)
    buf, i = LineBuffer(), 0
    while i < len(data):
        n = rng.choice([1, 2, 3, 7, 13, 64, 200])
        for line in buf.feed(data[i:i + n]):
            run.apply_line(line)
        i += n
    for line in buf.flush():
        run.apply_line(line)


def recorded_run(number: int = 1, role: str = "clean", seed: int = 0) -> D.DrillRun:
    run = D.DrillRun(f"run{number}", "train-clean", "Train (clean)", role, {"train": {"epochs": 3}},
                     [["train"], ["evaluate"]], number=number)
    feed_in_chunks(run, TRAIN.read_bytes() + EVALUATE.read_bytes(), seed)
    return run


@pytest.fixture
def studio(tmp_path, make_dataset):
    return D.DrillStudio(store_dir=tmp_path / "store", data_dir=make_dataset(per_class=2, test_per_class=1),
                         status=AVAILABLE)


# --------------------------------------------------------------------------- forms
def test_attack_form_is_generated_from_the_catalog_and_refuses_bad_values():
    form = D.ParamForm.for_attack("pgd")
    assert form.names() == ["eps", "alpha", "steps", "random_start", "targeted", "target_class", "seed"]
    assert form.text("eps") == "0.01" and form.text("random_start") == "true" and form.text("seed") == ""
    assert form.set_text("eps", "0.5") is None
    message = form.set_text("eps", "2")
    assert message == "pgd: parameter 'eps' must be a number in [0, 1] (got '2')"
    assert form.set_text("steps", "2.5") is not None
    with pytest.raises(D.FormError) as exc:
        form.values()
    assert set(exc.value.errors) == {"eps", "steps"}
    form.set_text("eps", "0.03")
    form.set_text("steps", "10")
    values = form.values()
    assert values["eps"] == 0.03 and values["steps"] == 10 and values["seed"] is None and values["random_start"] is True


def test_cross_field_rule_of_the_catalog_is_applied():
    form = D.ParamForm.for_attack("backdoor")
    form.set_text("units", "pixel")  # intensity 2.0 is only valid in normalised units
    assert form.errors() == {"*": "backdoor: parameter 'intensity' must be a number in [0, 1] when units is "
                                  "'pixel' (got 2.0)"}
    form.set_text("intensity", "0.9")
    assert form.values()["intensity"] == 0.9


def test_training_settings_form(studio):
    settings, params = studio.forms(studio.recipe("train-clean"))
    assert params is None
    assert settings.set_text("epochs", "0") == "Train (clean): parameter 'epochs' must be an integer in [1, 1000] (got '0')"
    assert settings.set_text("lr", "abc") is not None
    assert settings.set_text("max_train_images", "") is None  # empty = all images
    assert "tiny" in settings.spec("model").choices and "config:cnn_clean" in settings.spec("model").choices


def test_sweep_values_are_checked_against_scale_strength_range():
    assert D.parse_sweep_values("0, 0.5 1;3") == [0.0, 0.5, 1.0, 3.0]
    with pytest.raises(ValueError, match="sweep_values.*in \\[0, 10\\]"):
        D.parse_sweep_values("1, 11")


# --------------------------------------------------------------------------- runs from events
def test_run_model_from_recorded_stream_in_arbitrary_chunks():
    for seed in range(5):
        run = recorded_run(seed=seed)
        assert [int(x) for x in run.series["test_acc"].x] == [1, 2, 3]
        assert len(run.epochs) == 3 and run.epochs[-1]["test_acc"] == pytest.approx(0.75)
        assert len(run.batch_loss) == 21  # 7 batches x 3 epochs, x = epoch - 1 + step / total
        assert run.batch_loss.x[0] == pytest.approx(1 / 7) and run.batch_loss.x[-1] == pytest.approx(3.0)
        assert run.report["accuracy"] == 0.75 and run.report["confusion_matrix"][1] == [0, 0, 0, 4]
        assert [r["status"] for r in run.step_results] == ["ok", "ok"]
        assert ("checkpoint", "/tmp/drills/run2/checkpoint.pt") in run.artifacts
        assert run.invalid_lines == [] and run.final_test_acc == 0.75


def test_invalid_lines_are_recorded_not_fatal():
    run = recorded_run()
    version = run.version
    assert run.apply_line("Traceback (most recent call last):") is None
    assert run.apply_line('{"v": 2, "type": "progress"}') is None
    assert run.apply_line('{"v": 1, "type": "epoch_end", "epoch": 4}') is None
    assert [reason for _, reason in run.invalid_lines] == [
        "not JSON: Expecting value at column 1", "unsupported protocol version 2 (this reader speaks 1)",
        "epoch_end event lacks field 'train_loss'"]
    assert run.version > version and len(run.epochs) == 3


def test_series_grow_without_copies_of_old_points():
    s = D.Series(2)
    for i in range(1000):
        s.append(i, 2 * i)
    assert len(s) == 1000 and s.x[-1] == 999 and s.y[500] == 1000


# --------------------------------------------------------------------------- history
def test_history_round_trip_and_lazy_database(tmp_path):
    history = D.RunHistory(tmp_path / "store")
    assert history.entries() == [] and not (tmp_path / "store").exists()  # reading creates nothing
    run = recorded_run(number=7)
    run.mark_started()
    run.finish("ok", "finished")
    history.save(run)
    assert (tmp_path / "store" / D.DB_NAME).is_file()
    [entry] = D.RunHistory(tmp_path / "store").entries()
    assert (entry.id, entry.number, entry.status, entry.test_acc) == (run.id, 7, "ok", 0.75)
    loaded = D.RunHistory(tmp_path / "store").load(run.id)
    assert loaded.status == "ok" and loaded.report == run.report and len(loaded.events) == len(run.events)
    assert list(loaded.series["train_loss"].y) == list(run.series["train_loss"].y)
    assert list(loaded.batch_loss.x) == list(run.batch_loss.x)

    running = recorded_run(number=8)
    running.id = "still-running"
    running.mark_started()
    history.save(running, with_events=False)
    again = D.RunHistory(tmp_path / "store").load("still-running")
    assert again.status == "interrupted" and "closed before" in again.message
    history.delete(run.id)
    assert [e.id for e in history.entries()] == ["still-running"]


# --------------------------------------------------------------------------- queue
def _run(device: str, n: int) -> D.DrillRun:
    return D.DrillRun(f"r{n}", "train-clean", "t", device=device, number=n)


def test_queue_runs_one_at_a_time_per_device():
    q = D.RunQueue()
    cpu1, cpu2, gpu, auto = _run("cpu", 1), _run("cpu", 2), _run("cuda", 3), _run("auto", 4)
    for r in (cpu1, cpu2, gpu, auto):
        q.add(r)
    assert q.next_startable() is cpu1
    q.start(cpu1)
    assert q.next_startable() is gpu  # cpu busy; cuda:0 free
    q.start(gpu)
    assert q.next_startable() is None  # cpu2 waits for cpu1, auto for everything
    q.done(cpu1)
    assert q.next_startable() is cpu2
    q.start(cpu2)
    q.done(cpu2)
    q.done(gpu)
    assert q.next_startable() is auto
    assert D.device_lane("cuda") == D.device_lane("cuda:0") == "cuda:0" and D.lanes_conflict("*", "cpu")


# --------------------------------------------------------------------------- studio
def test_prepare_train_clean_builds_backend_steps(studio):
    [run] = studio.prepare("train-clean", {"epochs": 2, "batch_size": 8, "max_test_images": 20}, None,
                           studio.data_dir, "cpu")
    out = Path(run.out_dir)
    assert out.parent == studio.runs_dir and run.role == "clean" and run.device == "cpu"
    assert run.steps[0] == ["train", "--data", str(studio.data_dir), "--out", str(out),
                            "--config", str(out / "train-config.json"), "--device", "cpu"]
    assert run.steps[1][:3] == ["evaluate", "--checkpoint", str(out / "checkpoint.pt")]
    assert run.steps[1][-2:] == ["--max-images", "20"]
    cfg = run.files["train-config.json"]
    assert cfg["model_kwargs"] == {"blocks": 2, "width": 4, "hidden": 16, "pool": 2} and cfg["epochs"] == 2
    studio.materialise(run)
    assert json.loads((out / "train-config.json").read_text()) == cfg


def test_prepare_refuses_with_clear_messages(studio, tmp_path):
    with pytest.raises(ValueError, match="epochs"):
        studio.prepare("train-clean", {"epochs": "many"}, None, studio.data_dir, "cpu")
    with pytest.raises(ValueError, match="does not exist"):
        studio.prepare("train-clean", {}, None, tmp_path / "nowhere", "cpu")
    with pytest.raises(ValueError, match="no Training/ or Testing/"):
        studio.prepare("train-clean", {}, None, tmp_path, "cpu")
    with pytest.raises(ValueError, match="Device must be"):
        studio.prepare("train-clean", {}, None, studio.data_dir, "tpu")
    with pytest.raises(ValueError, match="choose a model file"):
        studio.prepare("evaluate", {}, None, studio.data_dir, "cpu")
    with pytest.raises(ValueError, match="cannot be launched yet.*python -m training drill"):
        studio.prepare("attack:fgsm", {}, {"eps": 0.01}, studio.data_dir, "cpu")
    with pytest.raises(ValueError, match="cannot be launched yet"):
        studio.prepare("sweep:drunk_optimizer", {}, {}, studio.data_dir, "cpu")


def test_screening_only_install_explains_how_to_install(monkeypatch, tmp_path):
    real = D.importlib.util.find_spec
    monkeypatch.setattr(D.importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    status = D.backend_status()
    assert not status.available and not status.torch and status.training
    assert "pip install 'breakfix-desktop[train]'" in status.message and "make install" in status.message
    studio = D.DrillStudio(store_dir=tmp_path, data_dir=tmp_path)
    with pytest.raises(ValueError, match="screening-only install"):
        studio.prepare("train-clean", {}, None, tmp_path, "cpu")


def test_backend_recipe_list_enables_drills(studio):
    listing = {"recipes": [
        {"name": "fgsm", "title": "FGSM drill", "role": "attacked", "attack": "fgsm"},
        {"name": "adv-train", "title": "Adversarial training", "role": "defended",
         "params": [{"name": "eps", "type": "float", "default": 0.01, "min": 0, "max": 1, "help": "budget"}]},
    ]}
    studio.set_backend_recipes(listing)
    assert [r.name for r in studio.recipes] == ["train-clean", "evaluate", "audit-data", "drill:fgsm", "drill:adv-train"]
    [run] = studio.prepare("drill:fgsm", {"epochs": 1}, {"eps": "0.02"}, studio.data_dir, "cpu")
    assert run.role == "attacked" and run.steps[0][:2] == ["drill", "fgsm"]
    assert run.files["drill-config.json"]["eps"] == 0.02 and run.files["drill-config.json"]["epochs"] == 1
    [run] = studio.prepare("drill:adv-train", {}, {"eps": 0.5}, studio.data_dir, "cpu")
    assert run.role == "defended"
    assert len(run.steps) == 1  # the drill evaluates itself
    with pytest.raises(ValueError, match="unknown role"):
        D.recipes_from_listing([{"name": "x", "role": "evil"}])


def test_drill_config_keeps_only_the_settings_a_drill_declares(studio):
    """The real listing: the form's values go to --config only where the drill has that setting."""
    listing = {"recipes": [{"name": "table3-fgsm", "role": "attacked", "attack": "fgsm",
                            "settings": {"epochs": 5, "lr": 1e-3, "eps": [0.1, 0.01], "seed": 0,
                                         "max_train_images": None, "model_kwargs": {}}}]}
    studio.set_backend_recipes(listing)
    [run] = studio.prepare("drill:table3-fgsm", {"epochs": 2, "max_train_images": 100}, {"eps": "0.02"},
                           studio.data_dir, "cpu")
    config = run.files["drill-config.json"]
    assert config["epochs"] == 2 and config["max_train_images"] == 100 and config["seed"] == 0
    assert "eps" not in config  # a single eps from the form does not replace the drill's list of eps
    assert "device" not in config and "batch_size" not in config  # device is a flag; undeclared keys dropped


def test_studio_lifecycle_history_and_rerun(studio):
    seen = []
    studio.subscribe(lambda what, run: seen.append(what))
    [run] = studio.submit(studio.prepare("train-clean", {"epochs": 1}, None, studio.data_dir, "cpu"))
    assert studio.start_next() is run and run.status == "running" and studio.start_next() is None
    feed_in_chunks(run, TRAIN.read_bytes() + EVALUATE.read_bytes())
    studio.finish(run, "ok", "finished")
    assert seen == ["queued", "started", "finished"]
    fresh = D.DrillStudio(store_dir=studio.history.folder, data_dir=studio.data_dir, status=AVAILABLE)
    [stored] = fresh.all_runs()
    assert stored.id == run.id and stored.report["accuracy"] == 0.75 and fresh._number == run.number + 1
    [again] = fresh.rerun(run.id)
    assert again.id != run.id and again.config["settings"] == run.config["settings"] and again.status == "queued"


def test_compare_and_export_report(tmp_path):
    run, base = recorded_run(2), recorded_run(1)
    base.reports["Testing"] = json.loads(json.dumps(base.report))
    base.reports["Testing"]["per_class"]["meningioma"]["recall"] = 0.5
    base.reports["Testing"]["accuracy"] = 0.5
    comp = D.compare_reports(run.report, base.report)
    assert comp["accuracy"]["delta"] == pytest.approx(0.25)
    assert comp["per_class"]["meningioma"]["recall"] == {"value": 0.0, "baseline": 0.5, "delta": -0.5}
    html_path, json_path = D.export_report(run, tmp_path / "out" / "report", base)
    text = html_path.read_text()
    assert html_path.suffix == ".html" and "meningioma" in text and "-50.0" in text and "Confusion matrix" in text
    data = json.loads(json_path.read_text())
    assert data["format"] == "breakfix-drill-report/1" and data["comparison"]["accuracy"]["delta"] == pytest.approx(0.25)
    assert data["run"]["results"]["epochs"][-1]["epoch"] == 3
