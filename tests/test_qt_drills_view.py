"""Drills view: backend jobs (recorded streams, failures, cancel), live curves, results, history, and
real quick runs end to end."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from breakfix_desktop._qt.qt_backend_job import QtBackendJob
from breakfix_desktop._qt.qt_drills_view import QtDrillsView
from breakfix_desktop.core import drills as D

FIXTURES = Path(__file__).parent / "fixtures"
TRAIN = FIXTURES / "drill_train_tiny.jsonl"
EVALUATE = FIXTURES / "drill_evaluate_tiny.jsonl"
AVAILABLE = D.BackendStatus(True, "ok", True, True)
REPO = Path(__file__).resolve().parents[1]


def replay_prefix(*extra: str, chunk: int = 7, delay: float = 0.0) -> list:
    """The event replayer standing in for ``-m training --events json``: lines split every ``chunk`` bytes."""
    return ["-m", "breakfix_desktop.tools.replay_events", "--file", f"train={TRAIN}", "--file", f"evaluate={EVALUATE}",
            "--chunk", str(chunk), "--delay", str(delay), *extra, "--"]


@pytest.fixture
def studio(tmp_path, make_dataset):
    return D.DrillStudio(store_dir=tmp_path / "store", data_dir=make_dataset(per_class=2, test_per_class=1),
                         status=AVAILABLE)


def make_view(qtbot, studio, **kw):
    kw.setdefault("probe_backend", False)
    view = QtDrillsView(studio, **kw)
    qtbot.addWidget(view)
    view.resize(1180, 740)
    return view


def launch_tiny(view, epochs: int = 3):
    view.select_recipe("train-clean")
    assert view.set_field("epochs", str(epochs)) is None
    view.set_field("batch_size", "4")
    view.device_box.setCurrentText("cpu")
    runs = view.launch()
    assert runs, view.error_label.text()
    return runs[0]


def wait_final(qtbot, run, timeout=20000):
    qtbot.waitUntil(lambda: run.is_final, timeout=timeout)
    return run


# --------------------------------------------------------------------------- the job
def test_job_reassembles_lines_from_arbitrary_chunks(qtbot):
    data = TRAIN.read_bytes() + b"this is not json\n" + EVALUATE.read_bytes()
    n_lines = data.count(b"\n")
    for seed in range(4):
        job = QtBackendJob(["train"])
        got, bad = [], []
        job.message.connect(got.append)
        job.invalid_line.connect(lambda line, reason: bad.append(reason))
        rng, i = random.Random(seed), 0
        while i < len(data):
            n = rng.randint(1, 97)
            job.feed_stdout(data[i:i + n])
            i += n
        assert len(got) == n_lines - 1 and bad == ["not JSON: Expecting value at column 1"]
        assert [m["type"] for m in got].count("epoch_end") == 3 and got[-1]["type"] == "run_finished"
        assert job.messages_seen == n_lines - 1 and job.finished_status == "ok"


def test_job_prepare_uses_the_same_interpreter():
    job = QtBackendJob(["audit-data", "X"])
    proc = job.prepare()
    assert proc.program() == sys.executable
    assert proc.arguments() == ["-m", "training", "--events", "json", "audit-data", "X"]
    assert proc.processEnvironment().value("PYTHONUNBUFFERED") == "1"


# --------------------------------------------------------------------------- view driven by the recorded stream
def test_view_runs_recorded_stream_through_qprocess(qtbot, studio):
    view = make_view(qtbot, studio, prefix=replay_prefix(chunk=5))
    run = launch_tiny(view)
    assert run.status in ("queued", "running")
    wait_final(qtbot, run)
    assert run.status == "ok", (run.message, run.stderr_tail)
    assert run.step_index == 1 and len(run.events) == 32 and run.invalid_lines == []
    # curves: created once, data set by the timer
    view.curves.refresh()
    x, y = view.curves.curve_data(run.id, "acc_test")
    assert list(x) == [1, 2, 3] and y[-1] == pytest.approx(0.75)
    assert len(view.curves.curve_data(run.id, "batch")[0]) == 21
    # results: classification report and confusion matrix; the results tab is shown
    assert view.tabs.currentWidget() is view.results
    table = view.results.table
    assert [table.item(r, 0).text() for r in range(table.rowCount())] == [
        "glioma", "meningioma", "notumor", "pituitary", "accuracy", "macro avg"]
    assert table.item(4, 3).text() == "75.0" and view.results.matrix.report["confusion_matrix"][1] == [0, 0, 0, 4]
    assert "finished - accuracy 75.0 %" in view.results.title.text()
    # history: persisted in SQLite
    [entry] = D.RunHistory(studio.history.folder).entries()
    assert entry.id == run.id and entry.status == "ok" and entry.test_acc == 0.75
    assert (Path(run.out_dir) / "train-config.json").is_file()


def test_invalid_form_values_are_refused_before_launch(qtbot, studio):
    view = make_view(qtbot, studio, prefix=replay_prefix())
    view.select_recipe("train-clean")
    error = view.set_field("epochs", "zero")
    assert error == "Train (clean): parameter 'epochs' must be an integer in [1, 1000] (got 'zero')"
    assert "border" in view.field("epochs").editor.styleSheet()
    assert view.launch() == [] and "Not launched" in view.error_label.text() and "'epochs'" in view.error_label.text()
    assert studio.runs == {}
    view.set_field("epochs", "2")
    view.data_edit.setText(str(studio.history.folder / "missing"))
    assert view.launch() == [] and "does not exist" in view.error_label.text()


def test_attack_forms_are_shown_but_launch_waits_for_the_drill_command(qtbot, studio):
    view = make_view(qtbot, studio)
    view.select_recipe("attack:pgd")
    assert not view.launch_button.isEnabled() and "drill" in view.launch_button.text()
    assert not view.recipe_note.isHidden() and "python -m training drill" in view.recipe_note.text()
    assert view.params_view is not None and set(view.params_view.fields) >= {"eps", "alpha", "steps", "target_class"}
    assert view.set_field("eps", "5") == "pgd: parameter 'eps' must be a number in [0, 1] (got '5')"
    assert view.set_field("targeted", "true") is None and view.field("targeted").editor.isChecked()
    assert view.role_box.currentData() == "attacked"
    view.select_recipe("sweep:drunk_optimizer")
    assert "scale_strength" not in view.params_view.fields and "sweep_values" in view.settings_view.fields
    assert view.set_field("sweep_values", "0, 20") is not None


def test_screening_only_install_says_how_to_install(qtbot, tmp_path):
    status = D.BackendStatus(False, "This is a screening-only install: PyTorch not installed ... "
                                    f"Install the training extra with:  {D.INSTALL_HINT}")
    view = make_view(qtbot, D.DrillStudio(store_dir=tmp_path, data_dir=tmp_path, status=status))
    assert "pip install 'breakfix-desktop[train]'" in view.banner.text() and "make install" in view.banner.text()
    assert not view.launch_button.isEnabled() and "not installed" in view.launch_button.text()
    assert view.launch() == [] and "screening-only" in view.error_label.text()


# --------------------------------------------------------------------------- failures and cancel
def test_backend_that_fails_to_start(qtbot, studio, tmp_path):
    view = make_view(qtbot, studio, program=str(tmp_path / "no-such-python"))
    run = wait_final(qtbot, launch_tiny(view))
    assert run.status == "failed" and "could not be started" in run.message
    assert "could not be started" in view.results.title.text()
    view.set_field("epochs", "1")
    assert view.launch_button.isEnabled()  # the GUI keeps working


CRASH = textwrap.dedent("""
    import json, sys, time
    for i in range(3):
        print(json.dumps({"v": 1, "type": "progress", "t": time.time(), "phase": "train", "epoch": 1,
                          "step": i + 1, "total": 10, "loss": 1.5 - 0.1 * i}), flush=True)
    print('{"v": 1, "type": "progr', end="", flush=True)
    sys.stderr.write("Traceback (most recent call last):\\n  File x\\nRuntimeError: CUDA out of memory\\n")
    sys.exit(1)
