"""The Screening page: add scans, run the screening off the UI thread, read the verdicts.

``QtScreeningView(session)`` is a view over a Qt-free
:class:`~breakfix_desktop.core.screening_session.ScreeningSession`: it listens to the session's
events (handed to the UI thread through a queued signal, since a run reports from its worker
thread) and calls the session's methods.  It never screens anything itself.

* Add files... / Add folder... (recursive) / drag and drop files and folders anywhere on the page;
  finding the scans in a folder happens off the UI thread too.
* A grid of scan cards (thumbnails decoded off the UI thread) with verdict badges; the selected
  scan in the viewer (zoom, pan, window/level) with its class probabilities, member agreement and
  pattern score.
* Start / Cancel, a progress bar with the count and the time left.
* A red banner when screening cannot run (no verified classifier, no store); an amber one for the
  models' notes (e.g. no pattern detector installed).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

from PySide6.QtCore import QModelIndex, QObject, QSettings, QSize, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListView,
    QMenu,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core.display import format_score
from ..core.inputs import SUPPORTED_EXTENSIONS, InputItem, discover
from ..core.preprocess import load_grey
from ..core.report import attention_text
from ..core.screening import ScreeningResult
from ..core.screening_session import ScreeningSession
from .qt_async import QtAsync
from .qt_image_viewer import QtImageViewer
from .qt_scan_items import CARD, ItemRole, QtScanCardDelegate, QtScanListModel, badge_for

BANNER_BAD = "padding: 8px; border-radius: 4px; background: #fde8e8; color: #9b1c1c; font-weight: bold;"
BANNER_WARN = "padding: 8px; border-radius: 4px; background: #fff4e0; color: #7a4b00;"
FILE_FILTER = ("Scans (" + " ".join(f"*{e}" for e in SUPPORTED_EXTENSIONS) + ");;All files (*)")


class _Bridge(QObject):
    """Session events -> UI thread, coalesced.

    Events are queued in order.  From the UI thread itself (adding scans, starting, clearing) the
    view is told at once; from a run's worker thread only the first event after a delivery wakes
    it (one queued signal), so a 500-scan batch does not post a thousand slots: the view takes
    everything queued at most every :data:`FLUSH_MS` and applies a burst of results as one model
    update.  Nothing is dropped - only superseded progress events are skipped."""

    wake = Signal()  # queued from a worker thread
    now = Signal()   # emitted on the UI thread: deliver at once

    def __init__(self, parent: QObject):
        super().__init__(parent)
        self._lock = threading.Lock()
        self._queue: List[Tuple[str, Any]] = []
        self._woken = False

    def send(self, event: str, data) -> None:
        with self._lock:
            self._queue.append((event, data))
            on_ui = threading.get_ident() == self._ui_ident
            wake = not on_ui and not self._woken
            if wake:
                self._woken = True
        try:
            if on_ui:
                self.now.emit()
            elif wake:
                self.wake.emit()
        except RuntimeError:
            pass  # the view is gone (window closing while a run reports)

    _ui_ident = threading.main_thread().ident

    def take(self) -> List[Tuple[str, Any]]:
        with self._lock:
            out, self._queue, self._woken = self._queue, [], False
            return out


#: the longest the view lets worker-thread events wait before applying them (~10 updates/s)
FLUSH_MS = 100


class QtResultPanel(QFrame):
    """The selected scan's verdict in words and bars."""

    reviewRequested = Signal(int)  # scan id

    def __init__(self, parent: Optional[QWidget] = None,
                 threshold_of: Optional[Callable[[str], Optional[float]]] = None):
        super().__init__(parent)
        self.setObjectName("resultPanel")
        #: a detector's flagging threshold by model name (``ModelCatalog.detector_threshold``)
        self.threshold_of = threshold_of
        self.heading = QLabel(objectName="resultHeading", wordWrap=True)
        self.file_label = QLabel(objectName="resultFile", wordWrap=True,
                                 textInteractionFlags=Qt.TextSelectableByMouse)
        self.body = QLabel(objectName="resultBody", wordWrap=True, textInteractionFlags=Qt.TextSelectableByMouse)
        self.body.setTextFormat(Qt.RichText)
        bars_box = QWidget()  # the layout lives in a widget: a parentless attribute layout is double-deleted
        self.bars = QGridLayout(bars_box)
        self.bars.setContentsMargins(0, 0, 0, 0)
        self.bars.setHorizontalSpacing(8)
        self.bars.setVerticalSpacing(3)
        self.review_button = QPushButton("Open in Review queue")
        self.review_button.clicked.connect(self._request_review)
        self.review_button.hide()
        self._scan_id: Optional[int] = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.addWidget(self.heading)
        layout.addWidget(self.file_label)
        layout.addWidget(bars_box)
        layout.addWidget(self.body)
        layout.addWidget(self.review_button, 0, Qt.AlignLeft)
        layout.addStretch(1)
        for w in (self.heading, self.file_label, self.body):
            w.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Fixed)
        self.set_result(None, None)

    def _request_review(self) -> None:
        if self._scan_id is not None:
            self.reviewRequested.emit(self._scan_id)

    def _clear_bars(self) -> None:
        while self.bars.count():
            w = self.bars.takeAt(0).widget()
            if w is not None:
                w.hide()
                w.setParent(None)
                w.deleteLater()

    def set_result(self, item: Optional[InputItem], result: Optional[ScreeningResult], running: bool = False) -> None:
        self._clear_bars()
        self._scan_id = None
        self.review_button.hide()
        if item is None:
            self.heading.setText("")
            self.file_label.setText("Select a scan to see its result.")
            self.body.setText("")
            return
        badge = badge_for(result, running)
        self.heading.setText(badge.title if result is None or result.verdict != "quarantined" or not result.withheld
                             else f"{badge.title} \u2014 diagnosis withheld")
        self.heading.setStyleSheet(f"background: {badge.colour}; color: white; font-weight: 600; font-size: 11pt;"
                                   " padding: 5px 8px; border-radius: 4px;")
        self.file_label.setText(item.display_name)
        self.file_label.setToolTip(str(item.path))
        lines: List[str] = []
        if result is None:
            lines.append("Not screened yet." if not running else "Waiting for its turn...")
        elif result.verdict == "error":
            lines.append(f"<span style='color:#9b1c1c'><b>Could not be screened:</b> {_esc(result.error or '')}</span>")
        elif result.withheld:
            status = result.review_status or "pending"
            if status == "confirmed":
                lines.append("<b>A reviewer confirmed tampering.</b> The diagnosis stays withheld.")
            else:
                lines.append("<b>The pattern detector flagged this scan.</b> It was copied into quarantine and its "
                             "classification is withheld until a reviewer releases it in the Review queue.")
                if result.scan_id is not None:
                    self._scan_id = result.scan_id
                    self.review_button.show()
        else:
            probs = result.probabilities or {}
            top = max(probs.values()) if probs else None
            lines.append(f"<b>Class: {_esc(result.label or '-')}</b>" +
                         (f" &nbsp; confidence {top * 100:.1f} %" if top is not None else ""))
            if result.review_status == "released":
                lines.append("Released by a reviewer after quarantine.")
            for row, (cls, p) in enumerate(sorted(probs.items(), key=lambda kv: -kv[1])):
                name = QLabel(cls)
                bar = QProgressBar(maximum=1000, value=round(p * 1000), textVisible=True)
                bar.setFormat(f"{p * 100:.1f} %")
                bar.setFixedHeight(16)
                bar.setObjectName("probBar")
                if cls == result.label:
                    bar.setProperty("top", True)
                self.bars.addWidget(name, row, 0)
                self.bars.addWidget(bar, row, 1)
            warn = attention_text(result)
            if warn:
                lines.append(f"<span style='color:#975a16'><b>\u26a0 Needs a closer look: {_esc(warn)}.</b></span>")
            if result.member_agreement is not None:
                lines.append(f"Ensemble member agreement: {result.member_agreement * 100:.0f} %")
        if result is not None and result.verdict != "error":
            if result.scores:
                lines.append("Trigger checks: " + "; ".join(self._check_text(k, v) for k, v in result.scores.items()))
            elif result.pattern_score is None:
                lines.append("<span style='color:#975a16'>Not checked for trigger patterns "
                             "(no pattern detector installed).</span>")
            if result.models:
                lines.append(f"<span style='color:#4a5568'>Models: {_esc(', '.join(result.models))}</span>")
            if result.reused:
                lines.append("<span style='color:#4a5568'>Same content screened before: the stored record "
                             "was reused.</span>")
        if result is not None and result.sha256:
            lines.append(f"<span style='color:#718096'>SHA-256 {result.sha256[:16]}...</span>")
        self.body.setText("<br>".join(lines))

    def _check_text(self, name: str, score: float) -> str:
        """``name score (flags at >= t)``, in bold red when this check flagged the scan."""
        threshold = self.threshold_of(name) if self.threshold_of is not None else None
        text = f"{_esc(name)} {format_score(score)}"
        if threshold is None:
            return text
        text += f" (flags at \u2265 {format_score(threshold)})"
        return f"<span style='color:#9b1c1c'><b>{text}</b></span>" if score >= threshold else text


