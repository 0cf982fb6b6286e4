"""Real files written by others (tests/corpus, see its SOURCES.md) convert to what they say.

Each test reads one file and checks, field by field, what the file itself states: serial and
part number, revision, operation, result, start with its offset, station, operator, the step
tree, and every measurement's value, limits, comparator and unit.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from wats_station.converters.atml import ATMLConverter
from wats_station.converters.base import ConversionError, Converter
from wats_station.converters.openhtf import OpenHTFConverter
from wats_station.converters.processes import store_processes
from wats_station.converters.recognise import recognise
from wats_station.converters.registry import load_converter_class
from wats_station.converters.teststand_xml import TestStandXMLConverter
from wats_station.converters.wsjf import WSJFConverter, validate_report
from wats_station.converters.wstf import WSTFConverter
from wats_station.converters.wsxf import WSXFConverter

CORPUS = Path(__file__).parent / "corpus"
WSTF_EXAMPLE = CORPUS / "wstf" / "WatsStandardTextFormat.txt"
ATML_FILES = sorted((CORPUS / "atml").iterdir())
TESTSTAND_XML = CORPUS / "teststand-xml" / "TsWithoutWats.xml"
OPENHTF = CORPUS / "openhtf-json" / "1.hello_world.json"
UUR_WSXF = CORPUS / "wsxf" / "uur-wsxf.xml"
# Every test-result file: those in the format folders (SOURCES.md and the licence sit above).
EVERY_FILE = sorted(p for p in CORPUS.rglob("*") if p.parent != CORPUS and p.is_file())


@pytest.fixture
def processes(tmp_path: Path) -> Path:
    path = tmp_path / "processes.json"
    store_processes(path, [{"code": 10, "name": "SW Debug"}, {"code": 500, "name": "Repair"}])
    return path


def convert(converter: Converter, path: Path, processes: Path | None = None) -> list[dict]:
    converter.processes_file = processes
    reports = converter.convert(path)
    for report in reports:
        validate_report(report)
    return reports


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def local(text: str) -> datetime:
    """A local time without offset, as the station (this machine) reads it."""
    return datetime.fromisoformat(text).astimezone()


def tree(step: dict[str, Any]) -> tuple:
    """(stepType, name, status, children) for comparing step trees."""
    return (
        step["stepType"],
        step["name"],
        step["status"],
        [tree(child) for child in step.get("steps", [])],
    )


def measurements(step: dict[str, Any]) -> list[dict[str, Any]]:
    return step.get("numericMeas") or step.get("booleanMeas") or step.get("stringMeas") or []


def find(root: dict[str, Any], name: str) -> dict[str, Any]:
    pending = [root]
    while pending:
        step = pending.pop(0)
        if step["name"] == name:
            return step
        pending.extend(step.get("steps", []))
    raise AssertionError(f"no step {name!r}")


@pytest.mark.parametrize("path", EVERY_FILE, ids=lambda p: p.name)
def test_every_corpus_file_is_recognised_and_converts(path: Path, processes: Path) -> None:
    name, _ = recognise(path)
    assert name is not None, path
    reports = convert(load_converter_class(name)(station_name="ST"), path, processes)
    assert reports and all(r["sn"] and r["pn"] for r in reports)


# -- WSTF: Virinco's own example --------------------------------------------------------------


def test_the_wstf_example_header_maps_field_by_field(processes: Path) -> None:
    [report] = convert(WSTFConverter(station_name="ST"), WSTF_EXAMPLE, processes)

    assert (report["sn"], report["pn"], report["rev"]) == ("423664753", "100200", "A")
    assert report["processCode"] == 10  # OperationTypeName "SW Debug", looked up
    assert report["result"] == "F"  # UUTStatus Failed
    assert moment(report["start"]) == datetime(2014, 7, 4, 12, 9, 4, tzinfo=UTC)
    assert report["machineName"] == "VIC-WS-ML"
    uut = report["uut"]
    assert uut["user"] == "Martin Lentz"
    assert (uut["batchSN"], uut["fixtureId"], uut["execTime"], uut["errorCode"]) == (
        "B888", "543A", 10.0, 0,
    )  # fmt: skip
    assert uut["comment"].startswith("This is a comment to this UUT.")
    assert report["root"]["name"] == "c:\\test.seq"
    assert report["root"]["seqCall"]["version"] == "1.0.0.0"
    assert report["subUnits"] == [
        {"partType": "Main board", "pn": "Partno 1", "sn": "SN 6654433", "rev": "Rev 1"},
        {"partType": "Controller Card", "pn": "Partno 2", "sn": "SN 5555", "rev": "Rev B"},
    ]
    assert report["miscInfos"] == [{"description": "uCSwVer", "text": "1.0"}]


def test_the_wstf_example_yields_exactly_the_steps_its_rows_describe(processes: Path) -> None:
    [report] = convert(WSTFConverter(), WSTF_EXAMPLE, processes)
    root = report["root"]

    assert tree(root)[3] == [
        ("SequenceCall", "SubSeq1", "P", [
            ("ET_NLT", "test1.1", "P", []), ("ET_NLT", "test1.2", "P", [])]),
        ("SequenceCall", "SubSeq2", "P", [("ET_MNLT", "test2.2", "P", [])]),
        ("ET_MNLT", "Test3", "F", []),
        ("ET_PFT", "test4", "P", []),
        ("ET_MPFT", "test5", "F", []),
        ("ET_SVT", "Test6", "F", []),
        ("Action", "Action", "D", []),
        ("SequenceCall", "SubSeq3", "P", [("ET_MNLT", "SameStepName", "P", [])]),
    ]  # fmt: skip
    volt = {"unit": "Volt", "compOp": "GELE", "lowLimit": 7.0, "highLimit": 10.0}
    assert measurements(find(root, "test1.1")) == [{**volt, "value": 7.0, "status": "P"}]
    assert measurements(find(root, "test1.2")) == [{**volt, "value": 8.0, "status": "P"}]
    assert measurements(find(root, "test2.2")) == [
        {"name": "meas1", **volt, "value": 9.0, "status": "P"},
        {"name": "meas2", **volt, "value": 10.0, "status": "P"},
    ]
    # Test3: one step from three rows, the last two with a blank step name.
    assert measurements(find(root, "Test3")) == [
        {"name": "meas1", "compOp": "EQ", "value": 8.0, "lowLimit": 10.0, "unit": "Volt",
         "status": "F"},
        {"name": "meas2", "compOp": "EQ", "value": 6.0, "lowLimit": 5.0, "unit": "Volt",
         "status": "F"},
        {"name": "meas3", "compOp": "EQ", "value": 10.0, "lowLimit": 10.0, "unit": "Volt",
         "status": "P"},
    ]  # fmt: skip
    assert find(root, "Test3")["causedSeqFailure"] is True
    assert measurements(find(root, "test4")) == [{"status": "P"}]
    assert measurements(find(root, "test5")) == [
        {"name": "meas1", "status": "F"},
        {"name": "meas2", "status": "P"},
        {"name": "meas3", "status": "P"},
        {"name": "meas4", "status": "F"},
    ]
    assert measurements(find(root, "Test6")) == [
        {"compOp": "EQ", "value": "The quick brown fox jump over lazy dogs",
         "limit": "the quick brown fox jump over lazy dogs", "status": "F"},
    ]  # fmt: skip
    assert measurements(find(root, "SameStepName")) == [
        {"name": "meas1", **volt, "value": 7.0, "status": "P"},
        {"name": "meas2", **volt, "value": 8.0, "status": "P"},
    ]
    step_times = {"SubSeq1": 10.0, "test1.1": 5.0, "Test3": 1.0, "test5": 3.0, "SubSeq3": 20.0}
    assert {name: find(root, name)["totTime"] for name in step_times} == step_times
    assert find(root, "SubSeq1")["reportText"] == "This is a seq call report text"
    assert find(root, "test1.1")["reportText"] == "This is a test step report text"


def test_the_wstf_example_needs_the_process_list_for_its_operation_name(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match=r"line 5: OperationTypeName: operation type 'SW "):
        convert(WSTFConverter(), WSTF_EXAMPLE, tmp_path / "never-fetched.json")
    other = tmp_path / "other.json"
    store_processes(other, [{"code": 20, "name": "Final Function Test"}])
    with pytest.raises(ConversionError, match=r"'SW Debug' is not in the server's process list"):
        convert(WSTFConverter(), WSTF_EXAMPLE, other)


# -- WSXF: a repair report exported by a server ---------------------------------------------


def test_the_wsxf_repair_report_maps_field_by_field() -> None:
    [report] = convert(WSXFConverter(), UUR_WSXF)

    assert report["type"] == "R"
    assert report["id"] == "22f77b28-80b3-4ad4-83b7-6439f1ccc245"
    assert (report["sn"], report["pn"], report["rev"]) == ("FATTest-311", "FATPartNo", "Rev1")
    assert report["processCode"] == 500
    assert moment(report["start"]) == datetime(2017, 7, 7, 7, 17, 16, 727000, tzinfo=UTC)
    assert report["machineName"] == "Web Client"
    assert report["uur"] == {
        "user": "ragnar.engnes@virinco.com",
        "comment": "Comment on UUR",
        "processCode": 10,
        "processName": "SW Debug",
        "refUUT": "9ee40dd0-7009-4cea-92ab-7671c42ea86a",
        "confirmDate": "2017-07-07T07:18:24.770",
        "finalizeDate": "2017-07-07T07:19:56.570",
        "execTime": 122.0,
    }
    assert report["miscInfos"] == [{"description": "Order number", "text": "1234567",
                                    "numeric": None}]  # fmt: skip
    main, first, second = report["subUnits"]
    assert (main["sn"], main["idx"], first["sn"], first["parentIdx"], second["pn"]) == (
        "FATTest-311", 0, "SubPartSN1", 0, "SubPartNo2",
    )  # fmt: skip
    assert main["failures"] == [
        {"category": "Solder Process", "code": "Appearance", "comment": "Failure on main unit",
         "comRef": "R55", "refStepId": 16},
    ]  # fmt: skip
    assert first["failures"] == [
        {"category": "Assembly Process", "code": "Missing component",
         "comment": "Failure on subunit", "comRef": "U16", "refStepId": 32},
    ]  # fmt: skip
    assert "failures" not in second


# -- WSJF: Virinco's examples pass through -------------------------------------------------


@pytest.mark.parametrize("path", sorted((CORPUS / "wsjf").iterdir()), ids=lambda p: p.name)
def test_the_wsjf_examples_pass_through_unchanged(path: Path) -> None:
    [report] = convert(WSJFConverter(), path)
    original = json.loads(path.read_text(encoding="utf-8-sig"))
    assert report == original


# -- ATML, three schema versions ------------------------------------------------------------

ATML_STARTS = {"2.02": "2019-05-15T14:30:27.058", "5.00": "2019-05-15T14:31:11.452",
               "6.01": "2019-05-15T14:31:52.851"}  # fmt: skip
ATML_TREE = [
    ("Action", "Add Partnumber", "D", []),
    ("Action", "Simulation Dialog", "D", []),
    ("Action", "Turn Vacuum Table On", "D", []),
    ("ET_PFT", "Powerup Test", "P", []),
    ("NI_Flow_If", "If", "D", []),
    ("SequenceCall", "CPU Test", "P", [
        ("ET_PFT", "Register Test", "P", []), ("ET_PFT", "Instruction Set Test", "P", []),
        ("ET_PFT", "Cache Test", "P", []), ("ET_PFT", "FPU Test", "P", [])]),
    ("ET_PFT", "ROM Test", "P", []),
    ("ET_PFT", "RAM Test", "P", []),
    ("ET_NLT", "Video Test", "P", []),
    ("ET_NLT", "Keyboard Test", "F", []),
    ("NI_Flow_If", "If", "D", []),
    ("SequenceCall", "CPU Diagnostics", "S", []),
    ("ET_PFT", "ROM Diagnostics", "S", []),
    ("ET_PFT", "RAM Diagnostics", "S", []),
    ("ET_NLT", "Video Diagnostics", "S", []),
    ("ET_PFT", "Keyboard Diagnostics", "F", []),
    ("NI_Flow_End", "End", "D", []),
    ("NI_Flow_End", "End", "D", []),
    ("Action", "Turn Vacuum Table Off", "D", []),
]  # fmt: skip


@pytest.mark.parametrize("path", ATML_FILES, ids=lambda p: p.name.split(" [")[0])
def test_atml_reports_map_field_by_field(path: Path) -> None:
    version = path.name.split()[1]
    [report] = convert(ATMLConverter(station_name="ST"), path)

    assert (report["sn"], report["pn"]) == ("123456789", "Ragnar123")
    assert report["rev"] == "10"  # the partRevision argument's default, as Virinco's
    assert report["processCode"] == 10
    assert report["result"] == "F"
    assert moment(report["start"]) == local(ATML_STARTS[version])
    assert report["machineName"] == "TS-2016-BETA"
    assert report["uut"]["user"] == "administrator"
    root = report["root"]
    assert (root["name"], root["status"], root["seqCall"]["name"]) == (
        "MainSequence", "F", "MainSequence",
    )  # fmt: skip
    assert root["seqCall"]["path"].endswith("Computer Motherboard Test Sequence VIC.seq")
    assert tree(root)[3] == ATML_TREE
    assert [
        find(root, n)["group"] for n in ("Add Partnumber", "Powerup Test", "Turn Vacuum Table Off")
    ] == ["S", "M", "C"]
    assert measurements(find(root, "Video Test")) == [
        {"compOp": "GTLT", "value": 5.0, "lowLimit": 0.0, "highLimit": 10.0,
         "unit": "microseconds", "status": "P"},
    ]  # fmt: skip
    assert measurements(find(root, "Keyboard Test")) == [
        {"compOp": "GT", "value": 4.0, "lowLimit": 5.0, "unit": "", "status": "F"},
    ]
    assert find(root, "Keyboard Test")["causedSeqFailure"] is True
    assert measurements(find(root, "Keyboard Diagnostics")) == [{"status": "F"}]
    assert find(root, "If")["reportText"] == "{True}"


def test_an_atml_batch_collection_gives_one_report_per_uut(tmp_path: Path) -> None:
    text = ATML_FILES[2].read_text(encoding="iso-8859-1")
    start = text.index("<trc:TestResults ")
    end = text.index("</trc:TestResults>") + len("</trc:TestResults>")
    second = text[start:end].replace("<c:SerialNumber>123456789<", "<c:SerialNumber>Nº-2<")
    batch = tmp_path / "batch.xml"
    batch.write_bytes((text[:end] + "\n" + second + text[end:]).encode("iso-8859-1"))

    first, other = convert(ATMLConverter(partNumber="PN-7"), batch)

    assert (first["sn"], other["sn"]) == ("123456789", "Nº-2")  # iso-8859-1 read as such
    assert first["id"] != other["id"]
    assert tree(first["root"]) == tree(other["root"])


def test_atml_arguments_fill_what_the_file_lacks(tmp_path: Path, processes: Path) -> None:
    text = ATML_FILES[0].read_text(encoding="iso-8859-1")
    text = re.sub(r"<c:IdentificationNumbers>.*?</c:IdentificationNumbers>", "", text, flags=re.S)
    path = tmp_path / "no-part.xml"
    path.write_bytes(text.encode("iso-8859-1"))
    converter = ATMLConverter(partNumber="PCBA-9", partRevision="C", operationTypeCode="Repair")

    [report] = convert(converter, path, processes)

    assert (report["pn"], report["rev"], report["processCode"]) == ("PCBA-9", "C", 500)


# -- TestStand XML ---------------------------------------------------------------------------


def test_teststand_xml_maps_field_by_field() -> None:
    [report] = convert(TestStandXMLConverter(partNumber="MB-1", partRevision="B"), TESTSTAND_XML)

    assert (report["sn"], report["pn"], report["rev"]) == ("2342343", "MB-1", "B")
    assert (report["processCode"], report["result"]) == (10, "P")
    assert moment(report["start"]) == local("2022-07-01T15:47:48.927")
    assert (report["machineName"], report["uut"]["user"]) == ("TS-2021-BETA", "administrator")
    assert report["uut"]["execTime"] == pytest.approx(6.0831833)
    root = report["root"]
    assert (root["name"], root["seqCall"]["name"], root["seqCall"]["version"]) == (
        "MainSequence Callback", "MainSequence", "21.0.0.49156",
    )  # fmt: skip
    assert tree(root)[3] == [
        ("Action", "Simulation Dialog", "D", []),
        ("Action", "Turn Vacuum Table On", "D", []),
        ("ET_PFT", "Powerup Test", "P", []),
        ("NI_Flow_If", "If", "D", []),
        ("SequenceCall", "CPU Test", "P", [
            ("ET_PFT", "Register Test", "P", []), ("ET_PFT", "Instruction Set Test", "P", []),
            ("ET_PFT", "Cache Test", "P", []), ("ET_PFT", "FPU Test", "P", [])]),
        ("ET_PFT", "ROM Test", "P", []),
        ("ET_PFT", "RAM Test", "P", []),
        ("ET_NLT", "Video Test", "P", []),
        ("ET_NLT", "Keyboard Test", "P", []),
        ("NI_Flow_If", "If", "D", []),
        ("NI_Flow_End", "End", "D", []),
        ("NI_Flow_End", "End", "D", []),
        ("Action", "Turn Vacuum Table Off", "D", []),
    ]  # fmt: skip
    assert measurements(find(root, "Video Test")) == [
        {"compOp": "GTLT", "value": 5.0, "lowLimit": 0.0, "highLimit": 10.0,
         "unit": "microseconds", "status": "P"},
    ]  # fmt: skip
    assert measurements(find(root, "Keyboard Test")) == [
        {"compOp": "GT", "value": 6.0, "lowLimit": 5.0, "unit": "", "status": "P"},
    ]
    assert [
        find(root, n)["group"] for n in ("Simulation Dialog", "ROM Test", "Turn Vacuum Table Off")
    ] == ["S", "M", "C"]


def test_teststand_xml_given_to_the_wsxf_converter_is_named_for_what_it_is() -> None:
    with pytest.raises(ConversionError) as caught:
        WSXFConverter().convert(TESTSTAND_XML)
    message = str(caught.value)
    assert message.startswith(f"{TESTSTAND_XML}: this is not WSXF: an NI TestStand XML report")
    assert message.count(str(TESTSTAND_XML)) == 1


# -- OpenHTF ------------------------------------------------------------------------------


def test_openhtf_record_maps_field_by_field() -> None:
    converter = OpenHTFConverter(partNumber="HW-1", partRevision="2", operator="jonas")
    [report] = convert(converter, OPENHTF)

    assert (report["sn"], report["pn"], report["rev"]) == ("1", "HW-1", "2")
    assert (report["processCode"], report["result"]) == (10, "P")
    assert moment(report["start"]) == datetime.fromtimestamp(1663108966.063, UTC)
    assert report["uut"]["execTime"] == pytest.approx(0.001)
    assert (report["machineName"], report["uut"]["user"]) == ("jonas-asus", "jonas")
    root = report["root"]
    assert root["name"] == "openhtf_test"
    assert tree(root)[3] == [
        ("Action", "trigger_phase", "P", []),
        ("ET_MSVT", "hello_world", "P", []),
    ]
    assert find(root, "trigger_phase")["totTime"] == pytest.approx(1.662)
    assert measurements(find(root, "hello_world")) == [
        {"name": "hello_world_measurement", "compOp": "LOG", "value": "Hello Again!",
         "status": "P"},
    ]  # fmt: skip


def test_openhtf_validators_become_limits_and_attachments_are_kept(tmp_path: Path) -> None:
    record = json.loads(OPENHTF.read_text())
    record["outcome"] = "FAIL"
    record["phases"][1]["outcome"] = "FAIL"
    record["phases"][1]["measurements"] = {
        "vcc": {"name": "vcc", "outcome": "PASS", "measured_value": 5.02,
                "validators": ["4.9 <= x <= 5.1"], "units": {"name": "volt", "suffix": "V"}},
        "temp": {"name": "temp", "outcome": "FAIL", "measured_value": 81,
                 "validators": ["x < 80"]},
        "fw": {"name": "fw", "outcome": "PASS", "measured_value": "1.8.0",
               "validators": ["x == '1.8.0'"]},
    }  # fmt: skip
    record["phases"][1]["attachments"] = {
        "scope.png": {"mimetype": "image/png", "data": "iVBORw0KGgo="},
        "log.txt": {"mimetype": "text/plain", "data": "aGVsbG8="},
    }
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))

    [report] = convert(OpenHTFConverter(), path)

    phase = find(report["root"], "hello_world")
    assert (report["result"], phase["stepType"], phase["status"]) == ("F", "SequenceCall", "F")
    numeric, text = phase["steps"]
    assert numeric["numericMeas"] == [
        {"name": "vcc", "compOp": "GELE", "value": 5.02, "unit": "V", "status": "P",
         "lowLimit": 4.9, "highLimit": 5.1},
        {"name": "temp", "compOp": "LT", "value": 81.0, "unit": "", "status": "F",
         "lowLimit": 80.0},
    ]  # fmt: skip
    assert text["stringMeas"] == [
        {"name": "fw", "compOp": "CASESENSIT", "value": "1.8.0", "limit": "1.8.0", "status": "P"}
    ]
    assert phase["attachment"] == {"name": "scope.png", "contentType": "image/png",
                                   "data": "iVBORw0KGgo="}  # fmt: skip
    extra = find(report["root"], "log.txt")
    assert extra["attachment"]["data"] == "aGVsbG8="


ATML_6 = """<?xml version="1.0" encoding="iso-8859-1" ?>
<trc:TestResultsCollection xmlns:trc="urn:IEEE-1636.1:2013:TestResultsCollection"
  xmlns:tr="urn:IEEE-1636.1:2013:TestResults" xmlns:c="urn:IEEE-1671:2010:Common"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xmlns:ts="www.ni.com/TestStand/ATMLTestResults/3.0">
