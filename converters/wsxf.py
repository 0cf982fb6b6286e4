"""WSXF: turn WATS Standard XML Format files into WSJF reports.

The mapping follows the matched pair of server exports in tests/data/samples (the same test
run exported as WSXF and as WSJF). Parsing goes through defusedxml: a DTD that declares
entities or refers to external ones is refused before anything is expanded or fetched.
Elements this converter cannot map are refused rather than dropped, so no test data is lost
without a person seeing why.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, ParseError, TreeBuilder
from xml.parsers import expat

from defusedxml import DefusedXmlException, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser

from wats_station.converters.base import ConversionError, Converter, Report, ensure_report_ids
from wats_station.converters.wsjf import InvalidReport, validate_report

WSXF_NAMESPACE = "http://wats.virinco.com/schemas/WATS/Report/wsxf"

# Keys of a server's WSJF export that a client never sends, so a converted WSXF file lacks them.
SERVER_SIDE_KEYS = frozenset(
    {
        "origin",  # the server records which client installation submitted the report
        "productName",  # looked up by the server from pn in its product register
        "processName",  # looked up by the server from processCode in its process list
        "processCodeFormat",  # the server's display format for the process code
        "startUTC",  # computed by the server from start and its UTC offset
        "assetStats",  # the server's usage statistics of the assets at report time
    }
)

STATUS_LETTERS = {
    "Passed": "P",
    "Failed": "F",
    "Done": "D",
    "Skipped": "S",
    "Error": "E",
    "Terminated": "T",
}
GROUP_LETTERS = {"Main": "M", "Setup": "S", "Cleanup": "C"}
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}

_REPORT_CHILDREN = frozenset({"UUT", "Process", "MiscInfo", "ReportUnitHierarchy", "Step"})
_STEP_CHILDREN = frozenset(
    {
        "SequenceCall",
        "Step",
        "Loop",
        "ReportText",
        "NumericLimit",
        "PassFail",
        "StringValue",
        "MessagePopup",
        "Callexe",
        "Chart",
    }
)


class WSXFConverter(Converter):
    """WSXF files in, one WSJF report per <Report> element out."""

    name = "wsxf"
    file_patterns = ("*.xml",)

    def validate(self, path: Path) -> float:
        with path.open("rb") as file:
            start = file.read(4096)
        return 0.95 if WSXF_NAMESPACE.encode() in start else 0.1

    def convert(self, path: Path) -> list[Report]:
        data = path.read_bytes()
        return convert_wsxf_bytes(data, str(path))


def convert_wsxf_bytes(data: bytes, source: str) -> list[Report]:
    """The validated WSJF reports in WSXF ``data``; ``source`` names it in error messages."""
    root, lines = _parse_xml(data, source)
    reader = _WSXFReader(source, lines)
    report_elements = reader.report_elements(root)
    try:
        reports = [reader.report(element) for element in report_elements]
    except RecursionError:
        raise ConversionError(f"{source}: steps are nested too deeply to be a report") from None
    ensure_report_ids(reports, data)
    for element, report in zip(report_elements, reports, strict=True):
        try:
            validate_report(report)
        except InvalidReport as error:
            raise reader.error(element, f"invalid report: {error}") from None
    return reports


class _LineRecordingBuilder(TreeBuilder):
    """Builds the element tree and remembers the line each element starts on."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[Element, int] = {}
        self.parser: DefusedXMLParser | None = None

    def start(self, tag: str, attrs: dict[str, str]) -> Element:
        element = super().start(tag, attrs)
        assert self.parser is not None
        self.lines[element] = self.parser.parser.CurrentLineNumber
        return element


def _parse_xml(data: bytes, source: str) -> tuple[Element, dict[Element, int]]:
    if not data.strip():
        raise ConversionError(f"{source}: the file is empty")
    builder = _LineRecordingBuilder()
    parser = DefusedXMLParser(target=builder, forbid_entities=True, forbid_external=True)
    builder.parser = parser
    try:
        parser.feed(data)
        root = parser.close()
    except ParseError as error:
        line, column = error.position
        raise ConversionError(
            f"{source}: malformed XML at line {line}, column {column + 1}: "
            f"{expat.ErrorString(error.code)}"
        ) from None
    except DefusedXmlException as error:
        line = parser.parser.CurrentLineNumber
        raise ConversionError(f"{source}: line {line}: {_refusal(error)}") from None
    return root, builder.lines


