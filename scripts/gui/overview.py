"""Overview: is all well, and if not, what to do. Health, server link, counts, workers, pause."""

from __future__ import annotations

import getpass
import socket
import time
from collections import deque
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from wats_station.gui.link import Reply
from wats_station.gui.page import Page
from wats_station.gui.widgets import (
    NEEDS_NEWER,
    RECEIVED_AT,
    Table,
    ago,
    format_duration,
    label,
    set_tone,
)
from wats_station.ipc.client import Event

THROUGHPUT_WINDOW_S = 300.0


def verdict_of(status: dict[str, Any] | None) -> tuple[str, str]:
    """(tone, words) for the station's health verdict."""
    if status is None:
        return "offline", "not connected"
    health = status.get("health")
    if not health:
        return "unknown", f"health: {NEEDS_NEWER}"
    verdict = str(health.get("verdict", "unknown"))
    troubles = [r["message"] for r in health.get("reasons", []) if r.get("verdict") != "ok"]
    if verdict == "ok":
        return "ok", "All is well"
    return verdict, f"{verdict.capitalize()}: " + ("; ".join(troubles) or "see the reasons")


def paused_text(paused: dict[str, Any] | None) -> str:
    if paused is None:
        return NEEDS_NEWER
    parts = [
        f"{what} paused by {info.get('by') or '?'} at {info.get('at') or '?'}"
        for what, info in paused.items()
        if info
    ]
    return "; ".join(parts) or "no"