<trc:TestResults uuid="5b360926-7191-11e9-9276-9822efe210a8">
 <tr:Personnel><tr:SystemOperator ID="ola" name="Ola"/></tr:Personnel>
 <tr:ResultSet ID="1" name="C:\\seq\\board.seq#MainSequence"
   startDateTime="2024-02-29T23:59:58.5" endDateTime="2024-03-01T00:00:01">
  <tr:Extension><ts:TSStepProperties><ts:StepType>SequenceCall</ts:StepType>
   <ts:StepGroup>Main</ts:StepGroup></ts:TSStepProperties></tr:Extension>
  <tr:Outcome value="Aborted"/>
  <tr:Test ID="2" name="Rails">
   <tr:Extension><ts:TSStepProperties><ts:StepType>NI_MultipleNumericLimitTest</ts:StepType>
    <ts:StepGroup>Main</ts:StepGroup><ts:TotalTime value="0.25"/></ts:TSStepProperties>
   </tr:Extension>
   <tr:Outcome value="Failed"/>
   <tr:TestResult ID="r1" name="3V3">
    <tr:Outcome value="Passed"/>
    <tr:TestData><c:Datum value="3.31" xsi:type="ts:TS_double" nonStandardUnit="V"/></tr:TestData>
    <tr:TestLimits><tr:Limits><c:LimitPair operator="OR">
     <c:Limit comparator="LT"><c:Datum value="3.2"/></c:Limit>
     <c:Limit comparator="GE"><c:Datum value="3.4"/></c:Limit>
    </c:LimitPair></tr:Limits></tr:TestLimits>
   </tr:TestResult>
   <tr:TestResult ID="r2" name="Ripple">
    <tr:Outcome value="Failed"/>
    <tr:TestData><c:Datum value="0x1F" xsi:type="ts:TS_double" standardUnit="mV"/></tr:TestData>
    <tr:TestLimits><tr:Limits><c:Expected comparator="EQ"><c:Datum value="16"/></c:Expected>
    </tr:Limits></tr:TestLimits>
   </tr:TestResult>
   <tr:TestResult ID="r3" name="Temperature">
    <tr:TestData><c:Datum value="41.5" xsi:type="ts:TS_double"/></tr:TestData>
    <tr:Extension><ts:TSLimitProperties><ts:IsComparisonTypeLog/></ts:TSLimitProperties>
    </tr:Extension>
   </tr:TestResult>
   <tr:TestResult ID="r4" name="ExtraData">
    <tr:TestData><c:Datum value="7" xsi:type="ts:TS_double"/></tr:TestData>
   </tr:TestResult>
  </tr:Test>
  <tr:Test ID="3" name="Firmware">
   <tr:Extension><ts:TSStepProperties><ts:StepType>StringValueTest</ts:StepType>
    <ts:StepGroup>Setup</ts:StepGroup></ts:TSStepProperties></tr:Extension>
   <tr:Outcome value="Passed"/>
   <tr:TestResult ID="s1" name="String">
    <tr:TestData><c:Datum xsi:type="c:string"><c:Value>V1.8.0</c:Value></c:Datum></tr:TestData>
    <tr:TestLimits><tr:Limits><c:Expected comparator="CIEQ">
     <c:Datum xsi:type="c:string"><c:Value>v1.8.0</c:Value></c:Datum></c:Expected>
    </tr:Limits></tr:TestLimits>
   </tr:TestResult>
  </tr:Test>
  <tr:Test ID="4" name="Never run">
   <tr:Extension><ts:TSStepProperties><ts:StepType>PassFailTest</ts:StepType>
    <ts:StepGroup>Cleanup</ts:StepGroup></ts:TSStepProperties></tr:Extension>
   <tr:Outcome value="NotStarted"/>
  </tr:Test>
 </tr:ResultSet>
 <tr:TestStation><c:SerialNumber> FCT-3 </c:SerialNumber></tr:TestStation>
 <tr:UUT><c:SerialNumber>SN-Ø1</c:SerialNumber></tr:UUT>
 <tr:Extension><ts:TSResultSetProperties><ts:TestSocketIndex>2</ts:TestSocketIndex>
  <ts:BatchSerialNumber>B-9</ts:BatchSerialNumber></ts:TSResultSetProperties></tr:Extension>
