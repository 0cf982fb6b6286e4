"""WSJF files pass through checked: what a server would reject is refused, naming the field."""

from __future__ import annotations

import codecs
import copy
import json
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wats_station.converters.base import ConversionError
from wats_station.converters.wsjf import (
    InvalidReport,
    WSJFConverter,
    parse_report_bytes,
    validate_report,
)

SAMPLES = Path(__file__).parent.parent / "scripts" / "sample_files"
JSON_SAMPLES = ["uut-wsjf-export.json", "new_report_example.json", "uur_example.json"]


def minimal_report() -> dict[str, Any]:
    """A small valid test report: a sequence with numeric, boolean and string steps."""
    return {
        "type": "T",
        "id": "6f1c2a9e-0d7b-4c1e-9a4f-2b8e5d3c7a10",
        "pn": "PCBA-100",
        "sn": "SN000123",
        "rev": "A",
        "processCode": 10,
        "result": "F",
        "machineName": "STATION-01",
        "location": "Line 1",
        "purpose": "Production",
        "start": "2026-01-30T12:26:16.977+01:00",
        "uut": {"user": "operator1", "execTime": 12.5},
        "root": {
            "stepType": "SequenceCall",
            "name": "MainSequence Callback",
            "group": "M",
            "status": "F",
            "steps": [
                {
                    "stepType": "ET_NLT",
                    "name": "VCC",
                    "group": "M",
                    "status": "P",
                    "numericMeas": [
                        {"compOp": "GELE", "value": 5.02, "lowLimit": 4.9, "highLimit": 5.1,
                         "unit": "V", "status": "P"}
                    ],
                },
                {"stepType": "Action", "name": "Relay on", "status": "D"},
                {"stepType": "ET_PFT", "name": "LED on", "status": "P",
                 "booleanMeas": [{"status": "P"}]},
                {"stepType": "ET_SVT", "name": "FW version", "status": "P",
                 "stringMeas": [{"compOp": "CASESENSIT", "value": "1.2.3", "limit": "1.2.3",
                                 "status": "P"}]},
                {"stepType": "SequenceCall", "name": "Sub", "status": "F",
                 "steps": [{"stepType": "Action", "name": "Inner", "status": "F"}]},
            ],
        },
    }  # fmt: skip


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def convert(path: Path) -> list[dict[str, Any]]:
    return WSJFConverter().convert(path)


@pytest.mark.parametrize("name", JSON_SAMPLES)
def test_every_sample_converts_unchanged(name: str) -> None:
    path = SAMPLES / name
    reports = convert(path)
    assert reports == [json.loads(path.read_bytes())]


def test_minimal_report_is_valid() -> None:
    validate_report(minimal_report())


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """A mutation that sets the value at a dotted path like ``root.steps[1].status``."""

    def mutate(report: dict[str, Any]) -> None:
        container: Any = report
        parts = path.replace("[", ".").replace("]", "").split(".")
        for part in parts[:-1]:
            container = container[int(part)] if part.isdigit() else container[part]
        last = parts[-1]
        if value is _DELETE:
            del container[last]
        else:
            container[int(last) if last.isdigit() else last] = value

    return mutate


_DELETE = object()


INVALID_REPORTS = [
    ("type", "X", "type"),
    ("id", "not-a-uuid", "id"),
    ("id", 12, "id"),
    ("pn", "", "pn"),
    ("pn", "   ", "pn"),
    ("sn", "S" * 101, "sn"),
    ("rev", 3, "rev"),
    ("processCode", True, "processCode"),
    ("processCode", "10", "processCode"),
    ("processCode", _DELETE, "processCode"),
    ("result", "S", "result"),
    ("machineName", "M" * 101, "machineName"),
    ("location", None, "location"),
    ("purpose", ["Production"], "purpose"),
    ("start", "2026-01-30T12:26:16", "start"),
    ("start", "2026-13-30T12:26:16+01:00", "start"),
    ("start", "20260130T122616+01", "start"),
    ("miscInfos", {"description": "FW"}, "miscInfos"),
    ("uut", _DELETE, "uut"),
    ("root", _DELETE, "root"),
    ("root.stepType", "ET_NLT", "root.stepType"),
    ("root.stepType", ["SequenceCall"], "root.stepType"),
    ("root.steps[0].group", {"M": 1}, "root.steps[0].group"),
    ("root.steps", {"stepType": "Action"}, "root.steps"),
    ("root.steps[1]", "Relay on", "root.steps[1]"),
    ("root.steps[1].name", None, "root.steps[1].name"),
    ("root.steps[1].stepType", 7, "root.steps[1].stepType"),
    ("root.steps[1].status", "Passed", "root.steps[1].status"),
    ("root.steps[0].group", "Main", "root.steps[0].group"),
    ("root.steps[0].numericMeas", {"compOp": "LOG", "status": "P"}, "root.steps[0].numericMeas"),
    ("root.steps[0].numericMeas[0]", 5.02, "root.steps[0].numericMeas[0]"),
    ("root.steps[0].numericMeas[0].compOp", "BETWEEN", "root.steps[0].numericMeas[0].compOp"),
    ("root.steps[0].numericMeas[0].status", "X", "root.steps[0].numericMeas[0].status"),
    ("root.steps[2].booleanMeas[0].status", _DELETE, "root.steps[2].booleanMeas[0].status"),
    ("root.steps[3].stringMeas[0].compOp", _DELETE, "root.steps[3].stringMeas[0].compOp"),
    ("root.steps[4].steps[0].status", "OK", "root.steps[4].steps[0].status"),
]


