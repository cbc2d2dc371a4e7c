"""Models page: every model of a :class:`~breakfix_desktop.core.model_registry.Registry`.

A thin view: a banner (what was found, refusals in red), a table (name, role, status, test
accuracy, accuracy under the strongest attack on the card, SHA-256, reason) and the selected model's card as pretty-printed JSON.  All
verification logic lives in the registry; this only displays it.
"""

from __future__ import annotations

import html
import json
from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontDatabase
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.model_cards import card_summary, card_warnings, strongest_attack
from ..core.model_registry import ModelEntry, Registry

COLUMNS = ("Name", "Role", "Status", "Test acc.", "Test acc. (dedup)", "Under attack", "SHA-256", "Reason")
REFUSED_BG = QColor("#fde8e8")
REFUSED_FG = QColor("#9b1c1c")
VERIFIED_FG = QColor("#1e6b3a")

_BANNER_OK = "padding: 8px; border-radius: 4px; background: #e8f3ec; color: #1e4d2b;"
_BANNER_INFO = "padding: 8px; border-radius: 4px; background: #eef2f7; color: #243447;"
_BANNER_BAD = "padding: 8px; border-radius: 4px; background: #fde8e8; color: #9b1c1c; font-weight: bold;"


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


class QtModelsView(QWidget):
    """Table of models plus the selected card; call :meth:`set_registry` when it changes."""

    def __init__(self, registry: Registry, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.registry = registry
        self.banner = QLabel(wordWrap=True, textInteractionFlags=Qt.TextSelectableByMouse)
        self.banner.setObjectName("modelsBanner")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setStretchLastSection(True)
        self.card_view = QPlainTextEdit(readOnly=True)
        self.card_view.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.card_view.setPlaceholderText("Select a model to see its model card.")
        self.card_title = QLabel("Model card")
        bold = QFont(self.card_title.font())
        bold.setBold(True)
        self.card_title.setFont(bold)

        card_box = QWidget()
        card_layout = QVBoxLayout(card_box)
        card_layout.setContentsMargins(0, 0, 0, 0)
        #: the card in sentences (what it is, what was measured) and its warnings in red, above the JSON
        self.card_summary = QLabel(wordWrap=True, textInteractionFlags=Qt.TextSelectableByMouse)
        self.card_summary.setObjectName("cardSummary")
        self.card_summary.setTextFormat(Qt.RichText)
        card_layout.addWidget(self.card_title)
        card_layout.addWidget(self.card_summary)
        card_layout.addWidget(self.card_view)
        splitter = QSplitter(Qt.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(card_box)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)

        title = QLabel("Models")
        title.setObjectName("pageTitle")
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(self.banner)
        layout.addWidget(splitter, 1)
        self.table.itemSelectionChanged.connect(self._show_selected_card)
        self.set_registry(registry)

    # ------------------------------------------------------------------ model -> widgets
    def set_registry(self, registry: Registry) -> None:
        """Show ``registry`` (e.g. after a reload); keeps the selected model when it is still there."""
        previous = self.selected_entry()
        self.registry = registry
        self._update_banner()
        self.table.setRowCount(len(registry.models))
        for row, entry in enumerate(registry.models):
            self._fill_row(row, entry)
        self._fit_table_height()
        names = [m.name for m in registry.models]
        if names:
            self.table.selectRow(names.index(previous.name) if previous and previous.name in names else 0)
        self._show_selected_card()

    #: the table grows to show this many models without scrolling; the card view takes the rest
    VISIBLE_ROWS = 10

    def _fit_table_height(self) -> None:
        """Let the table show every model (up to :attr:`VISIBLE_ROWS`) without a scroll bar."""
        rows = min(self.table.rowCount(), self.VISIBLE_ROWS)
        self.table.resizeRowsToContents()
        row_h = self.table.verticalHeader().defaultSectionSize()
        if self.table.rowCount():
            row_h = max(self.table.rowHeight(r) for r in range(rows))
        height = (self.table.horizontalHeader().sizeHint().height() + max(rows, 1) * row_h
                  + 2 * self.table.frameWidth() + self.table.horizontalScrollBar().sizeHint().height())
        self.table.setMinimumHeight(height)

    def _update_banner(self) -> None:
        reg = self.registry
        if reg.problems:
            text, style = "\n".join(reg.problems), _BANNER_BAD
        elif not reg.models:
            text = (f"No models shipped. Export a model with the training backend, or use File > Open models "
                    f"folder... Looked for {reg.manifest_path}")
            style = _BANNER_INFO
        elif reg.refused:
            n = len(reg.refused)
            text = (f"{n} model{'s' if n > 1 else ''} REFUSED and will not be loaded "
                    f"(a file that does not match its checksum may have been swapped). "
                    f"{len(reg.verified())} verified. Manifest: {reg.manifest_path}")
            style = _BANNER_BAD
        else:
            text = f"All {len(reg.models)} models verified (SHA-256 matches card and manifest). Manifest: {reg.manifest_path}"
            style = _BANNER_OK
        self.banner.setText(text)
        self.banner.setStyleSheet(style)

    def _fill_row(self, row: int, entry: ModelEntry) -> None:
        attack = strongest_attack(entry.card) if entry.card else None
        values = (entry.name, entry.role, entry.status, _percent(entry.test_accuracy),
                  _percent(entry.test_dedup_accuracy), _percent(attack.get("accuracy")) if attack else "-",
                  entry.short_sha, entry.reason)
        for col, value in enumerate(values):
            item = QTableWidgetItem(value)
            item.setData(Qt.UserRole, entry.name)
            if col in (3, 4, 5):
                item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
            if col == 5 and attack:
                item.setToolTip(f"{attack.get('label') or attack.get('attack')}, {attack.get('n')} Testing scans "
                                "(the strongest attack on the card)")
            if col == 6:
                item.setToolTip(entry.actual_sha256 or entry.sha256)
            if col == 7 and entry.reason:
                item.setToolTip(entry.reason)
            if not entry.is_verified:
                item.setBackground(QBrush(REFUSED_BG))
                item.setForeground(QBrush(REFUSED_FG))
            elif col == 2:
                item.setForeground(QBrush(VERIFIED_FG))
            self.table.setItem(row, col, item)

    # ------------------------------------------------------------------ selection
    def selected_entry(self) -> Optional[ModelEntry]:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        name = self.table.item(rows[0].row(), 0).data(Qt.UserRole)
        return self.registry.get(name)

    def select(self, name: str) -> bool:
        """Select the row of the model called ``name`` (its card is shown); False when none is listed."""
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.UserRole) == name:
                self.table.selectRow(row)
                return True
        return False

    def _show_selected_card(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            self.card_title.setText("Model card")
            self.card_summary.setVisible(False)
            self.card_view.setPlainText("")
            return
        self.card_title.setText(f"Model card - {entry.name}" + ("" if entry.is_verified else " (REFUSED)"))
        warnings = card_warnings(entry.card) if entry.card else []
        self.card_summary.setText(" ".join(html.escape(line) for line in card_summary(entry.card)) + "".join(
            f"<br><span style='color:#9b1c1c; font-weight:bold'>Warning: {html.escape(w)}</span>" for w in warnings))
        self.card_summary.setVisible(True)
        text = json.dumps(entry.card, indent=2, ensure_ascii=False) if entry.card else "(no readable card)"
        if not entry.is_verified:
            text = f"{entry.reason}\n\n{text}"
        self.card_view.setPlainText(text)
