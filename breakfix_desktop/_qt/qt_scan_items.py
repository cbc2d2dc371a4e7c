"""Scan cards for the Screening grid: the Qt item model over a session, thumbnails, and the badges.

``QtScanListModel(session)`` mirrors a :class:`~breakfix_desktop.core.screening_session.ScreeningSession`
(it is fed the session's events by the view, on the UI thread).  Thumbnails are decoded off the
UI thread, through the one decoding path, when a card first becomes visible.
``QtScanCardDelegate`` paints each card: thumbnail, file name, a verdict badge and a detail line
(class and confidence; *diagnosis withheld*; the error), with low confidence and member
disagreement marked in amber on the thumbnail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

from ..core.display import format_score, thumbnail
from ..core.inputs import InputItem
from ..core.preprocess import load_grey
from ..core.report import short_error
from ..core.screening import ScreeningResult
from ..core.screening_session import ScreeningSession
from .qt_async import QtAsync
from .qt_image_viewer import grey_qimage

THUMB = 146
CARD = QSize(172, 230)

ItemRole = Qt.UserRole + 1
ResultRole = Qt.UserRole + 2
BadgeRole = Qt.UserRole + 3
ThumbStateRole = Qt.UserRole + 4


@dataclass(frozen=True)
class Badge:
    """What a card says about its scan."""

    title: str          # the pill: CLEAR, QUARANTINED, ERROR, ...
    detail: str         # the line under it
    colour: str         # pill background
    detail_colour: str = "#1a202c"
    attention: str = ""  # amber ribbon over the thumbnail ("" for none)


def badge_for(result: Optional[ScreeningResult], running: bool = False) -> Badge:
    """The badge of a card (Qt-free logic, also used for tooltips and tests)."""
    if result is None:
        return Badge("SCREENING..." if running else "NOT SCREENED", "waiting" if running else "press Start",
                     "#718096", "#718096")
    if result.verdict == "error":
        return Badge("ERROR", short_error(result.error), "#4a5568", "#9b1c1c")
    if result.verdict == "quarantined":
        if result.review_status == "released":
            conf = _confidence(result)
            return Badge("RELEASED", f"{result.label or '-'}{conf}  (after review)", "#2f6f4f", "#1e4d2b",
                         _attention(result))
        if result.review_status == "confirmed":
            return Badge("TAMPERING CONFIRMED", "diagnosis withheld", "#7b1111", "#9b1c1c")
        return Badge("QUARANTINED", "diagnosis withheld", "#c53030", "#9b1c1c")
    return Badge("CLEAR", f"{result.label or '-'}{_confidence(result)}", "#2f855a", "#1a202c",
                 _attention(result))


def _attention(result: ScreeningResult) -> str:
    """The short amber ribbon text (the tooltip and the result panel say it in full)."""
    if result.withheld or result.verdict == "error":
        return ""
    if result.low_confidence and result.members_disagree:
        return "LOW CONF. · DISAGREE"
    if result.low_confidence:
        return "LOW CONFIDENCE"
    return "MEMBERS DISAGREE" if result.members_disagree else ""


def _confidence(result: ScreeningResult) -> str:
    probs = result.probabilities or {}
    return f"  {max(probs.values()) * 100:.0f} %" if probs else ""


def result_tooltip(item: InputItem, result: Optional[ScreeningResult]) -> str:
    lines = [str(item.path) + ("" if item.frame is None else f"  (frame {item.frame})")]
    if result is not None:
        if result.verdict == "error":
            lines.append(f"Error: {result.error}")
        elif result.withheld:
            lines.append("QUARANTINED - diagnosis withheld until a reviewer releases it")
        else:
            probs = result.probabilities or {}
            lines.append(", ".join(f"{k} {v * 100:.1f} %" for k, v in probs.items()))
            if result.low_confidence:
                lines.append("Low confidence: the top probability is below the threshold")
            if result.members_disagree:
                lines.append(f"Ensemble members disagree (agreement {100 * (result.member_agreement or 0):.0f} %)")
        if result.pattern_score is not None:
            lines.append(f"Pattern score {format_score(result.pattern_score)}")
    return "\n".join(lines)


def load_thumbnail(item: InputItem):
    """Worker-thread side: decode and shrink (QImage is safe off the UI thread; QPixmap is not)."""
    return grey_qimage(thumbnail(load_grey(item.path, frame=item.frame), THUMB))


class QtScanListModel(QAbstractListModel):
    """Rows = the session's items; call :meth:`on_session_event` with the session's events."""

    def __init__(self, session: ScreeningSession, parent=None, *, async_runner: Optional[QtAsync] = None):
        super().__init__(parent)
        self.session = session
        self._items: List[InputItem] = session.items
        self._results: Dict[int, ScreeningResult] = {i: r for i in range(len(self._items))
                                                     if (r := session.result(i)) is not None}
        self._thumbs: Dict[Tuple[str, Optional[int]], object] = {}  # QPixmap | str (error) | None (loading)
        self._async = async_runner or QtAsync(self)
        self.running = session.running

    # ------------------------------------------------------------------ Qt model
    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: QModelIndex, role: int = Qt.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self._items):
            return None
        item = self._items[index.row()]
        result = self._results.get(index.row())
        if role == Qt.DisplayRole:
            return item.display_name
        if role == Qt.ToolTipRole:
            return result_tooltip(item, result)
        if role == ItemRole:
            return item
        if role == ResultRole:
            return result
        if role == BadgeRole:
            return badge_for(result, self.running)
        if role == Qt.DecorationRole:
            return self._thumbnail(index.row(), item)
        if role == ThumbStateRole:
            return self._thumbs.get(self._thumb_key(item), "not requested")
        return None

    # ------------------------------------------------------------------ session events
    def on_session_event(self, event: str, data) -> None:
        if event == "items":
            first, added = data
            first = len(self._items)  # the session only appends; keep our own count authoritative
            self.beginInsertRows(QModelIndex(), first, first + len(added) - 1)
            self._items.extend(added)
            self.endInsertRows()
        elif event == "cleared":
            self.beginResetModel()
            self._items, self._results = [], {}
            self.endResetModel()
        elif event == "result":
            self.set_results([data])
        elif event == "state":
            running = data in ("running", "cancelling")
            if running != self.running:
                self.running = running
                if self._items:
                    self.dataChanged.emit(self.index(0), self.index(len(self._items) - 1), [BadgeRole])

    def set_results(self, results) -> None:
        """``[(row, ScreeningResult), ...]`` (a burst from a run): one ``dataChanged`` over the
        rows they span instead of one per result."""
        rows = []
        for row, result in results:
            self._results[row] = result
            if 0 <= row < len(self._items):
                rows.append(row)
        if rows:
            self.dataChanged.emit(self.index(min(rows)), self.index(max(rows)),
                                  [ResultRole, BadgeRole, Qt.ToolTipRole])

    def result(self, row: int) -> Optional[ScreeningResult]:
        return self._results.get(row)

    def item(self, row: int) -> InputItem:
        return self._items[row]

    # ------------------------------------------------------------------ thumbnails
    @staticmethod
    def _thumb_key(item: InputItem) -> Tuple[str, Optional[int]]:
        return str(item.path), item.frame

    def _thumbnail(self, row: int, item: InputItem):
        key = self._thumb_key(item)
        if key not in self._thumbs:
            self._thumbs[key] = None
            persistent = QPersistentModelIndex(self.index(row))
            self._async.submit(lambda it=item: load_thumbnail(it),
                               lambda img, err, k=key, p=persistent: self._thumb_ready(k, p, img, err))
        value = self._thumbs[key]
        return value if isinstance(value, QPixmap) else None

    def _thumb_ready(self, key, persistent: QPersistentModelIndex, image, error) -> None:
        self._thumbs[key] = QPixmap.fromImage(image) if error is None else "unreadable"
        if persistent.isValid():
            idx = self.index(persistent.row())
            self.dataChanged.emit(idx, idx, [Qt.DecorationRole])

    def thumbnails_loaded(self) -> int:
        return sum(1 for v in self._thumbs.values() if v is not None)


class QtScanCardDelegate(QStyledItemDelegate):
    """Paints a scan card (see the module docstring)."""

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:  # noqa: N802
        return CARD

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        painter.save()
        painter.setRenderHint(QPainter.Antialiasing, True)
        rect = option.rect.adjusted(4, 4, -4, -4)
        selected = bool(option.state & QStyle.State_Selected)
        painter.setPen(QPen(QColor("#2f5f92" if selected else "#d5dce5"), 2 if selected else 1))
        painter.setBrush(QColor("#eaf1fa" if selected else "#ffffff"))
        painter.drawRoundedRect(rect, 6, 6)

        thumb_rect = QRect(rect.left() + 6, rect.top() + 6, rect.width() - 12, THUMB)
        painter.setPen(Qt.NoPen)
        painter.setBrush(QColor("#0b0f14"))
        painter.drawRoundedRect(thumb_rect, 4, 4)
        pix = index.data(Qt.DecorationRole)
        state = index.data(ThumbStateRole)
        if isinstance(pix, QPixmap) and not pix.isNull():
            fits = pix.width() <= thumb_rect.width() and pix.height() <= thumb_rect.height()
            scaled = pix if fits else pix.scaled(thumb_rect.size(), Qt.KeepAspectRatio, Qt.SmoothTransformation)
            x = thumb_rect.left() + (thumb_rect.width() - scaled.width()) // 2
            y = thumb_rect.top() + (thumb_rect.height() - scaled.height()) // 2
            painter.drawPixmap(x, y, scaled)
        else:
            painter.setPen(QColor("#a0aec0"))
            painter.drawText(thumb_rect, Qt.AlignCenter, "cannot display" if state == "unreadable" else "loading...")

        badge: Badge = index.data(BadgeRole)
        font = QFont(option.font)
        if badge.attention:
            small = QFont(font)
            small.setPointSizeF(max(6.5, font.pointSizeF() * 0.75))
            small.setBold(True)
            painter.setFont(small)
            band = QRect(thumb_rect.left(), thumb_rect.top(), thumb_rect.width(), 18)
            painter.setPen(Qt.NoPen)
            painter.setBrush(QColor(214, 158, 46, 235))
            painter.drawRoundedRect(band, 4, 4)
            painter.setPen(QColor("#1a202c"))
            painter.drawText(band, Qt.AlignCenter, "\u26a0 " + badge.attention)

        text_left = rect.left() + 8
        text_width = rect.width() - 16
        name_rect = QRect(text_left, thumb_rect.bottom() + 6, text_width, 18)
        painter.setFont(font)
        painter.setPen(QColor("#1a202c"))
        name = QFontMetrics(font).elidedText(index.data(Qt.DisplayRole), Qt.ElideMiddle, text_width)
        painter.drawText(name_rect, Qt.AlignLeft | Qt.AlignVCenter, name)

        bold = QFont(font)
        bold.setBold(True)
        bold.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        fm = QFontMetrics(bold)
        pill_w = min(text_width, fm.horizontalAdvance(badge.title) + 14)
        pill = QRect(text_left, name_rect.bottom() + 4, pill_w, 19)
        painter.setPen(Qt.NoPen)
        painter.setBrush(QColor(badge.colour))
        painter.drawRoundedRect(pill, 9, 9)
        painter.setFont(bold)
        painter.setPen(QColor("white"))
        painter.drawText(pill, Qt.AlignCenter, badge.title)

        detail_rect = QRect(text_left, pill.bottom() + 3, text_width, 18)
        detail_font = QFont(font)
        if badge.title in ("QUARANTINED", "TAMPERING CONFIRMED"):
            detail_font.setBold(True)
        painter.setFont(detail_font)
        painter.setPen(QColor(badge.detail_colour))
        detail = QFontMetrics(detail_font).elidedText(badge.detail, Qt.ElideRight, text_width)
        painter.drawText(detail_rect, Qt.AlignLeft | Qt.AlignVCenter, detail)
        painter.restore()
