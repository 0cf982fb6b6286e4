"""WSTF (WATS Standard Text Format) files to WSJF reports, and WSTF text from a small description.

WSTF is Virinco's tab-delimited format for third-party testers (FORMATS.md, WSTF). A file holds
one or more UUTs, each framed by markers::

    --Header-Start--       Key<TAB>Value lines; keys we do not know become miscInfos
    --Step-Data-Start--    a column header line, then one line per step or measurement
    --Step-Data-End--      optional footer lines: UUTStatus, ExecutionTime, ErrorCode, ...
    --UUT-End--            the UUT is complete

A status given in the file is kept; a missing one is computed from the value, the limits and
the compare operator, and failures roll up into the sequences and the report result (the
official converter's mix of its "Import" and "Active" modes).

This module also holds the measurement rules the CSV converter shares: compare operators,
status words, start times and the station's identity fields.
"""

from __future__ import annotations

import codecs
import math
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from wats_station.converters.base import ConversionError, Converter, Report, ensure_report_ids

HEADER_START = "--Header-Start--"
STEP_DATA_START = "--Step-Data-Start--"
STEP_DATA_END = "--Step-Data-End--"
UUT_END = "--UUT-End--"
MARKERS = (HEADER_START, STEP_DATA_START, STEP_DATA_END, UUT_END)

# operator -> (how many limits it needs, does the value pass). A single limit is in lowLimit.
NUMERIC_OPERATORS: dict[str, tuple[int, Callable[..., bool]]] = {
    "LOG": (0, lambda value, low, high: True),
    "EQ": (1, lambda value, low, high: value == low),
    "NE": (1, lambda value, low, high: value != low),
    "LT": (1, lambda value, low, high: value < low),
    "LE": (1, lambda value, low, high: value <= low),
    "GT": (1, lambda value, low, high: value > low),
    "GE": (1, lambda value, low, high: value >= low),
    "GELE": (2, lambda value, low, high: low <= value <= high),
    "GELT": (2, lambda value, low, high: low <= value < high),
    "GTLE": (2, lambda value, low, high: low < value <= high),
    "GTLT": (2, lambda value, low, high: low < value < high),
    "LTGT": (2, lambda value, low, high: value < low or value > high),
    "LTGE": (2, lambda value, low, high: value < low or value >= high),
    "LEGT": (2, lambda value, low, high: value <= low or value > high),
    "LEGE": (2, lambda value, low, high: value <= low or value >= high),
}
STRING_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "LOG": lambda value, limit: True,
    "CASESENSIT": lambda value, limit: value == limit,
    "IGNORECASE": lambda value, limit: value.casefold() == limit.casefold(),
}
STATUS_WORDS = {
    **dict.fromkeys(("P", "PASS", "PASSED", "OK"), "P"),
    **dict.fromkeys(("F", "FAIL", "FAILED", "NG"), "F"),
    **dict.fromkeys(("D", "DONE"), "D"),
    **dict.fromkeys(("S", "SKIP", "SKIPPED"), "S"),
    **dict.fromkeys(("E", "ERROR"), "E"),
    **dict.fromkeys(("T", "TERMINATED"), "T"),
}
BOOLEAN_WORDS = {
    **dict.fromkeys(("TRUE", "1", "YES", "PASS", "PASSED", "P"), "P"),
    **dict.fromkeys(("FALSE", "0", "NO", "FAIL", "FAILED", "F"), "F"),
}
GROUP_WORDS = {
    **dict.fromkeys(("S", "SETUP"), "S"),
    **dict.fromkeys(("M", "MAIN"), "M"),
    **dict.fromkeys(("C", "CLEANUP"), "C"),
}
DATETIME_FORMATS = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M")

