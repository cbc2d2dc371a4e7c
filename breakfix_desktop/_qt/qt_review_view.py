"""The Review queue: a doctor decides on each quarantined scan.

``QtReviewView(store, catalog)`` lists the store's pending quarantined scans (oldest first).  For
the selected one it shows the quarantine copy in the viewer, the pattern detector score(s), the
localisation overlay when a detector provides one (else it says *no localisation map available*)
and keeps the classification hidden.  The reviewer, whose name is required (remembered in
QSettings) and who may add a comment, chooses

* **Release** (Ctrl+R): the withheld result is shown from then on;
* **Confirm tampering** (Ctrl+T): the result stays withheld.

Every decision goes through :meth:`QuarantineStore.review` (reviews table + audit log, one
transaction); this view holds no review logic of its own.  Decisions made here stay in the list,
marked, until the page is refreshed, so the reviewer sees what they did.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Dict, List, Optional

from PySide6.QtCore import QSettings, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QIcon, QKeySequence, QPixmap, QShowEvent
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from ..core.display import format_score, threshold_fraction, thumbnail
from ..core.localisation import NO_MAP, Localisation, Localiser
from ..core.model_registry import ModelCatalog
from ..core.preprocess import load_grey
from ..core.quarantine import QuarantineStore, ScanRecord, StoreError
from .qt_async import QtAsync
from .qt_image_viewer import QtImageViewer, grey_qimage

STATUS_TEXT = {"pending": ("QUARANTINED \u2014 diagnosis withheld", "#c53030"),
               "released": ("RELEASED", "#2f6f4f"),
               "confirmed": ("TAMPERING CONFIRMED", "#7b1111")}
SETTINGS_REVIEWER = "review/reviewer"


def _name(rec: ScanRecord) -> str:
    name = Path(rec.last_path or rec.path).name
    return name if rec.frame is None else f"{name} [frame {rec.frame}]"


def _breakable(path: str) -> str:
    """HTML of a path that may wrap after each separator (a long path must not widen the panel)."""
    return html.escape(path).replace("/", "/\u200b").replace("\\", "\\\u200b")


def _when(stamp: str) -> str:
    return stamp[:19].replace("T", " ") + " UTC" if stamp else "-"


class QtReviewView(QWidget):
    """The review queue over a :class:`QuarantineStore` (see the module docstring)."""

    #: scan id, decision ("release" | "confirm_tampering") - after the store recorded it
    decided = Signal(int, str)
    #: a line for the status bar
    message = Signal(str)
    #: number of scans waiting for review, after each refresh
    queueChanged = Signal(int)

    def __init__(self, store: Optional[QuarantineStore], catalog: Optional[ModelCatalog] = None,
                 settings: Optional[QSettings] = None, parent: Optional[QWidget] = None, *,
                 store_error: Optional[str] = None):
        super().__init__(parent)
        self.setObjectName("QtReviewView")
        self.store = store
        self.catalog = catalog
        self.settings = settings if settings is not None else QSettings()
        self.localiser = Localiser(catalog) if catalog is not None else None
        self._async = QtAsync(self)
        self._refresh_timer = QTimer(self, singleShot=True)
        self._refresh_timer.timeout.connect(self._refresh_in_background)
        self._decided: Dict[int, ScanRecord] = {}
        self._records: List[ScanRecord] = []
        self.localisation: Optional[Localisation] = None

        title = QLabel("Review queue", objectName="pageTitle")
        self.banner = QLabel(objectName="reviewBanner", wordWrap=True)
        self.banner.setStyleSheet("padding: 8px; border-radius: 4px; background: #fde8e8; color: #9b1c1c;"
                                  " font-weight: bold;")
        self.banner.setVisible(store is None)
        self.banner.setText(f"The quarantine store could not be opened: {store_error or 'no store configured'}")

        # ---- left: the queue
        self.count_label = QLabel(objectName="queueCount")
        self.list = QListWidget(objectName="reviewList")
        self.list.setIconSize(QSize(44, 44))
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.list.setTextElideMode(Qt.ElideMiddle)
        self._icons: Dict[int, QIcon] = {}
        self.list.currentRowChanged.connect(self._on_row_changed)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(lambda: self.refresh())
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        head.addWidget(self.count_label, 1)
        head.addWidget(self.refresh_button)
        left_layout.addLayout(head)
        left_layout.addWidget(self.list, 1)

        # ---- centre: the scan
        self.viewer = QtImageViewer(placeholder="No scan waiting for review")
        self.viewer.setMinimumWidth(320)

        # ---- right: facts, withheld result, decision
        self.status_label = QLabel(objectName="reviewStatus", wordWrap=True)
        self.file_label = QLabel(objectName="reviewFile", wordWrap=True, textInteractionFlags=Qt.TextSelectableByMouse)
        self.facts = QLabel(objectName="reviewFacts", wordWrap=True, textInteractionFlags=Qt.TextSelectableByMouse)
        self.facts.setTextFormat(Qt.RichText)
        scores_widget = QWidget()  # the layout lives in a widget: a parentless attribute layout is double-deleted
        self.scores_box = QGridLayout(scores_widget)
        self.scores_box.setContentsMargins(0, 0, 0, 0)
        self.scores_box.setHorizontalSpacing(8)
        self.localisation_label = QLabel(NO_MAP, objectName="localisationLabel", wordWrap=True)
        self.result_title = QLabel("Classification", objectName="sectionTitle")
        self.result_label = QLabel(objectName="withheldResult", wordWrap=True)
        self.result_label.setTextFormat(Qt.RichText)
        self.history_label = QLabel(objectName="reviewHistory", wordWrap=True)
        self.history_label.setTextFormat(Qt.RichText)

        self.reviewer_edit = QLineEdit(objectName="reviewerName")
        self.reviewer_edit.setPlaceholderText("required - e.g. Dr A. Smith")
        self.reviewer_edit.setText(str(self.settings.value(SETTINGS_REVIEWER, "") or ""))
        self.comment_edit = QPlainTextEdit(objectName="reviewComment")
        self.comment_edit.setPlaceholderText("optional")
        self.comment_edit.setFixedHeight(60)
        self.release_button = QPushButton("Release", objectName="releaseButton")
        self.release_button.setShortcut(QKeySequence("Ctrl+R"))
        self.release_button.setToolTip("Not tampered: show the withheld classification (Ctrl+R)")
        self.release_button.clicked.connect(self.release)
        self.confirm_button = QPushButton("Confirm tampering", objectName="confirmButton")
        self.confirm_button.setShortcut(QKeySequence("Ctrl+T"))
        self.confirm_button.setToolTip("The scan was tampered with: its classification stays withheld (Ctrl+T)")
        self.confirm_button.clicked.connect(self.confirm_tampering)
        self.problem_label = QLabel(objectName="reviewProblem", wordWrap=True)
        self.problem_label.setStyleSheet("color: #9b1c1c; font-weight: bold;")
        self.problem_label.hide()

        decision = QFrame(objectName="decisionBox")
        form = QFormLayout()
        form.addRow("Reviewer", self.reviewer_edit)
        form.addRow("Comment", self.comment_edit)
        buttons = QHBoxLayout()
        buttons.addWidget(self.release_button)
        buttons.addWidget(self.confirm_button)
        dlayout = QVBoxLayout(decision)
        dlayout.addWidget(QLabel("Decision", objectName="sectionTitle"))
        dlayout.addLayout(form)
        dlayout.addLayout(buttons)
        dlayout.addWidget(self.problem_label)
        dlayout.addWidget(QLabel("Ctrl+R release \u00b7 Ctrl+T confirm tampering. Decisions are final and "
                                 "recorded, with your name, in the audit log.", objectName="finePrint", wordWrap=True))

        panel = QWidget(objectName="reviewPanel")
        playout = QVBoxLayout(panel)
        playout.setContentsMargins(8, 0, 8, 0)
        playout.addWidget(self.status_label)
        playout.addWidget(self.file_label)
        playout.addWidget(self.facts)
        playout.addWidget(QLabel("Checks", objectName="sectionTitle"))
        playout.addWidget(scores_widget)
        playout.addWidget(self.localisation_label)
        playout.addWidget(self.result_title)
        playout.addWidget(self.result_label)
        playout.addWidget(self.history_label)
        playout.addStretch(1)
        playout.addWidget(decision)
        scroll = QScrollArea()
        scroll.setWidget(panel)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(340)
        panel.setMinimumWidth(300)

        split = QSplitter(Qt.Horizontal)
        split.addWidget(left)
        split.addWidget(self.viewer)
        split.addWidget(scroll)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 3)
        split.setStretchFactor(2, 1)
        split.setSizes([230, 500, 370])
        split.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(self.banner)
        layout.addWidget(split, 1)
        self.setStyleSheet(
            "QLabel#sectionTitle { font-weight: 600; color: #2b4a6b; margin-top: 8px; }"
            "QLabel#reviewFile { font-weight: 600; font-size: 10.5pt; }"
            "QLabel#withheldResult { padding: 6px; border-radius: 4px; background: #edf2f7; }"
            "QLabel#finePrint { color: #718096; font-size: 8pt; }"
            "QLabel#localisationLabel { color: #4a5568; }"
            "QListWidget#reviewList { font-size: 9pt; }"
            "QListWidget#reviewList::item { padding: 6px 4px; border-bottom: 1px solid #e2e8f0; }"
            "QListWidget#reviewList::item:selected { background: #2f5f92; color: white; }"
            "QFrame#decisionBox { background: #f7f9fc; border: 1px solid #d5dce5; border-radius: 4px; }"
            "QPushButton#releaseButton { background: #2f6f4f; color: white; font-weight: 600; padding: 6px;"
            "  border-radius: 4px; }"
            "QPushButton#confirmButton { background: #9b1c1c; color: white; font-weight: 600; padding: 6px;"
            "  border-radius: 4px; }"
            "QPushButton#releaseButton:disabled, QPushButton#confirmButton:disabled { background: #a0aec0; }"
            "QProgressBar#scoreBar { border: 1px solid #cbd5e0; border-radius: 3px; background: white;"
            "  text-align: center; font-size: 8pt; }"
            "QProgressBar#scoreBar::chunk { background: #a0aec0; }"
            "QProgressBar#scoreBar[flagged=\"true\"]::chunk { background: #c53030; }"
        )
        self.refresh()

    # ------------------------------------------------------------------ store -> widgets
    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802
        super().showEvent(event)
        self.refresh()

    def refresh(self, select: Optional[int] = None) -> None:
        """Re-read the queue from the store; keeps (or moves to ``select``) the selected scan."""
        if self.store is None:
            self.count_label.setText("")
            self._update_buttons(None)
            return
        keep = select if select is not None else self.current_id()
        try:
            pending = self.store.review_queue()
        except StoreError as exc:
            self._problem(str(exc))
            return
        self._apply_queue(pending, keep)

    def schedule_refresh(self, delay_ms: int = 250) -> None:
        """Re-read the queue soon, off the UI thread.  A screening run calls this for every scan it
        quarantines: the calls are coalesced, and the UI thread never waits on the store (whose
        writer may be in the middle of a synced transaction).  While the page is hidden only the
        count is updated; the list is rebuilt when it is shown."""
        if self.store is not None and not self._refresh_timer.isActive():
            self._refresh_timer.start(delay_ms)

    def _refresh_in_background(self) -> None:
        store, keep = self.store, self.current_id()
        if store is None:
            return
        decided = set(self._decided)
        visible = self.isVisible()

        def work():
            pending = store.review_queue()
            ids = sorted({r.id for r in pending} | decided)
            shown = keep if keep in ids else (ids[0] if ids else None)
            reviews = {shown: store.reviews(shown)} if visible and shown is not None else {}
            return pending, reviews

        def done(outcome, error) -> None:
            if error is not None:
                self.message.emit(f"Review queue not refreshed: {error}")
            elif self.isVisible() and visible:
                self._apply_queue(outcome[0], self.current_id(), outcome[1])
            else:
                n = self._pending = len(outcome[0])
                self.count_label.setText(f"<b>{n} scan{'s' if n != 1 else ''} waiting for review</b>" if n
                                         else "<b>No scans waiting for review</b>")
                self.queueChanged.emit(n)

        self._async.submit(work, done, key="review-queue")

    def _apply_queue(self, pending: List[ScanRecord], keep: Optional[int],
                     reviews: Optional[Dict[int, list]] = None) -> None:
        records = {r.id: r for r in pending}
        records.update(self._decided)
        self._records = [records[k] for k in sorted(records)]
        n = self._pending = len(pending)
        self.count_label.setText(f"<b>{n} scan{'s' if n != 1 else ''} waiting for review</b>" if n
                                 else "<b>No scans waiting for review</b>")
        self.list.blockSignals(True)
        self.list.clear()
        for rec in self._records:
            status = rec.review_status or "pending"
            text = f"{_name(rec)}\n{self._flag_summary(rec)} \u00b7 {_when(rec.first_seen)[5:16]}"
            if status != "pending":
                text += f"\n{STATUS_TEXT[status][0]}"
            item = QListWidgetItem(text, self.list)
            item.setData(Qt.UserRole, rec.id)
            item.setToolTip(rec.last_path)
            if rec.id in self._icons:
                item.setIcon(self._icons[rec.id])
            else:
                self._request_icon(rec)
            if status != "pending":
                item.setForeground(QBrush(QColor(STATUS_TEXT[status][1])))
        ids = [r.id for r in self._records]
        row = ids.index(keep) if keep in ids else (0 if ids else -1)
        self.list.setCurrentRow(row)
        self.list.blockSignals(False)
        if row < 0:
            self._show_record(None)
        else:
            self._show_record(self._records[row], reload_image=self._shown_id != ids[row],
                              reviews=(reviews or {}).get(ids[row]))
        self.queueChanged.emit(n)

    _shown_id: Optional[int] = None
    _pending = 0

    def pending_count(self) -> int:
        """Scans waiting for review at the last refresh."""
        return self._pending

    def _scan_file(self, rec: ScanRecord) -> Path:
        """The quarantine copy (what was screened, byte for byte); the original path without one."""
        if rec.quarantine_file and self.store is not None:
            return Path(self.store.folder) / rec.quarantine_file
        return Path(rec.last_path)

    def _request_icon(self, rec: ScanRecord) -> None:
        self._icons[rec.id] = QIcon()  # requested once
        path, frame = self._scan_file(rec), rec.frame
        self._async.submit(lambda: grey_qimage(thumbnail(load_grey(path, frame=frame), 44)),
                           lambda img, err, sid=rec.id: self._icon_ready(sid, img, err))

    def _icon_ready(self, scan_id: int, image, error) -> None:
        if error is not None:
            return
        icon = QIcon(QPixmap.fromImage(image))
        self._icons[scan_id] = icon
        for row in range(self.list.count()):
            item = self.list.item(row)
            if item.data(Qt.UserRole) == scan_id:
                item.setIcon(icon)

    def current_id(self) -> Optional[int]:
        item = self.list.currentItem()
        return item.data(Qt.UserRole) if item is not None else None

    def current_record(self) -> Optional[ScanRecord]:
        sid = self.current_id()
        return next((r for r in self._records if r.id == sid), None)

    def select_scan(self, scan_id: int) -> None:
        """Show scan ``scan_id`` (e.g. from the Screening page's "Open in Review queue")."""
        self.refresh(select=scan_id)

    def _on_row_changed(self, row: int) -> None:
        self._show_record(self._records[row] if 0 <= row < len(self._records) else None)

    def _show_record(self, rec: Optional[ScanRecord], reload_image: bool = True, reviews: Optional[list] = None) -> None:
        self.problem_label.hide()
        self._update_buttons(rec)
        while self.scores_box.count():
            w = self.scores_box.takeAt(0).widget()
            if w is not None:
                w.hide()
                w.setParent(None)
                w.deleteLater()
        if rec is None:
            self._shown_id = None
            self.status_label.setText("")
            self.status_label.setStyleSheet("")
            self.file_label.setText("No scan selected." if self._records else
                                    "Nothing to review. Scans the pattern detector flags during screening "
                                    "wait here for a doctor's decision.")
            for w in (self.facts, self.result_label, self.history_label):
                w.setText("")
            self.result_label.hide()
            self.result_title.hide()
            self.localisation_label.setText("")
            self.viewer.set_image(None)
            return
        status = rec.review_status or "pending"
        text, colour = STATUS_TEXT[status]
        self.status_label.setText(text)
        self.status_label.setStyleSheet(f"background: {colour}; color: white; font-weight: 600; font-size: 11pt;"
                                        " padding: 5px 8px; border-radius: 4px;")
        self.file_label.setText(_name(rec))
        self.file_label.setToolTip(rec.last_path)
        facts = [f"Original: {_breakable(rec.last_path)}",
                 f"SHA-256: <span style='font-family:monospace'>{rec.sha256[:24]}...</span>",
                 f"First seen: {_when(rec.first_seen)} \u00b7 screened {rec.times_seen} time(s)"]
        if rec.models:
            facts.append("Models: " + ", ".join(html.escape(m) for m in rec.models))
        self.facts.setText("<br>".join(f"<span style='color:#4a5568'>{f}</span>" for f in facts))
        scores = rec.scores or ({"pattern detector": rec.pattern_score} if rec.pattern_score is not None else {})
        for row, (name, score) in enumerate(scores.items()):
            threshold = self._threshold(name)
            flagged = threshold is not None and score >= threshold
            label = QLabel(name + (f"  (flags at \u2265 {format_score(threshold)})" if threshold is not None else "")
                           + ("  \u2014 <b>flagged this scan</b>" if flagged else ""), wordWrap=True)
            bar = QProgressBar(maximum=1000, value=round(threshold_fraction(score, threshold) * 1000),
                               objectName="scoreBar")
            bar.setFormat(f"score {format_score(score)}")
            bar.setProperty("flagged", flagged)  # red past the threshold, grey below it
            if threshold is not None:
                bar.setToolTip("Half way along the bar is this check's threshold: past it, the scan is flagged.")
            bar.setFixedHeight(16)
            bar.setMinimumWidth(60)
            self.scores_box.addWidget(label, 2 * row, 0)
            self.scores_box.addWidget(bar, 2 * row + 1, 0)
        self.result_title.show()
        self.result_label.show()
        if rec.withheld:
            why = ("a reviewer confirmed tampering" if status == "confirmed"
                   else "it is released by a reviewer")
            self.result_label.setText(f"<b>WITHHELD</b> until {why}.<br><span style='color:#4a5568'>The "
                                      "classifier's result is stored but not shown, so a planted trigger cannot "
                                      "steer the diagnosis.</span>")
            self.result_label.setStyleSheet("")
        else:
            probs = rec.probabilities or {}
            lines = [f"<b style='font-size:11pt'>{html.escape(rec.label or '-')}</b>"
                     + (f" &nbsp; confidence {max(probs.values()) * 100:.1f} %" if probs else "")]
            lines.append(" \u00b7 ".join(f"{html.escape(k)} {v * 100:.1f} %"
                                         for k, v in sorted(probs.items(), key=lambda kv: -kv[1])))
            warn = []
            if rec.low_confidence:
                warn.append("low confidence")
            if rec.members_disagree:
                warn.append("ensemble members disagree")
            if warn:
                lines.append(f"<span style='color:#975a16'><b>\u26a0 {', '.join(warn)}</b></span>")
            self.result_label.setText("<br>".join(lines))
        if reviews is None:
            reviews = self.store.reviews(rec.id) if self.store is not None else []
        self.history_label.setText("<br>".join(
            f"<b>{'Released' if r.decision == 'release' else 'Tampering confirmed'}</b> by "
            f"{html.escape(r.reviewer)}, {_when(r.time)}" + (f": <i>{html.escape(r.comment)}</i>" if r.comment else "")
            for r in reviews))
        if reload_image or self._shown_id != rec.id:
            self._shown_id = rec.id
            self._load_image(rec)

    def _flag_summary(self, rec: ScanRecord) -> str:
        """What the queue list says about a scan: the check(s) that flagged it, with their scores
        (a scan flagged by the second check shows that, not the detector's low score)."""
        scores = rec.scores or ({"pattern detector": rec.pattern_score} if rec.pattern_score is not None else {})
        hits = [(n, v) for n, v in scores.items() if (t := self._threshold(n)) is not None and v >= t]
        shown = hits or list(scores.items())[:1]
        return ", ".join(f"{n} {format_score(v)}" for n, v in shown) if shown else "score -"

    def _threshold(self, model_name: str) -> Optional[float]:
        return self.catalog.detector_threshold(model_name) if self.catalog is not None else None

    def _update_buttons(self, rec: Optional[ScanRecord]) -> None:
        pending = rec is not None and rec.review_status == "pending" and self.store is not None
        self.release_button.setEnabled(pending)
        self.confirm_button.setEnabled(pending)

    # ------------------------------------------------------------------ image + localisation (off the UI thread)
    def _load_image(self, rec: ScanRecord) -> None:
        self.viewer.show_message("Loading...")
        self.localisation_label.setText("Looking for a localisation map...")
        self.localisation = None
        path = self._scan_file(rec)
        localiser, frame, models = self.localiser, rec.frame, list(rec.models)

        def work() -> Localisation:
            if not path.is_file():
                raise FileNotFoundError(f"the quarantine copy {path} is missing")
            if localiser is None:
                return Localisation(image=load_grey(path, frame=frame))
            return localiser.localise(path, frame, models)

        self._async.submit(work, lambda loc, err, sid=rec.id: self._image_ready(sid, loc, err), key="review-image")

    def _image_ready(self, scan_id: int, loc: Optional[Localisation], error) -> None:
        if scan_id != self.current_id():
            return
        if error is not None:
            self.viewer.show_message(f"Cannot display this scan:\n{error}")
            self.localisation_label.setText(NO_MAP)
            return
        self.localisation = loc
        self.viewer.set_image(loc.image)
        self.viewer.set_overlay(loc.heat)
        self.localisation_label.setText(("Localisation: " + loc.message) if loc.heat is not None
                                        else loc.message[:1].upper() + loc.message[1:] + ".")

    # ------------------------------------------------------------------ decisions
    def release(self) -> bool:
        return self._decide("release")

    def confirm_tampering(self) -> bool:
        return self._decide("confirm_tampering")

    def _problem(self, text: str) -> None:
        self.problem_label.setText(text)
        self.problem_label.show()
        self.message.emit(text)

    def _decide(self, decision: str) -> bool:
        rec = self.current_record()
        if rec is None or self.store is None:
            return False
        reviewer = self.reviewer_edit.text().strip()
        if not reviewer:
            self._problem("Enter your name as the reviewer first: every decision is signed in the audit log.")
            self.reviewer_edit.setFocus()
            return False
        try:
            new = self.store.review(rec.id, decision, reviewer, self.comment_edit.toPlainText())
        except (StoreError, ValueError) as exc:
            self._problem(f"Not recorded: {exc}")
            self.refresh()
            return False
        self.settings.setValue(SETTINGS_REVIEWER, reviewer)
        self.comment_edit.clear()
        self._decided[rec.id] = new
        self.refresh(select=rec.id)
        word = "released" if decision == "release" else "tampering confirmed"
        self.message.emit(f"{_name(new)}: {word} by {reviewer} (audit log updated)")
        self.decided.emit(rec.id, decision)
        return True

    def shutdown(self, timeout_ms: int = 30000) -> None:
        self._async.wait(timeout_ms)