</trc:TestResults>
</trc:TestResultsCollection>
"""


def test_atml_multiple_numeric_string_and_outcome_rules(tmp_path: Path) -> None:
    path = tmp_path / "atml6.xml"
    path.write_bytes(ATML_6.encode("iso-8859-1"))

    [report] = convert(ATMLConverter(partNumber="PCBA-1"), path)

    assert (report["sn"], report["pn"], report["result"]) == ("SN-Ø1", "PCBA-1", "T")
    assert (report["machineName"], report["uut"]["user"]) == ("FCT-3", "ola")
    assert moment(report["start"]) == local("2024-02-29T23:59:58.5")
    uut = report["uut"]
    assert (uut["execTime"], uut["testSocketIndex"], uut["batchSN"]) == (2.5, 2, "B-9")
    rails, firmware, never = report["root"]["steps"]
    assert (rails["stepType"], rails["status"], rails["totTime"]) == ("ET_MNLT", "F", 0.25)
    assert rails["numericMeas"] == [
        {"name": "3V3", "compOp": "LTGE", "value": 3.31, "unit": "V", "status": "P",
         "lowLimit": 3.2, "highLimit": 3.4},
        {"name": "Ripple", "compOp": "EQ", "value": 31.0, "unit": "mV", "status": "F",
         "lowLimit": 16.0},
        {"name": "Temperature", "compOp": "LOG", "value": 41.5, "unit": "", "status": "F"},
    ]  # fmt: skip
    assert (firmware["group"], firmware["stringMeas"]) == (
        "S", [{"compOp": "IGNORECASE", "value": "V1.8.0", "limit": "v1.8.0", "status": "P"}],
    )  # fmt: skip
    assert (never["status"], never["group"]) == ("S", "C")


TESTSTAND_STEPS = """<?xml version="1.0" encoding="iso-8859-1" ?>
<Reports><Report Type='Batch' Title='Batch Report'/>
<Report Type='UUT' UUTResult='Failed'>
<Prop Name='UUT' Type='Obj'><Prop Name='SerialNumber' Type='String'><Value>SN-Å</Value></Prop>
 <Prop Name='PartNumber' Type='String'><Value>PCBA-7</Value></Prop></Prop>