HEADER_KEYS = (
    "SerialNumber", "PartNumber", "Revision", "OperationTypeCode", "OperationTypeName",
    "StationName", "OperatorName", "SoftwareName", "SoftwareVersion", "BatchSerialNumber",
    "Comment", "FixtureId", "UUTStatus", "StartDateTime", "UTCStartDateTime", "ExecutionTime",
    "TestSocketIndex", "ErrorCode", "ErrorMessage", "Subunit",
)  # fmt: skip
_HEADER_KEY_BY_FOLDED = {key.casefold(): key for key in HEADER_KEYS}
_UUT_TEXT_FIELDS = {
    "BatchSerialNumber": "batchSN",
    "Comment": "comment",
    "FixtureId": "fixtureId",
    "ErrorMessage": "errorMessage",
}

# The columns format_wstf writes, in order; the parser finds columns by name, so any order works.
STEP_COLUMNS = (
    "StepType", "StepName", "MeasureName", "Value", "LowLimit", "HighLimit", "CompOperator",
    "Unit", "Status", "StepTime", "ReportText", "ErrorCode", "ErrorMessage",
)  # fmt: skip
_COLUMN_ALIASES = {
    **{column.casefold(): column for column in STEP_COLUMNS},
    "stepstatus": "Status",
    "compop": "CompOperator",
    "executiontime": "StepTime",
    "stepexecutiontime": "StepTime",
    "stepreporttext": "ReportText",
    "steperrorcode": "ErrorCode",
    "steperrormessage": "ErrorMessage",
    "group": "Group",
    "stepgroup": "Group",
}

ARGUMENT_DEFAULTS: dict[str, Any] = {
    "operationTypeCode": 10,
    "operator": "sysoper",
    "stationName": None,
    "sequenceName": "SeqName",
    "sequenceVersion": "0.0.0",
    "fileEncoding": "cp1252",
    "station_name": None,
    "location": None,
    "purpose": None,
}


# -- rules shared with the CSV converter ------------------------------------------------------


def status_letter(word: str) -> str | None:
    """The WSJF status letter for a status word ("Passed", "fail", "P", ...), or None."""
    return STATUS_WORDS.get(word.strip().upper())


def inferred_operator(low: float | None, high: float | None) -> str:
    """The compare operator implied by which limits are present."""
    if low is not None and high is not None:
        return "GELE"
    if low is not None:
        return "GE"
    return "LE" if high is not None else "LOG"


def numeric_status(value: float, operator: str, low: float | None, high: float | None) -> str:
    """ "P" or "F" for a value under ``operator``; single limits are in ``low``."""
    _, passes = NUMERIC_OPERATORS[operator]
    if operator != "LOG" and math.isnan(value):
        return "F"
    return "P" if passes(value, low, high) else "F"


def rolled_up_status(statuses: Iterable[str]) -> str:
    """A container's status from its children's: terminated, error, failed, else passed."""
    seen = set(statuses)
    return next((letter for letter in ("T", "E", "F") if letter in seen), "P")


def measured_value(value: float) -> float | str:
    """A value as WSJF carries it: JSON has no NaN or infinity, WATS takes them as text."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def parse_datetime(text: str) -> datetime:
    """ISO 8601 or US "M/D/YYYY h:mm:ss [AM|PM]"; naive when the text has no offset."""
    text = text.strip()
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for pattern in DATETIME_FORMATS:
        try:
            return datetime.strptime(text, pattern)
        except ValueError:
            continue
    raise ValueError(
        f"{text!r} is not a date and time (expected ISO 8601 like 2025-01-30T14:05:00+01:00, "
        "or 1/30/2025 2:05:00 PM)"
    )


def local_start(text: str) -> str:
    """A WSJF start (ISO 8601 with offset); a time without offset is the station's local time."""
    moment = parse_datetime(text)
    return (moment if moment.tzinfo else moment.astimezone()).isoformat()


def file_start(path: Path) -> str:
    """The start for a file that names none: its modification time, the station's local time."""
    return datetime.fromtimestamp(int(path.stat().st_mtime)).astimezone().isoformat()


