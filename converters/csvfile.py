"""CSV files with one measurement per row to WSJF test reports, one report per serial number.

Columns are found by header name; the ``columns`` argument maps each role below to the name a
tester writes. Every row becomes a numeric limit step (ET_NLT) whose compare operator follows
from the limits present: both GELE, low only GE, high only LE, none LOG. A Status column wins
over the limits when it has a value.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wats_station.converters.base import ConversionError, Converter, Report, ensure_report_ids
from wats_station.converters.wstf import (
    checked_arguments,
    decode_text,
    file_start,
    inferred_operator,
    local_start,
    measured_value,
    numeric_status,
    rolled_up_status,
    station_fields,
    status_letter,
)

COLUMN_DEFAULTS = {
    "serial_number": "SerialNumber",
    "part_number": "PartNumber",
    "revision": "Revision",
    "step_name": "TestName",
    "value": "Value",
    "low_limit": "LowLimit",
    "high_limit": "HighLimit",
    "unit": "Unit",
    "status": "Status",
    "start": "StartTime",
    "operator": "Operator",
}
# Other roles may be missing from a file, unless the configuration names their column.
REQUIRED_ROLES = ("serial_number", "part_number", "revision", "step_name", "value")
ARGUMENT_DEFAULTS: dict[str, Any] = {
    "delimiter": ",",
    "encoding": "utf-8-sig",
    "columns": {},
    "process_code": 10,
    "operator": "sysoper",
    "station_name": None,
    "location": None,
    "purpose": None,
}
ROOT_SEQUENCE = "MainSequence Callback"


@dataclass
class _Unit:
    """The rows of one serial number, in file order."""

    serial: str
    part_number: str
    revision: str
    first_row: int
    start: str | None = None
    operator: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)


class CSVConverter(Converter):
    """Measurement rows (``*.csv``) to WSJF test reports, grouped by serial number."""

    name = "csv"
    file_patterns = ("*.csv",)

    def __init__(self, **arguments: Any) -> None:
        super().__init__(**arguments)
        settings = checked_arguments(self.name, arguments, ARGUMENT_DEFAULTS)
        self.columns = {**COLUMN_DEFAULTS, **_checked_columns(settings["columns"])}
        self.configured_roles = set(settings["columns"])
        self.delimiter = settings["delimiter"]
        if not isinstance(self.delimiter, str) or len(self.delimiter) != 1:
            raise ValueError(f"argument delimiter: {self.delimiter!r} is not one character")
        try:
            self.encoding = codecs.lookup(settings["encoding"]).name
        except LookupError:
            raise ValueError(
                f"argument encoding: unknown encoding {settings['encoding']!r}"
            ) from None
        try:
            self.process_code = int(settings["process_code"])
        except ValueError:
            raise ValueError(
                f"argument process_code: {settings['process_code']!r} is not an integer"
            ) from None
        self.operator = str(settings["operator"])
        self.station = station_fields(settings)

    def validate(self, path: Path) -> float:
        with path.open("rb") as file:
            first_line = file.readline(8192).decode(self.encoding, errors="replace")
        header = {cell.strip() for cell in first_line.split(self.delimiter)}
        required = {self.columns[role] for role in REQUIRED_ROLES}
        return 0.9 if required <= header else 0.1

    def convert(self, path: Path) -> list[Report]:
        content = path.read_bytes()
        source = str(path)
        reader = csv.reader(
            io.StringIO(decode_text(content, self.encoding, source), newline=""),
            delimiter=self.delimiter,
        )
        units: dict[str, _Unit] = {}
        try:
            header = next(reader, None)
            if header is None:
                raise ConversionError(f"{source}: the file is empty; expected a header row")
            positions = self._positions(header, source)
            for cells in reader:
                if any(cell.strip() for cell in cells):
                    row = _CSVRow(source, reader.line_num, cells, positions, self.columns)
                    self._add_row(row, units)
        except csv.Error as error:
            raise ConversionError(f"{source}: row {reader.line_num}: {error}") from None
        if not units:
            raise ConversionError(f"{source}: no data rows below the header")
        default_start = file_start(path)
        reports = [self._report(unit, path, default_start) for unit in units.values()]
        return ensure_report_ids(reports, content)

    def _positions(self, header: list[str], source: str) -> dict[str, int]:
        names = [name.strip() for name in header]
        positions = {
            role: names.index(name) for role, name in self.columns.items() if name in names
        }
        needed = set(REQUIRED_ROLES) | self.configured_roles
        missing = [self.columns[role] for role in self.columns if role in needed - set(positions)]
        if missing:
            hint = ""
            if len(names) == 1:
                hint = f" (is the delimiter {self.delimiter!r} right?)"
            raise ConversionError(
                f"{source}: row 1: missing column(s) {', '.join(missing)}; the header has "
                f"{names}{hint}"
            )
        return positions

    def _add_row(self, row: _CSVRow, units: dict[str, _Unit]) -> None:
        serial = row.required("serial_number")
        unit = units.get(serial)
        if unit is None:
            unit = units[serial] = _Unit(
                serial, row.required("part_number"), row.required("revision"), row.row_number
            )
        for role, expected in (("part_number", unit.part_number), ("revision", unit.revision)):
            given = row.text(role)
            if given and given != expected:
                raise row.fail(
                    role,
                    f"{given!r} differs from {expected!r} given for serial {serial!r} "
                    f"on row {unit.first_row}",
                )
        if unit.start is None and row.text("start"):
            try:
                unit.start = local_start(row.text("start"))
            except ValueError as error:
                raise row.fail("start", str(error)) from None
        unit.operator = unit.operator or row.text("operator")
        unit.steps.append(_step(row))

    def _report(self, unit: _Unit, path: Path, default_start: str) -> Report:
        result = rolled_up_status(step["status"] for step in unit.steps)
        return {
            "type": "T",
            "pn": unit.part_number,
            "sn": unit.serial,
            "rev": unit.revision,
            "processCode": self.process_code,
            "result": result,
            **self.station,
            "start": unit.start or default_start,
            "uut": {"user": unit.operator or self.operator},
            "root": {
                "stepType": "SequenceCall",
                "name": ROOT_SEQUENCE,
                "group": "M",
                "status": result,
                "seqCall": {"path": path.name, "name": ROOT_SEQUENCE, "version": ""},
                "steps": unit.steps,
            },
        }


class _CSVRow:
    """One data row, read by role; errors name the row and the column."""

    def __init__(
        self,
        source: str,
        number: int,
        cells: list[str],
        positions: dict[str, int],
        columns: dict[str, str],
    ) -> None:
        self.source = source
        self.row_number = number
        self.cells = cells
        self.positions = positions
        self.columns = columns

    def text(self, role: str) -> str:
        position = self.positions.get(role)
        if position is None or position >= len(self.cells):
            return ""
        return self.cells[position].strip()

    def fail(self, role: str, message: str) -> ConversionError:
        return ConversionError(
            f"{self.source}: row {self.row_number}, column {self.columns[role]!r}: {message}"
        )

    def required(self, role: str) -> str:
        text = self.text(role)
        if not text:
            raise self.fail(role, "is empty")
        return text

    def number(self, role: str) -> float | None:
        text = self.text(role)
        if not text:
            return None
        try:
            return float(text)
        except ValueError:
            raise self.fail(role, f"{text!r} is not a number") from None


def _step(row: _CSVRow) -> dict[str, Any]:
    name = row.required("step_name")
    value = row.number("value")
    if value is None:
        raise row.fail("value", "is empty")
    low, high = row.number("low_limit"), row.number("high_limit")
    operator = inferred_operator(low, high)
    # WSJF keeps a single limit in lowLimit, whichever side it bounds.
    limits = (high, None) if operator == "LE" else (low, high)
    status = numeric_status(value, operator, *limits)
    if row.text("status"):
        given = status_letter(row.text("status"))
        if given is None:
            raise row.fail(
                "status", f"{row.text('status')!r} is not a status (Passed, Failed, ...)"
            )
        status = given
    measurement: dict[str, Any] = {
        "compOp": operator,
        "value": measured_value(value),
        "unit": row.text("unit"),
        "status": status,
    }
    if limits[0] is not None:
        measurement["lowLimit"] = limits[0]
    if limits[1] is not None:
        measurement["highLimit"] = limits[1]
    step = {"stepType": "ET_NLT", "name": name, "group": "M", "status": status}
    step["numericMeas"] = [measurement]
    return step


def _checked_columns(columns: object) -> dict[str, str]:
    if not isinstance(columns, Mapping):
        raise ValueError(
            f"argument columns: expected a table of role = column name, not {columns!r}"
        )
    unknown = sorted(set(columns) - set(COLUMN_DEFAULTS))
    if unknown:
        raise ValueError(
            f"argument columns: unknown role(s) {', '.join(unknown)}; "
            f"known: {', '.join(COLUMN_DEFAULTS)}"
        )
    for role, name in columns.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"argument columns.{role}: {name!r} is not a column name")
    return {role: name.strip() for role, name in columns.items()}
