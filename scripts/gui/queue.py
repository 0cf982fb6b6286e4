"""Queue: reports by state, one report's header, steps and upload history; retry and clean."""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from wats_station.gui.link import Reply
from wats_station.gui.page import Page
from wats_station.gui.widgets import NEEDS_NEWER, Table, clock, label, when
from wats_station.ipc.states import ReportState

LIST_LIMIT = 500
HEADER_FIELDS = (
    ("id", "Report id"),
    ("type", "Type"),
    ("result", "Result"),
    ("pn", "Part number"),
    ("sn", "Serial number"),
    ("rev", "Revision"),
    ("processCode", "Process"),
    ("machineName", "Station"),
    ("location", "Location"),
    ("purpose", "Purpose"),
    ("start", "Start"),
)
MEASURES = ("numericMeas", "booleanMeas", "stringMeas")


def step_items(step: dict[str, Any]) -> QTreeWidgetItem:
    """A WSJF step and everything under it as tree items (name, type, status, values)."""
    item = QTreeWidgetItem(
        [str(step.get("name", "")), str(step.get("stepType", "")), str(step.get("status", ""))]
    )
    for kind in MEASURES:
        for meas in step.get(kind) or []:
            limits = " ".join(
                f"{k}={meas[k]}" for k in ("compOp", "lowLimit", "highLimit", "limit") if k in meas
            )
            value = f"{meas.get('value', '')} {meas.get('unit', '')}".strip()
            item.addChild(
                QTreeWidgetItem(
                    [str(meas.get("name") or kind), value, str(meas.get("status", "")), limits]
                )
            )
    for child in step.get("steps") or []:
        item.addChild(step_items(child))
    return item


def report_tree(tree: QTreeWidget, reports: list[dict[str, Any]]) -> None:
    tree.clear()
    for report in reports:
        top = QTreeWidgetItem(
            [f"{report.get('sn', '?')} ({report.get('pn', '?')})", "report", report.get("result")]
        )
        if isinstance(report.get("root"), dict):
            top.addChild(step_items(report["root"]))
        tree.addTopLevelItem(top)
    tree.expandToDepth(2)
    tree.resizeColumnToContents(0)


def new_tree() -> QTreeWidget:
    tree = QTreeWidget()
    tree.setHeaderLabels(["Step", "Type / value", "Status", "Limits"])
    tree.setAlternatingRowColors(True)
    return tree


class CleanDialog(QDialog):
    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setWindowTitle("Clean the queue")
        self.days = QDoubleSpinBox()
        self.days.setRange(0, 3650)
        self.days.setValue(7)
        self.days.setSuffix(" days")
        self.failed = QCheckBox("failed reports too (they were never accepted by the server)")
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow(label("Delete completed reports older than"), self.days)
        form.addRow(self.failed)
        form.addRow(buttons)


