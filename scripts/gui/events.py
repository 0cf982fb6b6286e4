"""Events: the station's live event stream, newest first, filterable by text."""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
)

from wats_station.gui.page import Page
from wats_station.gui.widgets import Table, clock, label
from wats_station.ipc.client import Event

KEPT = 5000
SHOWN = 1000  # rows drawn; the filter searches all that are kept


class EventsPage(Page):
    title = "Events"

    def __init__(self, main: Any) -> None:
        super().__init__(main)
        self.events: deque[tuple[str, str, str, str]] = deque(maxlen=KEPT)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("filter: topic or text, e.g. report.failed or a file name")
        self.filter.textChanged.connect(self._show)
        self.hold = QCheckBox("&Hold the display")
        # The metrics figures come every second when metrics are on: shown only when asked.
        self.metrics = QCheckBox("&Metrics too")
        self.hold.toggled.connect(lambda held: None if held else self._show())
        clear = QPushButton("C&lear")
        clear.clicked.connect(self._clear)
        self.count = label(wrap=False)
        self.table = Table(("Time", "Seq", "Topic", "Data"))
        self.table.itemSelectionChanged.connect(self._show_selected)
        self.detail = QPlainTextEdit()
        self.detail.setReadOnly(True)
        self.detail.setPlaceholderText("the selected event in full")

        top = QHBoxLayout()
        top.addWidget(self.filter, 1)
        top.addWidget(self.hold)
        top.addWidget(self.metrics)
        top.addWidget(clear)
        top.addWidget(self.count)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.detail)
        split.setSizes([500, 150])
        layout.addWidget(split, 1)
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(200)  # a storm of events redraws five times a second at most
        self._redraw.timeout.connect(self._show)

    def on_event(self, event: Event) -> None:
        if event.topic == "metrics" and not self.metrics.isChecked():
            return
        self.add(event.time, str(event.seq), event.topic, event.data)

    def on_connection(self, connected: bool) -> None:
        if connected:
            self.add(None, "", "connected", {"instance": self.main.instance})
        else:
            self.add(None, "", "disconnected", {"reason": self.main.reason})

    def add(self, at: float | None, seq: str, topic: str, data: dict[str, Any]) -> None:
        detail = json.dumps(data, default=str, ensure_ascii=False)
        self.events.appendleft((clock(at or time.time()), seq, topic, detail))
        if not self.hold.isChecked() and not self._redraw.isActive():
            self._redraw.start()

    def shown(self) -> list[tuple[str, str, str, str]]:
        needle = self.filter.text().strip().lower()
        return [e for e in self.events if not needle or needle in " ".join(e).lower()]

    def _show(self) -> None:
        rows = self.shown()
        self.count.setText(f"{len(rows)} of {len(self.events)}")
        rows = rows[:SHOWN]
        self.table.fill(rows, keys=[f"{r[1]}|{r[0]}|{r[2]}" for r in rows])

    def _show_selected(self) -> None:
        rows = sorted({index.row() for index in self.table.selectedIndexes()})
        if not rows:
            return
        time_, seq, topic, data = (self.table.cell_text(rows[0], c) for c in range(4))
        try:
            data = json.dumps(json.loads(data), indent=2, ensure_ascii=False)
        except ValueError:
            pass
        self.detail.setPlainText(f"{time_}  #{seq}  {topic}\n{data}")

    def _clear(self) -> None:
        self.events.clear()
        self._show()
