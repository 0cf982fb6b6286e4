"""OpenHTF JSON test records (the JSON output callback) to WSJF test reports.

* ``dut_id`` is the serial number; ``station_id`` the station; ``outcome`` (PASS, FAIL, ERROR,
  TIMEOUT, ABORTED) the result; ``start_time_millis``/``end_time_millis`` (epoch milliseconds)
  the start, in the station's time zone, and the execution time.
* ``metadata.test_name`` names the root sequence; other plain metadata values become misc infos.
* Each phase is a step: without measurements an Action; with measurements of one kind (numbers,
  booleans, text) a numeric, pass/fail or string step, whose measurements keep their names when
  they differ from the phase's; with several kinds a sequence call holding one step per kind.
  Phases of a subtest sit in a sequence call named after it.
* Validators become compare operators and limits: ``0 <= x <= 10`` GELE, ``x >= 5`` GE,
  ``x == 'abc'`` a case-sensitive string compare; a validator with no WATS equivalent (a regex,
  "within percent") is kept in the step's report text and the measurement is logged (LOG).
* Phase attachments are kept: the first on the phase's step, the others on Action steps of
  their own.

What the record lacks comes from the arguments: partNumber, partRevision, operationTypeCode
(a code or a process name) and operator.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
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
from wats_station.converters.wstf import (
    checked_arguments,
    measured_value,
    rolled_up_status,
    station_fields,
)

ARGUMENT_DEFAULTS: dict[str, Any] = {
    "partNumber": "NA",
    "partRevision": "NA",
    "operationTypeCode": 10,
    "operator": "oper",
    "station_name": None,
    "location": None,
    "purpose": None,
}
RESULTS = {"PASS": "P", "FAIL": "F", "ERROR": "E", "TIMEOUT": "T", "ABORTED": "T"}
PHASE_STATUSES = {"PASS": "P", "FAIL": "F", "SKIP": "S", "ERROR": "E"}
MEASUREMENT_STATUSES = {"PASS": "P", "FAIL": "F"}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan"
_RANGE = re.compile(rf"^({_NUMBER})\s*(<=|<)\s*x\s*(<=|<)\s*({_NUMBER})$", re.IGNORECASE)
_ONE_SIDE = re.compile(rf"^x\s*(<=|<|>=|>|==|!=)\s*({_NUMBER})$", re.IGNORECASE)
_EQUALS_TEXT = re.compile(r"^x\s*(==|!=)\s*(['\"])(.*)\2$", re.DOTALL)
_ONE_SIDE_OPERATORS = {"<=": "LE", "<": "LT", ">=": "GE", ">": "GT", "==": "EQ", "!=": "NE"}
_RANGE_OPERATORS = {("<=", "<="): "GELE", ("<=", "<"): "GELT", ("<", "<="): "GTLE",
                    ("<", "<"): "GTLT"}  # fmt: skip
_KINDS = {
    "numeric": ("ET_NLT", "ET_MNLT", "numericMeas"),
    "boolean": ("ET_PFT", "ET_MPFT", "booleanMeas"),
    "string": ("ET_SVT", "ET_MSVT", "stringMeas"),
}


def is_openhtf(document: object) -> bool:
    return isinstance(document, dict) and "dut_id" in document and "phases" in document


class OpenHTFConverter(Converter):
    """OpenHTF JSON test records (``*.json``), one WSJF test report per record."""

    name = "openhtf"
    file_patterns = ("*.json",)

    def __init__(self, **arguments: Any) -> None:
        super().__init__(**arguments)
        self.settings = checked_arguments(self.name, arguments, ARGUMENT_DEFAULTS)
        self.station = station_fields(self.settings)

    def validate(self, path: Path) -> float:
        start = file_head(path)
        return 0.9 if b'"dut_id"' in start or b'"phases"' in start else 0.0

    def convert(self, path: Path) -> list[Report]:
        content = path.read_bytes()
        try:
            document = json.loads(content)
        except (ValueError, UnicodeDecodeError) as error:
            raise ConversionError(f"{path}: not valid JSON: {error}") from None
        records = document if isinstance(document, list) else [document]
        if not records or not all(is_openhtf(record) for record in records):
            raise ConversionError(
                f"{path}: this is not an OpenHTF test record (no dut_id and phases)"
            )
        try:
            process_code = operation_code(self.settings["operationTypeCode"], self.processes_file)
        except UnknownOperationType as error:
            raise ConversionError(f"{path}: argument operationTypeCode: {error}") from None
        reports = []
        for number, record in enumerate(records, start=1):
            try:
                reports.append(self.report(record, process_code))
            except (_Refused, TypeError, ValueError, KeyError) as error:
                where = f"record {number}: " if len(records) > 1 else ""
                raise ConversionError(f"{path}: {where}{error}") from None
        return ensure_report_ids(reports, content)

    def report(self, record: dict[str, Any], process_code: int) -> Report:
        serial = str(record.get("dut_id") or "").strip()
        if not serial:
            raise _Refused("dut_id is empty: the record names no unit")
        metadata = record.get("metadata") or {}
        started = record.get("start_time_millis")
        if not isinstance(started, int | float):
            raise _Refused("start_time_millis is missing")
        root_name = str(metadata.get("test_name") or "OpenHTF test")
        root: dict[str, Any] = {
            "stepType": "SequenceCall",
            "name": root_name,
            "group": "M",
            "status": "P",
            "seqCall": {"path": root_name, "name": root_name, "version": ""},
            "steps": _steps(record.get("phases") or []),
        }
        result = RESULTS.get(str(record.get("outcome", "")).upper())
        root["status"] = result or rolled_up_status(s["status"] for s in root["steps"])
        uut: dict[str, Any] = {
            "user": str(metadata.get("operator_name") or self.settings["operator"])
        }
        ended = record.get("end_time_millis")
        if isinstance(ended, int | float) and ended >= started:
            uut["execTime"] = (ended - started) / 1000
        details = record.get("outcome_details") or []
        if details:
            uut["errorMessage"] = "; ".join(
                f"{d.get('code', '')}: {d.get('description', '')}".strip(": ") for d in details
            )[:200]
        config = metadata.get("config") if isinstance(metadata.get("config"), dict) else {}
        station = record.get("station_id") or config.get("station_id")
        report: Report = {
            "type": "T",
            "pn": str(metadata.get("part_number") or self.settings["partNumber"]),
            "sn": serial,
            "rev": str(metadata.get("part_revision") or self.settings["partRevision"]),
            "processCode": process_code,
            "result": root["status"] if root["status"] in RESULTS.values() else "P",
            "machineName": str(station or self.station["machineName"]),
            "location": self.station["location"],
            "purpose": self.station["purpose"],
            "start": _moment(started),
            "uut": uut,
            "root": root,
        }
        misc = [
            {"description": key, "text": str(value)}
            for key, value in metadata.items()
            if key not in ("test_name", "config", "operator_name", "part_number", "part_revision")
            and isinstance(value, str | int | float | bool)
        ]
        if misc:
            report["miscInfos"] = misc
        return report


class _Refused(Exception):
    pass


def _moment(millis: float) -> str:
    return datetime.fromtimestamp(millis / 1000).astimezone().isoformat(timespec="milliseconds")


def _steps(phases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Phases as steps; consecutive phases of one subtest go into a sequence call for it."""
    steps: list[dict[str, Any]] = []
    for phase in phases:
        subtest = phase.get("subtest_name")
        made = _phase_steps(phase)
        if not subtest:
            steps.extend(made)
            continue
        if not steps or steps[-1].get("subtest") != subtest:
            steps.append(
                {
                    "stepType": "SequenceCall",
                    "name": str(subtest),
                    "group": "M",
                    "status": "P",
                    "seqCall": {"path": str(subtest), "name": str(subtest), "version": ""},
                    "steps": [],
                    "subtest": subtest,
                }
            )
        steps[-1]["steps"].extend(made)
        steps[-1]["status"] = rolled_up_status(s["status"] for s in steps[-1]["steps"])
    for step in steps:
        step.pop("subtest", None)
    return steps


