"""QtMainWindow: sections, status bar following the ModelCatalog, persisted settings, menus."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings

from breakfix_desktop._qt.qt_main_window import SECTIONS, QtMainWindow
from breakfix_desktop._qt.qt_models_view import QtModelsView
from breakfix_desktop._qt.qt_review_view import QtReviewView
from breakfix_desktop._qt.qt_screening_view import QtScreeningView
from breakfix_desktop.core.model_registry import InferenceDevice, ModelCatalog


@pytest.fixture
def settings(tmp_path):
    return QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)


@pytest.fixture
def window(qtbot, tmp_path, settings):
    win = QtMainWindow(ModelCatalog(tmp_path / "no-models"), settings=settings, store=tmp_path / "store")
    qtbot.addWidget(win)
    return win


def test_shell_has_sections_pages_menus_and_icon(window):
    assert [window.nav.item(i).text() for i in range(window.nav.count())] == list(SECTIONS)
    assert isinstance(window.pages["Models"], QtModelsView)
    assert isinstance(window.pages["Screening"], QtScreeningView)
    assert isinstance(window.pages["Review queue"], QtReviewView)
    # no models shipped: the window still opens and the Screening page says why it cannot run
    assert "No verified classifier is installed" in window.screening_view.banner.text()
    assert not window.screening_view.start_button.isEnabled()
    assert window.section() == "Screening"
    window.set_section("models")
    assert window.stack.currentWidget() is window.models_view
    with pytest.raises(ValueError):
        window.set_section("nope")
    assert window.quit_action.shortcut().toString() == "Ctrl+Q"
    menus = [a.text() for a in window.menuBar().actions()]
    assert menus == ["&File", "&Help"]
    assert not window.windowIcon().isNull()


def test_status_bar_follows_the_catalog(window, make_models):
    assert window.models_label.text() == "Models: no models shipped"
    assert window.device_label.text().startswith("Inference: not started")
    window.model.set_device(InferenceDevice("CPUExecutionProvider", "GPU not requested"))
    assert window.device_label.text().startswith("Inference: CPU (onnxruntime ")

    folder = make_models([("tiny-cnn", "classifier")])
    window.open_models_folder(str(folder))
    entry = window.model.registry.models[0]
    assert window.models_label.text() == f"Models: tiny-cnn {entry.sha256[:12]}"
    assert window.section() == "Models" and window.models_view.table.rowCount() == 1

    onnx_file = folder / "tiny-cnn.onnx"
    onnx_file.write_bytes(b"swapped")
    window.model.reload()
    assert window.models_label.text() == "Models: no verified model, 1 REFUSED"
    assert "bold" in window.models_label.styleSheet()
    assert window.models_view.table.item(0, 2).text() == "refused"


def test_real_session_reports_device_in_status_bar(window, make_models):
    window.model.prefer_gpu = False
    window.model.reload(make_models())
    window.model.open_session(window.model.registry.verified()[0])
    assert window.device_label.text().startswith("Inference: CPU (onnxruntime ")


def test_geometry_and_last_section_persist(qtbot, tmp_path, settings):
    catalog = ModelCatalog(tmp_path)
    first = QtMainWindow(catalog, settings=settings, store=tmp_path / "store")
    qtbot.addWidget(first)
    first.resize(700, 500)  # within the offscreen screen (800 x 600)
    first.set_section("Drills")
    first.close()
    assert settings.value("main/section") == "Drills"

    second = QtMainWindow(catalog, settings=settings, store=tmp_path / "store")
    qtbot.addWidget(second)
    assert second.section() == "Drills"
    assert second.size().width() == 700 and second.size().height() == 500


def test_app_entry_point_parses_and_builds_the_real_window(qtbot, tmp_path, settings, make_models, capsys):
    from breakfix_desktop import app

    with pytest.raises(SystemExit) as exc:
        app.main(["--version"])
    assert exc.value.code == 0 and "breakfix-desktop" in capsys.readouterr().out
    assert app.main(["--models", str(tmp_path / "missing")]) == 2
    assert app.build_parser().parse_args(["--models", "x", "gui"]).command == "gui"

    win = app.create_main_window(make_models(), settings=settings, probe_device=False, store=tmp_path / "store")
    qtbot.addWidget(win)
    assert win.models_view.table.rowCount() == 1 and "tiny-cnn" in win.models_label.text()


def test_deferred_window_is_shown_before_the_models_then_gets_ready(qtbot, tmp_path, settings, make_models):
    from breakfix_desktop import app
    from breakfix_desktop._qt.qt_main_window import QtMainWindow

    win = app.create_main_window(make_models(), settings=settings, store=tmp_path / "store", deferred=True)
    qtbot.addWidget(win)
    win.show()
    # on screen, nothing heavy done yet: no store, no pages, model actions off, the status bar says so
    assert not win.is_ready and win.store is None and win.screening_view is None
    assert not win.model.loaded and win.models_label.text() == "Models: loading and verifying..."
    assert win.statusBar().currentMessage() == QtMainWindow.LOADING_TEXT
    assert not win.add_files_action.isEnabled() and not win.reload_models_action.isEnabled()
    assert win.section() == "Screening"
    with qtbot.waitSignal(win.ready, timeout=20000):
        win.start_loading(probe_device=False)
    assert win.is_ready and win.store is not None and win.model.loaded
    assert isinstance(win.pages["Screening"], QtScreeningView) and win.stack.currentWidget() is win.screening_view
    assert isinstance(win.pages["Review queue"], QtReviewView)
    assert "tiny-cnn" in win.models_label.text() and win.models_view.table.rowCount() == 1
    assert win.add_files_action.isEnabled() and win.statusBar().currentMessage() == ""
    win.loader.join(10)
    win.close()


def test_the_window_shell_imports_no_numpy_pil_sqlite_or_onnxruntime():
    import subprocess
    import sys

    code = ("import sys, breakfix_desktop.app, breakfix_desktop._qt.qt_main_window;"
            "print(sorted(m for m in ('numpy', 'PIL', 'sqlite3', 'onnxruntime', 'importlib.metadata') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_gui_thread_budget_leaves_a_core():
    from breakfix_desktop.core.model_registry import gui_thread_budget

    for cores in (1, 2, 4, 8, 16):
        workers, budget = gui_thread_budget(cores=cores)
        assert workers * budget.intra_op <= max(1, cores - 1) and not budget.spinning
    assert gui_thread_budget(total=3, cores=8)[1].intra_op == 3
