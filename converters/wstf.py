"""WSTF (WATS Standard Text Format) files to WSJF reports, and WSTF text from a small description.

WSTF is Virinco's tab-delimited format for third-party testers (FORMATS.md, WSTF). A file holds
one or more UUTs, each framed by markers::

    --Header-Start--       Key<TAB>Value lines; keys we do not know become miscInfos
    --Step-Data-Start--    a column header line, then one line per step or measurement
    --Step-Data-End--      optional footer lines: UUTStatus, ExecutionTime, ErrorCode, ...
    --UUT-End--            the UUT is complete

The rules follow what Virinco's own WSTF converter does with real files (docs/CONVERTERS.md
lists where that differs from its public article): consecutive lines of one kind with the same
or a blank step name make one step with several measurements; a status given in the file is
kept, a missing one is computed from the value, the limits and the compare operator ("Active"
mode), and failures ripple up into the sequences and the report result; ``ConverterMode
Import`` (or the testModeType argument) takes statuses as given. End markers are matched
forgiving spaces (``-- UUT-End--``), a UUT without one is still converted, and control
characters are dropped from every line.

This module also holds the measurement rules the CSV converter shares: compare operators,
status words, start times and the station's identity fields.
"""

from __future__ import annotations

import codecs
import math
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from wats_station.converters.base import (
    ConversionError,
    Converter,
    Report,
    ensure_report_ids,
    file_head,
)
from wats_station.converters.processes import UnknownOperationType, operation_code

HEADER_START = "--Header-Start--"
STEP_DATA_START = "--Step-Data-Start--"
STEP_DATA_END = "--Step-Data-End--"
UUT_END = "--UUT-End--"
MARKERS = (HEADER_START, STEP_DATA_START, STEP_DATA_END, UUT_END)
_MARKERS_BY_FOLDED = {marker.casefold(): marker for marker in MARKERS}
# What Virinco's converter strips from every line: characters XML cannot carry.
_CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

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
    # EQ and NE compare exactly, as CASESENSIT does; Virinco's example file uses EQ.
    "EQ": lambda value, limit: value == limit,
    "NE": lambda value, limit: value != limit,
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
UUT_STATUS_WORDS = {
    **dict.fromkeys(("p", "pass", "passed", "ok"), "P"),
    **dict.fromkeys(("f", "fail", "failed", "ng"), "F"),
    **dict.fromkeys(("d", "done"), "D"),
    **dict.fromkeys(("e", "error"), "E"),
    **dict.fromkeys(("t", "terminated", "aborted", "undetermined"), "T"),
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
    "TestSocketIndex", "ErrorCode", "ErrorMessage", "Subunit", "ConverterMode",
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
    "CausedSequenceFailure",
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
    "operationTypeCode": 10,  # a code, or a name looked up in the server's process list
    "testModeType": "Active",
    "operator": "sysoper",
    "stationName": None,
    "sequenceName": "SeqName",
    "sequenceVersion": "0.0.0",
    "cultureCode": None,  # none: the invariant culture (decimal point), as Virinco's converter
    "fileEncoding": "cp1252",  # a Python codec name or a Windows code page number ("1252")
    "validationMode": "ThrowExceptions",
    "station_name": None,
    "location": None,
    "purpose": None,
}

VALIDATION_MODES = {
    "throwexceptions": False, "throw": False, "autotruncate": True, "truncate": True,
}  # fmt: skip
_TEXT_LIMITS = {"pn": 100, "sn": 100, "rev": 100, "machineName": 100}
MAX_COMMENT = 500


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


# -- numbers as a culture writes them ----------------------------------------------------------

# Languages whose numbers use a decimal point; every other culture code means a decimal comma.
_DECIMAL_POINT_LANGUAGES = frozenset(
    {"en", "ja", "zh", "ko", "th", "he", "hi", "ms", "ga", "mt", "sw", "fil", "ur", "iv"}
)
_DECIMAL_POINT_CULTURES = frozenset(
    {"de-ch", "de-li", "it-ch", "es-mx", "es-us", "es-pr", "es-do", "es-gt", "es-hn", "es-ni",
     "es-pa", "es-sv", "es-419"}
)  # fmt: skip
_GROUPED_WITH_COMMAS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?([eE][+-]?\d+)?")
_INFINITIES = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf}


