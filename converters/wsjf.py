"""WSJF: check a report the way a WATS server would, and pass WSJF files through checked.

``validate_report`` runs on every report the station queues, whatever converter made it, so
it is a hand-written walk over the dicts: no copies, no schema library. It checks what a
server rejects (FORMATS.md) and allows unknown keys, because server exports carry
output-only fields.
"""

from __future__ import annotations

import codecs
import json
import math
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from wats_station.converters.base import (
    ConversionError,
    Converter,
    Report,
    canonical_id,
    ensure_report_ids,
    file_head,
)

REPORT_TYPES = frozenset({"T", "R"})
REPORT_RESULTS = frozenset({"P", "F", "D", "E", "T"})
STEP_STATUSES = frozenset({"P", "F", "S", "D", "E", "T"})
STEP_GROUPS = frozenset({"S", "M", "C"})
COMPARE_OPERATORS = frozenset(
    {
        "LOG",
        *("EQ", "NE", "LT", "LE", "GT", "GE"),
        *("GELE", "GELT", "GTLE", "GTLT"),
        *("LTGT", "LTGE", "LEGT", "LEGE"),
        *("CASESENSIT", "IGNORECASE"),
    }
)
SEQUENCE_CALL_TYPES = frozenset({"SequenceCall", "WATS_SeqCall"})
MAX_HEADER_TEXT = 100

_REPORT_LISTS = ("miscInfos", "subUnits", "assets", "binaryData", "additionalData")
# booleanMeas has no compare operator: the status is the whole measurement.
_MEASUREMENT_KINDS = (("numericMeas", True), ("stringMeas", True), ("booleanMeas", False))
# Extended ISO-8601 with an explicit offset; datetime.fromisoformat alone would also accept
# local times without an offset and the basic format, which the server does not.
_START_FORMAT = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})",
    re.ASCII,
)
_JSON_TYPE_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


