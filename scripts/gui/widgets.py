"""Small shared pieces: selectable text, tables that copy, verdict colours, time in words."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QKeySequence, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from wats_station.cli import format_duration

# The verdict colours, also the tray icon's. "offline": no station answers.
TONES = {
    "ok": "#2e7d32",
    "degraded": "#b26a00",
    "failing": "#c62828",
    "offline": "#757575",
    "unknown": "#1565c0",
}
NEEDS_NEWER = "needs a newer station"
RECEIVED_AT = "_received_at"  # the window's own key in a status: time.monotonic() when it came


def label(text: str = "", *, bold: bool = False, wrap: bool = True) -> QLabel:
    """A label whose text can be selected and copied with mouse and keyboard."""
    widget = QLabel(text)
    widget.setTextInteractionFlags(
        Qt.TextInteractionFlag.TextSelectableByMouse
        | Qt.TextInteractionFlag.TextSelectableByKeyboard
    )
    widget.setWordWrap(wrap)
    if bold:
        font = widget.font()
        font.setBold(True)
        widget.setFont(font)
    return widget


def set_tone(widget: QWidget, tone: str | None) -> None:
    color = TONES.get(tone or "", "")
    widget.setStyleSheet(f"color: {color}; font-weight: bold;" if color else "")


def dot_icon(tone: str, size: int = 64) -> QIcon:
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(QColor(TONES.get(tone, TONES["unknown"])))
    painter.setPen(Qt.PenStyle.NoPen)
    painter.drawEllipse(4, 4, size - 8, size - 8)
    painter.end()
    return QIcon(pixmap)


class Table(QTableWidget):
    """A read-only table: rows are selected whole, Ctrl+C copies them as tab-separated text."""

    def __init__(self, headers: Sequence[str], parent: QWidget | None = None) -> None:
        super().__init__(0, len(headers), parent)
        self.setHorizontalHeaderLabels(list(headers))
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setAlternatingRowColors(True)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.horizontalHeader().setStretchLastSection(True)
        self.horizontalHeader().setResizeContentsPrecision(100)  # fitting columns stays cheap
        self.setWordWrap(False)

    def fill(self, rows: Sequence[Sequence[Any]], keys: Sequence[Any] | None = None) -> None:
        """Replace the rows, keeping the selection of rows whose key (default: first cell) stays."""
        chosen = set(self.selected_keys())
        self.setSortingEnabled(False)
        self.setRowCount(len(rows))
        for r, row in enumerate(rows):
            key = keys[r] if keys is not None else row[0]
            for c, value in enumerate(row):
                text = "" if value is None else str(value)
                item = QTableWidgetItem(text)
                if len(text) > 40:
                    item.setToolTip(text)  # a cut cell can still be read whole
                item.setData(Qt.ItemDataRole.UserRole, key)
                self.setItem(r, c, item)
        for r in range(len(rows)):
            if self.item(r, 0).data(Qt.ItemDataRole.UserRole) in chosen:
                self.selectRow(r)
        self.resizeColumnsToContents()

    def selected_keys(self) -> list[Any]:
        rows = sorted({index.row() for index in self.selectedIndexes()})
        return [self.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in rows if self.item(r, 0)]

    def cell_text(self, row: int, column: int) -> str:
        item = self.item(row, column)
        return item.text() if item else ""

    def column_texts(self, column: int) -> list[str]:
        return [self.cell_text(r, column) for r in range(self.rowCount())]

    def select_key(self, key: Any) -> bool:
        for r in range(self.rowCount()):
            if self.item(r, 0).data(Qt.ItemDataRole.UserRole) == key:
                self.selectRow(r)
                self.setCurrentCell(r, 0)
                return True
        return False

    def keyPressEvent(self, event: Any) -> None:
        if event.matches(QKeySequence.StandardKey.Copy):
            QGuiApplication.clipboard().setText(self.selected_text())
            return
        super().keyPressEvent(event)

    def selected_text(self) -> str:
        rows = sorted({index.row() for index in self.selectedIndexes()})
        return "\n".join(
            "\t".join(self.cell_text(r, c) for c in range(self.columnCount())) for r in rows
        )


def ago(timestamp: float | None, now: float | None = None) -> str:
    if not timestamp:
        return "-"
    return format_duration(max(0.0, (now or time.time()) - timestamp)) + " ago"


def clock(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def when(value: Any) -> str:
    """A time from the station: epoch seconds or ISO 8601 text, shown as local clock time."""
    if isinstance(value, (int, float)):
        return clock(float(value))
    return str(value or "-")


__all__ = [
    "NEEDS_NEWER",
    "RECEIVED_AT",
    "TONES",
    "Table",
    "ago",
    "clock",
    "dot_icon",
    "format_duration",
    "label",
    "set_tone",
    "when",
]