def station_fields(arguments: Mapping[str, Any]) -> dict[str, str]:
    """machineName, location and purpose from the station arguments, with their defaults."""
    return {
        "machineName": arguments.get("station_name") or socket.gethostname(),
        "location": arguments.get("location") or "Unknown",
        "purpose": arguments.get("purpose") or "Production",
    }


def checked_arguments(
    converter: str, given: Mapping[str, Any], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """``defaults`` overlaid with the given arguments that are not None; unknown keys raise."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown argument(s) for the {converter} converter: {', '.join(unknown)}; "
            f"known: {', '.join(defaults)}"
        )
    return {**defaults, **{key: value for key, value in given.items() if value is not None}}


# -- the WSTF converter ------------------------------------------------------------------------


@dataclass(frozen=True)
class UUTDefaults:
    """What a report gets where the WSTF file does not say."""

    process_code: int = 10
    operator: str = "sysoper"
    station_name: str = ""
    location: str = "Unknown"
    purpose: str = "Production"
    sequence_name: str = "SeqName"
    sequence_version: str = "0.0.0"


class WSTFConverter(Converter):
    """WATS Standard Text Format files (``*.txt``) to WSJF test reports, one per UUT."""

    name = "wstf"
    file_patterns = ("*.txt",)

    def __init__(self, **arguments: Any) -> None:
        super().__init__(**arguments)
        settings = checked_arguments(self.name, arguments, ARGUMENT_DEFAULTS)
        try:
            process_code = int(settings["operationTypeCode"])
        except ValueError:
            raise ValueError(
                f"argument operationTypeCode: {settings['operationTypeCode']!r} is not an integer"
            ) from None
        try:
            self.encoding = codecs.lookup(settings["fileEncoding"]).name
        except LookupError:
            raise ValueError(
                f"argument fileEncoding: unknown encoding {settings['fileEncoding']!r}"
            ) from None
        station = station_fields(
            {**settings, "station_name": settings["stationName"] or settings["station_name"]}
        )
        self.defaults = UUTDefaults(
            process_code=process_code,
            operator=str(settings["operator"]),
            station_name=station["machineName"],
            location=station["location"],
            purpose=station["purpose"],
            sequence_name=str(settings["sequenceName"]),
            sequence_version=str(settings["sequenceVersion"]),
        )

    def validate(self, path: Path) -> float:
        with path.open("rb") as file:
            start = file.read(8192)
        if HEADER_START.encode() not in start:
            return 0.0
        return 0.95 if STEP_DATA_START.encode() in start else 0.8

    def convert(self, path: Path) -> list[Report]:
        content = path.read_bytes()
        text = decode_text(content, self.encoding, str(path))
        reports = parse_wstf(text, self.defaults, source=str(path), default_start=file_start(path))
        return ensure_report_ids(reports, content)


def decode_text(content: bytes, encoding: str, source: str) -> str:
    """File bytes as text; a UTF-8 byte order mark wins over the configured encoding."""
    if content.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    try:
        return content.decode(encoding)
    except UnicodeDecodeError as error:
        line = content.count(b"\n", 0, error.start) + 1
        raise ConversionError(
            f"{source}: line {line}: byte 0x{content[error.start]:02x} is not valid {encoding} "
            "text (set the fileEncoding argument?)"
        ) from None


def parse_wstf(
    text: str, defaults: UUTDefaults, *, source: str = "<text>", default_start: str | None = None
) -> list[Report]:
    """The reports (without ids) of every UUT in WSTF ``text``; ConversionError names the line."""
    start = default_start or datetime.now().astimezone().isoformat(timespec="seconds")
    try:
        return _WSTFParser(defaults, start).parse(text.splitlines())
    except _LineError as error:
        raise ConversionError(f"{source}: line {error.line}: {error.message}") from None
    except _IncompleteFile as error:
        raise ConversionError(
            f"{source}: missing {UUT_END} (file incomplete?) for the UUT that starts on line "
            f"{error.first_line}"
        ) from None
    except _NotWSTF:
        raise ConversionError(
            f"{source}: no {HEADER_START} line, so this is not a WSTF file"
        ) from None


class _LineError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


class _IncompleteFile(Exception):
    def __init__(self, first_line: int) -> None:
        super().__init__(first_line)
        self.first_line = first_line


class _NotWSTF(Exception):
    pass


class _WSTFParser:
    """A line-by-line state machine: outside, header, columns, steps, footer."""

    def __init__(self, defaults: UUTDefaults, default_start: str) -> None:
        self.defaults = defaults
        self.default_start = default_start
        self.section = "outside"
        self.uut: _UUTBuilder | None = None
        self.reports: list[Report] = []

    def parse(self, lines: list[str]) -> list[Report]:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                self._take(number, line.removeprefix("\ufeff"))
        if self.uut is not None:
            raise _IncompleteFile(self.uut.first_line)
        if not self.reports:
            raise _NotWSTF
        return self.reports

    def _take(self, number: int, line: str) -> None:
        marker = line.strip() if line.strip() in MARKERS else None
        if self.section == "outside":
            if marker != HEADER_START:
                raise _LineError(number, f"expected {HEADER_START}, found {_shown(line)}")
            self.uut = _UUTBuilder(number, self.defaults, self.default_start)
            self.section = "header"
            return
        assert self.uut is not None
        if marker is None:
            self._take_data(number, line, self.uut)
        elif marker == UUT_END:
            self.reports.append(self.uut.finish(number))
            self.uut = None
            self.section = "outside"
        elif marker == STEP_DATA_START and self.section == "header":
            self.section = "columns"
        elif marker == STEP_DATA_END and self.section in ("columns", "steps"):
            self.uut.close_steps(number)
            self.section = "footer"
        elif marker == HEADER_START:
            raise _LineError(
                number,
                f"{HEADER_START} before the {UUT_END} of the UUT that starts on line "
                f"{self.uut.first_line}",
            )
        else:
            raise _LineError(
                number,
                f"{marker} is out of place in the {self.section} part of the UUT that starts "
                f"on line {self.uut.first_line}",
            )

    def _take_data(self, number: int, line: str, uut: _UUTBuilder) -> None:
        if self.section in ("header", "footer"):
            uut.add_field(number, line)
        elif self.section == "columns":
            uut.set_columns(number, line)
            self.section = "steps"
        else:
            uut.add_step(number, line)


@dataclass
class _OpenSequence:
    step: dict[str, Any]
    line: int
    status_given: bool


class _Row:
    """One step line, by column name."""

    def __init__(self, line: int, cells: dict[str, str]) -> None:
        self.line = line
        self.cells = cells

    def text(self, column: str) -> str:
        return self.cells.get(column, "")

    def fail(self, column: str, message: str) -> _LineError:
        return _LineError(self.line, f"column {column}: {message}")

    def number(self, column: str, *, required: bool = False) -> float | None:
        text = self.text(column)
        if not text:
            if required:
                raise self.fail(column, "a number is required here")
            return None
        try:
            return float(text)
        except ValueError:
            raise self.fail(column, f"{text!r} is not a number") from None

    def integer(self, column: str) -> int | None:
        text = self.text(column)
        try:
            return int(text) if text else None
        except ValueError:
            raise self.fail(column, f"{text!r} is not an integer") from None

    def status(self) -> str | None:
        text = self.text("Status")
        if not text:
            return None
        letter = status_letter(text)
        if letter is None:
            raise self.fail("Status", f"{text!r} is not a status (Passed, Failed, Done, ...)")
        return letter


class _UUTBuilder:
    """Collects one UUT's lines and turns them into a report at --UUT-End--."""

    def __init__(self, first_line: int, defaults: UUTDefaults, default_start: str) -> None:
        self.first_line = first_line
        self.defaults = defaults
        self.default_start = default_start
        self.fields: dict[str, tuple[str, int]] = {}
        self.misc_infos: list[dict[str, str]] = []
        self.sub_units: list[dict[str, str]] = []
        self.columns: list[str | None] = []
        self.columns_line = 0
        root = {"stepType": "SequenceCall", "name": "", "group": "M", "status": "P", "steps": []}
        self.open = [_OpenSequence(root, first_line, status_given=False)]
        # The multiple-numeric step that the next line may add a measurement to: set by a
        # MultipleNumericLimitTest line, cleared by any other line.
        self.open_multi: dict[str, Any] | None = None

    # header and footer

    def add_field(self, number: int, line: str) -> None:
        key, tab, rest = line.partition("\t")
        key = key.strip()
        if not tab or not key:
            raise _LineError(number, f"expected Key<TAB>Value, found {_shown(line)}")
        cells = [cell.strip() for cell in rest.split("\t")]
        canonical = _HEADER_KEY_BY_FOLDED.get(key.casefold())
        if canonical == "Subunit":
            self.sub_units.append(_sub_unit(number, cells))
            return
        if any(cells[1:]):
            raise _LineError(number, f"{key} has more than one value: {_shown(line)}")
        if canonical is None:
            self.misc_infos.append({"description": key, "text": cells[0]})
        else:
            self.fields[canonical] = (cells[0], number)

    # steps

    def set_columns(self, number: int, line: str) -> None:
        names = [cell.strip() for cell in line.split("\t")]
        self.columns = [_COLUMN_ALIASES.get(name.casefold()) for name in names]
        self.columns_line = number
        missing = [name for name in ("StepType", "StepName") if name not in self.columns]
        if missing:
            raise _LineError(
                number,
                f"expected the step column header (StepType<TAB>StepName<TAB>...) after "
                f"{STEP_DATA_START}, found {_shown(line)}",
            )
        known = [name for name in self.columns if name]
        duplicates = sorted({name for name in known if known.count(name) > 1})
        if duplicates:
            raise _LineError(number, f"column header names {', '.join(duplicates)} twice")

    def add_step(self, number: int, line: str) -> None:
        cells = line.split("\t")
        extra = [cell for cell in cells[len(self.columns) :] if cell.strip()]
        if extra:
            raise _LineError(
                number,
                f"{len(cells)} fields, but the column header on line {self.columns_line} "
                f"names {len(self.columns)}",
            )
        row = _Row(
            number,
            {name: cell.strip() for name, cell in zip(self.columns, cells, strict=False) if name},
        )
        step_type = row.text("StepType")
        handler = _STEP_HANDLERS.get(step_type)
        if handler is None:
            raise row.fail(
                "StepType", f"unknown step type {step_type!r}; one of {', '.join(_STEP_HANDLERS)}"
            )
        if step_type != "EndSequenceCall" and not row.text("StepName"):
            raise row.fail("StepName", f"a {step_type} needs a step name")
        if step_type != "MultipleNumericLimitTest":
            self.open_multi = None
        handler(self, row)

    def _append(self, step: dict[str, Any]) -> None:
        self.open[-1].step["steps"].append(step)

    def _sequence_call(self, row: _Row) -> None:
        name = row.text("StepName")
        step = _step("SequenceCall", row, row.status() or "P")
        step["seqCall"] = {"path": name, "name": name, "version": ""}
        step["steps"] = []
        self._append(step)
        self.open.append(_OpenSequence(step, row.line, status_given=row.status() is not None))

    def _end_sequence_call(self, row: _Row) -> None:
        if len(self.open) == 1:
            raise _LineError(row.line, "EndSequenceCall without an open SequenceCall")
        sequence = self.open.pop()
        name = row.text("StepName")
        if name and name != sequence.step["name"]:
            raise row.fail(
                "StepName",
                f"EndSequenceCall {name!r} closes SequenceCall {sequence.step['name']!r} "
                f"opened on line {sequence.line}",
            )
        _add_step_details(sequence.step, row)
        if row.status() is not None:
            sequence.step["status"] = row.status()
        elif not sequence.status_given:
            sequence.step["status"] = rolled_up_status(s["status"] for s in sequence.step["steps"])

    def _numeric_limit_test(self, row: _Row) -> None:
        measurement = _numeric_measurement(row)
        if row.text("MeasureName"):
            measurement["name"] = row.text("MeasureName")
        step = _step("ET_NLT", row, measurement["status"])
        step["numericMeas"] = [measurement]
        self._append(step)

    def _multiple_numeric_limit_test(self, row: _Row) -> None:
        measure_name = row.text("MeasureName")
        if not measure_name:
            raise row.fail("MeasureName", "a MultipleNumericLimitTest line needs a measure name")
        measurement = {"name": measure_name, **_numeric_measurement(row)}
        multi = self.open_multi
        names = {m["name"] for m in multi["numericMeas"]} if multi else set()
        if multi and multi["name"] == row.text("StepName") and measure_name not in names:
            multi["numericMeas"].append(measurement)
        else:
            multi = _step("ET_MNLT", row, "P")
            multi["numericMeas"] = [measurement]
            self._append(multi)
        multi["status"] = rolled_up_status(m["status"] for m in multi["numericMeas"])
        self.open_multi = multi

    def _pass_fail_test(self, row: _Row) -> None:
        status = row.status()
        if status is None:
            value = row.text("Value")
            status = BOOLEAN_WORDS.get(value.upper())
            if status is None:
                raise row.fail(
                    "Value", f"a PassFailTest needs a Status, or a Value True/False, not {value!r}"
                )
        measurement = {"status": status}
        if row.text("MeasureName"):
            measurement["name"] = row.text("MeasureName")
        step = _step("ET_PFT", row, status)
        step["booleanMeas"] = [measurement]
        self._append(step)

    def _string_value_test(self, row: _Row) -> None:
        value, limit = row.text("Value"), row.text("LowLimit")
        operator = row.text("CompOperator").upper() or ("CASESENSIT" if limit else "LOG")
        if operator not in STRING_OPERATORS:
            raise row.fail(
                "CompOperator",
                f"{operator!r} is not a string compare operator; one of "
                f"{', '.join(STRING_OPERATORS)}",
            )
        status = row.status() or ("P" if STRING_OPERATORS[operator](value, limit) else "F")
        measurement: dict[str, Any] = {"compOp": operator, "value": value, "status": status}
        if operator != "LOG":
            measurement["limit"] = limit
        if row.text("MeasureName"):
            measurement["name"] = row.text("MeasureName")
        step = _step("ET_SVT", row, status)
        step["stringMeas"] = [measurement]
        self._append(step)

    def _action_step(self, row: _Row) -> None:
        self._append(_step("Action", row, row.status() or "D"))

    def close_steps(self, number: int) -> None:
        if len(self.open) > 1:
            sequence = self.open[-1]
            raise _LineError(
                number,
                f"SequenceCall {sequence.step['name']!r} opened on line {sequence.line} has no "
                "EndSequenceCall",
            )

    # the report

    def finish(self, number: int) -> Report:
        self.close_steps(number)
        root = self.open[0].step
        sequence_name = self._text("SoftwareName") or self.defaults.sequence_name
        root["name"] = sequence_name
        root["seqCall"] = {
            "path": sequence_name,
            "name": sequence_name,
            "version": self._text("SoftwareVersion") or self.defaults.sequence_version,
        }
        root["status"] = rolled_up_status(step["status"] for step in root["steps"])
        report: Report = {
            "type": "T",
            "pn": self._required("PartNumber"),
            "sn": self._required("SerialNumber"),
            "rev": self._required("Revision"),
            "processCode": self._integer("OperationTypeCode", self.defaults.process_code),
            "result": self._result(root["status"]),
            "machineName": self._text("StationName") or self.defaults.station_name,
            "location": self.defaults.location,
            "purpose": self.defaults.purpose,
            "start": self._start(),
            "uut": self._uut_info(),
            "root": root,
        }
        if self._text("OperationTypeName"):
            report["processName"] = self._text("OperationTypeName")
        if self.misc_infos:
            report["miscInfos"] = self.misc_infos
        if self.sub_units:
            report["subUnits"] = self.sub_units
        return report

    def _text(self, key: str) -> str:
        return self.fields.get(key, ("", 0))[0]

    def _required(self, key: str) -> str:
        value = self._text(key)
        if not value:
            raise _LineError(self.first_line, f"the UUT that starts here has no {key}")
        return value

    def _number(self, key: str, convert: Callable[[str], Any], kind: str) -> Any:
        value, line = self.fields.get(key, ("", 0))
        if not value:
            return None
        try:
            return convert(value)
        except ValueError:
            raise _LineError(line, f"{key}: {value!r} is not {kind}") from None

    def _integer(self, key: str, default: int) -> int:
        number = self._number(key, int, "an integer")
        return default if number is None else number

    def _result(self, computed: str) -> str:
        value, line = self.fields.get("UUTStatus", ("", 0))
        if not value:
            return computed
        letter = status_letter(value)
        if letter is None or letter == "S":
            raise _LineError(
                line, f"UUTStatus {value!r} is not one of Passed, Failed, Done, Error, Terminated"
            )
        return letter

    def _start(self) -> str:
        local, local_line = self.fields.get("StartDateTime", ("", 0))
        utc, utc_line = self.fields.get("UTCStartDateTime", ("", 0))
        try:
            return _start_from(local, utc) or self.default_start
        except ValueError as error:
            raise _LineError(local_line if local else utc_line, str(error)) from None

    def _uut_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"user": self._text("OperatorName") or self.defaults.operator}
        for key, field in _UUT_TEXT_FIELDS.items():
            if self._text(key):
                info[field] = self._text(key)
        numbers = (
            ("execTime", "ExecutionTime", float, "a number"),
            ("testSocketIndex", "TestSocketIndex", int, "an integer"),
            ("errorCode", "ErrorCode", int, "an integer"),
        )
        for field, key, convert, kind in numbers:
            number = self._number(key, convert, kind)
            if number is not None:
                info[field] = number
        return info


