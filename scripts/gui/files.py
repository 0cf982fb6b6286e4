"""Files: conversions as they happen, the files in error with their reasons, reprocessing."""

from __future__ import annotations

import os
from typing import Any

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QSplitter,
    QVBoxLayout,
)

from wats_station.gui.link import Reply
from wats_station.gui.page import Page
from wats_station.gui.widgets import NEEDS_NEWER, Table, clock, label, when
from wats_station.ipc.client import Event

RECENT_ROWS = 500
FILE_STATES = ("error", "waiting", "converting", "done")


class FilesPage(Page):
    title = "Files"
    refresh_on = ("file.", "report.queued", "service.reloaded")

    def __init__(self, main: Any) -> None:
        super().__init__(main)
        self.recent_rows: list[tuple[str, str, str, str]] = []
        self.files: list[dict[str, Any]] = []
        self.recent = Table(("Time", "Result", "File", "Detail"))

        self.state = QComboBox()
        self.state.addItems([*FILE_STATES, "all"])
        self.state.currentIndexChanged.connect(self.refresh)
        self.converter = QComboBox()
        self.converter.addItem("all converters")
        self.converter.currentIndexChanged.connect(self.refresh)
        self.table = Table(("Name", "Converter", "State", "Reason", "Seen", "Reports", "Path"))
        self.note = label()
        self.reprocess = QPushButton("&Reprocess selected")
        self.reprocess_all = QPushButton("Reprocess &all in error")
        self.open_folder = QPushButton("&Open folder")
        self.reprocess.clicked.connect(self.reprocess_selected)
        self.reprocess_all.clicked.connect(self.reprocess_errors)
        self.open_folder.clicked.connect(self.open_selected_folder)

        filters = QHBoxLayout()
        filters.addWidget(label("State"))
        filters.addWidget(self.state)
        filters.addWidget(label("Converter"))
        filters.addWidget(self.converter)
        filters.addStretch(1)
        buttons = QHBoxLayout()
        for button in (self.reprocess, self.reprocess_all, self.open_folder):
            buttons.addWidget(button)
        buttons.addStretch(1)

        recent_box = QGroupBox("Recent conversions (live)")
        QVBoxLayout(recent_box).addWidget(self.recent)
        files_box = QGroupBox("Files")
        files_layout = QVBoxLayout(files_box)
        files_layout.addLayout(filters)
        files_layout.addWidget(self.note)
        files_layout.addWidget(self.table, 1)
        files_layout.addLayout(buttons)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(recent_box)
        split.addWidget(files_box)
        split.setSizes([250, 450])
        QVBoxLayout(self).addWidget(split)

    def on_event(self, event: Event) -> None:
        data = event.data
        if event.topic == "file.done":
            self._add_recent(event.time, "converted", data.get("path"), data.get("final_path"))
        elif event.topic == "file.failed":
            self._add_recent(event.time, "error", data.get("path"), data.get("error"))
        super().on_event(event)

    def _add_recent(self, at: float, result: str, path: Any, detail: Any) -> None:
        self.recent_rows.insert(0, (clock(at), result, str(path or ""), str(detail or "")))
        del self.recent_rows[RECENT_ROWS:]
        self.recent.fill(self.recent_rows, keys=list(range(len(self.recent_rows))))

    # -- the files --------------------------------------------------------------------

    def refresh(self) -> None:
        self.call("list_converters", self._converters_fetched)
        state = self.state.currentText()
        converter = self.converter.currentText()
        self.call(
            "list_files",
            self._files_fetched,
            state=None if state == "all" else state,
            converter=None if self.converter.currentIndex() == 0 else converter,
            limit=1000,
        )

    def _converters_fetched(self, reply: Reply) -> None:
        if not reply.ok:
            return
        names = [c["name"] for c in reply.result]
        current = [self.converter.itemText(i) for i in range(1, self.converter.count())]
        if names != current:
            chosen = self.converter.currentText()
            self.converter.blockSignals(True)
            self.converter.clear()
            self.converter.addItems(["all converters", *names])
            self.converter.setCurrentText(chosen)
            self.converter.blockSignals(False)

    def _files_fetched(self, reply: Reply) -> None:
        supported = not reply.unsupported
        for button in (self.reprocess, self.reprocess_all):
            button.setEnabled(supported)
            button.setToolTip("" if supported else NEEDS_NEWER)
        if not reply.ok:
            self.note.setText(
                f"The list of files {NEEDS_NEWER} (list_files); recent conversions show above."
                if reply.unsupported
                else reply.error
            )
            return
        self.note.setText(f"{len(reply.result)} files")
        self.files = reply.result
        self.table.fill(
            [
                (
                    f["name"],
                    f["converter"],
                    f["state"],
                    f.get("reason") or "",
                    when(f.get("seen_at")),
                    ", ".join(f.get("reports") or []),
                    f["path"],
                )
                for f in self.files
            ],
            keys=[f["name"] for f in self.files],
        )

    def reprocess_selected(self) -> None:
        names = self.table.selected_keys()
        if not names:
            self.report("choose the files to reprocess first", error=True)
            return
        self.call("retry_files", self._retried, names=names)

    def reprocess_errors(self) -> None:
        converter = None if self.converter.currentIndex() == 0 else self.converter.currentText()
        self.call("retry_files", self._retried, all_errors=True, converter=converter)

    def _retried(self, reply: Reply) -> None:
        if reply.ok:
            self.report(f"{reply.result.get('retried', 0)} file(s) queued for conversion again")
            self.refresh_soon()
        else:
            self.report(f"reprocess: {reply.error}", error=True)

    def selected_folder(self) -> str | None:
        names = set(self.table.selected_keys())
        for f in self.files:
            if f["name"] in names:
                return os.path.dirname(f["path"])
        return None

    def open_selected_folder(self) -> None:
        folder = self.selected_folder()
        if folder is None:
            self.report("choose a file first", error=True)
        elif not QDesktopServices.openUrl(QUrl.fromLocalFile(folder)):
            self.report(f"no file manager opened {folder}", error=True)