<Prop Name='StartDate' Type='Obj'><Prop Name='Year' Type='Number'><Value>2025</Value></Prop>
 <Prop Name='Month' Type='Number'><Value>3</Value></Prop>
 <Prop Name='MonthDay' Type='Number'><Value>30</Value></Prop></Prop>
<Prop Name='StartTime' Type='Obj'><Prop Name='Hours' Type='Number'><Value>2</Value></Prop>
 <Prop Name='Minutes' Type='Number'><Value>30</Value></Prop>
 <Prop Name='Seconds' Type='Number'><Value>5</Value></Prop>
 <Prop Name='Milliseconds' Type='Number'><Value>250</Value></Prop></Prop>
<Prop Name='StationInfo' Type='Obj'><Prop Name='StationID' Type='String'><Value>ICT-2</Value>
 </Prop><Prop Name='LoginName' Type='String'><Value>kari</Value></Prop></Prop>
<Prop Type='TEResult'>
 <Prop Name='TS' Type='Obj'>
  <Prop Name='SequenceCall' Type='Obj'>
   <Prop Name='ResultList' Type='Array'>
    <Value ID='[0]'><Prop Type='TEResult'>
     <Prop Name='Status' Type='String'><Value>Failed</Value></Prop>
     <Prop Name='Measurement' Type='Array'>
      <ArrayElementPrototype Type='Obj' TypeName='NI_LimitMeasurement'/>
      <Value ID='[0]'><Prop Name='3V3' Type='Obj' TypeName='NI_LimitMeasurement'>
       <Prop Name='Data' Type='Number'><Value>3.5</Value></Prop>
       <Prop Name='Status' Type='String'><Value>Failed</Value></Prop>
       <Prop Name='Comp' Type='String'><Value>GELE</Value></Prop>
       <Prop Name='Units' Type='String'><Value>V</Value></Prop>
       <Prop Name='Limits' Type='Obj'><Prop Name='Low' Type='Number'><Value>3.2</Value></Prop>
        <Prop Name='High' Type='Number'><Value>3.4</Value></Prop></Prop></Prop></Value>
      <Value ID='[1]'><Prop Name='Idle' Type='Obj' TypeName='NI_LimitMeasurement'>
       <Prop Name='Data' Type='Number'><Value>0.1</Value></Prop>
       <Prop Name='Status' Type='String'><Value>Passed</Value></Prop>
       <Prop Name='Comp' Type='String'><Value>LT</Value></Prop>
       <Prop Name='Limits' Type='Obj'><Prop Name='High' Type='Number'><Value>0.2</Value></Prop>
       </Prop></Prop></Value>
     </Prop>
     <Prop Name='TS' Type='Obj'><Prop Name='StepName' Type='String'><Value>Rails</Value></Prop>
      <Prop Name='StepType' Type='String'><Value>NI_MultipleNumericLimitTest</Value></Prop>
      <Prop Name='StepGroup' Type='String'><Value>Main</Value></Prop></Prop>
    </Prop></Value>
    <Value ID='[1]'><Prop Type='TEResult'>
     <Prop Name='Status' Type='String'><Value>Error</Value></Prop>
     <Prop Name='String' Type='String'><Value>v1.8</Value></Prop>
     <Prop Name='Comp' Type='String'><Value>IgnoreCase</Value></Prop>
     <Prop Name='Limits' Type='Obj'><Prop Name='String' Type='String'><Value>V1.8</Value></Prop>
     </Prop>
     <Prop Name='Error' Type='Obj'><Prop Name='Code' Type='Number'><Value>-17</Value></Prop>
      <Prop Name='Msg' Type='String'><Value>instrument timeout</Value></Prop>
      <Prop Name='Occurred' Type='Boolean'><Value>True</Value></Prop></Prop>
     <Prop Name='TS' Type='Obj'><Prop Name='StepName' Type='String'><Value>Firmware</Value></Prop>
      <Prop Name='StepType' Type='String'><Value>StringValueTest</Value></Prop>
      <Prop Name='StepGroup' Type='String'><Value>Setup</Value></Prop></Prop>
    </Prop></Value>
   </Prop>
   <Prop Name='SequenceFile' Type='String'><Value>board.seq</Value></Prop>
   <Prop Name='Sequence' Type='String'><Value>MainSequence</Value></Prop>
  </Prop>
  <Prop Name='StepName' Type='String'><Value>MainSequence Callback</Value></Prop>
  <Prop Name='StepType' Type='String'><Value>SequenceCall</Value></Prop>
  <Prop Name='TotalTime' Type='Number'><Value>3.5</Value></Prop>
 </Prop>
 <Prop Name='Status' Type='String'><Value>Failed</Value></Prop>