_STEP_HANDLERS: dict[str, Callable[[_UUTBuilder, _Row], None]] = {
    "SequenceCall": _UUTBuilder._sequence_call,
    "EndSequenceCall": _UUTBuilder._end_sequence_call,
    "NumericLimitTest": _UUTBuilder._numeric_limit_test,
    "MultipleNumericLimitTest": _UUTBuilder._multiple_numeric_limit_test,
    "PassFailTest": _UUTBuilder._pass_fail_test,
    "StringValueTest": _UUTBuilder._string_value_test,
    "ActionStep": _UUTBuilder._action_step,
}


def _step(step_type: str, row: _Row, status: str) -> dict[str, Any]:
    step: dict[str, Any] = {
        "stepType": step_type,
        "name": row.text("StepName"),
        "group": _group(row),
        "status": status,
    }
    _add_step_details(step, row)
    return step


def _group(row: _Row) -> str:
    text = row.text("Group")
    group = GROUP_WORDS.get(text.upper(), "M" if not text else None)
    if group is None:
        raise row.fail("Group", f"{text!r} is not one of Setup, Main, Cleanup")
    return group


def _add_step_details(step: dict[str, Any], row: _Row) -> None:
    step_time = row.number("StepTime")
    if step_time is not None:
        step["totTime"] = step_time
    error_code = row.integer("ErrorCode")
    if error_code is not None:
        step["errorCode"] = error_code
    for column, field in (("ReportText", "reportText"), ("ErrorMessage", "errorMessage")):
        if row.text(column):
            step[field] = row.text(column)