def _esc(text: str) -> str:
    import html

    return html.escape(text)


class QtScreeningView(QWidget):
    """The Screening page over a :class:`ScreeningSession` (see the module docstring)."""

    #: a line for the status bar
    message = Signal(str)
    #: the user wants to review this quarantined scan
    reviewRequested = Signal(int)
    #: a scan was quarantined (its scan id): the review queue has a new entry
    quarantined = Signal(int)
    #: the session's state as this view has shown it (idle, running, ..., finished); events from a
    #: run arrive queued, so this trails :attr:`ScreeningSession.state` until the view caught up
    stateChanged = Signal(str)

    def __init__(self, session: ScreeningSession, settings: Optional[QSettings] = None,
                 parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setObjectName("QtScreeningView")
        self.session = session
        self.settings = settings if settings is not None else QSettings()
        self._async = QtAsync(self)
        self._run_pool = QThreadPool(self)
        self._run_pool.setMaxThreadCount(1)
        self._runner = QtAsync(self, self._run_pool)
        self._failure: Optional[str] = None
        self.shown_state = session.state
        self._counts_timer = QTimer(self, singleShot=True, interval=100)
        self._counts_timer.timeout.connect(self._update_counts)
        self.setAcceptDrops(True)

        title = QLabel("Screening", objectName="pageTitle")
        self.banner = QLabel(objectName="screeningBanner", wordWrap=True)
        self.notes_banner = QLabel(objectName="notesBanner", wordWrap=True)

        self.add_files_button = QPushButton("Add files...")
        self.add_files_button.setToolTip("PNG, JPEG, BMP, TIFF or DICOM files")
        self.add_files_button.clicked.connect(self.choose_files)
        self.add_folder_button = QPushButton("Add folder...")
        self.add_folder_button.setToolTip("Every scan in a folder and its subfolders")
        self.add_folder_button.clicked.connect(self.choose_folder)
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Remove every scan from this session (the quarantine store keeps its records)")
        self.clear_button.clicked.connect(self.clear)
        self.start_button = QPushButton("Start screening")
        self.start_button.setObjectName("startButton")
        self.start_button.setShortcut(QKeySequence("Ctrl+Return"))
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("cancelButton")
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button = QToolButton(text="Export report")
        self.export_button.setPopupMode(QToolButton.InstantPopup)
        export_menu = QMenu(self.export_button)
        self.export_csv_action = QAction("CSV...", self)
        self.export_pdf_action = QAction("PDF...", self)
        self.export_csv_action.triggered.connect(lambda: self.export_dialog("csv"))
        self.export_pdf_action.triggered.connect(lambda: self.export_dialog("pdf"))
        export_menu.addAction(self.export_csv_action)
        export_menu.addAction(self.export_pdf_action)
        self.export_button.setMenu(export_menu)

        actions = QHBoxLayout()
        for w in (self.add_files_button, self.add_folder_button, self.clear_button):
            actions.addWidget(w)
        actions.addStretch(1)
        actions.addWidget(self.export_button)
        actions.addSpacing(12)
        actions.addWidget(self.start_button)
        actions.addWidget(self.cancel_button)

        self.model = QtScanListModel(session, self, async_runner=self._async)
        self.grid = QListView(objectName="scanGrid")
        self.grid.setViewMode(QListView.IconMode)
        self.grid.setResizeMode(QListView.Adjust)
        self.grid.setMovement(QListView.Static)
        self.grid.setUniformItemSizes(True)
        self.grid.setLayoutMode(QListView.Batched)
        self.grid.setBatchSize(100)
        self.grid.setSpacing(0)
        self.grid.setGridSize(QSize(CARD.width() + 4, CARD.height() + 4))
        self.grid.setSelectionMode(QAbstractItemView.SingleSelection)
        self.grid.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.grid.setDragEnabled(False)
        self.grid.setAcceptDrops(False)
        self.grid.setWordWrap(True)
        self.grid.setModel(self.model)
        self.grid.setItemDelegate(QtScanCardDelegate(self.grid))
        self.grid.selectionModel().currentChanged.connect(self._on_current_changed)
        self.model.dataChanged.connect(self._on_data_changed)

        self.empty = QLabel(objectName="dropHint", alignment=Qt.AlignCenter, wordWrap=True)
        self.empty.setText("<p style='font-size:13pt; font-weight:600; color:#2b4a6b'>Drop scans or folders here</p>"
                           "<p style='color:#4a5568'>or use <b>Add files...</b> / <b>Add folder...</b><br>"
                           "PNG, JPEG, BMP, TIFF and DICOM (multi-frame files give one card per frame); "
                           "folders are searched with all their subfolders.</p>")
        self.grid_stack = QStackedWidget()
        self.grid_stack.setMinimumWidth(2 * CARD.width() + 30)
        self.grid_stack.addWidget(self.empty)
        self.grid_stack.addWidget(self.grid)

        self.viewer = QtImageViewer(placeholder="Select a scan to view it")
        self.viewer.setMinimumHeight(260)
        self.result_panel = QtResultPanel(threshold_of=session.catalog.detector_threshold)
        self.result_panel.reviewRequested.connect(self.reviewRequested)
        detail = QSplitter(Qt.Vertical)
        detail.addWidget(self.viewer)
        detail.addWidget(self.result_panel)
        detail.setStretchFactor(0, 3)
        detail.setStretchFactor(1, 2)
        detail.setChildrenCollapsible(False)

        split = QSplitter(Qt.Horizontal)
        split.addWidget(self.grid_stack)
        split.addWidget(detail)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([560, 400])
        split.setChildrenCollapsible(False)
        self.splitter = split

        self.progress = QProgressBar(objectName="screeningProgress", textVisible=False)
        self.progress.setFixedHeight(10)
        self.progress.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.progress_label = QLabel(objectName="progressLabel")
        self.counts_label = QLabel(objectName="countsLabel")
        bottom = QHBoxLayout()
        bottom.addWidget(self.progress_label)
        bottom.addWidget(self.progress, 1)
        bottom.addWidget(self.counts_label)

        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(self.banner)
        layout.addWidget(self.notes_banner)
        layout.addLayout(actions)
        layout.addWidget(split, 1)
        layout.addLayout(bottom)
        self.setStyleSheet(
            "QFrame#resultPanel { background: #f7f9fc; border: 1px solid #d5dce5; border-radius: 4px; }"
            "QLabel#resultFile { font-weight: 600; font-size: 10.5pt; }"
            "QProgressBar#probBar { border: 1px solid #cbd5e0; border-radius: 3px; background: white;"
            "  text-align: center; font-size: 8pt; }"
            "QProgressBar#probBar::chunk { background: #90a4c0; }"
            "QProgressBar#probBar[top=\"true\"]::chunk { background: #2f5f92; }"
            "QProgressBar#screeningProgress { border: 1px solid #cbd5e0; border-radius: 4px; background: #edf2f7; }"
            "QProgressBar#screeningProgress::chunk { background: #2f5f92; border-radius: 3px; }"
            "QPushButton#startButton { background: #2f5f92; color: white; font-weight: 600; padding: 5px 14px;"
            "  border-radius: 4px; }"
            "QPushButton#startButton:disabled { background: #a0aec0; }"
            "QListView#scanGrid { background: #eef2f7; border: 1px solid #d5dce5; }"
            "QLabel#dropHint { background: #f7f9fc; border: 2px dashed #a0aec0; border-radius: 8px; }"
        )

        self._bridge = _Bridge(self)
        self._bridge._ui_ident = threading.get_ident()
        self._bridge.wake.connect(self._on_wake, Qt.QueuedConnection)
        self._bridge.now.connect(self._flush_events)
        self._flush_timer = QTimer(self, singleShot=True)
        self._flush_timer.timeout.connect(self._flush_events)
        self._last_flush = 0.0
        self.flushes = 0  # deliveries of queued session events (tests, benchmarks)
        self._listener = self._bridge.send
        session.subscribe(self._listener)
        self.destroyed.connect(lambda *_, s=session, cb=self._listener: s.unsubscribe(cb))
        self._update_banner()
        self._update_progress()
        self._update_buttons()

    # ------------------------------------------------------------------ session -> widgets
    def _on_wake(self) -> None:
        """A worker queued events: apply them now, or when :data:`FLUSH_MS` have passed since the
        last delivery."""
        if self._flush_timer.isActive():
            return
        wait_ms = FLUSH_MS - 1000 * (time.monotonic() - self._last_flush)
        if wait_ms <= 0:
            self._flush_events()
        else:
            self._flush_timer.start(int(wait_ms) + 1)

    def _flush_events(self) -> None:
        """Apply every queued session event in order; a run of results is one model update."""
        self._flush_timer.stop()
        events = self._bridge.take()
        if not events:
            return
        self._last_flush = time.monotonic()
        self.flushes += 1
        last_progress = max((i for i, (e, _) in enumerate(events) if e == "progress"), default=-1)
        results: List[Tuple[int, ScreeningResult]] = []
        for i, (event, data) in enumerate(events):
            if event == "result":
                results.append(data)
                continue
            if event == "progress" and i != last_progress:
                continue  # superseded within this delivery (and no reason to split a burst of results)
            if results:
                self._apply_results(results)
                results = []
            self._on_session_event((event, data))
        if results:
            self._apply_results(results)

    def _apply_results(self, results: List[Tuple[int, ScreeningResult]]) -> None:
        self.model.set_results(results)
        for _, result in results:
            if result.verdict == "quarantined" and result.scan_id is not None and not result.reused:
                self.quarantined.emit(result.scan_id)
        if not self._counts_timer.isActive():
            self._counts_timer.start()

    def _on_session_event(self, message) -> None:
        event, data = message
        self.model.on_session_event(event, data)
        if event in ("items", "cleared"):
            self.grid_stack.setCurrentWidget(self.grid if self.model.rowCount() else self.empty)
            if event == "items" and not self.grid.currentIndex().isValid() and self.model.rowCount():
                self.grid.setCurrentIndex(self.model.index(0))
            if event == "cleared":
                self._show_selected()
        elif event == "progress":
            self._update_progress(data)
        elif event == "state":
            if data == "running":
                self._failure = None
            self._update_buttons()
            self._update_progress()
            self.shown_state = data
            self.stateChanged.emit(data)
        elif event == "notes":
            self._update_banner()
        elif event == "failed":
            self._failure = data
            self._update_banner()
            self.message.emit(f"Screening could not run: {data}")
        elif event == "availability":
            self._failure = None
            self._update_banner()
            self._update_buttons()
        elif event == "result":
            _, result = data
            if result.verdict == "quarantined" and result.scan_id is not None and not result.reused:
                self.quarantined.emit(result.scan_id)
        elif event == "summary":
            self.message.emit(data.text().splitlines()[0])
        if event in ("result", "progress"):
            # a batch sends two events per scan: recount at most every 100 ms, not per event
            if not self._counts_timer.isActive():
                self._counts_timer.start()
        else:
            self._update_counts()

    def _on_data_changed(self, top: QModelIndex, bottom: QModelIndex, roles=()) -> None:
        current = self.grid.currentIndex()
        if current.isValid() and top.row() <= current.row() <= bottom.row() and (not roles or Qt.DecorationRole
                                                                                 not in roles):
            self._show_result_only()

    def _update_banner(self) -> None:
        reason = self._failure or self.session.unavailable_reason()
        self.banner.setText(reason or "")
        self.banner.setStyleSheet(BANNER_BAD)
        self.banner.setVisible(bool(reason))
        notes = self.session.notes
        self.notes_banner.setText("\n".join(f"NOTE: {n}" for n in notes))
        self.notes_banner.setStyleSheet(BANNER_WARN)
        self.notes_banner.setVisible(bool(notes))

    def _update_buttons(self) -> None:
        running = self.session.running
        can_run = self.session.unavailable_reason() is None
        self.start_button.setEnabled(not running and can_run and len(self.session) > 0)
        self.start_button.setText("Screen again" if not self.session.pending_indices() and len(self.session)
                                  else "Start screening")
        self.cancel_button.setEnabled(self.session.state == "running")
        self.clear_button.setEnabled(not running and len(self.session) > 0)
        self.export_button.setEnabled(len(self.session) > len(self.session.pending_indices()))

    def _update_progress(self, progress=None) -> None:
        p = progress or self.session.progress
        self.progress.setMaximum(max(p.total, 1))
        self.progress.setValue(p.done)
        text = p.text()
        if self.session.state == "cancelling":
            text += " - cancelling..."
        elif self.session.state == "cancelled" and not p.running:
            text += " - cancelled"
        self.progress_label.setText(text)

    def _update_counts(self) -> None:
        c = self.session.counts()
        total = len(self.session)
        if not total:
            self.counts_label.setText("")
        else:
            parts = [f"{total} scan(s)", f"<span style='color:#2f855a'>{c['clear']} clear</span>"]
            if c["attention"]:
                parts.append(f"<span style='color:#975a16'>{c['attention']} need a closer look</span>")
            parts.append(f"<span style='color:#c53030'><b>{c['quarantined']} quarantined</b></span>")
            parts.append(f"{c['error']} error(s)")
            if c["pending"]:
                parts.append(f"{c['pending']} not screened")
            self.counts_label.setText(" \u00b7 ".join(parts))
        self._update_buttons()

    # ------------------------------------------------------------------ selection
    def _on_current_changed(self, current: QModelIndex, previous: QModelIndex) -> None:
        self._show_selected()

    def selected_row(self) -> Optional[int]:
        idx = self.grid.currentIndex()
        return idx.row() if idx.isValid() else None

    def select_row(self, row: int) -> None:
        self.grid.setCurrentIndex(self.model.index(row))

    def _show_result_only(self) -> None:
        row = self.selected_row()
        if row is None:
            self.result_panel.set_result(None, None)
            return
        self.result_panel.set_result(self.model.item(row), self.model.result(row), self.session.running)

    def _show_selected(self) -> None:
        self._show_result_only()
        row = self.selected_row()
        if row is None:
            self.viewer.set_image(None)
            return
        item: InputItem = self.model.item(row)
        self.viewer.placeholder.setText("Loading...")
        self._async.submit(lambda it=item: load_grey(it.path, frame=it.frame),
                           lambda grey, err, it=item: self._preview_ready(it, grey, err), key="preview")

    def _preview_ready(self, item: InputItem, grey, error) -> None:
        row = self.selected_row()
        if row is None or self.model.item(row) != item:
            return
        if error is not None:
            self.viewer.show_message(f"Cannot display this scan:\n{error}")
        else:
            self.viewer.set_image(grey)

    # ------------------------------------------------------------------ adding scans
    def add_paths(self, paths: Sequence[os.PathLike]) -> None:
        """Find the scans in ``paths`` off the UI thread, then add them to the session."""
        paths = [Path(p) for p in paths]
        if not paths:
            return
        self.message.emit("Looking for scans...")
        self._async.submit(lambda ps=paths: discover(ps), self._discovered)

    def _discovered(self, found, error) -> None:
        if error is not None:
            self.message.emit(f"Could not read the chosen files: {error}")
            return
        added = self.session.add_discovery(found)
        text = f"Added {len(added)} scan(s)"
        if len(added) < len(found.items):
            text += f" ({len(found.items) - len(added)} already in the session)"
        if found.missing:
            text += f"; not found: {', '.join(str(p) for p in found.missing[:3])}"
        if not found.items and not found.missing:
            text = "No scans found (PNG, JPEG, BMP, TIFF or DICOM)"
        self.message.emit(text)
        self._update_counts()

    def _last_folder(self) -> str:
        folder = self.settings.value("screening/last_folder", "")
        return folder if folder and Path(folder).is_dir() else str(Path.home())

    def _remember_folder(self, folder: Path) -> None:
        self.settings.setValue("screening/last_folder", str(folder))

    def choose_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add scans", self._last_folder(), FILE_FILTER)
        if files:
            self._remember_folder(Path(files[0]).parent)
            self.add_paths(files)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of scans", self._last_folder())
        if folder:
            self._remember_folder(Path(folder))
            self.add_paths([folder])

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.add_paths(paths)

    def clear(self) -> None:
        if not self.session.running:
            self.session.clear()

    # ------------------------------------------------------------------ running
    def start(self) -> bool:
        """Start screening off the UI thread; ``False`` when it cannot start now."""
        if self.session.running or self.session.unavailable_reason() is not None or not len(self.session):
            return False
        if not self.session.begin():
            return False
        self._runner.submit(self.session.run, self._run_finished)
        return True

    def _run_finished(self, summary, error) -> None:
        if error is not None:  # run() reports its own failures; this is a bug, say it plainly
            self._failure = f"Screening stopped unexpectedly: {error.__class__.__name__}: {error}"
            self._update_banner()
        self._update_buttons()
        self._show_result_only()

    def cancel(self) -> None:
        self.session.cancel()

    @property
    def running(self) -> bool:
        return self.session.running

    def shutdown(self, timeout_ms: int = 30000) -> None:
        """Cancel a run and wait for the background work (window closing)."""
        self.session.cancel()
        self._run_pool.waitForDone(timeout_ms)
        self._async.wait(timeout_ms)

    # ------------------------------------------------------------------ reports
    def export_dialog(self, fmt: str = "csv") -> None:
        from .qt_report import QtExportDialog

        dialog = QtExportDialog(fmt, self._last_folder(), self)
        if dialog.exec():
            self.export_report(dialog.path(), dialog.format(), include_patient=dialog.include_patient())

    def export_report(self, path: os.PathLike, fmt: str = "csv", *, include_patient: bool = False) -> Optional[Path]:
        """Write the session's report (CSV or PDF); logs an ``exported`` audit event."""
        from .qt_report import export_session_report

        try:
            out = export_session_report(self.session, path, fmt, include_patient=include_patient)
        except Exception as exc:  # noqa: BLE001 - tell the user, keep the app
            self.message.emit(f"Report not written: {exc}")
            return None
        self.message.emit(f"Report written to {out}" + (" (with patient identifiers)" if include_patient else ""))
        return out
