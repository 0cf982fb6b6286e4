"""What every page has: its window, its station link, and hooks for status, events and F5."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QWidget

from wats_station.gui.link import Reply

if TYPE_CHECKING:
    from wats_station.gui.window import MainWindow
    from wats_station.ipc.client import Event


class Page(QWidget):
    title = ""
    # Event topics (prefixes) after which the page fetches its lists again.
    refresh_on: tuple[str, ...] = ()

    def __init__(self, main: MainWindow) -> None:
        super().__init__()
        self.main = main
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(400)  # a burst of events makes one fetch
        self._refresh_timer.timeout.connect(self.refresh)

    def call(
        self, command: str, on_done: Callable[[Reply], None] | None = None, **args: Any
    ) -> None:
        self.main.call(command, on_done, **args)

    def show_status(self, status: dict[str, Any]) -> None:
        """A fresh status of the station (on connect, after events, after a gap)."""

    def on_event(self, event: Event) -> None:
        if any(event.topic.startswith(t) for t in self.refresh_on):
            self.refresh_soon()

    def on_connection(self, connected: bool) -> None:
        if connected:
            self.refresh()

    def refresh(self) -> None:
        """Fetch what the page shows (F5)."""

    def refresh_soon(self) -> None:
        if not self._refresh_timer.isActive():
            self._refresh_timer.start()

    def report(self, text: str, error: bool = False) -> None:
        self.main.say(text, error)