@pytest.mark.parametrize(("where", "value", "field"), INVALID_REPORTS)
def test_invalid_report_names_the_field(where: str, value: object, field: str) -> None:
    report = minimal_report()
    _set(where, value)(report)
    with pytest.raises(InvalidReport) as caught:
        validate_report(report)
    assert caught.value.field == field
    assert str(caught.value) == f"{field}: {caught.value.reason}"


def test_repair_report_needs_uur() -> None:
    repair = json.loads((SAMPLES / "uur_example.json").read_bytes())
    del repair["uur"]
    with pytest.raises(InvalidReport, match=r"^uur: a repair \(R\) report needs a uur object"):
        validate_report(repair)


def test_a_report_must_be_an_object() -> None:
    with pytest.raises(InvalidReport) as caught:
        validate_report(["not", "a", "report"])
    assert caught.value.field == "report"


def test_compare_operators_are_case_insensitive_like_the_server() -> None:
    report = minimal_report()
    report["root"]["steps"][3]["stringMeas"][0]["compOp"] = "IgnoreCase"
    validate_report(report)


def test_first_problem_is_reported_in_document_order() -> None:
    report = minimal_report()
    report["root"]["steps"][1]["status"] = "bad"
    report["root"]["steps"][4]["steps"][0]["status"] = "bad"
    with pytest.raises(InvalidReport) as caught:
        validate_report(report)
    assert caught.value.field == "root.steps[1].status"


def test_validation_of_a_100_kb_report_is_fast() -> None:
    report = json.loads((SAMPLES / "new_report_example.json").read_bytes())
    timings = []
    for _ in range(30):
        start = time.perf_counter()
        validate_report(report)
        timings.append(time.perf_counter() - start)
    # Measured about 0.3 ms; the bound leaves room for slow CI machines.
    assert statistics.median(timings) < 0.005


def test_validation_does_not_change_the_report() -> None:
    report = minimal_report()
    before = copy.deepcopy(report)
    validate_report(report)
    assert report == before


def test_malformed_json_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.json", b'{\n  "type": "T",\n  "id": oops\n}\n')
    with pytest.raises(ConversionError) as caught:
        convert(path)
    message = str(caught.value)
    assert str(path) in message
    assert "line 3, column 9" in message


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    report = minimal_report()
    path = write(tmp_path, "bom.json", codecs.BOM_UTF8 + json.dumps(report).encode())
    assert convert(path) == [report]


def test_a_list_of_reports_gives_several_reports(tmp_path: Path) -> None:
    first, second = minimal_report(), minimal_report()
    second["id"] = str(uuid.uuid4())
    second["sn"] = "SN000124"
    path = write(tmp_path, "two.json", json.dumps([first, second]).encode())
    assert [report["sn"] for report in convert(path)] == ["SN000123", "SN000124"]


def test_an_invalid_report_in_a_list_is_named_by_position(tmp_path: Path) -> None:
    second = minimal_report()
    second["result"] = "?"
    path = write(tmp_path, "two.json", json.dumps([minimal_report(), second]).encode())
    with pytest.raises(ConversionError) as caught:
        convert(path)
    assert str(caught.value).startswith(f"{path}: invalid report [1]: result: ")


def test_missing_id_is_derived_from_the_content(tmp_path: Path) -> None:
    report = minimal_report()
    del report["id"]
    content = json.dumps([report, report]).encode()
    first = convert(write(tmp_path, "a.json", content))
    again = convert(write(tmp_path, "b.json", content))
    ids = [report["id"] for report in first]
    assert ids == [report["id"] for report in again]  # same bytes, same ids
    assert ids[0] != ids[1]  # a different position in the file, a different id
    assert all(uuid.UUID(report_id) for report_id in ids)
    other = convert(write(tmp_path, "c.json", content + b"\n"))
    assert other[0]["id"] != ids[0]  # different bytes, a different id


def test_a_given_id_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "given.json", json.dumps(minimal_report()).encode())
    assert convert(path)[0]["id"] == minimal_report()["id"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the file is empty"),
        (b" \r\n\t ", "the file is empty"),
        (bytes(range(256)) * 4, "contains NUL bytes"),
        ('{"pn": "Å"}'.encode("utf-16"), "contains NUL bytes"),
        (b'{\n"pn": "caf\xe9"}', "not UTF-8 text: byte 0xe9 at line 2, column 11"),
        (b"42", "expected a report object or a list of reports, not a number"),
        (b"[]", "the list of reports is empty"),
        (b'[{"type": "T"}, "x"]', "item [1] must be a report object, not a string"),
        (b'{"value": NaN}', "NaN is not valid JSON"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_unusable_files_say_why(tmp_path: Path, content: bytes, reason: str) -> None:
    path = write(tmp_path, "input.json", content)
    with pytest.raises(ConversionError) as caught:
        convert(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert reason in str(caught.value)


def test_parse_report_bytes_names_the_source() -> None:
    with pytest.raises(ConversionError, match=r"^upload #7: malformed JSON at line 1, column 2"):
        parse_report_bytes(b"{,}", "upload #7")


def test_confidence_prefers_json_text(tmp_path: Path) -> None:
    converter = WSJFConverter()
    assert converter.validate(SAMPLES / "uut-wsjf-export.json") > 0.5
    assert converter.validate(write(tmp_path, "x.json", b"PK\x03\x04zip")) < 0.5
