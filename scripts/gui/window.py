"""The main window: a page list on the left, the pages, a banner when no station answers, a tray.

Keyboard: Ctrl+1..7 choose a page (or arrows in the page list), F5 fetches the page again,
Ctrl+Q quits. The status is fetched on connect and whenever events say it changed (never by
fast polling); each page gets it, and every event, to show what is its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QHBoxLayout,
    QListWidget,
    QMainWindow,
    QMenu,
    QStackedWidget,
    QSystemTrayIcon,
    QVBoxLayout,
    QWidget,
)

from wats_station.gui.converters import ConvertersPage
from wats_station.gui.events import EventsPage
from wats_station.gui.files import FilesPage
from wats_station.gui.instances import InstancesPage
from wats_station.gui.link import Background, Reply, StationLink
from wats_station.gui.overview import OverviewPage, verdict_of
from wats_station.gui.page import Page
from wats_station.gui.queue import QueuePage
from wats_station.gui.settings import SettingsPage
from wats_station.gui.widgets import RECEIVED_AT, dot_icon, label
from wats_station.ipc.client import Event
from wats_station.ipc.endpoints import instance_paths

# Topics after which the status (counts, workers, server, health) is fetched again.
STATUS_TOPICS = ("report.", "file.", "worker.", "server.", "service.", "pause", "health")


class MainWindow(QMainWindow):
    def __init__(self, instance: str) -> None:
        super().__init__()
        self.resize(1200, 800)
        self.setMinimumSize(1000, 700)
        self.link: StationLink | None = None
        self.background = Background(self)  # work that is not a call to the followed station
        self.status: dict[str, Any] | None = None
        self.reason = ""  # why no station answers, in words

        self.banner = label()
        self.banner.setObjectName("banner")
        self.banner.setStyleSheet(
            "QLabel#banner { background: #fff3cd; color: #5c4400; padding: 8px; }"
        )
        self.banner.hide()

        self.pages: list[Page] = [
            OverviewPage(self),
            FilesPage(self),
            QueuePage(self),
            ConvertersPage(self),
            SettingsPage(self),
            EventsPage(self),
            InstancesPage(self),
        ]
        self.nav = QListWidget()
        self.nav.setFrameShape(QFrame.Shape.NoFrame)
        self.nav.setFixedWidth(150)
        self.stack = QStackedWidget()
        for number, page in enumerate(self.pages, 1):
            self.nav.addItem(f"{page.title}\tCtrl+{number}")
            self.stack.addWidget(page)
            action = QAction(self)
            action.setShortcut(QKeySequence(f"Ctrl+{number}"))
            action.triggered.connect(lambda _=False, n=number - 1: self.show_page(n))
            self.addAction(action)
        self.nav.currentRowChanged.connect(self._page_chosen)
        for key, slot in (("F5", self.refresh_page), ("Ctrl+Q", self.quit)):
            action = QAction(self)
            action.setShortcut(QKeySequence(key))
            action.triggered.connect(slot)
            self.addAction(action)

        body = QHBoxLayout()
        body.setContentsMargins(0, 0, 0, 0)
        body.addWidget(self.nav)
        body.addWidget(self.stack, 1)
        column = QVBoxLayout()
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.banner)
        column.addLayout(body, 1)
        central = QWidget()
        central.setLayout(column)
        self.setCentralWidget(central)

        self._status_timer = QTimer(self)
        self._status_timer.setSingleShot(True)
        self._status_timer.setInterval(300)  # one fetch for a burst of events
        self._status_timer.timeout.connect(self.fetch_status)
        self.tray = self._make_tray()
        self.nav.setCurrentRow(0)
        self.connect_to(instance)

    # -- the station ------------------------------------------------------------------

    @property
    def instance(self) -> str:
        return self.link.instance if self.link else ""

    def connect_to(self, instance: str) -> None:
        """Follow another instance (or the same one afresh)."""
        if self.link is not None:
            self.link.close(wait=False)  # a station slow to answer must not hold the window
            self.link.deleteLater()  # its threads notice and end; their news goes nowhere
        self.status = None
        link = self.link = StationLink(instance_paths(instance), self)
        # Each handler learns which link spoke, so news from one left behind is dropped.
        # (Not QObject.sender(): in PySide6 6.12 it miscounts None's references.)
        link.connected.connect(lambda status: self._connected(link, status))
        link.disconnected.connect(lambda reason: self._disconnected(link, reason))
        link.event.connect(lambda event: self._event(link, event))
        self.reason = f"connecting to station '{instance}' ..."
        self._show_connection()
        self.link.start()

    def call(
        self, command: str, on_done: Callable[[Reply], None] | None = None, **args: Any
    ) -> None:
        if self.link is not None:
            self.link.call(command, on_done, **args)

    def fetch_status(self) -> None:
        self.call("get_status", self._status_fetched)

    def _status_fetched(self, reply: Reply) -> None:
        if reply.ok:
            self._apply_status(received(reply.result))

    def _apply_status(self, status: dict[str, Any]) -> None:
        self.status = status
        for page in self.pages:
            page.show_status(status)
        self._show_verdict()

    def _connected(self, link: StationLink, status: dict[str, Any]) -> None:
        if link is not self.link:
            return
        self.reason = ""
        self._show_connection()
        self._apply_status(received(status))
        for page in self.pages:
            page.on_connection(True)

    def _disconnected(self, link: StationLink, reason: str) -> None:
        if link is not self.link:
            return
        self.reason = reason
        self._show_connection()
        for page in self.pages:
            page.on_connection(False)
        self._show_verdict()

    def _event(self, link: StationLink, event: Event) -> None:
        if link is not self.link:
            return
        if event.topic == "health" and self.status is not None:
            # The event carries the whole verdict: show it now, the status fetch follows.
            health = {k: v for k, v in event.data.items() if k != "from"}
            self._apply_status({**self.status, "health": health})
        for page in self.pages:
            page.on_event(event)
        if event.topic.startswith(STATUS_TOPICS) and not self._status_timer.isActive():
            self._status_timer.start()

    def _show_connection(self) -> None:
        connected = self.link is not None and self.link.is_connected
        self.banner.setVisible(not connected)
        if not connected:
            start = f"wats-station service --instance-id {self.instance}"
            hint = "" if start in self.reason else f"\nIf it is not running, start it: {start}"
            self.banner.setText(
                f"Not connected to station '{self.instance}': {self.reason}{hint}\n"
                "This window reconnects by itself when the station is back."
            )
        self.setWindowTitle(
            f"WATS station '{self.instance}'" + ("" if connected else " (not connected)")
        )

    def _show_verdict(self) -> None:
        connected = self.link is not None and self.link.is_connected
        tone, text = verdict_of(self.status) if connected else ("offline", "not connected")
        icon = dot_icon(tone)
        self.setWindowIcon(icon)
        if self.tray is not None:
            self.tray.setIcon(icon)
            self.tray.setToolTip(f"WATS station '{self.instance}': {text}")
        self.verdict = (tone, text)

    # -- pages, keyboard, tray --------------------------------------------------------

    def show_page(self, index: int) -> None:
        self.nav.setCurrentRow(index)

    def page(self, cls: type[Page]) -> Any:
        return next(p for p in self.pages if isinstance(p, cls))

    def _page_chosen(self, index: int) -> None:
        self.stack.setCurrentIndex(index)
        self.pages[index].refresh()

    def refresh_page(self) -> None:
        self.fetch_status()
        self.pages[self.stack.currentIndex()].refresh()

    def say(self, text: str, error: bool = False) -> None:
        self.statusBar().setStyleSheet("color: #c62828;" if error else "")
        self.statusBar().showMessage(text, 0 if error else 8000)

    def _make_tray(self) -> QSystemTrayIcon | None:
        self.verdict = ("offline", "not connected")
        if not QSystemTrayIcon.isSystemTrayAvailable():
            return None  # e.g. offscreen, or a desktop without a tray: the window icon says it
        tray = QSystemTrayIcon(dot_icon("offline"), self)
        menu = QMenu(self)
        menu.addAction("Show window", self.showNormal)
        menu.addAction("Quit", self.quit)
        tray.setContextMenu(menu)
        tray.activated.connect(lambda _reason: (self.showNormal(), self.activateWindow()))
        tray.show()
        return tray

    def quit(self) -> None:
        self.close()
        QApplication.quit()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.link is not None:
            self.link.close()
        self.background.wait()
        if self.tray is not None:
            self.tray.hide()
        super().closeEvent(event)


def received(status: dict[str, Any]) -> dict[str, Any]:
    """Stamp a status with when it came, so ages and uptimes can move on from there."""
    return {**status, RECEIVED_AT: time.monotonic()}


def is_ready(window: MainWindow) -> bool:
    return window.link is not None and window.link.is_connected and window.status is not None


__all__ = ["MainWindow", "is_ready"]
