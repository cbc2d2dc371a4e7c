"""Results of a finished drill run: classification report, confusion-matrix picture, baseline deltas,
export (HTML or PDF, plus JSON).

A run with several reports (a drill that evaluates several models or splits; each ``metrics``
event's report is kept under ``"series / split"``) gets a report chooser, opened on the run's main
report.  A drill that trained several models without a classification report (Figures 5 and 6)
shows one row per model: role, epochs, final and best accuracy.

Thin views over :class:`~breakfix_desktop.core.drills.DrillRun`; the comparison and the report
files come from the core (:func:`~breakfix_desktop.core.drills.compare_reports`,
:func:`~breakfix_desktop.core.drills.report_html`, :func:`~breakfix_desktop.core.drills.report_json`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Tuple

from PySide6.QtCore import QMarginsF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QFontDatabase, QPageLayout, QPageSize, QPainter, QPdfWriter, QTextDocument
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.drills import (
    ROLE_COLORS,
    DrillRun,
    DrillStudio,
    compare_reports,
    export_report,
    paper_table,
    report_html,
    report_json,
)

METRICS = ("precision", "recall", "f1")
GOOD, BAD = QColor("#1e6b3a"), QColor("#9b1c1c")


class QtConfusionMatrix(QWidget):
    """Counts per (true, predicted) class; cells shaded by the share of their true-class row."""

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.report: Optional[Mapping] = None
        self.setMinimumSize(200, 150)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        return QSize(340, 280)

    def set_report(self, report: Optional[Mapping]) -> None:
        self.report = report
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        p.fillRect(self.rect(), QColor("white"))
        cm = (self.report or {}).get("confusion_matrix")
        if not cm:
            p.setPen(QColor("#777"))
            p.drawText(self.rect(), Qt.AlignCenter, "No confusion matrix for this run")
            return
        classes = list((self.report or {}).get("classes") or [str(i) for i in range(len(cm))])
        k = len(cm)
        fm = p.fontMetrics()
        left = max(fm.horizontalAdvance(c) for c in classes) + 28
        top = fm.height() * 2 + 10
        size = max(10.0, min((self.width() - left - 8) / k, (self.height() - top - 8) / k))
        bold = QFont(p.font())
        bold.setBold(True)
        p.setPen(QColor("#333"))
        p.drawText(QRectF(left, 0, size * k, fm.height() + 2), Qt.AlignCenter, "predicted")
        p.save()
        p.translate(10, top + size * k / 2)
        p.rotate(-90)
        p.drawText(QRectF(-size * k / 2, -fm.height() + 4, size * k, fm.height()), Qt.AlignCenter, "true")
        p.restore()
        small = QFont(p.font())
        small.setPointSizeF(max(6.0, small.pointSizeF() * 0.85))
        p.setFont(small)
        for j, name in enumerate(classes):
            label = name
            while len(label) > 3 and p.fontMetrics().horizontalAdvance(label) > size - 4:
                label = label[:-1]
            if label != name:
                label = label[:-1] + "."
            p.drawText(QRectF(left + j * size, fm.height() + 4, size, fm.height() + 4), Qt.AlignCenter, label)
        p.setFont(self.font())
        for i, row in enumerate(cm):
            total = max(sum(row), 1)
            p.setPen(QColor("#333"))
            p.drawText(QRectF(16, top + i * size, left - 20, size), Qt.AlignRight | Qt.AlignVCenter, classes[i])
            for j, value in enumerate(row):
                frac = value / total
                colour = QColor.fromRgbF(1 - 0.88 * frac, 1 - 0.63 * frac, 1 - 0.37 * frac)
                cell = QRectF(left + j * size, top + i * size, size, size)
                p.fillRect(cell, colour)
                p.setPen(QColor("#d0d7e0"))
                p.drawRect(cell)
                p.setPen(QColor("white") if frac > 0.55 else QColor("#222"))
                p.setFont(bold if i == j else self.font())
                p.drawText(cell, Qt.AlignCenter, str(value))
                p.setFont(self.font())


def _item(text: str, align_right: bool = True) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    if align_right:
        item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
    return item


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def _points(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


#: The report chooser's entry for the drill's printed table (ours beside the paper's).
PAPER_TABLE = "\x00paper-table"
PAPER_TABLE_TEXT = "Table: ours vs paper"
#: ... and for the run's own summary (per-model table) when the drill sent no classification report.
SUMMARY = "\x00summary"
SUMMARY_TEXT = "Run summary"


class QtResultsView(QWidget):
    """A run's report table + confusion matrix, deltas against a chosen baseline, export."""

    baseline_changed = Signal(object)  # run id or None

    def __init__(self, studio: DrillStudio, parent: Optional[QWidget] = None,
                 images: Optional[Callable[[], Dict[str, str]]] = None):
        super().__init__(parent)
        self.studio = studio
        self.run: Optional[DrillRun] = None
        self.images = images  # () -> {caption: data URI} added to exported reports
        self.title = QLabel("Select a finished run to see its results.")
        self.title.setObjectName("resultsTitle")
        self.title.setWordWrap(True)
        self.title.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.baseline_box = QComboBox()
        self.baseline_box.setMinimumContentsLength(24)
        self.baseline_box.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.baseline_box.currentIndexChanged.connect(self._on_baseline)
        self.report_box = QComboBox()
        self.report_box.setToolTip("This run has several classification reports (per model / split)")
        self.report_box.setSizeAdjustPolicy(QComboBox.AdjustToContents)
        self.report_box.currentIndexChanged.connect(self._on_report)
        self.report_label = QLabel("Report:")
        self.report_key: Optional[str] = None
        self._shown: Optional[tuple] = None  # what the widgets show: show_run skips a repeat
        self.export_button = QPushButton("Export report...")
        self.export_button.setToolTip("HTML or PDF, plus a JSON file with the same name")
        self.export_button.clicked.connect(lambda: self.export())
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setAlternatingRowColors(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.matrix = QtConfusionMatrix()
        self.paper_view = QPlainTextEdit(readOnly=True)
        self.paper_view.setObjectName("paperTable")
        self.paper_view.setLineWrapMode(QPlainTextEdit.NoWrap)
        self.paper_view.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self._tables: Dict[str, Optional[str]] = {}  # run id -> its paper table (read once it is final)
        self.details = QPlainTextEdit(readOnly=True)
        self.details.setMaximumHeight(80)
        self.details.setPlaceholderText("Messages, summary and the backend's stderr tail appear here.")

        bar = QHBoxLayout()
        bar.addWidget(QLabel("Compare with baseline:"))
        bar.addWidget(self.baseline_box, 1)
        bar.addWidget(self.report_label)
        bar.addWidget(self.report_box)
        bar.addWidget(self.export_button)
        split = QSplitter(Qt.Horizontal)
        split.addWidget(self.table)
        split.addWidget(self.matrix)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([560, 280])
        self.pages = QStackedWidget()
        self.pages.addWidget(split)
        self.pages.addWidget(self.paper_view)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.title)
        layout.addLayout(bar)
        layout.addWidget(self.pages, 1)
        layout.addWidget(self.details)
        self.refresh_baselines()
        self.show_run(None)

    # ------------------------------------------------------------------ baseline
    def baseline(self) -> Optional[DrillRun]:
        run_id = self.baseline_box.currentData()
        return self.studio.runs.get(run_id) if run_id else None

    def refresh_baselines(self) -> None:
        current = self.baseline_box.currentData() or self.studio.baseline_id
        self.baseline_box.blockSignals(True)
        self.baseline_box.clear()
        self.baseline_box.addItem("No baseline", None)
        for run in sorted(self.studio.runs.values(), key=lambda r: r.number):
            if run.report is not None:
                self.baseline_box.addItem(run.label, run.id)
        index = self.baseline_box.findData(current) if current else 0
        self.baseline_box.setCurrentIndex(max(index, 0))
        self.baseline_box.blockSignals(False)

    def set_baseline(self, run_id: Optional[str]) -> None:
        self.refresh_baselines()
        index = self.baseline_box.findData(run_id) if run_id else 0
        if index < 0:
            raise ValueError(f"run {run_id!r} has no classification report to compare with")
        self.baseline_box.setCurrentIndex(index)
        self._on_baseline()

    def _on_baseline(self, *_) -> None:
        self.studio.baseline_id = self.baseline_box.currentData()
        self.baseline_changed.emit(self.studio.baseline_id)
        self.show_run(self.run)

    # ------------------------------------------------------------------ reports of a run
    def _fill_reports(self, run: Optional[DrillRun], same_run: bool) -> None:
        """The report chooser: every report of the run, shown only when there are several; keeps
        the chosen one while the same run updates, else opens on the run's main report."""
        keys = list(run.reports) if run is not None else []
        table = self.paper_table(run)
        if table:  # the table first; without reports the other choice is the run's summary
            keys = [PAPER_TABLE] + (keys or [SUMMARY])
        if not (same_run and self.report_key in keys):  # a drill's printed table first, else its main report
            self.report_key = PAPER_TABLE if table else run.report_key if run is not None else None
        self.report_box.blockSignals(True)
        self.report_box.clear()
        for key in keys:
            self.report_box.addItem({PAPER_TABLE: PAPER_TABLE_TEXT, SUMMARY: SUMMARY_TEXT}.get(key, key), key)
        self.report_box.setCurrentIndex(max(self.report_box.findData(self.report_key), 0) if keys else -1)
        self.report_box.blockSignals(False)
        many = len(keys) > 1
        self.report_box.setVisible(many)
        self.report_label.setVisible(many)

    def _on_report(self, *_) -> None:
        self.report_key = self.report_box.currentData()
        self.show_run(self.run)

    def paper_table(self, run: Optional[DrillRun]) -> Optional[str]:
        """The drill's printed table (ours vs the paper's) once the run is final, read once."""
        if run is None or not run.is_final:
            return None
        if run.id not in self._tables:
            self._tables[run.id] = paper_table(run)
        return self._tables[run.id]

    def showing_paper_table(self) -> bool:
        return self.run is not None and self.report_key == PAPER_TABLE and self.pages.currentWidget() is self.paper_view

    def shown_report(self) -> Optional[Mapping]:
        """The classification report on display (the chosen one of the run's reports)."""
        run = self.run
        if run is None:
            return None
        if self.report_key in run.reports:
            return run.reports[self.report_key]
        return run.report

    # ------------------------------------------------------------------ run
    def show_run(self, run: Optional[DrillRun]) -> None:
        """Show a run's results (None: nothing).  Showing the same run again is free unless it
        changed (its version), or the baseline or chosen report did."""
        key = (id(run), run.version if run is not None else None, self.baseline_box.currentData(), self.report_key)
        if run is self.run and key == self._shown:
            return
        same_run = run is not None and run is self.run
        self.run = run
        self._fill_reports(run, same_run)
        self.export_button.setEnabled(run is not None and run.is_final)
        if run is None:
            self.title.setText("Select a finished run to see its results.")
            self.pages.setCurrentIndex(0)
            self._fill_table(None, None)
            self.matrix.set_report(None)
            self.details.setPlainText("")
            self.details.setVisible(False)
            self._shown = (id(None), None, self.baseline_box.currentData(), self.report_key)
            return
        status = {"ok": "finished", "running": "running...", "queued": "queued"}.get(run.status, run.status.upper())
        report = self.shown_report()
        acc = report.get("accuracy") if report is not None else run.final_test_acc
        head = f"<b>{run.label}</b> - {status}"
        baseline = self.baseline()
        if baseline is not None and baseline.id == run.id:
            baseline = None
        per_series = {k: v for k, v in run.final_test_accs().items() if k}
        table = self.paper_table(run) if self.report_key == PAPER_TABLE else None
        self.pages.setCurrentWidget(self.paper_view if table else self.pages.widget(0))
        if table:
            head += f" - {PAPER_TABLE_TEXT}"
            if self.paper_view.toPlainText() != table:
                self.paper_view.setPlainText(table)
        elif len(per_series) > 1 and report is None:
            head += " - final test accuracy per model: " + ", ".join(
                f"{name} {_pct(value)}" for name, value in per_series.items())
        elif acc is not None:
            if report is not None and len(run.reports) > 1:
                head += f" - {self.report_key}"
            head += f" - accuracy {100 * acc:.1f} %"
            base_acc = baseline.final_test_acc if baseline is not None and report is not None else None
            if base_acc is not None:
                head += f" ({100 * (acc - base_acc):+.1f} points against baseline #{baseline.number})"
        if run.message and run.status not in ("ok",):
            head += f"<br><span style='color:#9b1c1c'>{run.message}</span>"
        self.title.setText(head)
        by_model = report is None and len(per_series) > 1
        if by_model:
            self._fill_series_table(run)
        else:
            self._fill_table(report, baseline.report if baseline is not None else None)
        self.matrix.set_report(report)
        lines = []
        if report is None and run.summary and not by_model:  # the per-model table shows the summary
            lines.append("Summary:\n" + json.dumps(run.summary, indent=2))
        if run.errors:
            lines.append("Backend errors:\n" + "\n".join(run.errors))
        if run.invalid_lines:
            lines.append(f"{len(run.invalid_lines)} invalid line(s) from the backend, e.g.: "
                         f"{run.invalid_lines[-1][1]}: {run.invalid_lines[-1][0][:120]}")
        if run.warnings:
            lines.append(f"{len(run.warnings)} warning(s), last: {run.warnings[-1]}")
        if run.stderr_tail and run.status != "ok":
            lines.append("Backend stderr (tail):\n" + run.stderr_tail)
        self.details.setPlainText("\n\n".join(lines))
        self.details.setVisible(bool(lines))
        self._shown = (id(run), run.version, self.baseline_box.currentData(), self.report_key)

    def _fill_series_table(self, run: DrillRun) -> None:
        """One row per model of a multi-series run: role, epochs, final and best accuracies."""
        headers = ["model", "role", "epochs", "train acc %", "test acc %", "best test acc %"]
        self.table.clear()
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        series = [d for d in run.series_data.values() if d.epochs]
        self.table.setRowCount(len(series))
        for r, data in enumerate(series):
            last = data.epochs[-1]
            tests = [row.get("test_acc") for row in data.epochs if row.get("test_acc") is not None]
            role = data.role or run.role
            cells = [data.name or run.role_title, role, str(len(data.epochs)), _points(last.get("train_acc")),
                     _points(data.final_test_acc), _points(max(tests) if tests else None)]
            for c, text in enumerate(cells):
                item = _item(text, align_right=c >= 2)
                if c == 0 and data.param:
                    item.setToolTip(", ".join(f"{k} = {v}" for k, v in data.param.items()))
                if c == 1:
                    item.setForeground(QBrush(QColor(ROLE_COLORS.get(role, "#333"))))
                self.table.setItem(r, c, item)

    def _fill_table(self, report: Optional[Mapping], baseline: Optional[Mapping]) -> None:
        comp = compare_reports(report, baseline) if report is not None and baseline is not None else None
        headers = ["class"]
        for m in METRICS:
            headers.append({"f1": "F1 %", "precision": "precision %", "recall": "recall %"}[m])
            if comp:
                headers.append("Δ")
        headers.append("support")
        self.table.clear()
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        if report is None:
            self.table.setRowCount(0)
            return
        classes = list(report.get("per_class", {}))
        rows = classes + ["accuracy", "macro avg"]
        self.table.setRowCount(len(rows))
        for r, name in enumerate(rows):
            first = _item(name, align_right=False)
            if r >= len(classes):
                bold = QFont(first.font())
                bold.setBold(True)
                first.setFont(bold)
            self.table.setItem(r, 0, first)
            col = 1
            for m in METRICS:
                if name in classes:
                    value = report["per_class"][name].get(m)
                    delta = comp["per_class"][name][m]["delta"] if comp else None
                elif name == "accuracy":
                    value = report.get("accuracy") if m == "f1" else None  # as in scikit-learn's report
                    delta = comp["accuracy"]["delta"] if comp and m == "f1" else None
                else:
                    value = report.get("macro_avg", {}).get(m)
                    delta = (comp["macro_f1"]["delta"] if comp and m == "f1" else None)
                self.table.setItem(r, col, _item(f"{100 * value:.1f}" if value is not None else ""))
                col += 1
                if comp:
                    item = _item("" if delta is None else f"{100 * delta:+.1f}")
                    item.setToolTip("change against the baseline, percentage points")
                    if delta is not None and abs(delta) >= 0.0005:
                        item.setForeground(QBrush(GOOD if delta > 0 else BAD))
                    self.table.setItem(r, col, item)
                    col += 1
            support = (report["per_class"][name].get("support") if name in classes else report.get("n"))
            self.table.setItem(r, col, _item("" if support is None else str(support)))

    # ------------------------------------------------------------------ export
    def export(self, path: Optional[str] = None) -> Optional[Tuple[Path, Path]]:
        """Write the report as .html or .pdf plus .json beside it; asks for a path when None."""
        run = self.run
        if run is None:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export report", f"drill-{run.number}.html",
                                                  "HTML report (*.html);;PDF report (*.pdf)")
            if not path:
                return None
        path = Path(path)
        images = self.images() if self.images else None
        baseline = self.baseline()
        if path.suffix.lower() == ".pdf":
            doc = QTextDocument()
            doc.setHtml(report_html(run, baseline, None))
            writer = QPdfWriter(str(path))
            writer.setPageSize(QPageSize(QPageSize.A4))
            writer.setPageMargins(QMarginsF(15, 15, 15, 15), QPageLayout.Millimeter)
            doc.print_(writer)
            json_path = path.with_suffix(".json")
            json_path.write_text(json.dumps(report_json(run, baseline), indent=2), encoding="utf-8")
            return path, json_path
        return export_report(run, path, baseline, images)
