"""Instances: the stations on this machine, which of them run, and which one the window follows.

Instances are found where their files live (``ipc.endpoints`` decides where that is): config
files ``config_<id>.json`` and the per-instance data and runtime folders. Whether one runs is
asked with a ``ping``, off the GUI thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QHBoxLayout, QPushButton, QVBoxLayout

from wats_station.gui.link import call_station
from wats_station.gui.page import Page
from wats_station.gui.widgets import Table, label
from wats_station.ipc.endpoints import DEFAULT_INSTANCE, check_instance_id, instance_paths

PROBE = "probe-instance-id"  # a made-up id: where it appears in a path, instances are siblings


def _siblings(folder: Path) -> set[str]:
    """Instance ids beside ``folder``, when one of its parts is the instance id."""
    parts = folder.parts
    if PROBE not in parts:
        return set()
    at = parts.index(PROBE)
    parent, rest = Path(*parts[:at]), parts[at + 1 :]
    try:
        return {
            entry.name
            for entry in os.scandir(parent)
            if entry.is_dir() and Path(entry.path, *rest).is_dir()
        }
    except OSError:
        return set()


def find_instances(current: str = DEFAULT_INSTANCE) -> list[str]:
    """Every instance id with a config file or folders on this machine (and ``current``)."""
    probe = instance_paths(PROBE)
    found = {current}
    try:
        for entry in os.scandir(probe.config_file.parent):
            name = entry.name
            if name.startswith("config_") and name.endswith(".json"):
                found.add(name[len("config_") : -len(".json")])
    except OSError:
        pass
    for folder in (probe.data_dir, probe.runtime_dir):
        found |= _siblings(folder)
    valid = set()
    for instance in found:
        try:
            valid.add(check_instance_id(instance))
        except ValueError:
            continue
    return sorted(valid)


def probe_instances(current: str) -> list[dict[str, Any]]:
    """Each instance and whether it answers (runs off the GUI thread: it pings)."""
    rows = []
    for instance in find_instances(current):
        paths = instance_paths(instance)
        reply = call_station(paths, "ping", 1.0)
        rows.append(
            {
                "instance": instance,
                "running": reply.ok,
                "config": str(paths.config_file)
                + ("" if paths.config_file.exists() else " (none: embedded defaults)"),
                "start": f"wats-station service --instance-id {instance}",
            }
        )
    return rows


class InstancesPage(Page):
    title = "Instances"

    def __init__(self, main: Any) -> None:
        super().__init__(main)
        self.rows: list[dict[str, Any]] = []
        self.busy = False
        self.table = Table(("Instance", "State", "Followed", "Config file", "How to start it"))
        self.table.doubleClicked.connect(lambda _index: self.follow_selected())
        self.follow = QPushButton("&Follow this instance")
        self.follow.clicked.connect(self.follow_selected)
        self.note = label(
            "A station that is not running is shown as such; start it (the command is in the "
            "table, or systemctl start wats-station@ID) and this window reconnects by itself."
        )
        buttons = QHBoxLayout()
        buttons.addWidget(self.follow)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.note)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        self._timer = QTimer(self)
        self._timer.setInterval(5000)
        self._timer.timeout.connect(self.refresh)

    def showEvent(self, event: Any) -> None:
        self._timer.start()
        super().showEvent(event)

    def hideEvent(self, event: Any) -> None:
        self._timer.stop()
        super().hideEvent(event)

    def on_connection(self, connected: bool) -> None:
        self.refresh()

    def refresh(self) -> None:
        if self.busy:
            return
        self.busy = True
        current = self.main.instance
        self.main.background.run(lambda: probe_instances(current), self._probed)

    def _probed(self, rows: list[dict[str, Any]]) -> None:
        self.busy = False
        self.rows = rows
        self.table.fill(
            [
                (
                    r["instance"],
                    "running" if r["running"] else "not running",
                    "yes" if r["instance"] == self.main.instance else "",
                    r["config"],
                    "" if r["running"] else r["start"],
                )
                for r in rows
            ]
        )

    def follow_selected(self) -> None:
        chosen = self.table.selected_keys()
        if chosen and chosen[0] != self.main.instance:
            self.main.connect_to(chosen[0])
            self.refresh()
