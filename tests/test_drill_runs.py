"""Drill studio core (Qt-free): forms from the catalog, runs fed by recorded events, history, queue."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest

from breakfix_desktop.core import drills as D
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
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
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
    # the backend's drills replace the catalog placeholders; its commands and single defenses stay
    assert [r.name for r in studio.recipes] == ["train-clean", "evaluate", "audit-data", "defense:augment",
                                                "defense:adversarial", "drill:fgsm", "drill:adv-train"]
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


# --------------------------------------------------------------------------- multi-series drills
FIG6 = FIXTURES / "drill_fig6_quick.jsonl"  # fig6-drunk-curves --quick, 60/24 images, 2 epochs (real)
FIG5 = FIXTURES / "drill_fig5_quick.jsonl"  # fig5-drunk-sweep, same subset, scale strengths 0, 1, 3 (real)


def drill_run(path: Path, number: int = 1, role: str = "defended", seed: int = 0) -> D.DrillRun:
    name = "fig6-drunk-curves" if "fig6" in path.name else "fig5-drunk-sweep"
    run = D.DrillRun(f"drill{number}", f"drill:{name}", name, role, {"train": {"epochs": 2}},
                     [["drill", name]], number=number)
    feed_in_chunks(run, path.read_bytes(), seed)
    return run


def recorded_summary(path: Path) -> dict:
    return json.loads(path.read_text().splitlines()[-1])["summary"]


def test_fig6_stream_gives_one_series_per_model():
    summary = recorded_summary(FIG6)
    for seed in range(4):
        run = drill_run(FIG6, seed=seed)
        assert [d.name for d in run.tagged_series] == ["clean", "attacked", "defended"]
        assert [d.role for d in run.tagged_series] == ["clean", "attacked", "defended"]
        clean, attacked, defended = run.tagged_series
        assert clean.param is None
        assert attacked.param == defended.param == {"scale_strength": 3.0, "perturbation_strength": 1.0}
        for data in run.tagged_series:
            assert [row["epoch"] for row in data.epochs] == [1, 2]
            assert list(data.curves["test_acc"].x) == [1.0, 2.0] and len(data.batch_loss) == 2
            assert data.final_test_acc == pytest.approx(summary[data.name])
        # nothing lands in the main series: no zig-zag of 6 epochs, no 6 batch points
        assert run.epochs == [] and len(run.series["test_acc"]) == 0 and len(run.batch_loss) == 0
        assert [d.name for d in run.plot_series()] == ["clean", "attacked", "defended"] and run.multi_series
        assert run.sweep_families() == {}  # three roles, not a sweep
        assert run.final_test_accs() == pytest.approx({k: summary[k] for k in ("clean", "attacked", "defended")})
        assert run.final_test_acc == pytest.approx(summary["defended"]) and run.final_series == "defended"
        assert run.report is None and run.invalid_lines == [] and run.step_results[-1]["status"] == "ok"
        assert run.progress_text().startswith("defended · epoch 2/2 · batch 2/2")


def test_fig5_stream_is_a_sweep_family_over_scale_strength():
    run = drill_run(FIG5, role="attacked", seed=3)
    names = ["scale 0", "scale 1", "scale 3"]
    assert [d.name for d in run.tagged_series] == names
    assert {d.role for d in run.tagged_series} == {"attacked"}  # the backend tags the sweep's runs "attacked"
    assert [d.param["scale_strength"] for d in run.tagged_series] == [0.0, 1.0, 3.0]
    assert all(len(d.epochs) == 2 for d in run.tagged_series)
    families = run.sweep_families()
    assert families == {n: ("scale_strength", v, [0.0, 1.0, 3.0]) for n, v in zip(names, (0.0, 1.0, 3.0))}
    summary = recorded_summary(FIG5)
    assert run.final_test_accs() == pytest.approx({n: summary[n] for n in names})


def test_untagged_runs_keep_one_main_series():
    run = recorded_run()
    assert list(run.series_data) == [D.MAIN_SERIES] and run.tagged_series == []
    assert run.series_data[D.MAIN_SERIES].epochs is run.epochs and not run.multi_series
    assert run.series_data[D.MAIN_SERIES].batch_loss is run.batch_loss
    assert list(run.reports) == ["Testing"] and run.report_key == "Testing" and run.final_series is None


def test_metrics_events_are_kept_per_series():
    """Drills tag the reports of the models they evaluate (``ctx.report(..., series=...)``): the
    recorded evaluate report, sent as such tagged events after the fig6 stream."""
    from breakfix_desktop.core.protocol import encode, make_event

    report = next(json.loads(line) for line in EVALUATE.read_text().splitlines() if '"metrics"' in line)["report"]
    run = D.DrillRun("m", "drill:x", "x", "attacked", number=1)
    feed_in_chunks(run, FIG6.read_bytes())
    for series, acc in (("clean", 0.75), ("attacked", 0.25)):
        for split in ("Testing", "Testing-fgsm"):
            run.apply_line(encode(make_event("metrics", split=split, report={**report, "accuracy": acc},
                                             series=series)))
    assert list(run.reports) == ["clean / Testing", "clean / Testing-fgsm", "attacked / Testing",
                                 "attacked / Testing-fgsm"]
    assert run.series_data["attacked"].reports["Testing"]["accuracy"] == 0.25
    assert run.report_key == "clean / Testing" and run.final_test_acc == 0.75  # the first model's, not the last
    run.apply_line(encode(make_event("metrics", split="Testing-poisoned", report={**report, "accuracy": 0.5})))
    assert run.report_key == "Testing-poisoned" and run.report["accuracy"] == 0.5  # untagged: as before


def test_multi_series_history_round_trip(tmp_path):
    history = D.RunHistory(tmp_path / "store")
    run = drill_run(FIG6, number=4)
    run.mark_started()
    run.finish("ok", "finished")
    history.save(run)
    [entry] = history.entries()
    assert entry.test_acc == pytest.approx(recorded_summary(FIG6)["defended"])
    loaded = D.RunHistory(tmp_path / "store").load(run.id)
    assert [d.name for d in loaded.tagged_series] == ["clean", "attacked", "defended"]
    for a, b in zip(loaded.tagged_series, run.tagged_series):
        assert (a.role, a.param, a.epochs) == (b.role, b.param, b.epochs)
        assert list(a.curves["test_acc"].y) == list(b.curves["test_acc"].y)
        assert list(a.batch_loss.x) == list(b.batch_loss.x)
    # the record keeps the series too (a run saved without its events, e.g. by an older session)
    record = D.RunHistory(tmp_path / "store")._connect(False).execute("SELECT record FROM runs").fetchone()[0]
    assert [s["name"] for s in json.loads(record)["results"]["series"]] == ["clean", "attacked", "defended"]
    bare = D.RunHistory(tmp_path / "bare")
    bare.save(run, with_events=False)
    restored = bare.load(run.id)
    assert restored.events == [] and [d.name for d in restored.tagged_series] == ["clean", "attacked", "defended"]
    assert restored.final_test_accs() == pytest.approx(run.final_test_accs())
    assert list(restored.series_data["attacked"].curves["test_acc"].x) == [1.0, 2.0]
    # an exported report lists every model's epochs
    html_path, _ = D.export_report(run, tmp_path / "fig6.html")
    text = html_path.read_text()
    assert text.count("<th>defended</th>") == 2 and "<th>series</th>" in text


def test_single_defenses_are_launched_as_train_with_their_form(studio, tmp_path):
    """Item 1: a single defense (augmentation, adversarial training) is chosen, its generated form
    filled and validated, and launched as python -m training train + evaluate, like Train (clean)."""
    names = [r.name for r in studio.recipes]
    assert "defense:augment" in names and "defense:adversarial" in names
    aug = studio.recipe("defense:augment")
    assert aug.available and aug.role == "defended" and [p.name for p in aug.param_specs()] == ["augment"]
    [run] = studio.prepare("defense:augment", {"epochs": 1}, {}, studio.data_dir, "cpu")
    assert [step[0] for step in run.steps] == ["train", "evaluate"] and run.role == "defended"
    assert run.files["train-config.json"]["augment"] is True and run.files["train-config.json"]["epochs"] == 1

    settings, params = studio.forms(studio.recipe("defense:adversarial"))
    assert params.names()[:3] == ["adv", "adv_eps_min", "adv_eps_max"]
    assert params.set_text("adv", "bim") is not None  # not a method: refused with a message
    assert params.set_text("adv_steps", "0") is not None
    clean = tmp_path / "clean.pt"
    clean.write_bytes(b"x")
    [run] = studio.prepare("defense:adversarial", {"epochs": 1},
                           {"adv": "pgd", "adv_eps_min": 0.002, "adv_eps_max": 0.02, "adv_steps": 3,
                            "init": str(clean)}, studio.data_dir, "cpu")
    cfg = run.files["train-config.json"]
    assert (cfg["adv"], cfg["adv_eps"], cfg["adv_steps"], cfg["init"]) == ("pgd", [0.002, 0.02], 3, str(clean))
    assert "force_random_init" not in cfg and run.steps[0][0] == "train" and run.config["params"]["adv"] == "pgd"
    [rand] = studio.prepare("defense:adversarial", {}, {"adv": "fgsm"}, studio.data_dir, "cpu")
    assert rand.files["train-config.json"]["force_random_init"] is True
    with pytest.raises(ValueError, match="adv_eps_min"):
        studio.prepare("defense:adversarial", {}, {"adv_eps_min": 0.1, "adv_eps_max": 0.01}, studio.data_dir, "cpu")
    with pytest.raises(ValueError, match="does not exist"):
        studio.prepare("defense:adversarial", {}, {"init": str(tmp_path / "missing.pt")}, studio.data_dir, "cpu")
    # the backend's drill list keeps them
    studio.set_backend_recipes([{"name": "fgsm", "role": "attacked", "attack": "fgsm"}])
    assert studio.recipe("defense:adversarial").available
    # a listed drill gets quick mode and threads; quick leaves the subset and epochs to the drill
    [drill] = studio.prepare("drill:fgsm", {"epochs": 4, "quick": True, "threads": 1}, {}, studio.data_dir, "cpu")
    assert drill.steps[0][-3:] == ["--quick", "--threads", "1"] and "epochs" not in drill.files["drill-config.json"]


def test_background_history_writes_incrementally_and_flushes(tmp_path):
    """The studio's history writes on a worker thread: events go in incrementally while a run
    streams, the run's end adds only the rest, close() leaves every event and result on disk."""
    import sqlite3

    history = D.RunHistory(tmp_path / "store", background=True)
    run = recorded_run(number=3)
    events = list(run.events)
    run.events.clear()
    run.mark_started()
    history.save(run, with_events=False)
    for e in events[:10]:
        run.events.append(e)
    assert history.append_events(run) == 10 and history.append_events(run) == 0
    run.events.extend(events[10:])
    run.finish("ok", "finished")
    history.save(run)
    assert history.stored_events(run.id) == len(events)
    history.close()
    conn = sqlite3.connect(str(tmp_path / "store" / D.DB_NAME))
    seqs = [r[0] for r in conn.execute("SELECT seq FROM events WHERE run_id = ? ORDER BY seq", (run.id,))]
    assert seqs == list(range(len(events)))  # the final upsert kept the incrementally written events
    assert conn.execute("SELECT status FROM runs").fetchone()[0] == "ok"
    loaded = D.RunHistory(tmp_path / "store").load(run.id)
    assert loaded.report == run.report and len(loaded.events) == len(events)


