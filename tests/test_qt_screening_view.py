"""QtScreeningView over a ScreeningSession: cards follow the session; runs off the UI thread; cancel."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QThreadPool, QTimer, QUrl
from PySide6.QtGui import QDropEvent

from breakfix_desktop._qt.qt_scan_items import BadgeRole, ResultRole, badge_for
from breakfix_desktop._qt.qt_screening_view import QtScreeningView
from breakfix_desktop.core.display import format_score
from breakfix_desktop.core.model_registry import ModelCatalog
from breakfix_desktop.core.quarantine import QuarantineStore
from breakfix_desktop.core.screening import NO_DETECTOR_NOTE, ScreeningEngine
from breakfix_desktop.core.screening_session import ScreeningSession
from conftest import scan_image, write_dicom


@pytest.fixture
def store(tmp_path):
    with QuarantineStore(tmp_path / "store") as s:
        yield s


@pytest.fixture
def make_view(qtbot, tmp_path, store):
    views = []

    def make(models, **kw):
        session = ScreeningSession(ModelCatalog(models, prefer_gpu=False), store, **kw)
        view = QtScreeningView(session, QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
        qtbot.addWidget(view)
        view.resize(1000, 700)
        view.show()
        views.append(view)
        return view

    yield make
    for view in views:
        view.shutdown()
    QThreadPool.globalInstance().waitForDone(10000)


@pytest.fixture
def scans(tmp_path):
    folder = tmp_path / "scans"
    (folder / "nested").mkdir(parents=True)
    for i in range(4):
        scan_image(i).save(folder / f"clean {i}.png")
    scan_image(20, flagged=True).save(folder / "nested" / "stamped.png")
    (folder / "nested" / "zero.png").write_bytes(b"")
    return folder


def badges(view):
    model = view.model
    return {model.data(model.index(r), Qt.DisplayRole): model.data(model.index(r), BadgeRole)
            for r in range(model.rowCount())}


def slow_batches(monkeypatch, seconds):
    original = ScreeningEngine._process_batch

    def slow(self, batch, models):
        time.sleep(seconds)
        return original(self, batch, models)

    monkeypatch.setattr(ScreeningEngine, "_process_batch", slow)


def test_no_classifier_says_so_and_cards_follow_the_session(make_view, tmp_path, scans):
    view = make_view(tmp_path / "no-models")
    assert view.banner.isVisible() and "No verified classifier is installed" in view.banner.text()
    assert not view.start_button.isEnabled() and view.grid_stack.currentWidget() is view.empty
    view.session.add_paths([scans])  # change the model, the widget follows
    assert view.model.rowCount() == 6 and view.grid_stack.currentWidget() is view.grid
    assert not view.start_button.isEnabled()  # still no classifier
    assert all(b.title == "NOT SCREENED" for b in badges(view).values())
    assert view.counts_label.text().startswith("6 scan(s)")
    view.session.clear()
    assert view.model.rowCount() == 0 and view.grid_stack.currentWidget() is view.empty


def test_run_end_to_end_off_the_ui_thread(make_view, make_screening_models, scans, monkeypatch, qtbot):
    view = make_view(make_screening_models([("ens", "ensemble", "ensemble"), ("trigger", "detector", "detector")]))
    view.add_paths([scans])  # found off the UI thread
    qtbot.waitUntil(lambda: len(view.session) == 6, timeout=10000)
    assert view.start_button.isEnabled() and not view.cancel_button.isEnabled()

    slow_batches(monkeypatch, 0.15)  # give the run some length so the event loop must keep going
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(view.session.running))
    timer.start(10)
    started = time.monotonic()
    qtbot.mouseClick(view.start_button, Qt.LeftButton)
    assert time.monotonic() - started < 0.5  # the click returns at once
    assert view.session.running and view.cancel_button.isEnabled() and not view.start_button.isEnabled()
    qtbot.waitUntil(lambda: view.shown_state == "finished", timeout=30000)
    timer.stop()
    assert sum(ticks) >= 10  # the timer kept ticking while the run was going: the UI never froze

    b = badges(view)
    assert {k: v.title for k, v in b.items()} == {
        "clean 0.png": "CLEAR", "clean 1.png": "CLEAR", "clean 2.png": "CLEAR", "clean 3.png": "CLEAR",
        "stamped.png": "QUARANTINED", "zero.png": "ERROR"}
    assert b["stamped.png"].detail == "diagnosis withheld"
    assert "empty" in b["zero.png"].detail and "/" not in b["zero.png"].detail
    clear = view.model.data(view.model.index(0), ResultRole)
    assert clear.label in b["clean 0.png"].detail and b["clean 0.png"].detail.endswith("%")
    assert view.progress.value() == view.progress.maximum() == 6
    assert view.progress_label.text() == "6 of 6 screened"
    assert "1 quarantined" in view.counts_label.text() and "1 error(s)" in view.counts_label.text()
    assert view.start_button.text() == "Screen again" and view.export_button.isEnabled()


def test_selection_shows_scan_and_result(make_view, make_screening_models, scans, qtbot):
    view = make_view(make_screening_models([("ens", "ensemble", "ensemble"), ("trigger", "detector", "detector")]))
    view.session.add_paths([scans])
    assert view.start()
    qtbot.waitUntil(lambda: view.shown_state == "finished", timeout=30000)
    rows = {view.model.item(r).path.name: r for r in range(view.model.rowCount())}

    view.select_row(rows["clean 1.png"])
    qtbot.waitUntil(view.viewer.has_image, timeout=10000)
    panel = view.result_panel
    assert panel.heading.text() == "CLEAR" and panel.bars.count() == 8  # 4 classes: name + bar
    result = view.session.result(rows["clean 1.png"])
    threshold = view.session.catalog.detector_threshold("trigger")
    assert threshold is not None and result.scores["trigger"] < threshold
    check = f"trigger {format_score(result.scores['trigger'])} (flags at \u2265 {format_score(threshold)})"
    assert "Ensemble member agreement" in panel.body.text()
    assert f"Trigger checks: {check}" in panel.body.text() and "<b>trigger" not in panel.body.text()
    if result.low_confidence or result.members_disagree:
        assert "Needs a closer look" in panel.body.text()
    assert view.viewer.image.shape == (224, 224)

    view.select_row(rows["stamped.png"])
    assert "diagnosis withheld" in panel.heading.text() and panel.bars.count() == 0
    stamped = view.session.result(rows["stamped.png"])
    assert stamped.scores["trigger"] >= threshold  # the check that fired is the one in bold red
    assert f"<b>trigger {format_score(stamped.scores['trigger'])} (flags at" in panel.body.text()
    assert not panel.review_button.isHidden()
    requested = []
    view.reviewRequested.connect(requested.append)
    panel.review_button.click()
    assert requested == [view.session.result(rows["stamped.png"]).scan_id]

    view.select_row(rows["zero.png"])
    assert "Could not be screened" in panel.body.text() and panel.heading.text() == "ERROR"
    qtbot.waitUntil(lambda: "Cannot display" in view.viewer.placeholder.text(), timeout=10000)
    qtbot.waitUntil(lambda: view.model.thumbnails_loaded() >= 6, timeout=10000)  # all cards visible


def test_cancel_through_the_button(make_view, make_screening_models, tmp_path, monkeypatch, qtbot):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(12):
        scan_image(i).save(folder / f"s{i:02d}.png")
    slow_batches(monkeypatch, 0.2)
    view = make_view(make_screening_models(), batch_size=1, workers=1)
    view.session.add_paths([folder])
    view.start_button.click()
    qtbot.waitUntil(lambda: len(view.session.results()) >= 1, timeout=20000)
    view.cancel_button.click()
    qtbot.waitUntil(lambda: view.shown_state == "cancelled", timeout=20000)
    done = len(view.session.results())
    assert 1 <= done < 12
    assert view.progress_label.text().endswith("- cancelled")
    assert sum(b.title == "NOT SCREENED" for b in badges(view).values()) == 12 - done
    assert view.start_button.isEnabled() and view.start_button.text() == "Start screening"


def test_drop_folder_and_dicom_frames_and_no_detector_note(make_view, make_screening_models, tmp_path, qtbot):
    view = make_view(make_screening_models([("tiny-cnn", "classifier", "classifier")]))
    frames = np.random.default_rng(1).integers(0, 4000, (3, 40, 40)).astype(np.uint16)
    write_dicom(tmp_path / "drop" / "series.dcm", frames, frames=3)
    scan_image(5).save(tmp_path / "drop" / "one.png")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tmp_path / "drop"))])
    event = QDropEvent(QPointF(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    view.dropEvent(event)
    qtbot.waitUntil(lambda: len(view.session) == 4, timeout=10000)
    names = [view.model.data(view.model.index(r), Qt.DisplayRole) for r in range(4)]
    assert names == ["one.png", "series.dcm [frame 0]", "series.dcm [frame 1]", "series.dcm [frame 2]"]
    view.start()
    qtbot.waitUntil(lambda: view.shown_state == "finished", timeout=30000)
    assert view.notes_banner.isVisible() and NO_DETECTOR_NOTE in view.notes_banner.text()
    assert all(b.title == "CLEAR" for b in badges(view).values()), badges(view)
    view.select_row(2)
    qtbot.waitUntil(lambda: view.viewer.has_image() and view.viewer.image.shape == (40, 40), timeout=10000)
    assert "no pattern detector installed" in view.result_panel.body.text()


def test_export_from_the_view(make_view, make_screening_models, scans, tmp_path, qtbot, store):
    view = make_view(make_screening_models())
    view.session.add_paths([scans])
    view.start()
    qtbot.waitUntil(lambda: view.shown_state == "finished", timeout=30000)
    messages = []
    view.message.connect(messages.append)
    assert view.export_report(tmp_path / "out.csv", "csv") == tmp_path / "out.csv"
    assert view.export_report(tmp_path / "out.pdf", "pdf").read_bytes().startswith(b"%PDF")
    assert [e.payload["kind"] for e in store.audit_entries() if e.event == "exported"] == ["csv", "pdf"]
    assert "Report written to" in messages[-1]
    assert view.export_report(tmp_path / "missing-folder" / "x.csv", "csv") is None
    assert messages[-1].startswith("Report not written")


def test_badges_for_every_state():
    assert badge_for(None).title == "NOT SCREENED" and badge_for(None, running=True).title == "SCREENING..."


def test_worker_events_are_coalesced_and_none_is_lost(make_view, tmp_path, qtbot):
    """A burst of results from a worker thread reaches the grid as a few model updates (~10 Hz),
    every result and the last progress included, in order with the state change after them."""
    import threading

    from breakfix_desktop.core.inputs import Discovery, InputItem
    from breakfix_desktop.core.screening import ScreeningResult
    from breakfix_desktop.core.screening_session import Progress

    view = make_view(tmp_path / "no-models")
    session = view.session
    n = 300
    items = [InputItem(tmp_path / f"s{i}.png") for i in range(n)]
    session.add_discovery(Discovery(items=items, missing=[]))
    assert view.model.rowCount() == n  # UI-thread events are applied at once
    changes = []
    view.model.dataChanged.connect(lambda top, bottom, roles=(): changes.append((top.row(), bottom.row()))
                                   if ResultRole in roles else None)  # (thumbnails arrive separately)
    flushes = view.flushes

    def worker():
        for i, item in enumerate(items):
            session._emit("result", (i, ScreeningResult(path=str(item.path), verdict="clear", label="notumor",
                                                        probabilities={"notumor": 1.0})))
            session._progress = Progress(i + 1, n, 0.0, True)  # as ScreeningSession.run does
            session._emit("progress", session._progress)
            if i % 50 == 0:
                time.sleep(0.02)
        session._emit("state", "finished")

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    qtbot.waitUntil(lambda: view.shown_state == "finished", timeout=5000)
    assert all(view.model.result(i) is not None for i in range(n))
    assert view.progress.value() == n and view.progress_label.text().startswith(f"{n} of {n}")
    assert 1 <= view.flushes - flushes < 20  # not one delivery per event
    assert len(changes) < 40 and max(b for _, b in changes) == n - 1, changes[:5]
