"""ATML (IEEE 1636.1 test results) as NI TestStand writes them, to WSJF test reports.

TestStand writes three schema versions: 2.02 (``<tr:TestResults>`` at the root, the main
sequence a ``<tr:TestGroup>`` inside ``<tr:ResultSet>``) and 5.00 and 6.01 (a
``<trc:TestResultsCollection>`` of ``<trc:TestResults>``, one per UUT, the ``<tr:ResultSet>``
itself the main sequence). Elements are found by local name, so the namespaces of the versions
do not matter. Mapping, after Virinco's own ATML converter:

* ``TestGroup`` -> SequenceCall; ``SessionAction`` -> a generic step (Action, NI_Flow_If, ...);
  ``Test`` -> ET_PFT / ET_NLT / ET_MNLT / ET_SVT by its TestStand step type and results.
* Outcomes: Passed, Failed, Error, Terminated, Done, Skipped; NotStarted is Skipped; Aborted
  and UserDefined take their qualifier ("Skipped"), Aborted without one is Terminated.
* Limits: ``LimitPair`` joins its comparators (GT + LT = GTLT), ``SingleLimit`` and
  ``Expected`` give one limit (in lowLimit), a nominal with a threshold gives GELE.
* Header: serial from ``UUT/SerialNumber``, part number from its IdentificationNumber (else the
  partNumber argument), operator from ``Personnel/SystemOperator``, station from
  ``TestStation/SerialNumber``, start and execution time from the ResultSet's times.
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
    local_start,
    measured_value,
    rolled_up_status,
    station_fields,
)
from wats_station.converters.xmltools import (
    ATML_NAMESPACES,
    child,
    children,
    is_atml,
    local,
    parse_xml,
    path,
    text,
)

ARGUMENT_DEFAULTS: dict[str, Any] = {
    # Virinco's defaults, partRevision "10" included
    "operationTypeCode": 10,
    "partNumber": "NA",
    "partRevision": "10",
    "operator": "oper",
    "sequenceVersion": "0.0.0",
    "station_name": None,
    "location": None,
    "purpose": None,
}
OUTCOME_LETTERS = {
    "passed": "P",
    "failed": "F",
    "error": "E",
    "terminated": "T",
    "done": "D",
    "skipped": "S",
    "notstarted": "S",
}
GROUP_LETTERS = {"setup": "S", "main": "M", "cleanup": "C"}
# TestStand step types WATS shows with their own icon; any other action is an "Action".
GENERIC_STEP_TYPES = frozenset(
    {
        "Label", "Action", "Goto", "NI_FTPFiles", "NI_Flow_If", "NI_Flow_ElseIf", "NI_Flow_Else",
        "NI_Flow_End", "NI_Flow_For", "NI_Flow_ForEach", "NI_Flow_Break", "NI_Flow_Continue",
        "NI_Flow_DoWhile", "NI_Flow_While", "NI_Flow_Select", "NI_Flow_Case", "NI_Lock",
        "NI_Rendezvous", "NI_Queue", "NI_Notification", "NI_Wait", "NI_Batch_Sync",
        "NI_AutoSchedule", "NI_UseResource", "NI_ThreadPriority", "NI_Semaphore",
        "NI_BatchSpec", "NI_OpenDatabase", "NI_OpenSQLStatement", "NI_CloseSQLStatement",
        "NI_CloseDatabase", "NI_DataOperation", "NI_IVIDmm", "NI_IVIScope", "NI_IVIFgen",
        "NI_IVIPowerSupply", "NI_Switch", "NI_IVITools", "NI_LV_CheckSystemStatus",
        "NI_LV_RunVIAsynchronously", "MessagePopup", "CallExecutable",
    }
)  # fmt: skip
STEP_ELEMENTS = frozenset({"TestGroup", "SessionAction", "Test"})


class ATMLConverter(Converter):
    """IEEE 1636.1 ATML test results (TestStand 2.02, 5.00, 6.01), one report per UUT."""

    name = "atml"
    file_patterns = ("*.xml",)

    def __init__(self, **arguments: Any) -> None:
        super().__init__(**arguments)
        self.settings = checked_arguments(self.name, arguments, ARGUMENT_DEFAULTS)
        self.station = station_fields(self.settings)

    def validate(self, path: Path) -> float:
        start = file_head(path)
        return 0.95 if any(ns.encode() in start for ns in ATML_NAMESPACES) else 0.0

    def convert(self, path: Path) -> list[Report]:
        content = path.read_bytes()
        root = parse_xml(content, str(path))
        if not is_atml(root):
            from wats_station.converters.recognise import describe_xml_root

            raise ConversionError(f"{path}: this is not ATML: {describe_xml_root(root)}")
        single = local(root.tag) == "TestResults"
        results = [root] if single else list(children(root, "TestResults"))
        if not results:
            raise ConversionError(f"{path}: the TestResultsCollection holds no TestResults")
        try:
            process_code = operation_code(self.settings["operationTypeCode"], self.processes_file)
        except UnknownOperationType as error:
            raise ConversionError(f"{path}: argument operationTypeCode: {error}") from None
        reports = []
        for number, element in enumerate(results, start=1):
            try:
                reports.append(self.report(element, process_code))
            except _Refused as error:
                where = f"TestResults {number} of {len(results)}" if len(results) > 1 else ""
                raise ConversionError(f"{path}: {where}{': ' if where else ''}{error}") from None
        return ensure_report_ids(reports, content)

    def report(self, results: Element, process_code: int) -> Report:
        result_set = child(results, "ResultSet")
        if result_set is None:
            raise _Refused("no <ResultSet>, so no test results")
        main = result_set
        if _step_properties(result_set) is None and child(result_set, "TestGroup") is not None:
            main = child(result_set, "TestGroup")  # 2.02: the main sequence is a TestGroup
        assert main is not None
        root = self.sequence(main)
        outcome = _outcome(child(result_set, "Outcome"))
        root["status"] = outcome or rolled_up_status(s["status"] for s in root["steps"])
        start = result_set.get("startDateTime", "").strip()
        operator = path(results, "Personnel", "SystemOperator")
        station = text(path(results, "TestStation", "SerialNumber"))
        uut: dict[str, Any] = {
            "user": (operator.get("ID") or operator.get("name") if operator is not None else None)
            or str(self.settings["operator"])
        }
        exec_time = _seconds_between(start, result_set.get("endDateTime", "").strip())
        if exec_time is not None:
            uut["execTime"] = exec_time
        properties = path(results, "Extension", "TSResultSetProperties")
        batch = text(child(properties, "BatchSerialNumber"))
        if batch:
            uut["batchSN"] = batch
        socket = text(child(properties, "TestSocketIndex"))
        if socket.lstrip("-").isdigit():
            uut["testSocketIndex"] = int(socket)
        root["seqCall"]["version"] = str(self.settings["sequenceVersion"])
        try:
            start_text = local_start(start) if start else None
        except ValueError as error:
            raise _Refused(f"ResultSet startDateTime: {error}") from None
        if start_text is None:
            raise _Refused("the ResultSet has no startDateTime")
        return {
            "type": "T",
            "pn": _part_number(results) or str(self.settings["partNumber"]),
            "sn": text(path(results, "UUT", "SerialNumber")) or "NA",
            "rev": str(self.settings["partRevision"]),
            "processCode": process_code,
            "result": _RESULTS.get(root["status"], "D"),
            "machineName": station or self.station["machineName"],
            "location": self.station["location"],
            "purpose": self.station["purpose"],
            "start": start_text,
            "uut": uut,
            "root": root,
        }

    def sequence(self, element: Element) -> dict[str, Any]:
        file_name, _, sequence = element.get("name", "").partition("#")
        name = element.get("callerName") or sequence or file_name
        step = _common_step(element, "SequenceCall", name)
        step["seqCall"] = {"path": file_name, "name": sequence or name, "version": ""}
        step["steps"] = [self.step(item) for item in element if local(item.tag) in STEP_ELEMENTS]
        outcome = _outcome(child(element, "Outcome"))
        step["status"] = outcome or rolled_up_status(s["status"] for s in step["steps"])
        return step

    def step(self, element: Element) -> dict[str, Any]:
        kind = local(element.tag)
        if kind == "TestGroup":
            return self.sequence(element)
        name = element.get("name", "")
        step_type = text(child(_step_properties(element), "StepType"))
        if kind == "SessionAction":
            step_type = step_type.replace("Statement", "Action")
            step = _common_step(
                element, step_type if step_type in GENERIC_STEP_TYPES else "Action", name
            )
            step["status"] = _outcome(child(element, "ActionOutcome")) or "D"
            return step
        return _test_step(element, step_type, name)


class _Refused(Exception):
    pass


_RESULTS = {"P": "P", "F": "F", "E": "E", "T": "T", "D": "D", "S": "D"}


def _step_properties(element: Element) -> Element | None:
    return path(element, "Extension", "TSStepProperties")


def _common_step(element: Element, step_type: str, name: str) -> dict[str, Any]:
    properties = _step_properties(element)
    group = GROUP_LETTERS.get(text(child(properties, "StepGroup")).casefold(), "M")
    step: dict[str, Any] = {"stepType": step_type, "name": name, "group": group, "status": "D"}
    total = child(properties, "TotalTime")
    if total is not None and _number(total.get("value")) is not None:
        step["totTime"] = _number(total.get("value"))
    caused = child(properties, "StepCausedSequenceFailure")
    if caused is not None and caused.get("value", "").casefold() == "true":
        step["causedSeqFailure"] = True
    report_text = _report_text(element)
    if report_text:
        step["reportText"] = report_text
    return step


def _report_text(element: Element) -> str:
    for item in children(path(element, "Data", "Collection"), "Item"):
        if item.get("name") == "ReportText":
            return text(path(item, "Datum", "Value"))
    for result in children(element, "TestResult"):
        if _is_report_text(result):
            return text(path(result, "TestData", "Datum", "Value"))
    return ""


def _is_report_text(result: Element) -> bool:
    return "ReportText" in (result.get("name"), result.get("Name"))


def _test_step(element: Element, step_type: str, name: str) -> dict[str, Any]:
    outcome = _outcome(child(element, "Outcome")) or "D"
    results = [r for r in children(element, "TestResult") if not _is_report_text(r)]
    if step_type == "PassFailTest":
        step = _common_step(element, "ET_PFT", name)
        step["booleanMeas"] = [{"status": "F" if outcome == "F" else "P"}]
    elif step_type == "StringValueTest":
        step = _common_step(element, "ET_SVT", name)
        string_results = [r for r in results if path(r, "TestData", "Datum") is not None]
        if string_results:
            step["stringMeas"] = [_string_measurement(r, outcome) for r in string_results[:1]]
    else:
        # Like TestStand's ATML style sheet (and Virinco's converter): a measurement has limits
        # or is marked as logged; other results with data are additional results.
        numeric = [r for r in results if _datum_value(r) is not None and _is_measurement(r)]
        if step_type not in ("NumericLimitTest", "NI_MultipleNumericLimitTest") and not numeric:
            return {**_common_step(element, step_type or "Action", name), "status": outcome}
        several = len(numeric) > 1 or step_type == "NI_MultipleNumericLimitTest"
        step = _common_step(element, "ET_MNLT" if several else "ET_NLT", name)
        if numeric:  # a step that did not run (Skipped) measured nothing
            step["numericMeas"] = [_numeric_measurement(r, outcome, several) for r in numeric]
    step["status"] = outcome
    return step


def _is_measurement(result: Element) -> bool:
    return (
        child(result, "TestLimits") is not None
        or path(result, "Extension", "TSLimitProperties", "IsComparisonTypeLog") is not None
    )


def _datum_value(result: Element) -> str | None:
    datum = path(result, "TestData", "Datum")
    return datum.get("value") if datum is not None else None


def _numeric_measurement(result: Element, outcome: str, named: bool) -> dict[str, Any]:
    datum = path(result, "TestData", "Datum")
    assert datum is not None
    value = _number(datum.get("value"))
    status = _outcome(child(result, "Outcome")) or outcome
    operator, low, high = _limits(path(result, "TestLimits", "Limits"))
    measurement: dict[str, Any] = {
        "compOp": operator,
        "value": measured_value(math.nan if value is None else value),
        "unit": datum.get("nonStandardUnit") or datum.get("standardUnit") or "",
        "status": "P" if status == "D" else status,
    }
    if named:
        measurement = {"name": result.get("name") or result.get("ID") or "", **measurement}
    if low is not None:
        measurement["lowLimit"] = measured_value(low)
    if high is not None:
        measurement["highLimit"] = measured_value(high)
    return measurement


def _limits(limits: Element | None) -> tuple[str, float | None, float | None]:
    """(compare operator, low, high) of a <Limits> element; LOG when there is none."""
    pair = child(limits, "LimitPair")
    if pair is not None:
        ends = list(children(pair, "Limit"))
        if len(ends) == 2:
            operator = "".join(end.get("comparator", "").upper() for end in ends)
            low, high = (_number(_limit_value(end)) for end in ends)
            return operator, low, high
    single = child(limits, "SingleLimit")
    if single is not None:
        return single.get("comparator", "").upper(), _number(_limit_value(single)), None
    expected = child(limits, "Expected")
    if expected is not None:
        raw = path(limits, "Extension", "TSLimitProperties")
        if child(raw, "ThresholdType") is not None:
            return ("GELE", *_threshold_limits(raw))
        return expected.get("comparator", "EQ").upper(), _number(_limit_value(expected)), None
    return "LOG", None, None


def _limit_value(limit: Element) -> str | None:
    datum = child(limit, "Datum")
    return datum.get("value") if datum is not None else None


def _threshold_limits(properties: Element | None) -> tuple[float | None, float | None]:
    raw = child(properties, "RawLimits")

    def value(name: str) -> float:
        element = child(raw, name)
        number = _number(element.get("value")) if element is not None else None
        return math.nan if number is None else number

    nominal, low, high = value("Nominal"), value("Low"), value("High")
    kind = text(child(properties, "ThresholdType")).casefold()
    scale = {"percentage": abs(nominal) / 100, "ppm": abs(nominal) / 1e6}.get(kind, 1.0)
    return (
        None if math.isnan(low) else nominal - low * scale,
        None if math.isnan(high) else nominal + high * scale,
    )


def _string_measurement(result: Element, outcome: str) -> dict[str, Any]:
    value = text(path(result, "TestData", "Datum", "Value"))
    expected = path(result, "TestLimits", "Limits", "Expected")
    status = _outcome(child(result, "Outcome")) or outcome
    measurement: dict[str, Any] = {
        "compOp": "LOG",
        "value": value,
        "status": "P" if status == "D" else status,
    }
    if expected is not None:
        measurement["compOp"] = (
            "IGNORECASE" if expected.get("comparator") == "CIEQ" else ("CASESENSIT")
        )
        measurement["limit"] = text(path(expected, "Datum", "Value"))
    return measurement


def _outcome(element: Element | None) -> str | None:
    if element is None:
        return None
    value = element.get("value", "")
    if value in ("UserDefined", "Aborted"):
        qualifier = element.get("qualifier")
        if not qualifier:
            return "T" if value == "Aborted" else "D"
        value = qualifier
    return OUTCOME_LETTERS.get(value.replace(" ", "").casefold(), "D")


def _number(raw: str | None) -> float | None:
    if raw is None or not raw.strip():
        return None
    text_value = raw.strip()
    if text_value.lower().startswith(("0x", "-0x")):
        return float(int(text_value, 16))
    named = {"inf": math.inf, "+inf": math.inf, "infinity": math.inf, "-inf": -math.inf,
             "-infinity": -math.inf, "nan": math.nan, "ind": math.nan}  # fmt: skip
    if text_value.lower() in named:
        return named[text_value.lower()]
    try:
        return float(text_value)
    except ValueError:
        raise _Refused(f"{raw!r} is not a number") from None


def _part_number(results: Element) -> str:
    numbers = list(
        children(
            path(results, "UUT", "Definition", "Identification", "IdentificationNumbers"),
            "IdentificationNumber",
        )
    )
    preferred = [n for n in numbers if n.get("type", "").casefold() == "part"] or numbers
    return next((n.get("number", "").strip() for n in preferred if n.get("number")), "")


def _seconds_between(start: str, end: str) -> float | None:
    try:
        elapsed = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    except ValueError:
        return None
    return round(elapsed.total_seconds(), 6)