# --------------------------------------------------------------------------- import
def _drill_folder(tmp_path: Path, stream: Path, name: str = "fig6", keep: int = 0, report: bool = True) -> Path:
    """A folder as ``python -m training drill ... --out DIR`` leaves it: the recorded stream as
    events.jsonl (its first ``keep`` lines only, when given) and a report.json."""
    folder = tmp_path / name
    folder.mkdir()
    lines = stream.read_text().splitlines()
    (folder / "events.jsonl").write_text("\n".join(lines[:keep] if keep else lines) + "\n")
    if report:
        (folder / "report.json").write_text(json.dumps({"format": "breakfix-drill-report/1",
                                                        "title": "Figure 6 (from report.json)",
                                                        "table": "Figure 6\nrun   ours  paper\nclean 0.22  0.80"}))
    return folder


def test_import_drill_folder_rebuilds_the_run_and_refuses_a_second_copy(tmp_path, studio):
    folder = _drill_folder(tmp_path, FIG6)
    before = (folder / "events.jsonl").read_bytes()
    run = studio.import_run(folder)
    summary = recorded_summary(FIG6)
    assert run.status == "ok" and run.recipe == "drill:fig6-drunk-curves" and run.role == "defended"
    assert run.title == "Figure 6 (from report.json)" and str(folder) in run.message
    assert run.final_test_accs() == {n: summary[n] for n in ("clean", "attacked", "defended")}
    assert [d.name for d in run.tagged_series] == ["clean", "attacked", "defended"]
    assert run.number == 1 and run.duration() == pytest.approx(summary["seconds"], abs=8)
    assert (folder / "events.jsonl").read_bytes() == before  # nothing in the folder changes
    assert D.paper_table(run).splitlines()[2] == "clean 0.22  0.80"
    assert "<pre>Figure 6\nrun   ours  paper" in D.report_html(run)
    with pytest.raises(D.DrillImportError, match=r"already in the history as #1"):
        studio.import_run(folder / "events.jsonl")
    with pytest.raises(ValueError, match=r"python -m training drill fig6-drunk-curves"):
        studio.rerun(run.id)
    # the history keeps it (events included) for the next session, and a new one is refused there too
    studio.close()
    again = D.DrillStudio(store_dir=studio.history.folder, data_dir=studio.data_dir, status=AVAILABLE)
    [stored] = again.all_runs()
    assert stored.id == run.id and stored.status == "ok" and stored.final_test_accs() == run.final_test_accs()
    with pytest.raises(D.DrillImportError, match="already in the history"):
        again.import_run(folder)