def decimal_comma(culture_code: str | None) -> bool:
    """Whether numbers in files of this culture ("nb-NO", "de-DE", "en-US") use a comma."""
    if not culture_code:
        return False  # no cultureCode: the invariant culture, like Virinco's converter
    code = culture_code.strip().replace("_", "-").casefold()
    language = code.partition("-")[0]
    return code not in _DECIMAL_POINT_CULTURES and language not in _DECIMAL_POINT_LANGUAGES


def parse_number(text: str, comma: bool) -> float:
    """A number as written in a culture with a decimal point or (``comma``) a decimal comma.

    Group separators are dropped where they cannot be mistaken: with a decimal comma, dots and
    spaces before the comma; with a decimal point, commas in groups of three ("1,234.5"). A
    lone comma under a decimal point ("1,5") is an error, not 15 as .NET would read it.
    """
    cleaned = text.strip().replace("\u00a0", "").replace("\u202f", "")
    if cleaned.lower() in _INFINITIES:
        return _INFINITIES[cleaned.lower()]
    negative = cleaned.startswith("(") and cleaned.endswith(")")
    if negative:
        cleaned = cleaned[1:-1]
    if comma:
        if "," in cleaned:
            cleaned = cleaned.replace(".", "").replace(" ", "").replace(",", ".")
    elif "," in cleaned:
        if not _GROUPED_WITH_COMMAS.fullmatch(cleaned):
            raise ValueError(
                f"{text!r} is not a number here (a decimal comma? set the cultureCode argument, "
                "for example nb-NO or de-DE)"
            )
        cleaned = cleaned.replace(",", "")
    value = float(cleaned)
    return -value if negative else value


# -- the WSTF converter ------------------------------------------------------------------------


@dataclass(frozen=True)
class UUTDefaults:
    """What a report gets where the WSTF file does not say, and how to read it."""

    process_code: int = 10
    operator: str = "sysoper"
    station_name: str = ""
    location: str = "Unknown"
    purpose: str = "Production"
    sequence_name: str = "SeqName"
    sequence_version: str = "0.0.0"
    import_mode: bool = False  # testModeType Import: statuses are taken, never computed
    decimal_comma: bool = False
    truncate: bool = False  # validationMode AutoTruncate: over-long header texts are cut
    # Turns an operation type name into its code (converters.processes); None: names are errors
    operation_code: Callable[[str], int] | None = None


class WSTFConverter(Converter):
    """WATS Standard Text Format files (``*.txt``) to WSJF test reports, one per UUT."""

    name = "wstf"
    file_patterns = ("*.txt",)

    def __init__(self, **arguments: Any) -> None:
        super().__init__(**arguments)
        settings = checked_arguments(self.name, arguments, ARGUMENT_DEFAULTS)
        self.operation_type = str(settings["operationTypeCode"]).strip()
        try:
            self.encoding = codecs.lookup(_encoding_name(str(settings["fileEncoding"]))).name
        except LookupError:
            raise ValueError(
                f"argument fileEncoding: unknown encoding {settings['fileEncoding']!r}"
            ) from None
        mode = str(settings["testModeType"]).strip().casefold()
        if mode not in ("active", "import"):
            raise ValueError(f"argument testModeType: {mode!r} is not Active or Import")
        validation = str(settings["validationMode"]).strip().casefold()
        if validation not in VALIDATION_MODES:
            raise ValueError(
                f"argument validationMode: {settings['validationMode']!r} is not one of "
                "ThrowExceptions, AutoTruncate"
            )
        station = station_fields(
            {**settings, "station_name": settings["stationName"] or settings["station_name"]}
        )
        self.defaults = UUTDefaults(
            operator=str(settings["operator"]),
            station_name=station["machineName"],
            location=station["location"],
            purpose=station["purpose"],
            sequence_name=str(settings["sequenceName"]),
            sequence_version=str(settings["sequenceVersion"]),
            import_mode=mode == "import",
            decimal_comma=decimal_comma(settings["cultureCode"]),
            truncate=VALIDATION_MODES[validation],
        )

    def validate(self, path: Path) -> float:
        start = file_head(path, 8192)
        if HEADER_START.encode() not in start:
            return 0.0
        return 0.95 if STEP_DATA_START.encode() in start else 0.8

    def convert(self, path: Path) -> list[Report]:
        content = path.read_bytes()
        text = decode_text(content, self.encoding, str(path))

        def lookup(name: str) -> int:
            return operation_code(name, self.processes_file)

        try:
            defaults = replace(
                self.defaults,
                process_code=lookup(self.operation_type),
                operation_code=lookup,
            )
        except UnknownOperationType as error:
            raise ConversionError(f"{path}: argument operationTypeCode: {error}") from None
        reports = parse_wstf(text, defaults, source=str(path), default_start=file_start(path))
        return ensure_report_ids(reports, content)