""")


def test_backend_that_crashes_shows_stderr_tail(qtbot, studio):
    view = make_view(qtbot, studio, prefix=["-c", CRASH])
    run = wait_final(qtbot, launch_tiny(view))
    assert run.status == "crashed" and "exited with status 1" in run.message and "CUDA out of memory" in run.message
    assert len(run.batch_loss) == 3 and len(run.invalid_lines) == 1  # the cut last line is reported
    assert "RuntimeError: CUDA out of memory" in run.stderr_tail
    assert "Backend stderr (tail)" in view.results.details.toPlainText()
    assert D.RunHistory(studio.history.folder).load(run.id).stderr_tail == run.stderr_tail


def test_backend_error_event_is_the_message(qtbot, studio):
    script = ("import json,time;print(json.dumps({'v':1,'type':'error','t':time.time(),"
              "'message':'--data: folder X not found'}));raise SystemExit(2)")
    view = make_view(qtbot, studio, prefix=["-c", script])
    run = wait_final(qtbot, launch_tiny(view))
    assert run.status == "failed" and run.message == "The backend stopped with an error: --data: folder X not found"


def test_cancel_terminates_then_kills_and_queue_moves_on(qtbot, studio):
    view = make_view(qtbot, studio, prefix=replay_prefix("--hang", chunk=0), kill_timeout_ms=500)
    first = launch_tiny(view)
    second = launch_tiny(view)  # same device: waits in the queue
    qtbot.waitUntil(lambda: first.status == "running" and len(first.events) >= 5, timeout=10000)
    assert second.status == "queued"
    # the progress line is refreshed by the view's ~10 Hz timer, not on every event
    qtbot.waitUntil(lambda: "1 queued" in view.progress_label.text(), timeout=3000)
    view.cancel(second)
    assert second.status == "cancelled" and second.message == "cancelled before it started"
    view.cancel_current()
    wait_final(qtbot, first, timeout=10000)
    assert first.status == "cancelled" and first.message == "cancelled by the user"
    assert not view.runner.is_busy()
    qtbot.waitUntil(lambda: "No run in progress" in view.progress_label.text(), timeout=3000)


def test_queue_runs_one_per_device_in_order(qtbot, studio):
    view = make_view(qtbot, studio, prefix=replay_prefix(chunk=64, delay=0.01))
    runs = [launch_tiny(view) for _ in range(3)]
    starts = []
    studio.subscribe(lambda what, run: what == "started" and starts.append(
        (run.number, [r.number for r in studio.queue.running])))
    for run in runs:
        wait_final(qtbot, run)
    assert all(r.status == "ok" for r in runs)
    assert starts == [(r.number, [r.number]) for r in runs]
    assert view.runs_table.rowCount() == 3 and [c.run.id for c in view.curves.tracks.values()] == [r.id for r in runs]


# --------------------------------------------------------------------------- curves, results, history
def _recorded(studio, number, role="clean", sweep=None):
    from test_drill_runs import feed_in_chunks

    run = D.DrillRun(f"r{number}", "train-clean", "Train (clean)", role, {"train": {"epochs": 3}},
                     [["train"], ["evaluate"]], number=number)
    if sweep is not None:
        run.config["sweep"] = {"param": "scale_strength", "value": sweep, "group": "g"}
    feed_in_chunks(run, TRAIN.read_bytes() + EVALUATE.read_bytes(), seed=number)
    run.mark_started()
    run.finish("ok", "finished")
    studio.runs[run.id] = run
    return run


def test_overlay_colours_by_role_and_sweep_family(qtbot, studio, tmp_path):
    view = make_view(qtbot, studio)
    clean, attacked, defended = (_recorded(studio, 1, "clean"), _recorded(studio, 2, "attacked"),
                                 _recorded(studio, 3, "defended"))
    view.set_plotted([clean.id, attacked.id, defended.id])
    colours = {r.role: view.curves.tracks[r.id].curves["acc_test"].opts["pen"].color().name()
               for r in (clean, attacked, defended)}
    assert colours == {"clean": "#1f77b4", "attacked": "#ff7f0e", "defended": "#2ca02c"}
    names = [label.text for _, label in view.curves.legend.items]
    assert names == [clean.label, attacked.label, defended.label]
    curve = view.curves.tracks[clean.id].curves["batch"]
    assert curve.opts["autoDownsample"] and curve.opts["downsampleMethod"] == "peak" and curve.opts["clipToView"]

    sweep = [_recorded(studio, 10 + i, "attacked", sweep=v) for i, v in enumerate((0.0, 1.0, 3.0))]
    view.set_plotted([r.id for r in sweep])
    view.curves.set_mode("family")
    assert [label.text for _, label in view.curves.legend.items] == [
        "scale_strength = 0", "scale_strength = 1", "scale_strength = 3"]
    family = {view.curves.tracks[r.id].curves["acc_test"].opts["pen"].color().name() for r in sweep}
    assert len(family) == 3
    for suffix in ("png", "svg"):
        path = view.curves.export(str(tmp_path / f"curves.{suffix}"))
        assert path.stat().st_size > 1000
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG" and b"<svg" in (tmp_path / "curves.svg").read_bytes()


FIG6 = FIXTURES / "drill_fig6_quick.jsonl"
FIG5 = FIXTURES / "drill_fig5_quick.jsonl"


def _drill(studio, path, number, role="defended"):
    from test_drill_runs import drill_run

    run = drill_run(path, number=number, role=role, seed=number)
    run.mark_started()
    run.finish("ok", "finished")
    studio.runs[run.id] = run
    return run


def _pen(view, run, series, key="acc_test"):
    return view.curves.tracks[run.id].parts[series][key].opts["pen"].color().name()


def test_multi_series_drill_draws_one_curve_per_model(qtbot, studio):
    view = make_view(qtbot, studio)
    fig6 = _drill(studio, FIG6, 1)
    view.set_plotted([fig6.id])
    names = ["clean", "attacked", "defended"]
    assert [label.text for _, label in view.curves.legend.items] == [f"#1 {n}" for n in names]
    assert {n: _pen(view, fig6, n) for n in names} == {"clean": "#1f77b4", "attacked": "#ff7f0e",
                                                       "defended": "#2ca02c"}
    assert {n: view.curves.tracks[fig6.id].parts[n]["acc_test"].opts["symbol"] for n in names} == {
        "clean": "o", "attacked": "t", "defended": "s"}
    for name in names:
        x, y = view.curves.curve_data(fig6.id, "acc_test", name)
        assert list(x) == [1, 2] and list(y) == list(fig6.series_data[name].curves["test_acc"].y)
        assert len(view.curves.curve_data(fig6.id, "loss_train", name)[0]) == 2
        assert len(view.curves.curve_data(fig6.id, "batch", name)[0]) == 2
        assert _pen(view, fig6, name, "batch") == _pen(view, fig6, name)
    main_x = view.curves.curve_data(fig6.id, "acc_test")[0]
    assert main_x is None or len(main_x) == 0  # the main series stays empty

    # Figure 5: the scale strengths along the sweep colour map, next to a plain run in its role colour
    from breakfix_desktop._qt.qt_curves import sweep_colour

    plain = _recorded(studio, 3, "clean")
    fig5 = _drill(studio, FIG5, 2, role="attacked")
    view.set_plotted([plain.id, fig6.id, fig5.id])
    scales = ["scale 0", "scale 1", "scale 3"]
    assert [label.text for _, label in view.curves.legend.items] == [
        plain.label, "#1 clean", "#1 attacked", "#1 defended", "#2 scale 0", "#2 scale 1", "#2 scale 3"]
    assert [_pen(view, fig5, n) for n in scales] == [
        sweep_colour(v, [0.0, 1.0, 3.0], by_rank=True).name() for v in (0.0, 1.0, 3.0)]
    assert len({_pen(view, fig5, n) for n in scales}) == 3
    assert _pen(view, plain, "") == "#1f77b4" and _pen(view, fig6, "clean") != "#1f77b4"  # 2nd clean: a shade
    assert all(len(view.curves.curve_data(fig5.id, "acc_test", n)[0]) == 2 for n in scales)


def test_multi_series_curves_appear_live_on_the_timer(qtbot, studio):
    view = make_view(qtbot, studio)
    run = D.DrillRun("live6", "drill:fig6-drunk-curves", "Figure 6", "defended", {"train": {"epochs": 2}}, number=5)
    studio.runs[run.id] = run
    view.set_plotted([run.id])
    lines = FIG6.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if '"series":"attacked"' in line)
    for line in lines[:cut]:
        run.apply_line(line)
    qtbot.waitUntil(lambda: "clean" in view.curves.tracks[run.id].parts
                    and len(view.curves.curve_data(run.id, "acc_test", "clean")[0]) == 2, timeout=2000)
    assert list(view.curves.tracks[run.id].parts) == ["", "clean"]
    assert [label.text for _, label in view.curves.legend.items] == ["#5 clean"]
    updates = view.curves.updates
    for line in lines[cut:]:
        run.apply_line(line)
    assert view.curves.updates == updates  # nothing drawn per event
    qtbot.waitUntil(lambda: "defended" in view.curves.tracks[run.id].parts
                    and len(view.curves.curve_data(run.id, "acc_test", "defended")[0]) == 2, timeout=2000)
    assert [label.text for _, label in view.curves.legend.items] == ["#5 clean", "#5 attacked", "#5 defended"]
    assert _pen(view, run, "defended") == "#2ca02c" and view.curves.refresh() == 0


def test_multi_series_results_and_history_table(qtbot, studio):
    view = make_view(qtbot, studio)
    fig6 = _drill(studio, FIG6, 1)
    view._rebuild_runs()
    view.select_run(fig6.id)
    summary = json.loads(FIG6.read_text().splitlines()[-1])["summary"]
    table = view.results.table
    assert [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())][:5] == [
        "model", "role", "epochs", "train acc %", "test acc %"]
    assert [table.item(r, 0).text() for r in range(table.rowCount())] == ["clean", "attacked", "defended"]
    assert [table.item(r, 4).text() for r in range(3)] == [
        f"{100 * summary[n]:.1f}" for n in ("clean", "attacked", "defended")]
    assert "final test accuracy per model: clean" in view.results.title.text()
    assert view.results.report_box.isHidden()
    acc = view.runs_table.item(0, 6)
    assert acc.text() == f"{100 * summary['defended']:.1f} % (defended)"
    assert acc.toolTip().splitlines()[1:] == [f"{n}: {100 * summary[n]:.1f} %"
                                              for n in ("clean", "attacked", "defended")]

    # a drill with several reports: the chooser lists them and opens on the main one
    from breakfix_desktop.core.protocol import encode, make_event

    report = next(json.loads(line) for line in EVALUATE.read_text().splitlines() if '"metrics"' in line)["report"]
    for series, acc_value in (("clean", 0.75), ("attacked", 0.25)):
        fig6.apply_line(encode(make_event("metrics", split="Testing", report={**report, "accuracy": acc_value},
                                          series=series)))
    view.results.show_run(None)
    view.results.show_run(fig6)
    box = view.results.report_box
    assert not box.isHidden() and [box.itemText(i) for i in range(box.count())] == [
        "clean / Testing", "attacked / Testing"]
    assert box.currentText() == "clean / Testing" and "accuracy 75.0 %" in view.results.title.text()
    box.setCurrentIndex(1)
    assert view.results.shown_report()["accuracy"] == 0.25 and "accuracy 25.0 %" in view.results.title.text()
    assert table.item(4, 3).text() == "25.0"  # the report table, accuracy row
    view.results.show_run(fig6)  # a refresh of the same run keeps the choice
    assert box.currentText() == "attacked / Testing"


def test_curves_update_on_the_timer_not_per_event(qtbot, studio):
    view = make_view(qtbot, studio)
    run = D.DrillRun("live", "train-clean", "Train (clean)", number=1)
    studio.runs[run.id] = run
    view.set_plotted([run.id])
    updates = view.curves.updates
    for line in TRAIN.read_text().splitlines():
        run.apply_line(line)
    assert view.curves.updates == updates  # nothing drawn per event
    qtbot.waitUntil(lambda: view.curves.updates > updates, timeout=2000)
    assert len(view.curves.curve_data(run.id, "batch")[0]) == 21
    assert view.curves.refresh() == 0  # unchanged run: no setData


def test_baseline_deltas_and_report_export(qtbot, studio, tmp_path):
    view = make_view(qtbot, studio)
    base, run = _recorded(studio, 1), _recorded(studio, 2)
    base.reports["Testing"] = json.loads(json.dumps(base.report))
    base.reports["Testing"]["per_class"]["pituitary"]["precision"] = 0.25
    view._rebuild_runs()
    view.select_run(run.id)
    view.results.set_baseline(base.id)
    headers = [view.results.table.horizontalHeaderItem(c).text() for c in range(view.results.table.columnCount())]
    assert headers == ["class", "precision %", "Δ", "recall %", "Δ", "F1 %", "Δ", "support"]
    assert view.results.table.item(3, 2).text() == "+25.0"
    assert view.results.table.item(3, 2).foreground().color().name() == "#1e6b3a"
    html_path, json_path = view.results.export(str(tmp_path / "r.html"))
    text = html_path.read_text()
    assert "data:image/png;base64," in text and "+25.0" in text
    assert json.loads(json_path.read_text())["baseline"]["id"] == base.id
    pdf, pdf_json = view.results.export(str(tmp_path / "r.pdf"))
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf_json.is_file()


def test_rerun_from_history_in_a_new_session(qtbot, studio):
    view = make_view(qtbot, studio, prefix=replay_prefix(chunk=50))
    run = wait_final(qtbot, launch_tiny(view, epochs=2))
    assert run.status == "ok"
    fresh = D.DrillStudio(store_dir=studio.history.folder, data_dir=studio.data_dir, status=AVAILABLE)
    view2 = make_view(qtbot, fresh, prefix=replay_prefix(chunk=50))
    assert view2.runs_table.rowCount() == 1
    view2.select_run(run.id)
    assert view2.results.table.rowCount() == 6  # results of a stored run, rebuilt from its events
    [again] = view2.rerun(view2.selected_run())
    assert again.config["settings"]["epochs"] == 2 and again.id != run.id
    wait_final(qtbot, again)
    assert again.status == "ok" and len(D.RunHistory(studio.history.folder).entries()) == 2


def test_history_has_every_event_when_the_window_closes_right_after_the_run(qtbot, studio):
    """The history is written by a background thread (events incrementally while the run streams);
    closing the window right after a run's end still leaves every event and the results on disk."""
    import sqlite3

    view = make_view(qtbot, studio, prefix=replay_prefix(chunk=50, delay=0.01))
    studio.persist_interval = 0.0  # store new events at every tick
    run = launch_tiny(view)
    qtbot.waitUntil(lambda: studio.history.stored_events(run.id) > 0 or run.is_final, timeout=20000)
    wait_final(qtbot, run)
    assert run.status == "ok", (run.message, run.stderr_tail)
    view.close()  # at once: no event-loop turn for the writer
    conn = sqlite3.connect(str(studio.history.path))
    try:
        rows = conn.execute("SELECT event FROM events WHERE run_id = ? ORDER BY seq", (run.id,)).fetchall()
        assert [json.loads(r[0]) for r in rows] == run.events and len(rows) == 32
        status, record = conn.execute("SELECT status, record FROM runs WHERE id = ?", (run.id,)).fetchone()
    finally:
        conn.close()
    assert status == "ok" and json.loads(record)["results"]["reports"]["Testing"]["accuracy"] == 0.75
    assert studio.history.write_errors == []


