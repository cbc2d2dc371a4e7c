"""The main window as a workstation: screening -> review queue -> release -> report; the screenshot tool."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings, QThreadPool

from breakfix_desktop._qt.qt_main_window import QtMainWindow
from breakfix_desktop.core.model_registry import ModelCatalog
from conftest import CLASSES, scan_image


@pytest.fixture
def settings(tmp_path):
    return QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)


def test_screen_review_release_and_report(qtbot, tmp_path, settings, make_screening_models):
    folder = tmp_path / "in"
    folder.mkdir()
    scan_image(1).save(folder / "clean.png")
    scan_image(2, flagged=True).save(folder / "stamped.png")
    win = QtMainWindow(ModelCatalog(make_screening_models(), prefer_gpu=False), settings=settings,
                       store=tmp_path / "store")
    qtbot.addWidget(win)
    win.show()
    view = win.screening_view
    assert win.section() == "Screening" and win.nav.item(1).text() == "Review queue"
    view.session.add_paths([folder])
    assert view.start()
    qtbot.waitUntil(lambda: view.shown_state == "finished", timeout=30000)
    # the status bar learnt the device from the worker thread, safely (queued to the UI thread)
    qtbot.waitUntil(lambda: win.device_label.text().startswith("Inference: CPU"), timeout=5000)
    # the review queue is re-read off the UI thread, coalesced (not once per quarantined scan)
    qtbot.waitUntil(lambda: win.nav.item(1).text() == "Review queue (1)", timeout=5000)

    stamped = next(i for i in range(2) if view.session.result(i).verdict == "quarantined")
    view.select_row(stamped)
    view.result_panel.review_button.click()  # "Open in Review queue"
    assert win.section() == "Review queue" and win.review_view.current_id() == view.session.result(stamped).scan_id
    win.review_view.reviewer_edit.setText("Dr Window")
    assert win.review_view.release()
    assert win.nav.item(1).text() == "Review queue"
    released = view.session.result(stamped)
    assert released.review_status == "released" and released.label in CLASSES  # the card follows the review

    out = view.export_report(tmp_path / "report.csv", "csv")
    assert "released after review" in out.read_text(encoding="utf-8-sig")
    assert [a.text() for a in win.menuBar().actions()][0] == "&File"
    assert win.export_csv_action.text() == "CSV..." and win.add_folder_action.shortcut().toString() == "Ctrl+Shift+O"
    win.close()
    assert win.store is None  # the window opened the store, so it closed it


def test_store_that_cannot_be_opened(qtbot, tmp_path, settings):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    win = QtMainWindow(ModelCatalog(tmp_path / "none"), settings=settings, store=blocker / "store")
    qtbot.addWidget(win)
    assert win.store is None
    assert "could not be opened" in win.screening_view.banner.text()
    assert not win.review_view.banner.isHidden()


@pytest.mark.slow
def test_screenshot_demo_writes_the_pictures(qapp, tmp_path):
    from breakfix_desktop.tools.screenshot import run_demo

    assert run_demo(qapp, tmp_path / "shots", (1100, 700), scans=tmp_path / "no-real-scans") == 0
    for name in ("screening.png", "review.png", "review-released.png"):
        assert (tmp_path / "shots" / name).stat().st_size > 20000
    assert (tmp_path / "shots" / "report.pdf").read_bytes().startswith(b"%PDF")
    QThreadPool.globalInstance().waitForDone(10000)


def test_screenshot_of_one_models_card(qapp, tmp_path, make_models, capsys):
    from breakfix_desktop.tools.screenshot import main

    folder = make_models([("tiny-cnn", "classifier"), ("trigger-check", "detector")])
    out = tmp_path / "card.png"
    assert main(["--out", str(out), "--section", "Models", "--model", "trigger-check", "--models", str(folder)]) == 0
    assert out.stat().st_size > 10000
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "x.png"), "--section", "Models", "--model", "nope", "--models", str(folder)])
    assert exc.value.code == 2 and "--model nope: not in the models folder (it lists: tiny-cnn, trigger-check)" \
        in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
