"""Settings: the configuration as a form, checked as ``config validate`` checks it, saved by
the station (``save_config``: it merges the changed keys into its file, checks, writes, reloads).

The form is made from the config dataclasses themselves, so every key appears with its help
text and no key is described twice. The token is entered, never shown: the field starts
empty, and only a new token is sent.
"""

from __future__ import annotations

import typing
from dataclasses import fields
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from wats_station.gui.link import Reply
from wats_station.gui.page import Page
from wats_station.gui.widgets import label, set_tone
from wats_station.supervisor.config import (
    SECRET_KEYS,
    Config,
    ConfigError,
    merge_config_changes,
    parse_config,
)


def config_sections() -> list[str]:
    """Every section of the config, in its order (converters have their own page)."""
    hints = typing.get_type_hints(Config)
    return [f.name for f in fields(Config) if hasattr(hints[f.name], "__dataclass_fields__")]


SECTIONS = config_sections()
ERROR_STYLE = "border: 2px solid #c62828;"


def section_fields(section: str) -> list[tuple[str, type, str]]:
    cls = typing.get_type_hints(Config)[section]
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name], f.metadata.get("help", "")) for f in fields(cls)]


def parse_text(text: str, kind: type, where: str) -> Any:
    """A form field's text as the key's type; the message matches the config's own."""
    if kind is str:
        return text
    try:
        return kind(text.strip())
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(f"{where}: must be {noun}, got {text!r}") from None


class SettingsPage(Page):
    title = "Settings"
    refresh_on = ("service.reloaded",)

    def __init__(self, main: Any) -> None:
        super().__init__(main)
        self.loaded: dict[str, Any] | None = None
        self.inputs: dict[str, tuple[QWidget, type]] = {}  # "section.key" -> widget, type
        self.message = label()
        self.save_button = QPushButton("&Save and apply")
        self.discard_button = QPushButton("&Discard changes")
        self.check_button = QPushButton("C&heck")
        self.reload_button = QPushButton("Re&load the file")
        self.reload_button.setToolTip(
            "the station reads its config file again (after it was edited by hand)"
        )
        self.reload_button.clicked.connect(self.reload_file)
        self.save_button.clicked.connect(self.save)
        self.discard_button.clicked.connect(self.discard)
        self.check_button.clicked.connect(self.check)

        form_widget = QWidget()
        form_layout = QVBoxLayout(form_widget)
        for section in SECTIONS:
            box = QGroupBox(section)
            form = QFormLayout(box)
            for name, kind, help_text in section_fields(section):
                widget = self._input(f"{section}.{name}", name, kind, help_text)
                row = QHBoxLayout()
                row.addWidget(widget, 2)
                row.addWidget(label(help_text), 3)
                form.addRow(name, row)
            form_layout.addWidget(box)
        form_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(form_widget)

        buttons = QHBoxLayout()
        for button in (
            self.save_button,
            self.check_button,
            self.discard_button,
            self.reload_button,
        ):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.message)
        layout.addLayout(buttons)
        self.setEnabled(False)

    def _input(self, path: str, name: str, kind: type, help_text: str) -> QWidget:
        widget: QWidget
        if kind is bool:
            widget = QCheckBox()
        else:
            widget = QLineEdit()
            if name in SECRET_KEYS:
                widget.setEchoMode(QLineEdit.EchoMode.Password)
        widget.setToolTip(help_text)
        widget.setObjectName(path)
        self.inputs[path] = (widget, kind)
        return widget

    # -- loading ----------------------------------------------------------------------

    def on_connection(self, connected: bool) -> None:
        self.setEnabled(connected)
        if connected:
            self.refresh()
        else:
            self.message.setText("The settings are edited through the running station.")

    def refresh(self) -> None:
        self.call("get_config", self._fetched)

    def _fetched(self, reply: Reply) -> None:
        if not reply.ok:
            self.show_message(reply.error, error=True)
            return
        self.loaded = reply.result
        for path, (widget, _kind) in self.inputs.items():
            section, name = path.split(".")
            value = self.loaded[section][name]
            widget.setStyleSheet("")
            if isinstance(widget, QCheckBox):
                widget.setChecked(bool(value))
            elif name in SECRET_KEYS:
                widget.clear()
                widget.setPlaceholderText(
                    "set (type a new one to replace it)" if value else "not set"
                )
            else:
                widget.setText(str(value))

    def discard(self) -> None:
        self.show_message("the station's values again")
        self.refresh()

    # -- checking and saving ----------------------------------------------------------

    def changes(self) -> dict[str, Any]:
        """The keys whose value differs from the station's; raises ConfigError for bad text."""
        if self.loaded is None:
            return {}
        changed: dict[str, Any] = {}
        for path, (widget, kind) in self.inputs.items():
            section, name = path.split(".")
            if isinstance(widget, QCheckBox):
                value: Any = widget.isChecked()
            elif name in SECRET_KEYS:
                if not widget.text():
                    continue  # unchanged
                value = widget.text()
            else:
                value = parse_text(widget.text(), kind, path)
            if name in SECRET_KEYS or value != self.loaded[section][name]:
                changed.setdefault(section, {})[name] = value
        return changed

    def check(self) -> dict[str, Any] | None:
        """The changes when the whole config stays valid, else None with the key marked."""
        for widget, _ in self.inputs.values():
            widget.setStyleSheet("")
        try:
            changes = self.changes()
            parse_config(merge_config_changes(self.loaded or {}, changes), self.main_paths(), {})
        except ConfigError as error:
            self.show_message(str(error), error=True)
            self._mark(str(error))
            return None
        self.show_message(
            "valid; changed: " + (", ".join(_paths_of(changes)) or "nothing"), error=False
        )
        return changes

    def save(self) -> None:
        changes = self.check()
        if changes is None:
            return
        if not changes:
            self.show_message("nothing changed")
            return
        self.save_button.setEnabled(False)
        self.call("save_config", self._saved, changes=changes)

    def _saved(self, reply: Reply) -> None:
        self.save_button.setEnabled(True)
        if not reply.ok:
            self.show_message(f"not saved: {reply.error}", error=True)
            self._mark(reply.error)
            return
        restarted = ", ".join(reply.result.get("restarted") or []) or "no worker"
        self.show_message(f"saved to {reply.result['saved']}; restarted: {restarted}")
        self.call("get_config", self._fetched)

    def reload_file(self) -> None:
        self.call("reload", self._reloaded)

    def _reloaded(self, reply: Reply) -> None:
        if not reply.ok:
            self.show_message(f"not reloaded: {reply.error}", error=True)
            self._mark(reply.error)
            return
        restarted = ", ".join(reply.result.get("restarted") or []) or "no worker"
        self.show_message(f"the station read its file again; restarted: {restarted}")
        self.call("get_config", self._fetched)

    def _mark(self, message: str) -> None:
        for path, (widget, _) in self.inputs.items():
            if f"{path}:" in message:
                widget.setStyleSheet(ERROR_STYLE)
                widget.setFocus()

    def show_message(self, text: str, error: bool = False) -> None:
        self.message.setText(text)
        set_tone(self.message, "failing" if error else None)

    def main_paths(self) -> Any:
        return self.main.link.paths


def _paths_of(changes: dict[str, Any]) -> list[str]:
    return [f"{section}.{name}" for section, values in changes.items() for name in sorted(values)]
