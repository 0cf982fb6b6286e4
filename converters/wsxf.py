"""WSXF: turn WATS Standard XML Format files into WSJF reports.

The mapping follows the matched pair of server exports in tests/data/samples (the same test
run exported as WSXF and as WSJF). Parsing goes through defusedxml: a DTD that declares
entities or refers to external ones is refused before anything is expanded or fetched.
Elements this converter cannot map are refused rather than dropped, so no test data is lost
without a person seeing why; attachments are kept wherever the file carries them (a step, a
repair failure, the report). Test (UUT) and repair (UUR) reports are both converted. A single
limit sits in ``lowLimit`` whichever attribute carried it, as the server stores it.
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

from wats_station.converters.base import (
    ConversionError,
    Converter,
    Report,
    ensure_report_ids,
    file_head,
)
from wats_station.converters.recognise import describe_xml_root
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
# Operators with one limit: the server keeps it in lowLimit, whichever attribute carried it.
SINGLE_LIMIT_OPERATORS = frozenset({"EQ", "NE", "LT", "LE", "GT", "GE"})
# How a file may name an attachment (WSXF exports and other writers differ).
ATTACHMENT_TAGS = frozenset({"Attachment", "Binary", "BinaryData"})

_REPORT_CHILDREN = frozenset(
    {"UUT", "Process", "MiscInfo", "ReportUnitHierarchy", "Step", "Asset", *ATTACHMENT_TAGS}
)
_UUR_REPORT_CHILDREN = frozenset(
    {"UUR", "Process", "MiscInfo", "ReportUnitHierarchy", "Failures", *ATTACHMENT_TAGS}
)
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
        *ATTACHMENT_TAGS,
    }
)


class WSXFConverter(Converter):
    """WSXF files in, one WSJF report per <Report> element out."""

    name = "wsxf"
    file_patterns = ("*.xml",)

    def validate(self, path: Path) -> float:
        start = file_head(path)
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
            raise ConversionError(
                f"{self.source}: this is not WSXF (namespace {namespace!r}): "
                f"{describe_xml_root(root)}"
            )
        if _local_name(root.tag) == "Report":
            return [root]
        if _local_name(root.tag) != "Reports" or (
            namespace == ""
            and any(_local_name(c.tag) == "Report" and c.get("type") is None for c in root)
        ):
            raise ConversionError(f"{self.source}: this is not WSXF: {describe_xml_root(root)}")
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
            return self.repair_report(element)
        if report_type != "UUT":
            raise self.error(element, f"type={report_type!r}: expected UUT or UUR")
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
            # Additional data has no mapping yet; children() refuses it.
            "assets": [self.asset(asset) for asset in children.get("Asset", [])],
            "additionalData": [],
            **self.report_attachments(children),
        }

    def asset(self, element: Element) -> dict[str, Any]:
        """Test equipment used: its serial number and how often it has been used."""
        serial = self.text(element, "AssetSN") or self.text(element, "SN")
        if serial is None:
            raise self.error(element, "an asset needs its serial number (AssetSN)")
        return _without_none(sn=serial, usageCount=self.integer(element, "UsageCount"))

    def report_attachments(self, children: dict[str, list[Element]]) -> dict[str, Any]:
        found = [item for tag in ATTACHMENT_TAGS for item in children.get(tag, [])]
        return {"binaryData": [self.attachment(item) for item in found]} if found else {}

    def repair_report(self, element: Element) -> Report:
        """A repair (UUR) report: what was repaired, on which units, and each failure found."""
        children = self.children(element, _UUR_REPORT_CHILDREN)
        uur = self.only(children, "UUR")
        if uur is None:
            raise self.error(element, "a UUR report needs a <UUR> element")
        process = self.only(children, "Process")
        if process is None:
            raise self.error(element, "a report needs a <Process Code=...> element")
        units = [self.repair_unit(unit) for unit in children.get("ReportUnitHierarchy", [])]
        if not units:  # the repaired unit itself is unit 0
            units = [{"pn": self.text(element, "PN"), "sn": self.text(element, "SN"),
                      "rev": self.text(element, "Rev"), "idx": 0}]  # fmt: skip
        for failure in children.get("Failures", []):
            part = self.integer(failure, "PartIdx") or 0
            unit = next((u for u in units if u.get("idx") == part), None)
            if unit is None:
                raise self.error(failure, f"PartIdx={part} names no <ReportUnitHierarchy Idx>")
            unit.setdefault("failures", []).append(self.failure(failure))
        return {
            "type": "R",
            "id": self.report_id(element),
            "pn": self.text(element, "PN"),
            "sn": self.text(element, "SN"),
            "rev": self.text(element, "Rev"),
            "processCode": self.integer(process, "Code"),
            "result": self.status(element, "Result") or "P",
            "machineName": element.get("MachineName", "").strip(),
            "location": element.get("Location", "").strip(),
            "purpose": element.get("Purpose", "").strip(),
            "start": element.get("Start") or element.get("Start_utc"),
            "uur": self.uur(uur),
            "miscInfos": [self.misc_info(misc) for misc in children.get("MiscInfo", [])],
            "subUnits": units,
            "assets": [],
            "additionalData": [],
            **self.report_attachments(children),
        }

    def uur(self, element: Element) -> dict[str, Any]:
        children = self.children(element, frozenset({"Comment", "Process"}))
        process = self.only(children, "Process")
        return _without_none(
            user=self.text(element, "UserLoginName"),
            comment=self.child_text(element, "Comment"),
            processCode=self.integer(process, "Code") if process is not None else None,
            processName=self.text(process, "Name") if process is not None else None,
            refUUT=self.uuid_text(element, "ReferencedUUT"),
            confirmDate=self.text(element, "ConfirmDate"),
            finalizeDate=self.text(element, "FinalizeDate"),
            execTime=self.decimal(element, "ExecutionTime"),
        )

    def uuid_text(self, element: Element, attribute: str) -> str | None:
        raw = self.text(element, attribute)
        try:
            return str(uuid.UUID(raw)) if raw else None
        except ValueError:
            raise self.error(element, f"{attribute}={raw!r} is not a UUID") from None

    def repair_unit(self, element: Element) -> dict[str, Any]:
        return _without_none(
            partType=self.text(element, "PartType"),
            pn=self.text(element, "PN"),
            rev=self.text(element, "Rev"),
            sn=self.text(element, "SN"),
            idx=self.integer(element, "Idx"),
            parentIdx=self.integer(element, "ParentIDX"),
            position=self.integer(element, "Position"),
        )

    def failure(self, element: Element) -> dict[str, Any]:
        children = self.children(element, frozenset({"Comment", *ATTACHMENT_TAGS}))
        attachments = [item for tag in ATTACHMENT_TAGS for item in children.get(tag, [])]
        failure = _without_none(
            category=self.text(element, "Category"),
            code=self.text(element, "Code"),
            comment=self.child_text(element, "Comment"),
            comRef=self.text(element, "CompRef"),
            funcBlock=self.text(element, "FuncBlock"),
            refStepId=self.integer(element, "StepID"),
            artNumber=self.text(element, "ArtNumber"),
            artRev=self.text(element, "ArtRev"),
            artVendor=self.text(element, "ArtVendor"),
            artDescription=self.text(element, "ArtDescription"),
        )
        if attachments:
            failure["attachments"] = [self.attachment(item) for item in attachments]
        return failure

    def attachment(self, element: Element) -> dict[str, Any]:
        """An attachment as WSJF carries it: name, MIME type and the bytes in base64."""
        data_child = next((c for c in element if _local_name(c.tag).lower() == "data"), None)
        data = (data_child.text if data_child is not None else element.text) or ""
        return _without_none(
            name=self.first_text(element, ("Name", "FileName", "name")) or "attachment",
            contentType=self.first_text(element, ("ContentType", "MimeType", "contentType")),
            data="".join(data.split()) or None,
        )

    def first_text(self, element: Element, attributes: tuple[str, ...]) -> str | None:
        return next((v for a in attributes if (v := self.text(element, a))), None)

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
        attachments = [item for tag in ATTACHMENT_TAGS for item in children.get(tag, [])]
        if attachments:
            # A WSJF step holds one attachment; more than one is an error, not a silent loss.
            if len(attachments) > 1:
                raise self.error(attachments[1], "a step holds one attachment; this is a second")
            step["attachment"] = self.attachment(attachments[0])

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
        operator = self.compare_operator(element)
        low, high = self.decimal(element, "LowLimit"), self.decimal(element, "HighLimit")
        if operator in SINGLE_LIMIT_OPERATORS and low is None:
            low, high = high, None
        return {
            "compOp": operator,
            "name": self.text(element, "Name"),
            "status": self.status(element, "Status"),
            "unit": element.get("Units") or None,
            "value": self.decimal(element, "NumericValue"),
            "highLimit": high,
            "lowLimit": low,
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