</Prop>
</Report></Reports>
"""


def test_teststand_xml_multiple_numeric_string_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "ts.xml"
    path.write_bytes(TESTSTAND_STEPS.encode("iso-8859-1"))

    [report] = convert(TestStandXMLConverter(), path)

    assert (report["sn"], report["pn"], report["result"]) == ("SN-Å", "PCBA-7", "F")
    assert moment(report["start"]) == local("2025-03-30T02:30:05.250")
    assert (report["machineName"], report["uut"]["user"]) == ("ICT-2", "kari")
    rails, firmware = report["root"]["steps"]
    assert (rails["stepType"], rails["status"]) == ("ET_MNLT", "F")
    assert rails["numericMeas"] == [
        {"name": "3V3", "compOp": "GELE", "value": 3.5, "unit": "V", "status": "F",
         "lowLimit": 3.2, "highLimit": 3.4},
        {"name": "Idle", "compOp": "LT", "value": 0.1, "unit": "", "status": "P",
         "lowLimit": 0.2},
    ]  # fmt: skip
    assert (firmware["group"], firmware["status"], firmware["errorCode"]) == ("S", "E", -17)
    assert firmware["errorMessage"] == "instrument timeout"
    assert firmware["stringMeas"] == [
        {"compOp": "IGNORECASE", "value": "v1.8", "limit": "V1.8", "status": "E"}
    ]