# --------------------------------------------------------------------------- real backend, end to end
@pytest.mark.slow
def test_real_quick_run_from_the_view(qtbot, studio):
    view = make_view(qtbot, studio)
    view.select_recipe("train-clean")
    for name, value in (("model", "tiny"), ("epochs", "2"), ("batch_size", "4"), ("lr", "0.003")):
        assert view.set_field(name, value) is None
    view.device_box.setCurrentText("cpu")
    [run] = view.launch()
    wait_final(qtbot, run, timeout=240000)
    assert run.status == "ok", (run.message, run.stderr_tail)
    assert len(run.epochs) == 2 and run.report is not None and run.report["n"] == 4
    assert (Path(run.out_dir) / "checkpoint.pt").is_file() and (Path(run.out_dir) / "report.json").is_file()
    assert list(view.curves.curve_data(run.id, "acc_test")[0]) == [1, 2]
    assert view.results.table.rowCount() == 6


@pytest.mark.slow
@pytest.mark.realdata
def test_real_quick_run_on_real_data_subset(qtbot, tmp_path, real_data):
    studio = D.DrillStudio(store_dir=tmp_path / "store", data_dir=real_data)
    if not studio.backend.available:
        pytest.skip(studio.backend.message)
    view = make_view(qtbot, studio)
    view.select_recipe("train-clean")
    for name, value in (("model", "tiny"), ("epochs", "1"), ("batch_size", "8"),
                        ("max_train_images", "40"), ("max_test_images", "20")):
        assert view.set_field(name, value) is None
    view.device_box.setCurrentText("cpu")
    [run] = view.launch()
    wait_final(qtbot, run, timeout=300000)
    assert run.status == "ok", (run.message, run.stderr_tail)
    assert run.report["n"] == 20 and len(run.epochs) == 1 and len(run.batch_loss) >= 1
    assert run.config["data"] == str(real_data)