def _encoding_name(name: str) -> str:
    # Virinco's argument is a Windows code page number ("1252", "65001").
    return {"65001": "utf-8", "1200": "utf-16-le", "1201": "utf-16-be"}.get(
        name, f"cp{name}" if name.isdigit() else name
    )


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
    except _NotWSTF:
        raise ConversionError(
            f"{source}: no {HEADER_START} line, so this is not a WSTF file"
        ) from None


class _LineError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


class _NotWSTF(Exception):
    pass


def _marker(line: str) -> str | None:
    """The marker a line is, forgiving spaces, case and trailing cells ("-- UUT-End--")."""
    first = line.partition("\t")[0].replace(" ", "").casefold()
    return _MARKERS_BY_FOLDED.get(first) if first.startswith("--") else None


class _WSTFParser:
    """A line-by-line state machine: outside, header, columns, steps, footer."""

    def __init__(self, defaults: UUTDefaults, default_start: str) -> None:
        self.defaults = defaults
        self.default_start = default_start
        self.section = "outside"
        self.uut: _UUTBuilder | None = None
        self.reports: list[Report] = []

    def parse(self, lines: list[str]) -> list[Report]:
        for number, raw in enumerate(lines, start=1):
            line = _CONTROL_CHARACTERS.sub("", raw.removeprefix("\ufeff"))
            if line.strip():
                self._take(number, line)
        if self.uut is not None:
            # Like Virinco's converter: a UUT without its end marker is submitted as it is,
            # but when it cannot be, the missing marker is the likelier story.
            try:
                self.reports.append(self.uut.finish(len(lines)))
            except _LineError as error:
                raise _LineError(
                    error.line,
                    f"{error.message}; the file ends without {UUT_END} (written only in part?)",
                ) from None
        if not self.reports:
            raise _NotWSTF
        return self.reports

    def _take(self, number: int, line: str) -> None:
        marker = _marker(line)
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
            self.uut.close_steps()
            self.section = "footer"
        elif marker == HEADER_START:
            # The previous UUT lacks its end marker: it ends here.
            self.reports.append(self.uut.finish(number))
            self.uut = _UUTBuilder(number, self.defaults, self.default_start)
            self.section = "header"
        else:
            raise _LineError(
                number,
                f"{marker} is out of place in the {self.section} part of the UUT that starts "
                f"on line {self.uut.first_line}",
            )

    def _take_data(self, number: int, line: str, uut: _UUTBuilder) -> None:
        if self.section in ("header", "footer"):
            uut.add_field(number, line)
            return
        is_column_header = "steptype" in {cell.strip().casefold() for cell in line.split("\t")}
        if self.section == "columns":
            self.section = "steps"
            if is_column_header:
                uut.set_columns(number, line)
                return
            # No column header: the columns are in Virinco's fixed order (STEP_COLUMNS).
        if is_column_header:
            return  # a repeated column header, which Virinco's converter skips too
        uut.add_step(number, line)


@dataclass
class _OpenSequence:
    step: dict[str, Any]
    line: int
    status: str | None


class _Row:
    """One step line, by column name."""

    def __init__(self, line: int, cells: dict[str, str], decimal_comma: bool) -> None:
        self.line = line
        self.cells = cells
        self.decimal_comma = decimal_comma

    def text(self, column: str) -> str:
        return self.cells.get(column, "")

    def fail(self, column: str, message: str) -> _LineError:
        return _LineError(self.line, f"column {column}: {message}")

    def number(self, column: str) -> float | None:
        text = self.text(column)
        if not text:
            return None
        try:
            return parse_number(text, self.decimal_comma)
        except ValueError as error:
            reason = str(error) if "cultureCode" in str(error) else f"{text!r} is not a number"
            raise self.fail(column, reason) from None

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

    def flag(self, column: str) -> bool | None:
        text = self.text(column).casefold()
        if not text:
            return None
        if text not in ("true", "1", "false", "0"):
            raise self.fail(column, f"{self.text(column)!r} is not True or False")
        return text in ("true", "1")