class QueuePage(Page):
    title = "Queue"
    refresh_on = ("report.",)

    def __init__(self, main: Any) -> None:
        super().__init__(main)
        self.reports: list[dict[str, Any]] = []
        self.shown_id: str | None = None
        self.entry = None
        self.trace = None
        self.state = QComboBox()
        self.state.addItems(["all", *ReportState])
        self.state.currentIndexChanged.connect(self.refresh)
        self.search = QLineEdit()
        self.search.setPlaceholderText("filter by id or error text")
        self.search.textChanged.connect(self._show_list)
        self.count = label()
        self.table = Table(
            ("ID", "State", "Priority", "Attempts", "HTTP", "Last error", "Created", "Updated")
        )
        self.table.itemSelectionChanged.connect(self._selection_changed)

        self.retry = QPushButton("&Retry selected")
        self.retry_failed = QPushButton("Retry all &failed")
        self.clean_button = QPushButton("&Clean...")
        self.retry.clicked.connect(self.retry_selected)
        self.retry_failed.clicked.connect(self.retry_all_failed)
        self.clean_button.clicked.connect(self._ask_clean)

        self.header = QFormLayout()
        self.header_labels = {name: label() for name, _ in HEADER_FIELDS}
        for name, caption in HEADER_FIELDS:
            self.header.addRow(caption, self.header_labels[name])
        header = QWidget()
        header.setLayout(self.header)
        self.steps = new_tree()
        self.history = QPlainTextEdit()
        self.history.setReadOnly(True)
        self.details = QTabWidget()
        self.details.addTab(header, "&Header")
        self.details.addTab(self.steps, "S&teps")
        self.details.addTab(self.history, "Upload &history")

        filters = QHBoxLayout()
        filters.addWidget(label("State"))
        filters.addWidget(self.state)
        filters.addWidget(self.search, 1)
        filters.addWidget(self.count)
        buttons = QHBoxLayout()
        for button in (self.retry, self.retry_failed, self.clean_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addLayout(filters)
        top_layout.addWidget(self.table, 1)
        top_layout.addLayout(buttons)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(self.details)
        split.setSizes([380, 320])
        QVBoxLayout(self).addWidget(split)

    # -- the list ---------------------------------------------------------------------

    def refresh(self) -> None:
        state = self.state.currentText()
        self.call(
            "list_reports",
            self._fetched,
            state=None if state == "all" else state,
            limit=LIST_LIMIT,
        )

    def _fetched(self, reply: Reply) -> None:
        if not reply.ok:
            self.count.setText(reply.error)
            return
        self.reports = reply.result
        self._show_list()

    def _show_list(self) -> None:
        needle = self.search.text().strip().lower()
        shown = [
            r
            for r in self.reports
            if not needle or needle in r["id"].lower() or needle in (r["last_error"] or "").lower()
        ]
        more = " (the oldest shown; more exist)" if len(self.reports) >= LIST_LIMIT else ""
        self.count.setText(f"{len(shown)} reports{more}")
        self.table.fill(
            [
                (
                    r["id"],
                    r["state"],
                    r.get("priority", ""),  # a station before priorities has none
                    r["attempts"],
                    r["last_http_status"] or "",
                    (r["last_error"] or "").splitlines()[0] if r["last_error"] else "",
                    clock(r["created_at"]),
                    clock(r["updated_at"]),
                )
                for r in shown
            ]
        )

    def _selection_changed(self) -> None:
        ids = self.table.selected_keys()
        if len(ids) == 1 and ids[0] != self.shown_id:
            self.show_report(ids[0])

    # -- one report -------------------------------------------------------------------

    def show_report(self, report_id: str) -> None:
        self.shown_id = report_id
        self.entry: dict[str, Any] | None = None
        self.trace: dict[str, Any] | None = None
        self.call("get_report", self._report_fetched, id=report_id)
        self.call("trace", self._trace_fetched, target=report_id)

    def _report_fetched(self, reply: Reply) -> None:
        if not reply.ok:
            self.history.setPlainText(reply.error)
            return
        entry = reply.result
        report = entry.get("report") or {}
        for name, _ in HEADER_FIELDS:
            self.header_labels[name].setText(str(report.get(name, entry.get(name, "")) or ""))
        report_tree(self.steps, [report])
        self.entry = entry
        self._show_history(None)

    def _trace_fetched(self, reply: Reply) -> None:
        if reply.ok:
            self._show_history(reply.result)
        elif reply.unsupported:
            self._show_history({"unsupported": True})

    def _show_history(self, trace: dict[str, Any] | None) -> None:
        if trace is not None:
            self.trace = trace
        entry, trace = self.entry, self.trace
        if entry is None:
            return
        lines = [
            f"state: {entry['state']}",
            f"attempts: {entry['attempts']}",
            f"last HTTP status: {entry['last_http_status'] or '-'}",
            f"last error: {entry['last_error'] or '-'}",
            f"next attempt: {clock(entry['next_attempt_at'])}",
            f"queued: {clock(entry['created_at'])}, last change: {clock(entry['updated_at'])}",
            "",
        ]
        if trace and trace.get("unsupported"):
            lines.append(f"Full history (trace): {NEEDS_NEWER}")
        elif trace:
            source = trace.get("source")
            if source:
                lines.append(f"source file: {json.dumps(source, default=str)}")
            lines.append("History:")
            for event in trace.get("events") or []:
                line = f"{when(event.get('at'))}  {event.get('what')}"
                if event.get("http_status"):
                    line += f"  HTTP {event['http_status']}"
                if event.get("detail"):
                    line += f"  {event['detail']}"
                lines.append(line)
        self.history.setPlainText("\n".join(lines))

    # -- actions ----------------------------------------------------------------------

    def retry_selected(self) -> None:
        ids = self.table.selected_keys()
        if not ids:
            self.report("choose the reports to retry first", error=True)
            return
        self.call("retry_reports", self._acted, ids=ids)

    def retry_all_failed(self) -> None:
        self.call("retry_reports", self._acted, failed=True)

    def _ask_clean(self) -> None:
        dialog = CleanDialog(self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.clean(dialog.days.value(), dialog.failed.isChecked())

    def clean(self, older_than_days: float, include_failed: bool) -> None:
        self.call(
            "clean_reports",
            self._acted,
            completed=True,
            failed=include_failed,
            older_than_s=older_than_days * 86400,
        )

    def _acted(self, reply: Reply) -> None:
        if reply.ok:
            self.report(f"{reply.command}: {json.dumps(reply.result)}")
            self.refresh_soon()
            self.main.fetch_status()
        else:
            self.report(f"{reply.command}: {reply.error}", error=True)
