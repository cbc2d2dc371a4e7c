"""Report export: the PDF printer (Qt's own ``QPdfWriter`` + ``QTextDocument``) and the dialog.

The rows, the CSV and the HTML come from the Qt-free :mod:`breakfix_desktop.core.report`; this
module only prints the HTML to PDF and asks the user where to write and whether to include
patient identifiers (unticked by default).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

from PySide6.QtCore import QMarginsF, QSizeF
from PySide6.QtGui import QPageLayout, QPageSize, QPdfWriter, QTextDocument
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.quarantine import QuarantineStore
from ..core.fsutil import atomic_output
from ..core.report import REPORT_MODE, ReportInfo, log_export, report_html, write_csv
from ..core.screening import ScreeningResult
from ..core.screening_session import ScreeningSession

FORMATS = {"csv": "CSV (spreadsheet)", "pdf": "PDF (printable)"}


def write_pdf(path: os.PathLike, results: Iterable[ScreeningResult], info: Optional[ReportInfo] = None, *,
              include_patient: bool = False, store: Optional[QuarantineStore] = None,
              run_id: Optional[str] = None) -> Path:
    """Print the report to an A4 landscape PDF (written to a temp file, then renamed into place)
    and log an ``exported`` audit event.  Needs a QGuiApplication."""
    results = list(results)
    out = Path(path).expanduser()
    with atomic_output(out, REPORT_MODE) as tmp:
        writer = QPdfWriter(tmp)
        writer.setTitle((info or ReportInfo()).title)
        writer.setCreator("BreakFix Desktop")
        writer.setResolution(150)
        writer.setPageLayout(QPageLayout(QPageSize(QPageSize.A4), QPageLayout.Landscape,
                                         QMarginsF(12, 12, 12, 12), QPageLayout.Millimeter))
        doc = QTextDocument()
        doc.setDocumentMargin(0)
        doc.setHtml(report_html(results, info, include_patient=include_patient))
        rect = writer.pageLayout().paintRectPixels(writer.resolution())
        doc.setPageSize(QSizeF(rect.width(), rect.height()))
        doc.print_(writer)
        del writer  # finishes the file
        if os.path.getsize(tmp) == 0:
            raise OSError("the PDF writer produced an empty file")
    log_export(store, "pdf", out, results, include_patient, run_id)
    return out


def session_info(session: ScreeningSession) -> ReportInfo:
    """Report header facts from the session's last run and the store."""
    summary = session.summary
    head = session.store.audit_head() if session.store is not None else None
    models = summary.models if summary else sorted({m for r in session.results() for m in r.models})
    return ReportInfo(run_id=summary.run_id if summary else None, models=list(models),
                      device=summary.device if summary else "", notes=list(summary.notes) if summary else [],
                      audit_head=head.hash if head else None,
                      store=str(session.store.folder) if session.store is not None else None)


def export_session_report(session: ScreeningSession, path: os.PathLike, fmt: str = "csv", *,
                          include_patient: bool = False) -> Path:
    """Write the session's results as ``fmt`` (``csv`` or ``pdf``); quarantined results are
    re-read from the store first, so releases made in the review queue are reflected."""
    session.refresh_from_store()
    results = session.results()
    if not results:
        raise ValueError("nothing screened yet: there is no result to report")
    run_id = session.summary.run_id if session.summary else None
    fmt = fmt.lower()
    if fmt == "csv":
        return write_csv(path, results, include_patient=include_patient, store=session.store, run_id=run_id)
    if fmt == "pdf":
        return write_pdf(path, results, session_info(session), include_patient=include_patient,
                         store=session.store, run_id=run_id)
    raise ValueError(f"unknown report format {fmt!r}; use csv or pdf")


class QtExportDialog(QDialog):
    """Where to write the report, which format, and (opt-in) patient identifiers."""

    def __init__(self, fmt: str = "csv", folder: str = "", parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setWindowTitle("Export screening report")
        self.format_box = QComboBox()
        for key, label in FORMATS.items():
            self.format_box.addItem(label, key)
        self.format_box.setCurrentIndex(list(FORMATS).index(fmt if fmt in FORMATS else "csv"))
        self.path_edit = QLineEdit(str(Path(folder or Path.home()) / f"screening-report.{self.format()}"))
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        self.format_box.currentIndexChanged.connect(self._format_changed)
        self.patient_check = QCheckBox("Include patient identifiers (DICOM patient name, ID and birth date)")
        self.patient_check.setChecked(False)
        warn = QLabel("Leave this unticked unless the report stays inside the hospital's systems. "
                      "The audit log records that a report was exported and whether identifiers were included.",
                      wordWrap=True)
        warn.setStyleSheet("color: #4a5568;")
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Format", self.format_box)
        form.addRow("File", row)
        buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.patient_check)
        layout.addWidget(warn)
        layout.addWidget(buttons)
        self.resize(560, self.sizeHint().height())

    def format(self) -> str:
        return self.format_box.currentData()

    def path(self) -> Path:
        return Path(self.path_edit.text()).expanduser()

    def include_patient(self) -> bool:
        return self.patient_check.isChecked()

    def _format_changed(self) -> None:
        p = self.path()
        self.path_edit.setText(str(p.with_suffix(f".{self.format()}")))

    def _browse(self) -> None:
        fmt = self.format()
        path, _ = QFileDialog.getSaveFileName(self, "Export screening report", str(self.path()),
                                              f"{fmt.upper()} (*.{fmt})")
        if path:
            self.path_edit.setText(path)
