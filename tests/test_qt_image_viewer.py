"""QtImageViewer: image in, zoom (wheel), pan (drag), window/level (right-drag, sliders), overlay, DICOM frames."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication

from breakfix_desktop._qt.qt_image_viewer import QtImageViewer
from breakfix_desktop.core.display import heat_rgba, map_to_image, window_level
from breakfix_desktop.core.preprocess import load_grey
from conftest import write_dicom


@pytest.fixture
def viewer(qtbot):
    v = QtImageViewer()
    qtbot.addWidget(v)
    v.resize(500, 420)
    v.show()
    qtbot.waitExposed(v)
    return v


def ramp(h=200, w=300):
    return np.tile(np.linspace(0, 1, w, dtype=np.float32), (h, 1))


def mouse(widget, kind, pos, button, buttons):
    event = QMouseEvent(kind, QPointF(pos), widget.mapToGlobal(QPointF(pos)), button, buttons, Qt.NoModifier)
    QApplication.sendEvent(widget, event)


def wheel(widget, steps):
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(pos, widget.mapToGlobal(pos), QPoint(), QPoint(0, 120 * steps), Qt.NoButton,
                        Qt.NoModifier, Qt.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_empty_then_image_then_cleared(viewer):
    assert not viewer.has_image() and viewer.placeholder.isVisible() and not viewer.reset_button.isEnabled()
    viewer.set_image(ramp())
    assert viewer.has_image() and viewer.view.isVisible() and not viewer.placeholder.isVisible()
    assert viewer.image_item.pixmap().width() == 300 and viewer.reset_button.isEnabled()
    np.testing.assert_array_equal(viewer.displayed_pixels(), window_level(ramp()))
    assert viewer.scale < 2  # fitted into the view
    viewer.show_message("cannot read it")
    assert not viewer.has_image() and viewer.placeholder.text() == "cannot read it"


def test_wheel_zooms_and_drag_pans(viewer):
    viewer.set_image(ramp())
    fitted = viewer.scale
    wheel(viewer.view.viewport(), 2)
    assert viewer.scale == pytest.approx(fitted * 1.25 ** 2)
    wheel(viewer.view.viewport(), -1)
    assert viewer.scale == pytest.approx(fitted * 1.25)
    viewer.zoom(4)
    bar = viewer.view.horizontalScrollBar()
    before = bar.value()
    vp = viewer.view.viewport()
    mouse(vp, QEvent.MouseButtonPress, QPoint(200, 150), Qt.LeftButton, Qt.LeftButton)
    mouse(vp, QEvent.MouseMove, QPoint(140, 150), Qt.NoButton, Qt.LeftButton)
    mouse(vp, QEvent.MouseButtonRelease, QPoint(140, 150), Qt.LeftButton, Qt.NoButton)
    assert bar.value() == before + 60  # dragging left shows what is to the right
    viewer.reset()
    assert viewer.scale == pytest.approx(fitted)


def test_window_level_by_right_drag_and_sliders(viewer):
    viewer.set_image(ramp())
    changes = []
    viewer.windowLevelChanged.connect(lambda w, l: changes.append((w, l)))
    vp = viewer.view.viewport()
    mouse(vp, QEvent.MouseButtonPress, QPoint(100, 100), Qt.RightButton, Qt.RightButton)
    mouse(vp, QEvent.MouseMove, QPoint(40, 140), Qt.NoButton, Qt.RightButton)
    mouse(vp, QEvent.MouseButtonRelease, QPoint(40, 140), Qt.RightButton, Qt.NoButton)
    assert viewer.window_width == pytest.approx(0.7) and viewer.window_center == pytest.approx(0.6)
    assert changes[-1] == (viewer.window_width, viewer.window_center)
    assert viewer.window_slider.value() == 70 and viewer.level_slider.value() == 60
    np.testing.assert_array_equal(viewer.displayed_pixels(), window_level(ramp(), 0.7, 0.6))
    viewer.window_slider.setValue(20)  # narrow window: more contrast
    assert viewer.window_width == pytest.approx(0.2)
    shown = viewer.displayed_pixels()
    assert ((shown == 0) | (shown == 255)).mean() == pytest.approx(0.8, abs=0.01)  # only 0.5..0.7 in grey
    assert "W 0.20" in viewer.wl_label.text()
    viewer.reset_button.click()
    assert (viewer.window_width, viewer.window_center) == (1.0, 0.5)


def test_overlay_with_opacity(viewer):
    viewer.set_image(ramp(100, 100))
    assert not viewer.overlay_check.isVisible()
    heat = np.zeros((100, 100), np.float32)
    heat[:20, :20] = 1.0
    viewer.set_overlay(heat, opacity=0.5)
    assert viewer.overlay_visible and viewer.overlay_check.isVisible()
    img = viewer.overlay_item.pixmap().toImage()
    assert abs(img.pixelColor(5, 5).alpha() - 0.5 * 255) <= 1 and img.pixelColor(60, 60).alpha() == 0
    viewer.opacity_slider.setValue(100)
    assert viewer.overlay_opacity == 1.0 and viewer.overlay_item.pixmap().toImage().pixelColor(5, 5).alpha() == 255
    viewer.overlay_check.setChecked(False)
    assert not viewer.overlay_visible
    with pytest.raises(ValueError):
        viewer.set_overlay(np.zeros((5, 5)))
    viewer.set_image(ramp(100, 100))  # a new scan drops the old overlay
    assert viewer.overlay is None
    assert heat_rgba(heat)[0, 0, 3] > 0 and heat_rgba(heat)[50, 50, 3] == 0


def test_dicom_frames_through_the_shared_decoder(viewer, tmp_path):
    frames = np.stack([np.full((32, 48), v, np.uint16) for v in (100, 900)])
    frames[:, 0, 0] = 0
    path = write_dicom(tmp_path / "multi.dcm", frames, frames=2, window=(500, 1000))
    second = load_grey(path, frame=1)
    viewer.set_image(second)
    assert viewer.image.shape == (32, 48) and viewer.image[5, 5] == pytest.approx(0.9, abs=0.01)
    viewer.set_image(load_grey(path, frame=0))
    assert viewer.image[5, 5] == pytest.approx(0.1, abs=0.01)


def test_map_to_image_undoes_square_padding():
    heat = np.zeros((224, 224), np.float32)
    heat[:112, :] = 1.0  # top half of the padded square
    back = map_to_image(heat, (100, 200))  # landscape scan: padded 50 rows above and below
    assert back.shape == (100, 200)
    assert back[:40].mean() > 0.95 and back[70:].mean() < 0.05