def _numeric_measurement(row: _Row) -> dict[str, Any]:
    value = row.number("Value", required=True)
    assert value is not None
    low, high = row.number("LowLimit"), row.number("HighLimit")
    operator = row.text("CompOperator").upper() or inferred_operator(low, high)
    if operator not in NUMERIC_OPERATORS:
        raise row.fail(
            "CompOperator",
            f"{operator!r} is not a numeric compare operator; one of "
            f"{', '.join(NUMERIC_OPERATORS)}",
        )
    limits_needed, _ = NUMERIC_OPERATORS[operator]
    if limits_needed == 1 and low is None:
        # WSJF keeps a single limit in lowLimit; a file may put an upper one under HighLimit.
        low, high = high, None
    if limits_needed >= 1 and low is None:
        raise row.fail("LowLimit", f"compare operator {operator} needs a limit in LowLimit")
    if limits_needed == 2 and high is None:
        raise row.fail("HighLimit", f"compare operator {operator} needs a HighLimit")
    measurement: dict[str, Any] = {
        "compOp": operator,
        "value": measured_value(value),
        "unit": row.text("Unit"),
        "status": row.status() or numeric_status(value, operator, low, high),
    }
    if limits_needed >= 1:
        measurement["lowLimit"] = low
    if limits_needed == 2:
        measurement["highLimit"] = high
    return measurement


