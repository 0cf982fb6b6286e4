"""Converters: each one's folders, patterns and counts; try a file without queueing it.

"Try a file" runs ``wats-station convert FILE --converter NAME`` (the CLI's own path: a
converter worker process with ``--once``) as a QProcess, so the window stays free while it
converts, and shows the report tree it would queue, or the converter's error.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from PySide6.QtCore import QProcess, Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from wats_station.gui.link import Reply
from wats_station.gui.page import Page
from wats_station.gui.queue import new_tree, report_tree
from wats_station.gui.widgets import Table, label


class ConvertersPage(Page):
    title = "Converters"
    refresh_on = ("file.", "service.reloaded")
    tried = Signal(bool)  # a trial conversion ended: did it give reports?

    def __init__(self, main: Any) -> None:
        super().__init__(main)
        self.converters: list[dict[str, Any]] = []
        self.process: QProcess | None = None
        self.table = Table(
            (
                "Name",
                "Kind",
                "Enabled",
                "Patterns",
                "Waiting",
                "In error",
                "Watch folder",
                "Done folder",
                "Error folder",
                "After",
            )
        )
        self.try_button = QPushButton("&Try a file...")
        self.try_button.setToolTip("convert a file with the selected converter, without queueing")
        self.try_button.clicked.connect(self._choose_file)
        self.trial = label()
        self.tree = new_tree()
        self.output = QPlainTextEdit()
        self.output.setReadOnly(True)
        self.output.setPlaceholderText("the converter's errors and messages")

        buttons = QHBoxLayout()
        buttons.addWidget(self.try_button)
        buttons.addWidget(self.trial, 1)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.table, 1)
        top_layout.addLayout(buttons)
        result = QGroupBox("Trial conversion (nothing is queued)")
        result_split = QSplitter(Qt.Orientation.Horizontal)
        result_split.addWidget(self.tree)
        result_split.addWidget(self.output)
        result_split.setSizes([600, 300])
        QVBoxLayout(result).addWidget(result_split)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(result)
        split.setSizes([300, 400])
        QVBoxLayout(self).addWidget(split)

    def refresh(self) -> None:
        self.call("list_converters", self._fetched)

    def _fetched(self, reply: Reply) -> None:
        if not reply.ok:
            return
        self.converters = reply.result
        self.table.fill(
            [
                (
                    c["name"],
                    c["kind"],
                    "yes" if c["enabled"] else "no",
                    " ".join(c["file_patterns"]),
                    c.get("waiting", 0),
                    c.get("errors", 0),
                    c["watch_folder"],
                    c["done_folder"],
                    c["error_folder"],
                    c["post_action"],
                )
                for c in self.converters
            ]
        )

    # -- trying a file --------------------------------------------------------------------

    def _choose_file(self) -> None:
        chosen = self.table.selected_keys()
        path, _ = QFileDialog.getOpenFileName(self, "Choose a result file to try")
        if path:
            self.try_file(path, chosen[0] if chosen else None)

    def try_file(self, path: str, converter: str | None = None) -> None:
        if self.process is not None:
            self.process.kill()  # its end is ignored: only the latest trial is shown
        self.tree.clear()
        self.output.setPlainText("")
        self.trial.setText(f"converting {path} with {converter or 'the first matching converter'}")
        args = ["-m", "wats_station.cli", "convert", path, "--instance-id", self.main.instance]
        if converter:
            args += ["--converter", converter]
        process = QProcess(self)
        process.finished.connect(lambda code, _status, p=process: self._tried(p, code, path))
        self.process = process
        process.start(sys.executable, args)

    def _tried(self, process: QProcess, code: int, path: str) -> None:
        if process is not self.process:
            process.deleteLater()
            return
        self.process = None
        out = bytes(process.readAllStandardOutput().data()).decode("utf-8", "replace")
        err = bytes(process.readAllStandardError().data()).decode("utf-8", "replace")
        process.deleteLater()
        self.output.setPlainText(err)
        if code != 0:
            self.trial.setText(f"{path}: the conversion failed (see the message)")
            self.tried.emit(False)
            return
        try:
            document = json.loads(out)
        except ValueError as error:
            self.trial.setText(f"{path}: the converter's output is not JSON: {error}")
            self.tried.emit(False)
            return
        reports = document if isinstance(document, list) else [document]
        self.trial.setText(f"{path}: {len(reports)} report(s), valid WSJF; nothing was queued")
        report_tree(self.tree, reports)
        self.output.setPlainText(err or json.dumps(document, indent=2)[:200_000])
        self.tried.emit(True)