def _phase_steps(phase: dict[str, Any]) -> list[dict[str, Any]]:
    name = str(phase.get("name") or "phase")
    status = PHASE_STATUSES.get(str(phase.get("outcome", "")).upper(), "D")
    measurements = [
        m for m in (phase.get("measurements") or {}).values()
        if isinstance(m, dict) and "measured_value" in m
    ]  # fmt: skip
    by_kind: dict[str, list[dict[str, Any]]] = {}
    notes: list[str] = []
    for measurement in measurements:
        kind, converted, note = _measurement(measurement)
        by_kind.setdefault(kind, []).append(converted)
        if note:
            notes.append(note)
    if not by_kind:
        step = _base_step("Action", name, status, phase)
    elif len(by_kind) == 1:
        [(kind, items)] = by_kind.items()
        step = _measurement_step(kind, items, name, status, phase)
    else:
        step = _base_step("SequenceCall", name, status, phase)
        step["seqCall"] = {"path": name, "name": name, "version": ""}
        step["steps"] = [
            _measurement_step(kind, items, f"{name} ({kind})", _worst(items), {})
            for kind, items in by_kind.items()
        ]
    if notes:
        step["reportText"] = "; ".join(notes)[:5000]
    steps = [step]
    attachments = list(_attachments(phase))
    if attachments:
        step["attachment"] = attachments[0]
        steps += [
            {"stepType": "Action", "name": item["name"], "group": "M", "status": "D",
             "attachment": item}
            for item in attachments[1:]
        ]  # fmt: skip
    return steps