def test_import_titles_and_roles_come_from_the_backend_listing(tmp_path, studio):
    studio.set_backend_recipes({"recipes": [{"name": "fig5-drunk-sweep", "title": "Figure 5 sweep",
                                             "role": "attacked"}]})
    run = studio.import_run(_drill_folder(tmp_path, FIG5, "fig5", report=False))
    assert run.title == "Figure 5 sweep" and run.role == "attacked" and D.paper_table(run) is None
    assert sorted(run.sweep_families()) == ["scale 0", "scale 1", "scale 3"]


def test_import_of_a_stopped_or_broken_stream(tmp_path, studio):
    lines = FIG6.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if '"series":"attacked"' in line)
    stopped = _drill_folder(tmp_path, FIG6, "stopped", keep=cut)
    with (stopped / "events.jsonl").open("a") as fh:
        fh.write("Traceback (most recent call last):\n")  # a stray non-JSON line is kept, not fatal
    run = D.read_drill_folder(stopped)
    assert run.status == "interrupted" and "ends before the drill finished" in run.message
    assert list(run.final_test_accs()) == ["clean"] and len(run.invalid_lines) == 1
    assert run.invalid_lines[0][1].startswith(f"line {cut + 1}: not JSON")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(D.DrillImportError, match=rf"{empty / 'events.jsonl'}: no such file"):
        studio.import_run(empty)
    (empty / "events.jsonl").write_text("hello\n")
    with pytest.raises(D.DrillImportError, match=r"events.jsonl: no protocol events in it \(1 invalid"):
        studio.import_run(empty)
    (empty / "events.jsonl").write_text(lines[1] + "\n")  # a progress event without its run_started
    with pytest.raises(D.DrillImportError, match="no run_started event"):
        studio.import_run(empty)
    failed = _drill_folder(tmp_path, FIG6, "failed", keep=cut)
    with (failed / "events.jsonl").open("a") as fh:
        fh.write(json.dumps({"v": 1, "type": "error", "t": 1.0, "message": "CUDA out of memory"}) + "\n")
    run = D.read_drill_folder(failed)
    assert run.status == "failed" and run.message.endswith("the drill failed: CUDA out of memory")
    assert studio.all_runs() == []


def test_progress_of_an_evaluation_or_attack_names_what_is_measured_not_an_epoch():
    """An evasion drill spends most of its time attacking (a full-Testing worst case takes hours on a
    CPU); the status line shows what is being measured and the accuracy so far, not "epoch 0"."""
    from breakfix_desktop.core.protocol import encode, make_event

    run = D.DrillRun("drill1", "drill:table4-pgd", "table4-pgd", "attacked", {"train": {"epochs": 3}},
                     [["drill", "table4-pgd"]], number=1)
    run.apply_line(encode(make_event("progress", phase="attack", epoch=0, step=7, total=21,
                                     message="Ensemble: PGD-20 x2 worst case (so far 0.953)")))
    assert run.progress_text() == "Ensemble: PGD-20 x2 worst case (so far 0.953) · batch 7/21"
    run.apply_line(encode(make_event("progress", phase="eval", epoch=0, step=2, total=21)))
    assert run.progress_text() == "evaluating · batch 2/21"
    run.apply_line(encode(make_event("progress", phase="train", epoch=2, step=5, total=9)))
    assert run.progress_text().startswith("epoch 2/3 · batch 5/9")