def _sub_unit(number: int, cells: list[str]) -> dict[str, str]:
    part_type, part_number, serial, revision = ([*cells, "", "", ""])[:4]
    if not part_number or not serial:
        raise _LineError(
            number, "expected Subunit<TAB>PartType<TAB>PartNumber<TAB>SerialNumber<TAB>Revision"
        )
    return {"partType": part_type, "pn": part_number, "sn": serial, "rev": revision}


def _start_from(local: str, utc: str) -> str | None:
    if local:
        moment = parse_datetime(local)
        if moment.tzinfo is None and utc:
            # Both given: their difference is the station's UTC offset at that moment.
            universal = parse_datetime(utc).astimezone(UTC).replace(tzinfo=None)
            quarters = round((moment - universal) / timedelta(minutes=15))
            moment = moment.replace(tzinfo=timezone(timedelta(minutes=15 * quarters)))
        return (moment if moment.tzinfo else moment.astimezone()).isoformat()
    if utc:
        moment = parse_datetime(utc)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone().isoformat()
    return None


def _shown(line: str) -> str:
    text = repr(line)
    return text if len(text) <= 80 else f"{text[:77]}..."


# -- writing WSTF ----------------------------------------------------------------------------


def format_wstf(uut: Mapping[str, Any]) -> str:
    """WSTF text for one UUT, from a description that mirrors the file.

    ``uut["header"]`` and the optional ``uut["footer"]`` map keys to values. ``uut["steps"]`` is
    a list of rows keyed by STEP_COLUMNS names; a row with ``StepType`` "SequenceCall" may hold
    its children in ``"steps"``, and gets its EndSequenceCall line written for it. Several UUTs
    in one file are several of these strings joined.
    """
    lines = [HEADER_START]
    lines += [f"{key}\t{_cell(value)}" for key, value in uut["header"].items()]
    lines += [STEP_DATA_START, "\t".join(STEP_COLUMNS)]
    lines += ["\t".join(_cell(row.get(column)) for column in STEP_COLUMNS) for row in _rows(uut)]
    lines.append(STEP_DATA_END)
    lines += [f"{key}\t{_cell(value)}" for key, value in uut.get("footer", {}).items()]
    lines.append(UUT_END)
    return "\n".join(lines) + "\n"


def _rows(container: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for row in container.get("steps", []):
        yield row
        if row.get("StepType") == "SequenceCall":
            yield from _rows(row)
            yield {"StepType": "EndSequenceCall", "StepName": row.get("StepName")}


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = str(value)
    if any(character in text for character in "\t\r\n"):
        raise ValueError(f"WSTF cells cannot hold tabs or line breaks: {text!r}")
    return text