def _base_step(step_type: str, name: str, status: str, phase: dict[str, Any]) -> dict[str, Any]:
    step: dict[str, Any] = {"stepType": step_type, "name": name, "group": "M", "status": status}
    start, end = phase.get("start_time_millis"), phase.get("end_time_millis")
    if isinstance(start, int | float) and isinstance(end, int | float) and end >= start:
        step["totTime"] = (end - start) / 1000
    return step


def _measurement_step(
    kind: str, items: list[dict[str, Any]], name: str, status: str, phase: dict[str, Any]
) -> dict[str, Any]:
    single, multiple, key = _KINDS[kind]
    named = len(items) > 1 or items[0].get("name") != name
    step = _base_step(multiple if named else single, name, status, phase)
    step[key] = items if named else [{k: v for k, v in items[0].items() if k != "name"}]
    return step


def _worst(items: list[dict[str, Any]]) -> str:
    return rolled_up_status(item["status"] for item in items)


def _measurement(measurement: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """(kind, the WSJF measurement, a note for the report text) of one OpenHTF measurement."""
    name = str(measurement.get("name") or "")
    value = measurement.get("measured_value")
    status = MEASUREMENT_STATUSES.get(str(measurement.get("outcome", "")).upper(), "D")
    validators = [str(v) for v in measurement.get("validators") or []]
    if isinstance(value, bool):
        return "boolean", {"name": name, "status": status}, ""
    if isinstance(value, int | float):
        operator, low, high, note = _numeric_limits(validators)
        item: dict[str, Any] = {
            "name": name,
            "compOp": operator,
            "value": measured_value(float(value)),
            "unit": _unit(measurement.get("units")),
            "status": status,
        }
        if low is not None:
            item["lowLimit"] = measured_value(low)
        if high is not None:
            item["highLimit"] = measured_value(high)
        return "numeric", item, note and f"{name}: {note}"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    item = {"name": name, "compOp": "LOG", "value": text[:1000], "status": status}
    for validator in validators:
        match = _EQUALS_TEXT.match(validator.strip())
        if match and match.group(1) == "==":
            item["compOp"], item["limit"] = "CASESENSIT", match.group(3)
            break
    notes = [v for v in validators if not _EQUALS_TEXT.match(v.strip())]
    return "string", item, f"{name}: {', '.join(notes)}" if notes else ""


def _numeric_limits(validators: list[str]) -> tuple[str, float | None, float | None, str]:
    for validator in validators:
        text = validator.strip()
        match = _RANGE.match(text)
        if match:
            low, first, second, high = match.groups()
            return _RANGE_OPERATORS[(first, second)], float(low), float(high), ""
        match = _ONE_SIDE.match(text)
        if match:
            return _ONE_SIDE_OPERATORS[match.group(1)], float(match.group(2)), None, ""
    return "LOG", None, None, ", ".join(validators)


def _unit(units: object) -> str:
    if isinstance(units, dict):
        return str(units.get("suffix") or units.get("name") or "")
    return "" if units is None else str(units)


def _attachments(phase: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    attachments = phase.get("attachments") or {}
    for name, attachment in attachments.items():
        if not isinstance(attachment, dict):
            continue
        item: dict[str, Any] = {"name": str(name)}
        if attachment.get("mimetype"):
            item["contentType"] = str(attachment["mimetype"])
        if isinstance(attachment.get("data"), str):
            item["data"] = attachment["data"]
        found.append(item)
    return found