@dataclass
class _OpenTest:
    """The test step that the next line of the same kind may add a measurement to."""

    kind: str  # "numeric", "boolean" or "string"
    step: dict[str, Any]
    given_status: str | None


class _UUTBuilder:
    """Collects one UUT's lines and turns them into a report at --UUT-End--."""

    def __init__(self, first_line: int, defaults: UUTDefaults, default_start: str) -> None:
        self.first_line = first_line
        self.defaults = defaults
        self.default_start = default_start
        self.fields: dict[str, tuple[str, int]] = {}
        self.misc_infos: list[dict[str, str]] = []
        self.sub_units: list[dict[str, str]] = []
        self.columns: list[str | None] = list(STEP_COLUMNS)
        root = {"stepType": "SequenceCall", "name": "", "group": "M", "status": "P", "steps": []}
        self.open = [_OpenSequence(root, first_line, status=None)]
        self.open_test: _OpenTest | None = None
        self.chart_step: dict[str, Any] | None = None  # the step the next Chart line joins
        self.import_mode = defaults.import_mode

    # header and footer

    def add_field(self, number: int, line: str) -> None:
        key, tab, rest = line.partition("\t")
        key = key.strip()
        if not tab:
            # "SerialNumber SN-1": Virinco's converter finds its keys by prefix, so a space
            # separates too; any other line without a tab it ignores, and so do we.
            key, _, rest = key.partition(" ")
            if key.casefold() not in _HEADER_KEY_BY_FOLDED or not rest.strip():
                return
        if not key:
            return
        cells = [cell.strip() for cell in rest.split("\t")]
        canonical = _HEADER_KEY_BY_FOLDED.get(key.casefold())
        if canonical == "Subunit":
            self.sub_units.append(_sub_unit(number, cells))
        elif canonical == "ConverterMode":
            self.import_mode = cells[0].casefold() == "import" or (
                self.defaults.import_mode and not cells[0]
            )
        elif canonical is None:
            # Extra values after the first are ignored, as Virinco's converter does.
            self.misc_infos.append({"description": key, "text": cells[0]})
        else:
            self.fields[canonical] = (cells[0], number)

    # steps

    def set_columns(self, number: int, line: str) -> None:
        names = [cell.strip() for cell in line.split("\t")]
        columns = [_COLUMN_ALIASES.get(name.casefold()) for name in names]
        known = [name for name in columns if name]
        duplicates = sorted({name for name in known if known.count(name) > 1})
        if duplicates:
            raise _LineError(number, f"column header names {', '.join(duplicates)} twice")
        if "StepName" not in columns:
            raise _LineError(number, f"the column header has no StepName: {_shown(line)}")
        self.columns = columns

    def add_step(self, number: int, line: str) -> None:
        cells = [cell.strip() for cell in line.split("\t")]
        step_type = cells[0] if cells[0] in _CHART_LAYOUTS else ""
        if step_type:
            row = _Row(number, dict(zip(_CHART_LAYOUTS[step_type], cells, strict=False)), False)
            (self._chart if step_type == "Chart" else self._series)(row)
            return
        row = _Row(
            number,
            {name: cell for name, cell in zip(self.columns, cells, strict=False) if name},
            self.defaults.decimal_comma,
        )
        handler = _STEP_HANDLERS.get(row.text("StepType"))
        if handler is None:
            raise row.fail(
                "StepType",
                f"unknown step type {row.text('StepType')!r}; one of "
                f"{', '.join([*_STEP_HANDLERS, *_CHART_LAYOUTS])}",
            )
        handler(self, row)

    def _append(self, step: dict[str, Any]) -> None:
        self.open[-1].step["steps"].append(step)
        self.chart_step = step

    def _sequence_call(self, row: _Row) -> None:
        name = self._step_name(row)
        step = _step("SequenceCall", row, row.status() or "P", name)
        step["seqCall"] = {"path": name, "name": name, "version": ""}
        step["steps"] = []
        self._append(step)
        self.open.append(_OpenSequence(step, row.line, status=row.status()))
        self.open_test = None

    def _end_sequence_call(self, row: _Row) -> None:
        self.open_test = None
        if len(self.open) == 1:
            raise _LineError(row.line, "EndSequenceCall without an open SequenceCall")
        sequence = self.open[-1]
        name = row.text("StepName")
        if name and name != sequence.step["name"]:
            raise row.fail(
                "StepName",
                f"EndSequenceCall {name!r} closes SequenceCall {sequence.step['name']!r} "
                f"opened on line {sequence.line}",
            )
        _add_step_details(sequence.step, row)
        self._close_sequence(final_status=row.status())
        self.chart_step = self.open[-1].step

    def _close_sequence(self, final_status: str | None = None) -> None:
        """Set the status of the innermost sequence and close it.

        A status on the EndSequenceCall line is final. One on the SequenceCall line is where
        the sequence starts from: in Active mode a failing step still fails it.
        """
        sequence = self.open.pop()
        children = [step["status"] for step in sequence.step["steps"]]
        if final_status is not None:
            sequence.step["status"] = final_status
        elif self.import_mode:
            sequence.step["status"] = sequence.status or "P"
        else:  # Active: failures ripple up through a status the file gave
            sequence.step["status"] = rolled_up_status(
                [*children, sequence.status] if sequence.status else children
            )
            if sequence.status and sequence.step["status"] == "P":
                sequence.step["status"] = sequence.status

    def _test_step(
        self,
        row: _Row,
        kind: str,
        step_types: tuple[str, str],
        key: str,
        repeated_name_starts_a_step: bool = False,
    ) -> None:
        """Add the line's measurement to the open test step, or open a new one.

        Like Virinco's converter: a line joins the step before it when that step is of the same
        kind and the line's step name is blank or the same; otherwise it starts a new step.
        """
        name = row.text("StepName")
        measurement = _MEASUREMENT_READERS[kind](row, self.import_mode)
        if row.text("MeasureName"):
            measurement = {"name": row.text("MeasureName"), **measurement}
        current = self.open_test
        if (
            current is None
            or current.kind != kind
            or (name and name != current.step["name"])
            or (
                repeated_name_starts_a_step
                and _has_measurement(current.step[key], measurement.get("name"))
            )
        ):
            step = _step(step_types[0], row, "P", self._step_name(row))
            step[key] = []
            self._append(step)
            current = self.open_test = _OpenTest(kind, step, row.status())
        else:
            _add_step_details(current.step, row)
        measurements = current.step[key]
        measurements.append(measurement)
        if len(measurements) > 1 or "name" in measurements[0]:
            current.step["stepType"] = step_types[1]
            # Measurements of a multiple step are told apart by name; unnamed rows get
            # TestStand's default names.
            for index, item in enumerate(measurements):
                if "name" not in item:
                    measurements[index] = {"name": f"Measurement {index}", **item}
        statuses = [m["status"] for m in measurements]
        given = current.given_status
        if self.import_mode:
            current.step["status"] = given or "P"
        else:
            current.step["status"] = rolled_up_status([*statuses, given] if given else statuses)
            if given and current.step["status"] == "P":
                current.step["status"] = given

    def _numeric_limit_test(self, row: _Row) -> None:
        self._test_step(row, "numeric", ("ET_NLT", "ET_MNLT"), "numericMeas")

    def _multiple_numeric_limit_test(self, row: _Row) -> None:
        if not row.text("MeasureName"):
            raise row.fail("MeasureName", "a MultipleNumericLimitTest line needs a measure name")
        self._test_step(row, "numeric", ("ET_NLT", "ET_MNLT"), "numericMeas", True)

    def _pass_fail_test(self, row: _Row) -> None:
        self._test_step(row, "boolean", ("ET_PFT", "ET_MPFT"), "booleanMeas")

    def _string_value_test(self, row: _Row) -> None:
        self._test_step(row, "string", ("ET_SVT", "ET_MSVT"), "stringMeas")

    def _action_step(self, row: _Row) -> None:
        self.open_test = None
        self._append(_step("Action", row, row.status() or "D", self._step_name(row)))

    def _step_name(self, row: _Row) -> str:
        name = row.text("StepName")
        if not name:
            raise row.fail("StepName", f"a {row.text('StepType')} that starts a step needs a name")
        return name

    def _chart(self, row: _Row) -> None:
        step = self.chart_step
        if step is None:
            raise _LineError(row.line, "a Chart line must follow the step it belongs to")
        if "chart" in step:
            raise _LineError(row.line, f"step {step['name']!r} has a chart already")
        chart_type = _CHART_TYPES.get(row.text("ChartType").casefold())
        if chart_type is None:
            known = ", ".join(_CHART_TYPES.values())
            raise row.fail("StepName", f"{row.text('ChartType')!r} is not a chart type ({known})")
        step["chart"] = {
            "chartType": chart_type,
            "label": row.text("Label"),
            "xLabel": row.text("XLabel"),
            "xUnit": row.text("XUnit"),
            "yLabel": row.text("YLabel"),
            "yUnit": row.text("YUnit"),
            "series": [],
        }

    def _series(self, row: _Row) -> None:
        chart = (self.chart_step or {}).get("chart")
        if chart is None:
            raise _LineError(row.line, "a Series line must follow a Chart line")
        if len(chart["series"]) >= MAX_CHART_SERIES:
            raise _LineError(row.line, f"a chart holds at most {MAX_CHART_SERIES} series")
        if row.text("DataType").upper() != "XYG":
            raise row.fail("MeasureName", f"series data type {row.text('DataType')!r} is not XYG")
        y = _series_data(row, "YData", required=True)
        x = _series_data(row, "XData", required=False)
        if x is not None and len(x.split(";")) != len(y.split(";")):
            raise row.fail("XData", "XData and YData have different lengths")
        chart["series"].append(
            {"dataType": "XYG", "name": row.text("StepName"), "xdata": x, "ydata": y}
        )

    def close_steps(self) -> None:
        self.open_test = None
        while len(self.open) > 1:
            self._close_sequence()

    # the report

    def finish(self, number: int) -> Report:
        self.close_steps()
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
            "processCode": self._process_code(),
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
        self._check_lengths(report)
        return report

    def _check_lengths(self, report: Report) -> None:
        for key, limit in _TEXT_LIMITS.items():
            value = report.get(key)
            if isinstance(value, str) and len(value) > limit:
                if not self.defaults.truncate:
                    raise _LineError(
                        self.first_line,
                        f"{key} is {len(value)} characters long; WATS takes {limit} "
                        "(validationMode AutoTruncate cuts it)",
                    )
                report[key] = value[:limit]
        comment = report["uut"].get("comment")
        if isinstance(comment, str) and len(comment) > MAX_COMMENT and self.defaults.truncate:
            report["uut"]["comment"] = comment[:MAX_COMMENT]

    def _text(self, key: str) -> str:
        return self.fields.get(key, ("", 0))[0]

    def _required(self, key: str) -> str:
        value = self._text(key)
        if not value:
            raise _LineError(self.first_line, f"the UUT that starts here has no {key}")
        return value

    def _process_code(self) -> int:
        # A code in the file wins over a name: it needs no lookup, so it works offline too.
        for key in ("OperationTypeCode", "OperationTypeName"):
            value, line = self.fields.get(key, ("", 0))
            if not value:
                continue
            try:
                if value.lstrip("+-").isdigit():
                    return int(value)
                if self.defaults.operation_code is None:
                    raise UnknownOperationType(f"operation type {value!r} is a name, not a code")
                return self.defaults.operation_code(value)
            except UnknownOperationType as error:
                raise _LineError(line, f"{key}: {error}") from None
        return self.defaults.process_code

    def _number(self, key: str, convert: Callable[[str], Any], kind: str) -> Any:
        value, line = self.fields.get(key, ("", 0))
        if not value:
            return None
        try:
            return convert(value)
        except ValueError:
            raise _LineError(line, f"{key}: {value!r} is not {kind}") from None

    def _result(self, computed: str) -> str:
        value, line = self.fields.get("UUTStatus", ("", 0))
        if not value:
            return computed
        letter = UUT_STATUS_WORDS.get(value.casefold())
        if letter is None:
            raise _LineError(
                line, f"UUTStatus {value!r} is not one of Passed, Failed, Error, Terminated"
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

        def decimal(text: str) -> float:
            return parse_number(text, self.defaults.decimal_comma)

        numbers = (
            ("execTime", "ExecutionTime", decimal, "a number"),
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
    "MultipleStringValueTest": _UUTBuilder._string_value_test,
    "ActionStep": _UUTBuilder._action_step,
}
# Chart and Series lines have columns of their own, whatever the column header says.
_CHART_LAYOUTS = {
    "Chart": ("StepType", "ChartType", "Label", "YUnit", "YLabel", "XUnit", "XLabel"),
    "Series": ("StepType", "StepName", "DataType", "YData", "XData"),
}
_CHART_TYPES = {
    name.casefold(): name for name in ("Line", "LineLogX", "LineLogY", "LineLogXY", "XYG")
}
MAX_CHART_SERIES = 10
MAX_SERIES_POINTS = 10000


def _has_measurement(measurements: list[dict[str, Any]], name: str | None) -> bool:
    # In the legacy MultipleNumericLimitTest lines the same measure name again is the step's
    # next run (a loop). Other lines group as Virinco's converter does, repeats included.
    return name is not None and any(m.get("name") == name for m in measurements)


def _series_data(row: _Row, column: str, *, required: bool) -> str | None:
    text = row.text(column)
    if not text:
        if required:
            raise row.fail(column, "a Series line needs its data (values separated by ';')")
        return None
    values = text.replace(",", ".").split(";")
    if len(values) > MAX_SERIES_POINTS:
        raise row.fail(column, f"more than {MAX_SERIES_POINTS} values")
    try:
        return ";".join(repr(float(value)).removesuffix(".0") for value in values)
    except ValueError:
        raise row.fail(column, f"{text[:40]!r} is not numbers separated by ';'") from None


def _step(step_type: str, row: _Row, status: str, name: str) -> dict[str, Any]:
    step: dict[str, Any] = {
        "stepType": step_type,
        "name": name,
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
    if step_time is not None and step_time > 0:
        step["totTime"] = step_time
    error_code = row.integer("ErrorCode")
    if error_code is not None:
        step["errorCode"] = error_code
    for column, field in (("ReportText", "reportText"), ("ErrorMessage", "errorMessage")):
        if row.text(column):
            step[field] = row.text(column)
    caused = row.flag("CausedSequenceFailure")
    if caused is not None:
        step["causedSeqFailure"] = caused


def _numeric_measurement(row: _Row, import_mode: bool = False) -> dict[str, Any]:
    value = row.number("Value")
    value = math.nan if value is None else value  # blank is NaN, as in Virinco's converter
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
    computed = "P" if import_mode else numeric_status(value, operator, low, high)
    measurement: dict[str, Any] = {
        "compOp": operator,
        "value": measured_value(value),
        "unit": row.text("Unit"),
        "status": row.status() or computed,
    }
    if limits_needed >= 1:
        measurement["lowLimit"] = measured_value(low)  # type: ignore[arg-type]
    if limits_needed == 2:
        measurement["highLimit"] = measured_value(high)  # type: ignore[arg-type]
    return measurement


def _boolean_measurement(row: _Row, import_mode: bool = False) -> dict[str, Any]:
    status = row.status()
    if status is None:
        value = row.text("Value")
        # A blank value is True, as in Virinco's converter.
        status = BOOLEAN_WORDS.get(value.upper()) if value else "P"
        if status is None:
            raise row.fail(
                "Value", f"a PassFailTest needs a Status, or a Value True/False, not {value!r}"
            )
    return {"status": status}


def _string_measurement(row: _Row, import_mode: bool = False) -> dict[str, Any]:
    value, limit = row.text("Value"), row.text("LowLimit")
    operator = row.text("CompOperator").upper() or ("CASESENSIT" if limit else "LOG")
    if operator not in STRING_OPERATORS:
        raise row.fail(
            "CompOperator",
            f"{operator!r} is not a string compare operator; one of {', '.join(STRING_OPERATORS)}",
        )
    computed = "P" if import_mode or STRING_OPERATORS[operator](value, limit) else "F"
    measurement: dict[str, Any] = {
        "compOp": operator,
        "value": value,
        "status": row.status() or computed,
    }
    if operator != "LOG":
        measurement["limit"] = limit
    return measurement


_MEASUREMENT_READERS: dict[str, Callable[[_Row, bool], dict[str, Any]]] = {
    "numeric": _numeric_measurement,
    "boolean": _boolean_measurement,
    "string": _string_measurement,
}


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