class InvalidReport(ValueError):
    """A report a WATS server would reject; ``field`` is the path to the first bad field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def validate_report(report: object) -> None:
    """Raise InvalidReport for the first problem a WATS server would reject."""
    if not isinstance(report, dict):
        raise InvalidReport("report", f"must be an object, not {_json_type(report)}")
    _check_header(report)
    if report["type"] == "T":
        _check_object(report, "uut", "a test (T) report needs a uut object")
        root = report.get("root")
        if not isinstance(root, dict):
            raise InvalidReport("root", "a test (T) report needs a root SequenceCall step")
        root_type = root.get("stepType")
        if type(root_type) is not str or root_type not in SEQUENCE_CALL_TYPES:
            raise InvalidReport("root.stepType", "the root step must be a SequenceCall")
        _check_step_tree(root)
    else:
        _check_object(report, "uur", "a repair (R) report needs a uur object")


def report_json(report: Report) -> bytes:
    """A validated report as the bytes the queue stores and the uploader sends: compact UTF-8
    JSON, its id in canonical form. NaN, ±Infinity, text that is not Unicode (a lone surrogate)
    and values JSON has no word for are refused as InvalidReport naming the field."""
    report["id"] = canonical_id(report["id"])
    try:
        text = json.dumps(report, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode()
    except RecursionError:
        raise InvalidReport("report", "nested too deeply to be a report") from None
    except (ValueError, TypeError):  # UnicodeEncodeError is a ValueError
        raise InvalidReport(*_first_unwritable(report)) from None


def _first_unwritable(report: Report) -> tuple[str, str]:
    """(field, reason) for the first value in document order that JSON cannot carry."""
    pending: list[tuple[object, str]] = [(report, "")]
    while pending:
        value, path = pending.pop()
        if isinstance(value, float) and not math.isfinite(value):
            name = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
            return path, f"{name} is not valid JSON; WATS needs a finite number or null"
        if isinstance(value, str) and not _is_unicode(value):
            return path, "text that is not valid Unicode (a lone surrogate)"
        if isinstance(value, dict):
            items = list(value.items())
            for key, child in reversed(items):
                if not isinstance(key, str) or not _is_unicode(key):
                    return f"{path}.{key!r}".lstrip("."), "a key that is not valid Unicode text"
                pending.append((child, f"{path}.{key}".lstrip(".")))
        elif isinstance(value, list):
            pending.extend((value[i], f"{path}[{i}]") for i in range(len(value) - 1, -1, -1))
        elif not isinstance(value, str | int | float | bool | type(None)):
            return path, f"{_json_type(value)} is not a JSON value"
    return "report", "cannot be written as JSON"


def _is_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def serialise_submitted(report: object) -> tuple[str, bytes]:
    """A report given to ``submit_report`` (an object, or its JSON text) as its canonical id and
    the bytes the queue stores (``report_json``); InvalidReport says what is wrong with it."""
    if isinstance(report, (str, bytes)):
        try:
            report = json.loads(report)
        except RecursionError:
            raise InvalidReport("report", "JSON nested too deeply") from None
        except ValueError as error:
            raise InvalidReport("report", f"not valid JSON: {error}") from None
    validate_report(report)
    assert isinstance(report, dict)
    payload = report_json(report)
    return report["id"], payload


def parse_report_bytes(data: bytes, source: str) -> list[Report]:
    """Decode WSJF bytes (one report or a list of reports) into validated reports.

    Reports without an ``id`` get one derived from ``data``, so converting the same bytes
    again yields the same ids. ``source`` names the input in error messages.
    """
    reports = _decode_reports(data, source)
    ensure_report_ids(reports, data)
    for position, report in enumerate(reports):
        try:
            validate_report(report)
        except InvalidReport as error:
            where = f"report [{position}]" if len(reports) > 1 else "report"
            raise ConversionError(f"{source}: invalid {where}: {error}") from None
    return reports


class WSJFConverter(Converter):
    """WSJF files in, the same reports out, checked and with stable ids."""

    name = "wsjf"
    file_patterns = ("*.json",)

    def validate(self, path: Path) -> float:
        start = file_head(path, 64).removeprefix(codecs.BOM_UTF8).lstrip()
        return 0.9 if start[:1] in (b"{", b"[") else 0.1

    def convert(self, path: Path) -> list[Report]:
        return parse_report_bytes(path.read_bytes(), str(path))


def _decode_reports(data: bytes, source: str) -> list[Report]:
    text = _decode_text(data, source)
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise ConversionError(
            f"{source}: malformed JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    except ValueError as error:  # from _refuse_constant
        raise ConversionError(f"{source}: {error}") from None
    except RecursionError:
        raise ConversionError(f"{source}: JSON nested too deeply to be a report") from None
    if isinstance(document, dict):
        return [document]
    if not isinstance(document, list):
        raise ConversionError(
            f"{source}: expected a report object or a list of reports, not {_json_type(document)}"
        )
    if not document:
        raise ConversionError(f"{source}: the list of reports is empty")
    for position, item in enumerate(document):
        if not isinstance(item, dict):
            raise ConversionError(
                f"{source}: item [{position}] must be a report object, not {_json_type(item)}"
            )
    return document


def _decode_text(data: bytes, source: str) -> str:
    if b"\x00" in data:
        raise ConversionError(
            f"{source}: contains NUL bytes, so it is binary data or UTF-16 text; "
            "WSJF files must be UTF-8 JSON"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        bad = error.start
        line = data.count(b"\n", 0, bad) + 1
        column = bad - (data.rfind(b"\n", 0, bad) + 1) + 1
        raise ConversionError(
            f"{source}: not UTF-8 text: byte 0x{data[bad]:02x} at line {line}, column {column}"
        ) from None
    if not text.strip():
        raise ConversionError(f"{source}: the file is empty")
    return text


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; WATS needs a number, a string or null")


def _check_header(report: dict[str, Any]) -> None:
    _check_choice(report, "type", REPORT_TYPES, "type")
    _check_uuid(report.get("id"))
    for key in ("pn", "sn", "rev"):
        _check_text(report, key, required=True)
    process_code = report.get("processCode")
    if type(process_code) is not int:  # bool is an int subclass; the server wants a number
        raise InvalidReport("processCode", _expected("an integer", process_code))
    _check_choice(report, "result", REPORT_RESULTS, "result")
    for key in ("machineName", "location", "purpose"):
        _check_text(report, key, required=False)
    _check_start(report.get("start"))
    for key in _REPORT_LISTS:
        value = report.get(key)
        if value is not None and not isinstance(value, list):
            raise InvalidReport(key, _expected("an array", value))


def _check_uuid(value: object) -> None:
    if type(value) is not str:
        raise InvalidReport("id", _expected("a UUID string", value))
    try:
        uuid.UUID(value)
    except ValueError:
        raise InvalidReport("id", f"{_shown(value)} is not a UUID") from None


def _check_text(report: dict[str, Any], key: str, *, required: bool) -> None:
    value = report.get(key)
    if type(value) is not str:
        raise InvalidReport(key, _expected("a string", value))
    if required and not value.strip():
        raise InvalidReport(key, "must not be empty")
    if len(value) > MAX_HEADER_TEXT:
        raise InvalidReport(
            key, f"is {len(value)} characters long; WATS allows at most {MAX_HEADER_TEXT}"
        )


def _check_start(value: object) -> None:
    if type(value) is not str:
        raise InvalidReport("start", _expected("an ISO-8601 time with a UTC offset", value))
    if not _START_FORMAT.fullmatch(value):
        raise InvalidReport(
            "start",
            f"{_shown(value)} is not an ISO-8601 time with a UTC offset "
            "(like 2026-01-30T22:01:41.47+01:00)",
        )
    try:  # the pattern checks the shape; this checks the ranges (month 13, hour 25)
        datetime.fromisoformat(value)
    except ValueError as error:
        raise InvalidReport("start", f"{_shown(value)} is not a real time: {error}") from None


def _check_object(report: dict[str, Any], key: str, reason: str) -> None:
    value = report.get(key)
    if not isinstance(value, dict):
        raise InvalidReport(key, f"{reason}, not {_json_type(value)}")


def _check_step_tree(root: dict[str, Any]) -> None:
    # An explicit stack instead of recursion: reports from Python converters can nest deeper
    # than the interpreter's recursion limit. Children are pushed reversed so that the first
    # problem reported is the first one in document order.
    pending: list[tuple[object, str]] = [(root, "root")]
    while pending:
        step, path = pending.pop()
        if not isinstance(step, dict):
            raise InvalidReport(path, f"must be a step object, not {_json_type(step)}")
        _check_step(step, path)
        children = step.get("steps")
        # Server exports leave out "steps" for a sequence that ran no steps.
        if children is None:
            continue
        if not isinstance(children, list):
            raise InvalidReport(f"{path}.steps", _expected("an array", children))
        for position in range(len(children) - 1, -1, -1):
            pending.append((children[position], f"{path}.steps[{position}]"))


def _check_step(step: dict[str, Any], path: str) -> None:
    for key in ("stepType", "name"):
        value = step.get(key)
        if type(value) is not str:
            raise InvalidReport(f"{path}.{key}", _expected("a string", value))
    if step.get("status") is not None:
        _check_choice(step, "status", STEP_STATUSES, f"{path}.status")
    if step.get("group") is not None:
        _check_choice(step, "group", STEP_GROUPS, f"{path}.group")
    for key, has_compare_operator in _MEASUREMENT_KINDS:
        measurements = step.get(key)
        if measurements is not None:
            _check_measurements(measurements, f"{path}.{key}", has_compare_operator)


def _check_measurements(measurements: object, path: str, has_compare_operator: bool) -> None:
    if not isinstance(measurements, list):
        raise InvalidReport(
            path,
            f"must be an array, even for one measurement, not {_json_type(measurements)}",
        )
    for position, measurement in enumerate(measurements):
        item_path = f"{path}[{position}]"
        if not isinstance(measurement, dict):
            raise InvalidReport(item_path, _expected("an object", measurement))
        if has_compare_operator:
            _check_compare_operator(measurement.get("compOp"), f"{item_path}.compOp")
        _check_choice(measurement, "status", STEP_STATUSES, f"{item_path}.status")


def _check_compare_operator(value: object, path: str) -> None:
    # Real server exports carry "IgnoreCase": the server parses operators case-insensitively.
    if type(value) is str and value.upper() in COMPARE_OPERATORS:
        return
    choices = ", ".join(sorted(COMPARE_OPERATORS))
    if value is None:
        raise InvalidReport(path, f"is required; one of {choices}")
    raise InvalidReport(path, f"{_shown(value)} is not one of {choices}")


def _check_choice(container: dict[str, Any], key: str, allowed: frozenset[str], path: str) -> None:
    value = container.get(key)
    if type(value) is str and value in allowed:
        return
    choices = ", ".join(sorted(allowed))
    if value is None:
        raise InvalidReport(path, f"is required; one of {choices}")
    raise InvalidReport(path, f"{_shown(value)} is not one of {choices}")


def _expected(what: str, value: object) -> str:
    if value is None:
        return f"is required: {what}"
    return f"must be {what}, not {_json_type(value)}"


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