class OverviewPage(Page):
    title = "Overview"

    def __init__(self, main: Any) -> None:
        super().__init__(main)
        self.status: dict[str, Any] | None = None
        self.done: deque[tuple[float, str]] = deque()  # (time, "report" | "file")

        self.verdict = label(bold=True)
        font = self.verdict.font()
        font.setPointSize(font.pointSize() + 5)
        self.verdict.setFont(font)
        self.reasons = label()

        self.pause_buttons = {
            what: QPushButton(text)
            for what, text in (
                ("all", "&Pause all"),
                ("uploads", "Pause &uploads"),
                ("conversions", "Pause &conversions"),
            )
        }
        self.resume_button = QPushButton("&Resume")
        for what, button in self.pause_buttons.items():
            button.clicked.connect(lambda _=False, w=what: self.pause(w))
        self.resume_button.clicked.connect(lambda: self.resume("all"))
        controls = QHBoxLayout()
        for button in (*self.pause_buttons.values(), self.resume_button):
            controls.addWidget(button)
        controls.addStretch(1)

        self.fields = {
            name: label()
            for name in (
                "service",
                "server",
                "paused",
                "files",
                "reports",
                "oldest",
                "throughput",
            )
        }
        self.facts = QWidget()  # greyed while not connected: the last known state
        facts = QFormLayout(self.facts)
        for name, caption in (
            ("service", "Service"),
            ("server", "Server link"),
            ("paused", "Paused"),
            ("files", "Files"),
            ("reports", "Reports"),
            ("oldest", "Oldest unsent"),
            ("throughput", "Throughput"),
        ):
            facts.addRow(caption, self.fields[name])

        self.workers = Table(("Worker", "Kind", "PID", "State", "Uptime", "Restarts", "Doing"))
        self.worker_buttons = {
            action: QPushButton(text)
            for action, text in (
                ("restart", "Re&start worker"),
                ("stop", "S&top worker"),
                ("start", "Start wor&ker"),
            )
        }
        for action, button in self.worker_buttons.items():
            button.clicked.connect(lambda _=False, a=action: self.worker_action(a))
        worker_row = QHBoxLayout()
        for button in self.worker_buttons.values():
            worker_row.addWidget(button)
        worker_row.addStretch(1)
        self.worker_box = worker_box = QGroupBox("Workers")
        worker_layout = QVBoxLayout(worker_box)
        worker_layout.addWidget(self.workers)
        worker_layout.addLayout(worker_row)

        layout = QVBoxLayout(self)
        layout.addWidget(self.verdict)
        layout.addWidget(self.reasons)
        layout.addLayout(controls)
        layout.addWidget(self.facts)
        layout.addWidget(worker_box, 1)

        self._tick = QTimer(self)
        self._tick.setInterval(5000)  # ages and rates move on by themselves; no station call
        self._tick.timeout.connect(self._tick_clock)
        self._tick.start()
        self.on_connection(False)

    # -- what the station says ----------------------------------------------------------

    def show_status(self, status: dict[str, Any]) -> None:
        self.status = status
        self.facts.setEnabled(True)
        tone, text = verdict_of(status)
        self.verdict.setText(text)
        set_tone(self.verdict, tone)
        health = status.get("health")
        self.reasons.setText(
            "\n".join(
                f"{r.get('check', '?')} ({r.get('verdict', '?')}): {r.get('message', '')}"
                for r in (health or {}).get("reasons", [])
                if r.get("verdict") != "ok"
            )
        )
        server = status["server"]
        self.fields["server"].setText(
            f"{server['state']}  {server['url']}"
            + (f"\nlast error: {server['detail']}" if server.get("detail") else "")
        )
        set_tone(self.fields["server"], None if server["state"] == "Online" else "degraded")
        paused = status.get("paused")
        self.fields["paused"].setText(paused_text(paused))
        self._enable_pause(paused is not None)
        files = status["files"]
        self.fields["files"].setText(
            f"{files.get('waiting', 0)} waiting, {files.get('converted', 0)} converted, "
            f"{files.get('failed', 0)} in error"
        )
        queue = status["queue"]
        self.fields["reports"].setText(
            ", ".join(
                f"{queue.get(s, 0)} {s}" for s in ("pending", "processing", "completed", "failed")
            )
        )
        self._show_uptimes()
        self.call("list_reports", self._oldest_fetched, state="pending", limit=1)

    def _oldest_fetched(self, reply: Reply) -> None:
        if reply.ok:
            oldest = reply.result[0]["created_at"] if reply.result else None
            self.fields["oldest"].setText(ago(oldest) if oldest else "nothing waiting to be sent")

    def on_event(self, event: Event) -> None:
        if event.topic == "report.completed":
            self.done.append((event.time, "report"))
        elif event.topic == "file.done":
            self.done.append((event.time, "file"))
        else:
            return
        self._show_rates()

    def _show_uptimes(self) -> None:
        """Uptimes as of now: the status gave them at fetch time, and they move on alone."""
        status = self.status
        if status is None or not self.facts.isEnabled():
            return
        since = time.monotonic() - status.get(RECEIVED_AT, time.monotonic())
        self.fields["service"].setText(
            f"{status['state']}, pid {status['pid']}, "
            f"up {format_duration(status['uptime_s'] + since)}"
        )
        self.workers.fill(
            [
                (
                    w["name"],
                    w["kind"],
                    w["pid"] or "-",
                    w["state"],
                    "-" if w["uptime_s"] is None else format_duration(w["uptime_s"] + since),
                    w["restarts"],
                    ", ".join(j["what"] for j in w["jobs"]) or (w.get("last_exit") or ""),
                )
                for w in status["workers"]
            ]
        )

    def _tick_clock(self) -> None:
        self._show_uptimes()
        self._show_rates()

    def _show_rates(self) -> None:
        horizon = time.time() - THROUGHPUT_WINDOW_S
        while self.done and self.done[0][0] < horizon:
            self.done.popleft()
        reports = sum(kind == "report" for _, kind in self.done)
        files = len(self.done) - reports
        minutes = THROUGHPUT_WINDOW_S / 60
        self.fields["throughput"].setText(
            f"{reports} reports uploaded, {files} files converted in the last {minutes:g} "
            f"minutes ({reports / minutes:.1f} reports/min) while this window was open"
        )

    def on_connection(self, connected: bool) -> None:
        self.worker_box.setEnabled(connected)  # greyed: the last known workers
        if not connected:
            self.facts.setEnabled(False)
            if self.status is not None:
                self.fields["service"].setText("not answering (below: the last known state)")
            self.verdict.setText("Not connected")
            set_tone(self.verdict, "offline")
            self.reasons.setText(getattr(self.main, "reason", ""))  # "" while it is being built
            self._enable_pause(False)

    def _enable_pause(self, enabled: bool) -> None:
        for button in (*self.pause_buttons.values(), self.resume_button):
            button.setEnabled(enabled)
            button.setToolTip("" if enabled else NEEDS_NEWER)

    # -- actions --------------------------------------------------------------------------

    def pause(self, what: str) -> None:
        by = f"{getpass.getuser()}@{socket.gethostname()}"
        self.call("pause", self._acted, what=what, by=by)

    def resume(self, what: str) -> None:
        self.call("resume", self._acted, what=what)

    def worker_action(self, action: str) -> None:
        names = self.workers.selected_keys()
        if not names:
            self.report("choose a worker in the table first", error=True)
            return
        for name in names:
            self.call(f"{action}_worker", self._acted, name=name)

    def _acted(self, reply: Reply) -> None:
        if reply.unsupported:
            self._enable_pause(False)
            self.report(f"{reply.command}: {NEEDS_NEWER}", error=True)
        elif not reply.ok:
            self.report(f"{reply.command}: {reply.error}", error=True)
        else:
            self.report(f"{reply.command}: done")
            self.main.fetch_status()