def _refusal(error: DefusedXmlException) -> str:
    why = (
        "refused, because entities enable expansion bombs and reading files from this "
        "station; WSXF never needs them"
    )
    if isinstance(error, EntitiesForbidden):
        target = f" (SYSTEM {error.sysid!r})" if error.sysid else ""
        return f"the DTD declares the entity {error.name!r}{target}: {why}"
    if isinstance(error, ExternalReferenceForbidden):
        return f"refers to the external entity {error.sysid!r}: {why}"
    return f"{error}: {why}"


def _local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


class _WSXFReader:
    """Maps WSXF elements to WSJF dicts and phrases errors with the file and line."""

    def __init__(self, source: str, lines: dict[Element, int]) -> None:
        self.source = source
        self.lines = lines

    def error(self, element: Element, message: str) -> ConversionError:
        line = self.lines.get(element, "?")
        return ConversionError(
            f"{self.source}: line {line}, <{_local_name(element.tag)}>: {message}"
        )

    def report_elements(self, root: Element) -> list[Element]:
        namespace = root.tag[1:].partition("}")[0] if root.tag.startswith("{") else ""
        if namespace not in ("", WSXF_NAMESPACE):
            raise self.error(root, f"namespace {namespace!r} is not WSXF ({WSXF_NAMESPACE})")
        if _local_name(root.tag) == "Report":
            return [root]
        if _local_name(root.tag) != "Reports":
            raise self.error(root, "the root element must be <Reports> or <Report>")
        reports = []
        for child in root:
            if _local_name(child.tag) != "Report":
                raise self.error(child, "only <Report> elements may appear inside <Reports>")
            reports.append(child)
        if not reports:
            raise self.error(root, "contains no <Report> element")
        return reports

    def report(self, element: Element) -> Report:
        report_type = element.get("type")
        if report_type == "UUR":
            raise self.error(
                element, "repair (UUR) reports are not supported by this converter yet"
            )
        if report_type != "UUT":
            raise self.error(element, f"type={report_type!r}: expected UUT")
        children = self.children(element, _REPORT_CHILDREN)
        uut = self.only(children, "UUT")
        if uut is None:
            raise self.error(element, "a UUT report needs a <UUT> element")
        process = self.only(children, "Process")
        if process is None:
            raise self.error(element, "a report needs a <Process Code=...> element")
        root_step = self.only(children, "Step")
        if root_step is None:
            raise self.error(element, "a UUT report needs one root <Step> element")
        return {
            "type": "T",
            "id": self.report_id(element),
            "pn": self.text(element, "PN"),
            "sn": self.text(element, "SN"),
            "rev": self.text(element, "Rev"),
            "processCode": self.integer(process, "Code"),
            "result": self.status(element, "Result"),
            "machineName": self.text(element, "MachineName"),
            "location": self.text(element, "Location"),
            "purpose": self.text(element, "Purpose"),
            # Start_utc is the same instant, so it stands in when Start is missing.
            "start": element.get("Start") or element.get("Start_utc"),
            "root": self.step(root_step),
            "uut": self.uut(uut),
            "miscInfos": [self.misc_info(misc) for misc in children.get("MiscInfo", [])],
            "subUnits": [self.sub_unit(unit) for unit in children.get("ReportUnitHierarchy", [])],
            # Assets and additional data have no mapping yet; children() refuses them.
            "assets": [],
            "additionalData": [],
        }

    def report_id(self, element: Element) -> str | None:
        raw = element.get("ID")
        if not raw:
            return None
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            raise self.error(element, f"ID={raw!r} is not a UUID") from None

    def uut(self, element: Element) -> dict[str, Any]:
        self.children(element, frozenset({"Comment"}))
        return {
            "execTime": self.decimal(element, "ExecutionTime"),
            "testSocketIndex": self.integer(element, "TestSocketIndex"),
            "batchSN": self.text(element, "BatchSN"),
            "comment": self.child_text(element, "Comment"),
            "errorCode": self.integer(element, "ErrorCode"),
            "errorMessage": element.get("ErrorMessage") or None,
            "fixtureId": self.text(element, "FixtureId"),
            "user": self.text(element, "UserLoginName"),
            "batchFailCount": self.integer(element, "BatchFailCount"),
            "batchLoopIndex": self.integer(element, "BatchLoopIndex"),
            "stepIdCausedUUTFailure": self.integer(element, "StepIdCausedUUTFailure"),
        }

    def misc_info(self, element: Element) -> dict[str, Any]:
        misc_info = {
            "description": self.text(element, "Description"),
            "text": element.text or None,
            "numeric": self.number(element, "Numeric"),
        }
        typedef = self.text(element, "Typedef")
        if typedef:
            misc_info["typedef"] = typedef
        return misc_info

    def sub_unit(self, element: Element) -> dict[str, Any]:
        return {
            "partType": self.text(element, "PartType"),
            "pn": self.text(element, "PN"),
            "rev": self.text(element, "Rev"),
            "sn": self.text(element, "SN"),
            "position": self.integer(element, "Position"),
        }

    def step(self, element: Element) -> dict[str, Any]:
        children = self.children(element, _STEP_CHILDREN)
        step = _without_none(
            id=self.integer(element, "Id"),
            group=self.group(element),
            stepType=self.text(element, "StepType"),
            name=self.text(element, "Name"),
            status=self.status(element, "Status"),
            start=element.get("Start") or None,
            tsGuid=element.get("TSGuid") or None,
            errorCode=self.integer(element, "StepErrorCode"),
            errorMessage=element.get("StepErrorMessage") or None,
            totTime=self.decimal(element, "total_time"),
            causedUUTFailure=self.boolean(element, "StepCausedUUTFailure"),
            causedSeqFailure=self.boolean(element, "StepCausedSequenceFailure"),
            reportText=self.child_text(element, "ReportText"),
        )
        loop = self.only(children, "Loop")
        if loop is not None:
            step["loop"] = self.loop(loop)
        self.add_measurements(step, children)
        self.add_sequence(step, children, element)
        return step

    def add_measurements(self, step: dict[str, Any], children: dict[str, list[Element]]) -> None:
        if "NumericLimit" in children:
            step["numericMeas"] = [self.numeric(meas) for meas in children["NumericLimit"]]
        if "PassFail" in children:
            step["booleanMeas"] = [self.boolean_meas(meas) for meas in children["PassFail"]]
        if "StringValue" in children:
            step["stringMeas"] = [self.string(meas) for meas in children["StringValue"]]
        popup = self.only(children, "MessagePopup")
        if popup is not None:
            step["messagePopup"] = {
                "response": popup.get("Response") or None,
                "button": self.integer(popup, "Button"),
            }
        call = self.only(children, "Callexe")
        if call is not None:
            step["callExe"] = {"exitCode": self.decimal(call, "ExitCode")}
        chart = self.only(children, "Chart")
        if chart is not None:
            step["chart"] = self.chart(chart)

    def add_sequence(
        self, step: dict[str, Any], children: dict[str, list[Element]], element: Element
    ) -> None:
        sequence_call = self.only(children, "SequenceCall")
        substeps = children.get("Step", [])
        if sequence_call is None:
            if substeps:
                raise self.error(element, "has child <Step> elements but no <SequenceCall>")
            return
        step["seqCall"] = {
            "path": self.text(sequence_call, "Filepath"),
            "name": self.text(sequence_call, "Name"),
            "version": self.text(sequence_call, "Version"),
        }
        step["steps"] = [self.step(substep) for substep in substeps]

    def loop(self, element: Element) -> dict[str, Any]:
        return {
            "idx": self.integer(element, "index"),
            "num": self.integer(element, "num"),
            "endingIndex": self.integer(element, "ending_index"),
            "passed": self.integer(element, "passed"),
            "failed": self.integer(element, "failed"),
        }

    def numeric(self, element: Element) -> dict[str, Any]:
        return {
            "compOp": self.compare_operator(element),
            "name": self.text(element, "Name"),
            "status": self.status(element, "Status"),
            "unit": element.get("Units") or None,
            "value": self.decimal(element, "NumericValue"),
            "highLimit": self.decimal(element, "HighLimit"),
            "lowLimit": self.decimal(element, "LowLimit"),
        }

    def boolean_meas(self, element: Element) -> dict[str, Any]:
        return {"name": self.text(element, "Name"), "status": self.status(element, "Status")}

    def string(self, element: Element) -> dict[str, Any]:
        # Values and limits keep their spaces: a string compare sees them.
        return {
            "compOp": self.compare_operator(element),
            "name": self.text(element, "Name"),
            "status": self.status(element, "Status"),
            "value": element.get("StringValue") or None,
            "limit": element.get("StringLimit") or None,
        }

    def chart(self, element: Element) -> dict[str, Any]:
        series_elements = self.children(element, frozenset({"Series"})).get("Series", [])
        return {
            "chartType": self.text(element, "ChartType"),
            "label": self.text(element, "Label"),
            "xLabel": self.text(element, "XLabel"),
            "xUnit": self.text(element, "XUnit"),
            "yLabel": self.text(element, "YLabel"),
            "yUnit": self.text(element, "YUnit"),
            "series": [self.series(series) for series in series_elements],
        }

    def series(self, element: Element) -> dict[str, Any]:
        self.children(element, frozenset({"xdata", "ydata"}))
        return {
            "dataType": self.text(element, "DataType"),
            "name": self.text(element, "Name"),
            "xdata": self.child_text(element, "xdata"),
            "ydata": self.child_text(element, "ydata"),
        }

    def children(self, element: Element, allowed: frozenset[str]) -> dict[str, list[Element]]:
        """The child elements by local name; an element we cannot map is an error."""
        grouped: dict[str, list[Element]] = {}
        for child in element:
            name = _local_name(child.tag)
            if name not in allowed:
                raise self.error(
                    child,
                    f"not supported inside <{_local_name(element.tag)}> "
                    f"(supported: {', '.join(sorted(allowed))})",
                )
            grouped.setdefault(name, []).append(child)
        return grouped

    def only(self, children: dict[str, list[Element]], name: str) -> Element | None:
        found = children.get(name, [])
        if len(found) > 1:
            raise self.error(found[1], f"only one <{name}> is allowed here")
        return found[0] if found else None

    def child_text(self, element: Element, name: str) -> str | None:
        for child in element:
            if _local_name(child.tag) == name:
                return child.text or None
        return None

    def text(self, element: Element, attribute: str) -> str | None:
        # Like the server: surrounding spaces are trimmed and an empty value is no value.
        return (element.get(attribute) or "").strip() or None

    def integer(self, element: Element, attribute: str) -> int | None:
        raw = self.text(element, attribute)
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise self.error(element, f"{attribute}={raw!r} is not an integer") from None

    def decimal(self, element: Element, attribute: str) -> float | str | None:
        raw = self.text(element, attribute)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise self.error(element, f"{attribute}={raw!r} is not a number") from None
        # JSON has no NaN or infinity; WSJF carries them as strings.
        return value if math.isfinite(value) else raw

    def number(self, element: Element, attribute: str) -> int | float | str | None:
        raw = self.text(element, attribute)
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return self.decimal(element, attribute)

    def boolean(self, element: Element, attribute: str) -> bool | None:
        raw = self.text(element, attribute)
        if raw is None:
            return None
        if raw.lower() not in _BOOLEANS:
            raise self.error(element, f"{attribute}={raw!r} is not true or false")
        return _BOOLEANS[raw.lower()]

    def status(self, element: Element, attribute: str) -> str | None:
        raw = self.text(element, attribute)
        if raw is None:
            return None
        if raw not in STATUS_LETTERS:
            raise self.error(
                element, f"{attribute}={raw!r} is not one of {', '.join(STATUS_LETTERS)}"
            )
        return STATUS_LETTERS[raw]

    def group(self, element: Element) -> str | None:
        raw = self.text(element, "Group")
        if raw is None:
            return None
        if raw not in GROUP_LETTERS:
            raise self.error(element, f"Group={raw!r} is not one of {', '.join(GROUP_LETTERS)}")
        return GROUP_LETTERS[raw]

    def compare_operator(self, element: Element) -> str:
        # An omitted operator means "log only", as in Virinco's own converter.
        return (self.text(element, "CompOperator") or "LOG").upper()


def _without_none(**fields: Any) -> dict[str, Any]:
    """WSJF leaves out the step keys it has no value for."""
    return {key: value for key, value in fields.items() if value is not None}
