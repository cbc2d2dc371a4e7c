"""The scan viewer: zoom, pan, window/level, and an optional localisation overlay.

``QtImageViewer`` shows a grey float image in [0, 1] as decoded by the one decoding path
(:func:`~breakfix_desktop.core.preprocess.load_grey`; DICOM frames included, with the file's own
window/level already applied).  Reader controls:

* mouse wheel (or +/-): zoom about the cursor; double-click or *Fit*: fit the image;
* left drag: pan;
* right drag: window (horizontal) and level (vertical), also the two sliders; *Reset* restores
  fit and the default window/level;
* an overlay (a [0, 1] map the size of the image) drawn red -> yellow with adjustable opacity.

Pixel maths (window/level, colours) lives in :mod:`breakfix_desktop.core.display`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from PySide6.QtCore import QPoint, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPixmap, QWheelEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QFrame,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core.display import DEFAULT_LEVEL, DEFAULT_WINDOW, MIN_WINDOW, heat_rgba, window_level

ZOOM_STEP = 1.25
MIN_SCALE, MAX_SCALE = 0.05, 40.0


def grey_qimage(pixels: np.ndarray) -> QImage:
    """uint8 H x W -> an owned Grayscale8 QImage."""
    arr = np.ascontiguousarray(pixels, dtype=np.uint8)
    h, w = arr.shape
    return QImage(arr.data, w, h, w, QImage.Format_Grayscale8).copy()


def rgba_qimage(pixels: np.ndarray) -> QImage:
    """uint8 H x W x 4 (straight alpha) -> an owned RGBA8888 QImage."""
    arr = np.ascontiguousarray(pixels, dtype=np.uint8)
    h, w, _ = arr.shape
    return QImage(arr.data, w, h, 4 * w, QImage.Format_RGBA8888).copy()


class _View(QGraphicsView):
    """The graphics view: wheel zoom, left-drag pan (Qt's hand drag), right-drag window/level."""

    windowLevelDrag = Signal(float, float)  # dx, dy in pixels
    fitRequested = Signal()

    def __init__(self, scene: QGraphicsScene, parent: Optional[QWidget] = None):
        super().__init__(scene, parent)
        self.setDragMode(QGraphicsView.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.AnchorViewCenter)
        self.setRenderHint(QPainter.SmoothPixmapTransform, True)
        self.setBackgroundBrush(QColor("#0b0f14"))
        self.setFrameShape(QFrame.NoFrame)
        self._wl_from: Optional[QPoint] = None
        self.fitted = True

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom(ZOOM_STEP ** steps)
        event.accept()

    def zoom(self, factor: float) -> None:
        current = self.transform().m11()
        factor = max(MIN_SCALE / current, min(MAX_SCALE / current, factor))
        self.scale(factor, factor)
        self.fitted = False

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.RightButton:
            self._wl_from = event.position().toPoint()
            self.viewport().setCursor(Qt.SizeAllCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._wl_from is not None:
            pos = event.position().toPoint()
            delta = pos - self._wl_from
            self._wl_from = pos
            self.windowLevelDrag.emit(float(delta.x()), float(delta.y()))
            event.accept()
            return
        if event.buttons() & Qt.LeftButton:
            self.fitted = False
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.RightButton and self._wl_from is not None:
            self._wl_from = None
            self.viewport().unsetCursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        self.fitRequested.emit()
        event.accept()

    def contextMenuEvent(self, event) -> None:  # noqa: N802 - right button is window/level
        event.accept()

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self.fitted:
            self.fitRequested.emit()


class QtImageViewer(QWidget):
    """A scan with zoom, pan, window/level and an optional overlay (see the module docstring)."""

    #: window, level
    windowLevelChanged = Signal(float, float)

    def __init__(self, parent: Optional[QWidget] = None, *, placeholder: str = "No scan selected"):
        super().__init__(parent)
        self.setObjectName("QtImageViewer")
        self._grey: Optional[np.ndarray] = None
        self._heat: Optional[np.ndarray] = None
        self.window_width = DEFAULT_WINDOW
        self.window_center = DEFAULT_LEVEL
        self.overlay_opacity = 0.6
        self.scene = QGraphicsScene(self)
        self.image_item = QGraphicsPixmapItem()
        self.image_item.setTransformationMode(Qt.SmoothTransformation)
        self.overlay_item = QGraphicsPixmapItem()
        self.overlay_item.setZValue(1)
        self.scene.addItem(self.image_item)
        self.scene.addItem(self.overlay_item)
        self.view = _View(self.scene)
        self.view.windowLevelDrag.connect(self._on_wl_drag)
        self.view.fitRequested.connect(self.fit)
        self.placeholder = QLabel(placeholder, alignment=Qt.AlignCenter, wordWrap=True)
        self.placeholder.setMargin(12)
        self.placeholder.setObjectName("viewerPlaceholder")
        self.placeholder.setStyleSheet("color: #a0aec0; background: #0b0f14; font-size: 11pt;")

        self.fit_button = QToolButton(text="Fit", toolTip="Fit the scan to the view (double-click)")
        self.fit_button.clicked.connect(self.fit)
        self.zoom_in_button = QToolButton(text="+", toolTip="Zoom in (mouse wheel)", autoRepeat=True)
        self.zoom_in_button.clicked.connect(lambda: self.zoom(ZOOM_STEP))
        self.zoom_out_button = QToolButton(text="\u2212", toolTip="Zoom out (mouse wheel)", autoRepeat=True)
        self.zoom_out_button.clicked.connect(lambda: self.zoom(1 / ZOOM_STEP))
        self.reset_button = QToolButton(text="Reset", toolTip="Fit and restore the default window/level")
        self.reset_button.clicked.connect(self.reset)
        self.window_slider = QSlider(Qt.Horizontal, minimum=1, maximum=200, toolTip="Window (contrast); right-drag")
        self.level_slider = QSlider(Qt.Horizontal, minimum=-50, maximum=150, toolTip="Level (brightness); right-drag")
        for s in (self.window_slider, self.level_slider):
            s.setFixedWidth(80)
        self.window_slider.valueChanged.connect(lambda v: self.set_window_level(v / 100.0, self.window_center))
        self.level_slider.valueChanged.connect(lambda v: self.set_window_level(self.window_width, v / 100.0))
        # window/level and zoom, shown in the image's corner as reading workstations do
        self.wl_label = QLabel(self.view.viewport())
        self.wl_label.setObjectName("wlLabel")
        self.wl_label.setStyleSheet("color: #e2e8f0; background: rgba(11, 15, 20, 160); padding: 2px 5px;"
                                    " font-size: 8pt; border-radius: 3px;")
        self.wl_label.move(6, 6)
        self.overlay_check = QCheckBox("Map", checked=True, toolTip="Show the localisation map overlay")
        self.overlay_check.toggled.connect(self._update_overlay)
        self.opacity_slider = QSlider(Qt.Horizontal, minimum=0, maximum=100, value=60, toolTip="Overlay opacity")
        self.opacity_slider.setFixedWidth(70)
        self.opacity_slider.valueChanged.connect(lambda v: self.set_overlay_opacity(v / 100.0))

        bar = QHBoxLayout()
        bar.setContentsMargins(4, 2, 4, 2)
        bar.setSpacing(4)
        for w in (self.fit_button, self.zoom_out_button, self.zoom_in_button, self.reset_button):
            bar.addWidget(w)
        bar.addSpacing(8)
        bar.addWidget(QLabel("W"))
        bar.addWidget(self.window_slider)
        bar.addSpacing(6)
        bar.addWidget(QLabel("L"))
        bar.addWidget(self.level_slider)
        bar.addSpacing(6)
        bar.addStretch(1)
        bar.addWidget(self.overlay_check)
        bar.addWidget(self.opacity_slider)
        self.toolbar = QWidget()
        self.toolbar.setObjectName("viewerToolbar")
        self.toolbar.setLayout(bar)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.placeholder, 1)
        layout.addWidget(self.toolbar)
        self._sync_controls()
        self._show_placeholder(True)

    # ------------------------------------------------------------------ content
    def has_image(self) -> bool:
        return self._grey is not None

    @property
    def image(self) -> Optional[np.ndarray]:
        return self._grey

    @property
    def overlay(self) -> Optional[np.ndarray]:
        return self._heat

    def set_image(self, grey: Optional[np.ndarray], *, keep_view: bool = False) -> None:
        """Show ``grey`` (H x W float in [0, 1]); ``None`` clears.  Resets the view unless ``keep_view``."""
        self._grey = None if grey is None else np.asarray(grey, dtype=np.float32)
        self._heat = None
        self.overlay_item.setPixmap(QPixmap())
        if self._grey is None:
            self.image_item.setPixmap(QPixmap())
            self._show_placeholder(True)
            self._sync_controls()
            return
        if not keep_view:
            self.window_width, self.window_center = DEFAULT_WINDOW, DEFAULT_LEVEL
        self._render_image()
        h, w = self._grey.shape
        self.scene.setSceneRect(QRectF(0, 0, w, h))
        self._show_placeholder(False)
        if not keep_view:
            self.fit()
        self._sync_controls()

    def show_message(self, text: str) -> None:
        """Clear the image and say why (e.g. the scan could not be read)."""
        self.set_image(None)
        self.placeholder.setText(text)

    def set_overlay(self, heat: Optional[np.ndarray], opacity: Optional[float] = None) -> None:
        """A [0, 1] map the size of the image drawn over it; ``None`` removes it."""
        if heat is not None and self._grey is not None and np.shape(heat) != self._grey.shape:
            raise ValueError(f"overlay shape {np.shape(heat)} differs from the image's {self._grey.shape}")
        self._heat = None if heat is None else np.asarray(heat, dtype=np.float32)
        if opacity is not None:
            self.overlay_opacity = float(opacity)
        self._update_overlay()
        self._sync_controls()

    def set_overlay_opacity(self, opacity: float) -> None:
        self.overlay_opacity = float(np.clip(opacity, 0.0, 1.0))
        self._update_overlay()
        self._sync_controls()

    @property
    def overlay_visible(self) -> bool:
        return self._heat is not None and self.overlay_check.isChecked() and self.overlay_item.isVisible()

    def _update_overlay(self) -> None:
        if self._heat is None:
            self.overlay_item.setPixmap(QPixmap())
            self.overlay_item.setVisible(False)
            return
        self.overlay_item.setPixmap(QPixmap.fromImage(rgba_qimage(heat_rgba(self._heat, self.overlay_opacity))))
        self.overlay_item.setVisible(self.overlay_check.isChecked())

    # ------------------------------------------------------------------ window / level
    def set_window_level(self, window: float, level: float) -> None:
        window = max(MIN_WINDOW, min(2.0, float(window)))
        level = max(-0.5, min(1.5, float(level)))
        if (window, level) == (self.window_width, self.window_center):
            return
        self.window_width, self.window_center = window, level
        self._render_image()
        self._sync_controls()
        self.windowLevelChanged.emit(window, level)

    def _on_wl_drag(self, dx: float, dy: float) -> None:
        # 200 px of drag = the full range; dragging up brightens (lower level), as in PACS viewers
        self.set_window_level(self.window_width * (1.0 + dx / 200.0), self.window_center + dy / 400.0)

    def _render_image(self) -> None:
        if self._grey is not None:
            shown = window_level(self._grey, self.window_width, self.window_center)
            self.image_item.setPixmap(QPixmap.fromImage(grey_qimage(shown)))

    def displayed_pixels(self) -> Optional[np.ndarray]:
        """The uint8 image on screen (after window/level), for tests and exports."""
        return None if self._grey is None else window_level(self._grey, self.window_width, self.window_center)

    # ------------------------------------------------------------------ zoom / pan
    @property
    def scale(self) -> float:
        return self.view.transform().m11()

    def zoom(self, factor: float) -> None:
        self.view.zoom(factor)
        self._sync_controls()

    def fit(self) -> None:
        if self._grey is None:
            return
        self.view.resetTransform()
        self.view.fitInView(self.image_item, Qt.KeepAspectRatio)
        self.view.fitted = True
        self._sync_controls()

    def reset(self) -> None:
        """Fit the scan and restore the default window/level."""
        self.set_window_level(DEFAULT_WINDOW, DEFAULT_LEVEL)
        self.fit()

    def pan_by(self, dx: int, dy: int) -> None:
        """Scroll the view by pixels (what a left drag does)."""
        h, v = self.view.horizontalScrollBar(), self.view.verticalScrollBar()
        h.setValue(h.value() + dx)
        v.setValue(v.value() + dy)
        self.view.fitted = False

    # ------------------------------------------------------------------ widgets
    def _show_placeholder(self, show: bool) -> None:
        self.placeholder.setVisible(show)
        self.view.setVisible(not show)

    def _sync_controls(self) -> None:
        for slider, value in ((self.window_slider, self.window_width), (self.level_slider, self.window_center)):
            slider.blockSignals(True)
            slider.setValue(round(value * 100))
            slider.blockSignals(False)
        self.opacity_slider.blockSignals(True)
        self.opacity_slider.setValue(round(self.overlay_opacity * 100))
        self.opacity_slider.blockSignals(False)
        has = self._grey is not None
        for w in (self.fit_button, self.zoom_in_button, self.zoom_out_button, self.reset_button,
                  self.window_slider, self.level_slider):
            w.setEnabled(has)
        self.overlay_check.setVisible(self._heat is not None)
        self.opacity_slider.setVisible(self._heat is not None)
        self.wl_label.setText(f"W {self.window_width:.2f}  L {self.window_center:.2f}"
                              f"  \u00b7  {self.scale * 100:.0f} %")
        self.wl_label.adjustSize()
        self.wl_label.setVisible(has)