@pytest.mark.slow
@pytest.mark.realdata
def test_real_quick_drill_recipe_from_the_view(qtbot, tmp_path, real_data):
    """Item 6: a real backend drill recipe (python -m training drill table6-fooling-loss --quick
    --threads 1, the cheapest: one tiny model, one epoch on the drill's quick subset of the real
    scans) launched from the view through QProcess, then its results and history."""
    import sqlite3

    from breakfix_desktop._qt.qt_backend_job import QtRecipeProbe

    studio = D.DrillStudio(store_dir=tmp_path / "store", runs_dir=tmp_path / "runs", data_dir=real_data)
    if not studio.backend.available:
        pytest.skip(studio.backend.message)
    view = make_view(qtbot, studio)
    probe = QtRecipeProbe()  # the backend's own drill list, as the view asks for it when shown
    with qtbot.waitSignal(probe.found, timeout=120000) as listing:
        probe.start()
    view._on_recipes_found(listing.args[0])
    view.select_recipe("drill:table6-fooling-loss")
    for name, value in (("model", "tiny"), ("quick", "true"), ("threads", "1")):
        assert view.set_field(name, value) is None
    view.device_box.setCurrentText("cpu")
    [run] = view.launch()
    assert run.steps[0][:2] == ["drill", "table6-fooling-loss"] and run.steps[0][-3:] == ["--quick", "--threads", "1"]
    wait_final(qtbot, run, timeout=300000)
    assert run.status == "ok", (run.message, run.stderr_tail)
    assert run.invalid_lines == [] and any(d.epochs for d in run.series_data.values())  # its training curve
    assert run.report is not None and 50 <= run.report["n"] <= 120  # the drill's quick test subset
    assert view.tabs.currentWidget() is view.results and view.results.table.rowCount() == 6
    assert (Path(run.out_dir) / "report.json").is_file()
    view.close()  # flushes the history
    conn = sqlite3.connect(str(studio.history.path))
    try:
        (events,) = conn.execute("SELECT COUNT(*) FROM events WHERE run_id = ?", (run.id,)).fetchone()
        status, acc = conn.execute("SELECT status, test_acc FROM runs WHERE id = ?", (run.id,)).fetchone()
    finally:
        conn.close()
    assert events == len(run.events) and status == "ok" and acc == pytest.approx(run.report["accuracy"])


