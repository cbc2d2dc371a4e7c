"""QtReviewView over a QuarantineStore: pending scans, withheld result, release / confirm with a name."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings, Qt, QThreadPool

from breakfix_desktop._qt.qt_review_view import SETTINGS_REVIEWER, QtReviewView
from breakfix_desktop.core.display import format_score
from breakfix_desktop.core.localisation import NO_MAP, Localiser, map_output_name
from breakfix_desktop.core.model_registry import ModelCatalog
from breakfix_desktop.core.quarantine import QuarantineStore
from breakfix_desktop.core.screening_session import ScreeningSession
from conftest import CLASSES, scan_image


@pytest.fixture
def store(tmp_path):
    with QuarantineStore(tmp_path / "store") as s:
        yield s


@pytest.fixture
def settings(tmp_path):
    return QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)


def screen(catalog, store, tmp_path, flagged=2, clean=1):
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    for i in range(flagged):
        scan_image(100 + i, flagged=True).save(folder / f"stamped {i}.png")
    for i in range(clean):
        scan_image(i).save(folder / f"clean {i}.png")
    session = ScreeningSession(catalog, store)
    session.add_paths([folder])
    session.run()
    return session


@pytest.fixture
def make_view(qtbot, store, settings):
    views = []

    def make(catalog):
        view = QtReviewView(store, catalog, settings)
        qtbot.addWidget(view)
        view.resize(1100, 700)
        view.show()
        views.append(view)
        return view

    yield make
    for v in views:
        v.shutdown()
    QThreadPool.globalInstance().waitForDone(10000)


@pytest.fixture
def catalog(make_screening_models):
    return ModelCatalog(make_screening_models(), prefer_gpu=False)


def panel_text(view):
    return " ".join(w.text() for w in (view.status_label, view.file_label, view.facts, view.result_label,
                                       view.history_label, view.localisation_label))


def test_queue_shows_scan_score_and_hides_the_result(make_view, catalog, store, tmp_path, qtbot):
    screen(catalog, store, tmp_path)
    view = make_view(catalog)
    assert view.list.count() == 2 and view.count_label.text() == "<b>2 scans waiting for review</b>"
    assert view.current_record().id == store.review_queue()[0].id
    qtbot.waitUntil(lambda: view.localisation is not None, timeout=10000)
    assert view.viewer.has_image() and view.viewer.image.shape == (224, 224)
    assert view.viewer.overlay is None and view.localisation_label.text() == "No localisation map available."
    text = panel_text(view)
    assert "QUARANTINED" in view.status_label.text() and "WITHHELD" in view.result_label.text()
    assert not any(c in text for c in CLASSES)  # the classification is nowhere on screen
    score_bar = view.scores_box.itemAt(1).widget()
    assert score_bar.format() == "score 1.000" and "trigger" in view.scores_box.itemAt(0).widget().text()
    assert "flagged this scan" in view.scores_box.itemAt(0).widget().text()
    # the list names the check that flagged each scan, with its score
    assert view.list.item(0).text().splitlines()[1].startswith("trigger")
    assert view.release_button.isEnabled() and view.confirm_button.isEnabled()
    assert view.release_button.shortcut().toString() == "Ctrl+R"
    assert view.confirm_button.shortcut().toString() == "Ctrl+T"


def test_a_tiny_calibrated_threshold_is_readable(make_view, make_screening_models, store, tmp_path, qtbot):
    """The shipped detector's threshold is 0.000376: the panel must print it (not "0.00") and its
    bar must read as flagged - past half way, where the threshold sits - not as an empty 0-1 bar."""
    catalog = ModelCatalog(make_screening_models(threshold=0.000375569), prefer_gpu=False)
    screen(catalog, store, tmp_path, flagged=1, clean=0)
    view = make_view(catalog)
    label, bar = view.scores_box.itemAt(0).widget(), view.scores_box.itemAt(1).widget()
    assert "flags at \u2265 0.000376" in label.text() and "flagged this scan" in label.text()
    score = store.review_queue()[0].scores["trigger"]
    assert bar.format() == f"score {format_score(score)}" and bar.value() > bar.maximum() / 2
    assert "threshold" in bar.toolTip()
    assert bar.property("flagged") is True


def test_release_needs_a_name_then_shows_the_result(make_view, catalog, store, settings, tmp_path, qtbot):
    session = screen(catalog, store, tmp_path)
    view = make_view(catalog)
    decided = []
    view.decided.connect(lambda sid, d: decided.append((sid, d)))
    view.reviewer_edit.clear()
    qtbot.mouseClick(view.release_button, Qt.LeftButton)
    assert not view.problem_label.isHidden() and "name" in view.problem_label.text()
    assert store.reviews() == [] and "released" not in [e.event for e in store.audit_entries()]
    assert decided == []

    scan_id = view.current_id()
    qtbot.keyClicks(view.reviewer_edit, "Dr Ada Test")
    view.comment_edit.setPlainText("calibration mark, not a trigger")
    qtbot.mouseClick(view.release_button, Qt.LeftButton)
    assert decided == [(scan_id, "release")] and view.problem_label.isHidden()
    rec = store.get(scan_id)
    assert rec.review_status == "released" and rec.label in CLASSES
    review = store.reviews(scan_id)[0]
    assert (review.reviewer, review.comment, review.decision) == ("Dr Ada Test", "calibration mark, not a trigger",
                                                                   "release")
    entry = store.audit_entries()[-1]
    assert entry.event == "released" and entry.payload["reviewer"] == "Dr Ada Test"
    # after release the result is shown; the decided scan stays listed, marked
    assert view.current_id() == scan_id and view.status_label.text() == "RELEASED"
    assert rec.label in view.result_label.text() and "Dr Ada Test" in view.history_label.text()
    assert not view.release_button.isEnabled() and view.list.count() == 2
    assert "1 scan waiting" in view.count_label.text() and "RELEASED" in view.list.item(0).text()
    assert view.comment_edit.toPlainText() == ""
    # the name is remembered for next time
    assert settings.value(SETTINGS_REVIEWER) == "Dr Ada Test"
    assert make_view(catalog).reviewer_edit.text() == "Dr Ada Test"
    # the screening session sees the release too
    assert session.refresh_from_store() and any(r.review_status == "released" for r in session.results())


def test_confirm_tampering_keeps_it_withheld(make_view, catalog, store, tmp_path, qtbot):
    screen(catalog, store, tmp_path)
    view = make_view(catalog)
    view.list.setCurrentRow(1)
    scan_id = view.current_id()
    view.reviewer_edit.setText("Dr B")
    view.confirm_button.click()
    rec = store.get(scan_id)
    assert rec.review_status == "confirmed" and rec.label is None
    assert store.audit_entries()[-1].event == "confirmed"
    assert view.status_label.text() == "TAMPERING CONFIRMED" and "WITHHELD" in view.result_label.text()
    assert not any(c in panel_text(view) for c in CLASSES)
    view.refresh()  # a fresh look: only the still-pending scan is listed
    view._decided.clear()  # noqa: SLF001 - as a new session would start
    view.refresh()
    assert view.list.count() == 1 and view.current_id() != scan_id


def test_keyboard_shortcuts(make_view, catalog, store, tmp_path, qtbot):
    screen(catalog, store, tmp_path)
    view = make_view(catalog)
    view.activateWindow()
    qtbot.waitUntil(view.isActiveWindow, timeout=5000)
    view.reviewer_edit.setText("Dr Keys")
    first = view.current_id()
    qtbot.keyClick(view.list, Qt.Key_T, Qt.ControlModifier)  # the button's animated click follows
    qtbot.waitUntil(lambda: store.get(first).review_status == "confirmed", timeout=5000)
    view.list.setCurrentRow(1)
    second = view.current_id()
    qtbot.keyClick(view.list, Qt.Key_R, Qt.ControlModifier)
    qtbot.waitUntil(lambda: store.get(second).review_status == "released", timeout=5000)


def test_localisation_overlay_from_a_detector_that_provides_a_map(make_view, store, tmp_path, qtbot):
    from breakfix_desktop.tools.demo_models import make_demo_models

    catalog = ModelCatalog(make_demo_models(tmp_path / "demo"), prefer_gpu=False)
    screen(catalog, store, tmp_path, flagged=1, clean=0)
    view = make_view(catalog)
    qtbot.waitUntil(lambda: view.localisation is not None, timeout=10000)
    heat = view.viewer.overlay
    assert heat is not None and heat.shape == view.viewer.image.shape
    assert heat[:10, :10].max() > 0.9 and heat[100:, 100:].max() == 0  # on the stamped corner only
    assert view.viewer.overlay_visible
    assert view.localisation_label.text() == "Localisation: localisation map from demo-trigger-detector"
    assert map_output_name(["score", "map"]) == "map" and map_output_name(["score", "logits"]) is None
    loc = Localiser(catalog).localise(store.folder / store.review_queue()[0].quarantine_file)
    assert loc.heat is not None and loc.model == "demo-trigger-detector"


def test_empty_queue_and_no_store(make_view, catalog, qtbot):
    view = make_view(catalog)
    assert view.list.count() == 0 and "No scans waiting" in view.count_label.text()
    assert "Nothing to review" in view.file_label.text() and not view.release_button.isEnabled()
    assert view.release() is False
    broken = QtReviewView(None, store_error="cannot create the store folder /x")
    qtbot.addWidget(broken)
    assert not broken.banner.isHidden() and "/x" in broken.banner.text() and not broken.release_button.isEnabled()
    assert NO_MAP == "no localisation map available"
