"""NI TestStand's XML report (``<Reports><Report Type='UUT'>`` with ``<Prop>`` trees) to WSJF.

TestStand writes every result as a ``<Prop Type='TEResult'>``: ``Status``, ``Error``,
``ReportText``, ``TS`` (StepName, StepType, StepGroup, TotalTime and, for a sequence call,
``SequenceCall.ResultList``) and the measurement: ``PassFail``, ``Numeric`` with ``Limits``,
``Comp`` and ``Units``, ``String`` with ``Limits.String``, or a ``Measurement`` array (multiple
numeric limit steps). The report's ``UUT`` prop gives serial and part number, ``StationInfo``
the station and operator, ``StartDate``/``StartTime`` the local start. Step types WATS knows
by name (NI_Flow_If, Action, ...) are kept as they are. A part number the report leaves empty
comes from the partNumber argument.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

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
    station_fields,
)
from wats_station.converters.xmltools import local, parse_xml

ARGUMENT_DEFAULTS: dict[str, Any] = {
    "operationTypeCode": 10,  # a code, or a name looked up in the server's process list
    "partNumber": "NA",
    "partRevision": "NA",
    "operator": "oper",
    "station_name": None,
    "location": None,
    "purpose": None,
}
STATUS_LETTERS = {
    "passed": "P",
    "failed": "F",
    "done": "D",
    "skipped": "S",
    "error": "E",
    "terminated": "T",
    "aborted": "T",
}
GROUP_LETTERS = {"setup": "S", "main": "M", "cleanup": "C"}
COMPARE_WORDS = {"ignorecase": "IGNORECASE", "casesensitive": "CASESENSIT", "log": "LOG"}
_STEP_TYPES = {
    "PassFailTest": "ET_PFT",
    "NumericLimitTest": "ET_NLT",
    "NI_MultipleNumericLimitTest": "ET_MNLT",
    "StringValueTest": "ET_SVT",
    "NI_MultipleStringValueTest": "ET_MSVT",
}


def is_teststand_xml(root: Element) -> bool:
    return local(root.tag) == "Reports" and any(
        local(item.tag) == "Report" and item.get("Type") for item in root
    )


class TestStandXMLConverter(Converter):
    """NI TestStand XML reports, one WSJF test report per ``<Report Type='UUT'>``."""

    __test__ = False  # not a pytest test class, whatever its name says
    name = "teststand-xml"
    file_patterns = ("*.xml",)

    def __init__(self, **arguments: Any) -> None:
        super().__init__(**arguments)
        self.settings = checked_arguments(self.name, arguments, ARGUMENT_DEFAULTS)
        self.station = station_fields(self.settings)

    def validate(self, path: Path) -> float:
        start = file_head(path)
        return 0.9 if b"<Reports>" in start and b"<Report Type=" in start else 0.0

    def convert(self, path: Path) -> list[Report]:
        content = path.read_bytes()
        root = parse_xml(content, str(path))
        if not is_teststand_xml(root):
            from wats_station.converters.recognise import describe_xml_root

            raise ConversionError(
                f"{path}: this is not a TestStand XML report: {describe_xml_root(root)}"
            )
        uuts = [item for item in root if local(item.tag) == "Report" and item.get("Type") == "UUT"]
        if not uuts:
            kinds = sorted({item.get("Type", "?") for item in root})
            raise ConversionError(f"{path}: no UUT report in the file (only {', '.join(kinds)})")
        try:
            process_code = operation_code(self.settings["operationTypeCode"], self.processes_file)
        except UnknownOperationType as error:
            raise ConversionError(f"{path}: argument operationTypeCode: {error}") from None
        reports = []
        for number, element in enumerate(uuts, start=1):
            try:
                reports.append(self.report(element, process_code))
            except _Refused as error:
                raise ConversionError(f"{path}: UUT report {number}: {error}") from None
        return ensure_report_ids(reports, content)

    def report(self, element: Element, process_code: int) -> Report:
        props = _props(element)
        main = next(
            (p for p in element if local(p.tag) == "Prop" and p.get("Type") == "TEResult"), None
        )
        if main is None:
            raise _Refused("no main sequence result (<Prop Type='TEResult'>)")
        root = _step(main)
        if root["stepType"] != "SequenceCall":
            raise _Refused(f"the main result is a {root['stepType']}, not a sequence call")
        uut = _props(props.get("UUT"))
        station = _props(props.get("StationInfo"))
        info: dict[str, Any] = {
            "user": _value(station.get("LoginName")) or str(self.settings["operator"])
        }
        total = _number(_value(_props(_props(main).get("TS")).get("TotalTime")))
        if total is not None and math.isfinite(total):
            info["execTime"] = total
        if _value(uut.get("BatchSerialNumber")):
            info["batchSN"] = _value(uut.get("BatchSerialNumber"))
        socket = _number(_value(uut.get("TestSocketIndex")))
        if socket is not None and socket >= 0:
            info["testSocketIndex"] = int(socket)
        serial = _value(uut.get("SerialNumber"))
        if not serial:
            raise _Refused("the UUT has no SerialNumber")
        result = STATUS_LETTERS.get(element.get("UUTResult", "").casefold(), root["status"])
        return {
            "type": "T",
            "pn": _value(uut.get("PartNumber")) or str(self.settings["partNumber"]),
            "sn": serial,
            "rev": str(self.settings["partRevision"]),
            "processCode": process_code,
            "result": "D" if result == "S" else result,
            "machineName": _value(station.get("StationID")) or self.station["machineName"],
            "location": self.station["location"],
            "purpose": self.station["purpose"],
            "start": _start(props),
            "uut": info,
            "root": root,
        }


class _Refused(Exception):
    pass


def _props(element: Element | None) -> dict[str, Element]:
    """The named <Prop> children of an element, by name."""
    if element is None:
        return {}
    return {p.get("Name", ""): p for p in element if local(p.tag) == "Prop" and p.get("Name")}


def _value(prop: Element | None) -> str:
    if prop is None:
        return ""
    value = next((v for v in prop if local(v.tag) == "Value"), None)
    return (value.text or "").strip() if value is not None else ""


def _number(text: str) -> float | None:
    if not text:
        return None
    named = {"nan": math.nan, "+inf": math.inf, "inf": math.inf, "-inf": -math.inf}
    if text.casefold() in named:
        return named[text.casefold()]
    try:
        return float(text)
    except ValueError:
        raise _Refused(f"{text!r} is not a number") from None


def _start(props: dict[str, Element]) -> str:
    date, time = _props(props.get("StartDate")), _props(props.get("StartTime"))
    try:
        parts = [int(_number(_value(p)) or 0) for p in (date.get("Year"), date.get("Month"),
                 date.get("MonthDay"), time.get("Hours"), time.get("Minutes"),
                 time.get("Seconds"), time.get("Milliseconds"))]  # fmt: skip
        year, month, day, hours, minutes, seconds, milliseconds = parts
        moment = datetime(year, month, day, hours, minutes, seconds, milliseconds * 1000)
    except (TypeError, ValueError) as error:
        raise _Refused(f"StartDate/StartTime is not a date and time: {error}") from None
    # TestStand writes the station's local time; its offset is the station's.
    return moment.astimezone().isoformat()


def _step(result: Element) -> dict[str, Any]:
    props = _props(result)
    ts = _props(props.get("TS"))
    step_type = _value(ts.get("StepType"))
    status = STATUS_LETTERS.get(_value(props.get("Status")).casefold(), "D")
    step: dict[str, Any] = {
        "stepType": _STEP_TYPES.get(step_type, step_type or "Action"),
        "name": _value(ts.get("StepName")),
        "group": GROUP_LETTERS.get(_value(ts.get("StepGroup")).casefold(), "M"),
        "status": status,
    }
    total = _number(_value(ts.get("TotalTime")))
    if total is not None and math.isfinite(total):
        step["totTime"] = total
    if _value(props.get("ReportText")):
        step["reportText"] = _value(props.get("ReportText"))
    error = _props(props.get("Error"))
    if _value(error.get("Occurred")).casefold() == "true":
        code = _number(_value(error.get("Code")))
        if code is not None and math.isfinite(code):
            step["errorCode"] = int(code)
        if _value(error.get("Msg")):
            step["errorMessage"] = _value(error.get("Msg"))
    call = _props(ts.get("SequenceCall"))
    if step_type == "SequenceCall" or call:
        step["stepType"] = "SequenceCall"
        step["seqCall"] = {
            "path": _value(call.get("SequenceFile")),
            "name": _value(call.get("Sequence")),
            "version": _value(call.get("SequenceFileVersion")),
        }
        step["steps"] = [_step(item) for item in _array_items(call.get("ResultList"))]
        return step
    _add_measurements(step, props, status)
    return step


def _array_items(array: Element | None) -> list[Element]:
    """The element props of a TestStand array (<Value ID='[i]'><Prop .../></Value>)."""
    if array is None:
        return []
    items = []
    for value in array:
        if local(value.tag) == "Value":
            items.extend(p for p in value if local(p.tag) == "Prop")
        elif local(value.tag) == "Prop":  # some writers leave out the <Value> wrapper
            items.append(value)
    return items


def _add_measurements(step: dict[str, Any], props: dict[str, Element], status: str) -> None:
    measured = "P" if status in ("D", "S") else status
    if "PassFail" in props:
        passed = _value(props["PassFail"]).casefold() == "true"
        step["booleanMeas"] = [{"status": "P" if passed or status == "S" else "F"}]
        if step["stepType"] not in ("ET_PFT", "ET_MPFT"):
            step["stepType"] = "ET_PFT"
    elif "Numeric" in props:
        step["numericMeas"] = [_numeric(props, measured)]
        if step["stepType"] not in ("ET_NLT", "ET_MNLT"):
            step["stepType"] = "ET_NLT"
    elif "String" in props:
        step["stringMeas"] = [_string(props, measured)]
        if step["stepType"] not in ("ET_SVT", "ET_MSVT"):
            step["stepType"] = "ET_SVT"
    elif "Measurement" in props:
        # NI_LimitMeasurement elements: the Prop's Name is the measurement's name.
        elements = _array_items(props["Measurement"])
        step["numericMeas"] = [
            {"name": element.get("Name") or f"Measurement {n}",
             **_numeric(_props(element), measured, value_name="Data")}
            for n, element in enumerate(elements)
        ]  # fmt: skip
        step["stepType"] = "ET_MNLT"


def _numeric(props: dict[str, Element], status: str, value_name: str = "Numeric") -> dict[str, Any]:
    value = _number(_value(props.get(value_name)))
    value = math.nan if value is None else value
    limits = _props(props.get("Limits"))
    low, high = _number(_value(limits.get("Low"))), _number(_value(limits.get("High")))
    operator = _value(props.get("Comp")).upper() or "LOG"
    if operator in ("EQ", "NE", "GT", "GE", "LT", "LE") and low is None:
        low, high = high, None
    # TestStand compared already: a measurement's own Status, else its step's, is the verdict.
    own_status = STATUS_LETTERS.get(_value(props.get("Status")).casefold(), status)
    measurement: dict[str, Any] = {
        "compOp": operator,
        "value": measured_value(value),
        "unit": _value(props.get("Units")),
        "status": "P" if own_status in ("D", "S") else own_status,
    }
    if operator != "LOG" and low is not None:
        measurement["lowLimit"] = measured_value(low)
    if operator != "LOG" and high is not None and len(operator) == 4:
        measurement["highLimit"] = measured_value(high)
    return measurement


def _string(props: dict[str, Element], status: str) -> dict[str, Any]:
    limits = _props(props.get("Limits"))
    comp = _value(props.get("Comp"))
    operator = COMPARE_WORDS.get(comp.casefold(), comp.upper() or "LOG")
    measurement: dict[str, Any] = {
        "compOp": operator,
        "value": _value(props.get("String")),
        "status": status,
    }
    if operator != "LOG":
        measurement["limit"] = _value(limits.get("String"))
    return measurement