@pytest.mark.slow
def test_screenshot_command_saves_live_and_report_pngs(tmp_path):
    out = subprocess.run([sys.executable, "-m", "breakfix_desktop.tools.drill_screenshots", "--replay",
                          "--out-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for name in ("drills-live.png", "drills-report.png", "drills-curves.png", "drills-curves.svg",
                 "drills-fig6-live.png", "drills-fig6.png", "drills-fig5.png"):
        assert (tmp_path / name).stat().st_size > 5000, name


# --------------------------------------------------------------------------- drill recipes from the backend
def test_recipe_probe_reads_drill_list_or_reports_it_missing(qtbot, studio):
    from breakfix_desktop._qt.qt_backend_job import QtRecipeProbe

    listing = [{"name": "fgsm", "title": "FGSM drill", "role": "attacked", "attack": "fgsm"}]
    probe = QtRecipeProbe(prefix=["-c", f"import json; print(json.dumps({listing!r}))"])
    with qtbot.waitSignal(probe.found, timeout=10000) as found:
        probe.start()
    assert found.args[0] == listing
    view = make_view(qtbot, studio)
    view._on_recipes_found(found.args[0])
    view.select_recipe("drill:fgsm")
    assert view.launch_button.isEnabled() and "1 drill recipe(s) listed by the backend" in view.banner.text()
    assert "eps" in view.params_view.fields

    from breakfix_desktop.core.drills import recipes_from_listing

    real = QtRecipeProbe()  # the real backend lists the paper's drills
    with qtbot.waitSignal(real.found, timeout=60000) as found_real:
        real.start()
    names = [r.name for r in recipes_from_listing(found_real.args[0])]
    from training.drills import list_drills

    assert names == [f"drill:{n}" for n in list_drills()] and "drill:table1-backdoor-cnn" in names


def test_long_batch_history_is_handed_to_setdata_as_its_peak_envelope(qtbot):
    """A per-batch loss of 50k points reaches pyqtgraph as its bounded min/max envelope, grown from
    the new points only; short histories are drawn exactly."""
    import numpy as np

    from breakfix_desktop._qt.qt_curves import DECIMATE_CAP, QtCurvesView

    view = QtCurvesView()
    qtbot.addWidget(view)
    view.timer.stop()
    run = D.DrillRun("long", "drill:x", "long history", role="clean", number=1)
    rng = np.random.default_rng(0)
    loss = 1.0 + rng.normal(0, 0.2, 50_003)
    loss[12_345] = 9.0  # a spike the envelope must keep
    for i, value in enumerate(loss[:100]):
        run.batch_loss.append(i / 1000, float(value))
    run.version += 1
    view.show_runs([run])
    source = view.tracks[run.id].curves["batch"]
    np.testing.assert_array_equal(source.yData, loss[:100])  # what setData got: a short history as is
    _, dec = view.tracks[run.id].decimators[D.MAIN_SERIES]
    for i, value in enumerate(loss[100:], start=100):
        run.batch_loss.append(i / 1000, float(value))
    run.version += 1
    view.refresh()
    sx, sy = source.xData, source.yData  # what setData got
    assert len(sx) <= 2 * DECIMATE_CAP + 2 + dec.block_size < len(loss)
    assert sy.max() == 9.0 and sy.min() == loss.min() and np.all(np.diff(sx) >= 0)
    assert dec.n == len(loss)
    run.batch_loss.append(50.004, 0.5)
    run.version += 1
    view.refresh()
    assert dec.n == len(loss) + 1 and source.yData[-1] == 0.5 and source.xData[-1] == 50.004

    view.decimate = False  # the benchmark's naive arm: the whole history
    run.batch_loss.append(50.005, 0.4)
    run.version += 1
    view.refresh()
    assert len(source.xData) == len(loss) + 2


def test_import_drill_folder_from_the_history_tab(qtbot, studio, tmp_path, monkeypatch):
    from test_drill_runs import _drill_folder

    view = make_view(qtbot, studio)
    folder = _drill_folder(tmp_path, FIG6)
    monkeypatch.setattr("breakfix_desktop._qt.qt_drills_view.QFileDialog.getExistingDirectory",
                        lambda *a, **k: str(folder))
    view.import_button.click()
    [run] = studio.all_runs()
    assert view.runs_table.rowCount() == 1 and view.runs_table.item(0, 5).text() == "ok"
    assert view.selected_run() is run and view.tabs.currentWidget() is view.results
    assert [label.text for _, label in view.curves.legend.items] == ["#1 clean", "#1 attacked", "#1 defended"]
    # the drill's printed table (ours beside the paper's) opens first; the per-model table is one choice away
    results = view.results
    assert results.showing_paper_table() and results.report_box.currentText() == "Table: ours vs paper"
    assert results.paper_view.toPlainText().splitlines()[2] == "clean 0.22  0.80"
    assert "Table: ours vs paper" in results.title.text()
    assert [results.report_box.itemText(i) for i in range(results.report_box.count())] == [
        "Table: ours vs paper", "Run summary"]  # this drill sends no classification report
    results.report_box.setCurrentIndex(1)
    assert not results.showing_paper_table() and results.pages.currentIndex() == 0
    assert [results.table.item(r, 0).text() for r in range(3)] == ["clean", "attacked", "defended"]
    assert "final test accuracy per model" in results.title.text()
    assert view.error_label.isHidden()
    view.import_button.click()  # the same folder again: refused, nothing added
    assert view.runs_table.rowCount() == 1
    assert not view.error_label.isHidden() and "Not imported" in view.error_label.text()
    assert "already in the history as #1" in view.error_label.text()
    view.rerun(run)
    assert len(studio.all_runs()) == 1 and "python -m training drill fig6-drunk-curves" in view.error_label.text()


def test_imported_run_with_a_report_offers_table_and_report(qtbot, studio, tmp_path):
    from test_drill_runs import _drill_folder

    view = make_view(qtbot, studio)
    run = view.import_folder(_drill_folder(tmp_path, EVALUATE, "evaluate"))
    results = view.results
    assert run.recipe == "evaluate" and run.status == "ok"
    assert [results.report_box.itemText(i) for i in range(results.report_box.count())] == [
        "Table: ours vs paper", "Testing"]
    assert results.showing_paper_table()
    results.report_box.setCurrentIndex(1)
    assert results.pages.currentIndex() == 0 and results.shown_report() is run.reports["Testing"]
    assert results.table.item(0, 0).text() == "glioma" and results.matrix.report is run.reports["Testing"]
