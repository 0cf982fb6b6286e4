"""The WSTF converter turns WATS Standard Text Format files into valid WSJF reports."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from wats_station.converters.base import ConversionError
from wats_station.converters.processes import store_processes
from wats_station.converters.wsjf import validate_report
from wats_station.converters.wstf import (
    NUMERIC_OPERATORS,
    STRING_OPERATORS,
    WSTFConverter,
    format_wstf,
    numeric_status,
)
from wats_station.samples import sample_uut, write_wsjf_files, write_wstf_files

SAMPLES = Path(__file__).parent.parent / "scripts" / "sample_files"
COLUMNS = "StepType\tStepName\tMeasureName\tValue\tLowLimit\tHighLimit\tCompOperator\tUnit\tStatus"
HEADER = "SerialNumber\tSN-1\nPartNumber\tPN-1\nRevision\tA\n"


def wstf(steps: str = "", header: str = HEADER, footer: str = "") -> str:
    return (
        f"--Header-Start--\n{header}--Step-Data-Start--\n{COLUMNS}\n{steps}"
        f"--Step-Data-End--\n{footer}--UUT-End--\n"
    )


def convert(tmp_path: Path, text: str, encoding: str = "cp1252", **arguments: Any) -> list[dict]:
    path = tmp_path / "result.txt"
    path.write_bytes(text.encode(encoding))
    reports = WSTFConverter(**arguments).convert(path)
    for report in reports:
        validate_report(report)
    return reports


def conversion_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConversionError) as caught:
        convert(tmp_path, text)
    return str(caught.value)


def steps_of(report: dict) -> list[dict]:
    return report["root"]["steps"]


def test_header_keys_map_to_report_fields(tmp_path: Path) -> None:
    header = (
        "SerialNumber\tSN-42\nPartNumber\tPCBA-100\nRevision\tB\nOperationTypeCode\t50\n"
        "OperationTypeName\tFinal Function\nStationName\tICT-3\nOperatorName\tkari\n"
        "SoftwareName\tMain test\nSoftwareVersion\t3.1.4\nBatchSerialNumber\tLOT-7\n"
        "Comment\tretest after rework\nFixtureId\tFX-9\nUUTStatus\tPassed\n"
        "StartDateTime\t2025-06-01T09:30:00+02:00\nExecutionTime\t12.75\nTestSocketIndex\t2\n"
        "ErrorCode\t0\nErrorMessage\tnone\n"
    )
    [report] = convert(tmp_path, wstf(header=header), location="Line 4", purpose="Debug")

    assert {key: report[key] for key in ("sn", "pn", "rev", "processCode", "processName")} == {
        "sn": "SN-42",
        "pn": "PCBA-100",
        "rev": "B",
        "processCode": 50,
        "processName": "Final Function",
    }
    assert (report["machineName"], report["location"], report["purpose"]) == (
        "ICT-3",
        "Line 4",
        "Debug",
    )
    assert report["result"] == "P"
    assert report["start"] == "2025-06-01T09:30:00+02:00"
    assert report["uut"] == {
        "user": "kari",
        "batchSN": "LOT-7",
        "comment": "retest after rework",
        "fixtureId": "FX-9",
        "errorMessage": "none",
        "execTime": 12.75,
        "testSocketIndex": 2,
        "errorCode": 0,
    }
    assert report["root"]["seqCall"] == {
        "path": "Main test",
        "name": "Main test",
        "version": "3.1.4",
    }


def test_arguments_fill_what_the_file_leaves_out(tmp_path: Path) -> None:
    arguments = {
        "operationTypeCode": "30",
        "operator": "nightshift",
        "stationName": "FCT-1",
        "sequenceName": "Fct",
        "sequenceVersion": "9.9",
    }
    [report] = convert(tmp_path, wstf(), **arguments)

    assert report["processCode"] == 30
    assert report["uut"]["user"] == "nightshift"
    assert report["machineName"] == "FCT-1"
    assert report["root"]["seqCall"] == {"path": "Fct", "name": "Fct", "version": "9.9"}
    assert (report["location"], report["purpose"]) == ("Unknown", "Production")


def test_station_name_argument_is_the_last_fallback(tmp_path: Path) -> None:
    [report] = convert(tmp_path, wstf(), station_name="STATION-7", location=None)

    assert report["machineName"] == "STATION-7"
    assert report["location"] == "Unknown"


def test_unknown_argument_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown argument.*colour"):
        WSTFConverter(colour="blue")


def test_other_header_keys_become_misc_infos_in_order(tmp_path: Path) -> None:
    header = HEADER + "Firmware\t1.8.0\nBoard temperature\t31 C\nEmpty\t\n"

    [report] = convert(tmp_path, wstf(header=header))

    assert report["miscInfos"] == [
        {"description": "Firmware", "text": "1.8.0"},
        {"description": "Board temperature", "text": "31 C"},
        {"description": "Empty", "text": ""},
    ]


def test_every_step_type(tmp_path: Path) -> None:
    steps = (
        "NumericLimitTest\tVCC\t\t5.02\t4.9\t5.1\tGELE\tV\t\n"
        "MultipleNumericLimitTest\tRails\t3V3\t3.3\t3.2\t3.4\tGELE\tV\t\n"
        "PassFailTest\tSelf test\t\tTrue\t\t\t\t\t\n"
        "StringValueTest\tFirmware\t\t1.8.0\t1.8.0\t\tCASESENSIT\t\t\n"
        "ActionStep\tPower off\t\t\t\t\t\t\t\n"
    )

    [report] = convert(tmp_path, wstf(steps))

    numeric, multi, pass_fail, string, action = steps_of(report)
    assert numeric["stepType"] == "ET_NLT"
    assert numeric["numericMeas"] == [
        {
            "compOp": "GELE",
            "value": 5.02,
            "unit": "V",
            "status": "P",
            "lowLimit": 4.9,
            "highLimit": 5.1,
        }
    ]
    assert multi["stepType"] == "ET_MNLT"
    assert multi["numericMeas"][0]["name"] == "3V3"
    assert pass_fail["stepType"] == "ET_PFT"
    assert pass_fail["booleanMeas"] == [{"status": "P"}]
    assert string["stepType"] == "ET_SVT"
    assert string["stringMeas"] == [
        {"compOp": "CASESENSIT", "value": "1.8.0", "limit": "1.8.0", "status": "P"}
    ]
    assert action["stepType"] == "Action"
    assert action["status"] == "D"
    assert "numericMeas" not in action
    assert [step["group"] for step in steps_of(report)] == ["M"] * 5
    assert report["result"] == "P"


@pytest.mark.parametrize(
    ("value", "limit", "operator", "expected"),
    [
        ("abc", "ABC", "IGNORECASE", "P"),
        ("abc", "ABC", "CASESENSIT", "F"),
        ("abc", "", "", "P"),  # no limit, no operator: logged only
        ("1.8.0", "1.8.1", "", "F"),  # a limit without an operator compares exactly
    ],
)
def test_string_value_status_from_limit(
    tmp_path: Path, value: str, limit: str, operator: str, expected: str
) -> None:
    line = f"StringValueTest\tFirmware\t\t{value}\t{limit}\t\t{operator}\t\t\n"

    [report] = convert(tmp_path, wstf(line))

    [measurement] = steps_of(report)[0]["stringMeas"]
    assert measurement["status"] == expected
    assert report["result"] == expected


@pytest.mark.parametrize(
    ("value", "status", "expected"),
    [
        ("True", "", "P"),
        ("False", "", "F"),
        ("1", "", "P"),
        ("", "Failed", "F"),
        ("True", "F", "F"),
    ],
)
def test_pass_fail_status_from_value_or_status(
    tmp_path: Path, value: str, status: str, expected: str
) -> None:
    [report] = convert(tmp_path, wstf(f"PassFailTest\tSelf test\t\t{value}\t\t\t\t\t{status}\n"))

    assert steps_of(report)[0]["status"] == expected


def test_nested_sequences_propagate_failure(tmp_path: Path) -> None:
    steps = (
        "SequenceCall\tPower\n"
        "NumericLimitTest\tVCC\t\t5.0\t4.9\t5.1\tGELE\tV\n"
        "SequenceCall\tRails\n"
        "NumericLimitTest\t1V8\t\t2.1\t1.7\t1.9\tGELE\tV\n"
        "EndSequenceCall\tRails\n"
        "EndSequenceCall\tPower\n"
        "SequenceCall\tComms\n"
        "PassFailTest\tUART\t\tTrue\n"
        "EndSequenceCall\n"
    )

    [report] = convert(tmp_path, wstf(steps))

    power, comms = steps_of(report)
    rails = power["steps"][1]
    assert [step["name"] for step in power["steps"]] == ["VCC", "Rails"]
    assert rails["seqCall"]["name"] == "Rails"
    assert (rails["status"], power["status"], comms["status"]) == ("F", "F", "P")
    assert report["root"]["status"] == "F"
    assert report["result"] == "F"


def test_a_failing_step_fails_a_sequence_given_as_passed(tmp_path: Path) -> None:
    # Virinco's "Active" mode: a failure ripples up through a status the SequenceCall line gave.
    steps = (
        "SequenceCall\tPower\t\t\t\t\t\t\tPassed\n"
        "NumericLimitTest\tVCC\t\t9.0\t4.9\t5.1\tGELE\tV\n"
        "EndSequenceCall\tPower\n"
        "SequenceCall\tFan\t\t\t\t\t\t\tPassed\n"
        "NumericLimitTest\tRPM\t\t9.0\t4.9\t5.1\tGELE\t\n"
        "EndSequenceCall\tFan\t\t\t\t\t\t\tSkipped\n"
    )

    [report] = convert(tmp_path, wstf(steps))

    power, fan = steps_of(report)
    assert (power["status"], power["steps"][0]["status"]) == ("F", "F")
    assert fan["status"] == "S"  # the EndSequenceCall line's status is final


def test_multiple_numeric_lines_make_one_step_per_run(tmp_path: Path) -> None:
    steps = (
        "MultipleNumericLimitTest\tRails\t3V3\t3.3\t3.2\t3.4\tGELE\tV\n"
        "MultipleNumericLimitTest\tRails\t1V8\t1.95\t1.7\t1.9\tGELE\tV\n"
        "MultipleNumericLimitTest\tRails\t5V\t5.0\t\t\tLOG\tV\n"
        # The same measure name again starts the next run (a loop iteration) of the step.
        "MultipleNumericLimitTest\tRails\t3V3\t3.31\t3.2\t3.4\tGELE\tV\n"
        "MultipleNumericLimitTest\tCurrents\tIdle\t0.1\t\t0.2\tLE\tA\n"
    )

    [report] = convert(tmp_path, wstf(steps))

    first, second, currents = steps_of(report)
    assert [m["name"] for m in first["numericMeas"]] == ["3V3", "1V8", "5V"]
    assert [m["status"] for m in first["numericMeas"]] == ["P", "F", "P"]
    assert first["status"] == "F"
    assert [m["name"] for m in second["numericMeas"]] == ["3V3"]
    assert second["status"] == "P"
    assert currents["stepType"] == "ET_MNLT"
    assert currents["numericMeas"][0]["lowLimit"] == 0.2  # the single limit lives in lowLimit


def test_several_uuts_give_several_reports_with_stable_ids(tmp_path: Path) -> None:
    text = wstf(header="SerialNumber\tSN-1\nPartNumber\tP\nRevision\tA\n") + wstf(
        "NumericLimitTest\tVCC\t\t7\t4.9\t5.1\tGELE\tV\n",
        header="SerialNumber\tSN-2\nPartNumber\tP\nRevision\tA\n",
    )

    first = convert(tmp_path, text)
    again = convert(tmp_path, text)

    assert [(r["sn"], r["result"]) for r in first] == [("SN-1", "P"), ("SN-2", "F")]
    assert len({r["id"] for r in first}) == 2
    assert [r["id"] for r in again] == [r["id"] for r in first]


# Pass and fail cases for every numeric compare operator, taken from the real server export
# (samples/uut-wsjf-export.json). A single limit is in LowLimit.
OPERATOR_CASES = [
    ("LOG", 10.0, None, None, "P"),
    ("EQ", 500.0, 500.0, None, "P"),
    ("EQ", 500.0, 501.0, None, "F"),
    ("NE", 500.0, 499.0, None, "P"),
    ("NE", 500.0, 500.0, None, "F"),
    ("LT", 500.0, 501.0, None, "P"),
    ("LT", 500.0, 500.0, None, "F"),
    ("LE", 500.0, 500.0, None, "P"),
    ("LE", 500.0, 499.0, None, "F"),
    ("GT", 500.0, 499.0, None, "P"),
    ("GT", 500.0, 500.0, None, "F"),
    ("GE", 500.0, 500.0, None, "P"),
    ("GE", 500.0, 501.0, None, "F"),
    ("GELE", 500.0, 500.0, 500.0, "P"),
    ("GELE", 500.0, 501.0, 502.0, "F"),
    ("GELT", 500.0, 500.0, 501.0, "P"),
    ("GELT", 500.0, 499.0, 500.0, "F"),
    ("GTLE", 500.0, 499.0, 500.0, "P"),
    ("GTLE", 500.0, 500.0, 501.0, "F"),
    ("GTLT", 500.0, 499.0, 501.0, "P"),
    ("GTLT", 500.0, 499.0, 500.0, "F"),
    ("LTGT", 502.0, 499.0, 501.0, "P"),
    ("LTGT", 500.0, 500.0, 501.0, "F"),
    ("LTGE", 498.0, 499.0, 501.0, "P"),
    ("LTGE", 500.0, 500.0, 501.0, "F"),
    ("LEGT", 500.0, 500.0, 500.0, "P"),
    ("LEGT", 500.0, 499.0, 501.0, "F"),
    ("LEGE", 500.0, 500.0, 500.0, "P"),
    ("LEGE", 500.0, 499.0, 501.0, "F"),
]


def test_operator_cases_cover_every_numeric_operator() -> None:
    assert {case[0] for case in OPERATOR_CASES} == set(NUMERIC_OPERATORS)


def numeric_line(case: tuple, status: str = "") -> str:
    operator, *numbers, _ = case
    value, low, high = ("" if number is None else str(number) for number in numbers)
    return f"NumericLimitTest\tStep\t\t{value}\t{low}\t{high}\t{operator}\tV\t{status}\n"


def case_id(case: tuple) -> str:
    return f"{case[0]}-{case[-1]}"


@pytest.mark.parametrize("case", OPERATOR_CASES, ids=case_id)
def test_status_from_limits_for_every_operator(tmp_path: Path, case: tuple) -> None:
    operator, *_, expected = case
    # Operators are read case-insensitively.
    line = numeric_line(case).replace(f"\t{operator}\t", f"\t{operator.lower()}\t")

    [report] = convert(tmp_path, wstf(line))

    [measurement] = steps_of(report)[0]["numericMeas"]
    assert measurement["compOp"] == operator
    assert measurement["status"] == expected
    assert report["result"] == expected


@pytest.mark.parametrize("case", OPERATOR_CASES, ids=case_id)
def test_status_from_the_file_wins_over_limits(tmp_path: Path, case: tuple) -> None:
    given = "Failed" if case[-1] == "P" else "Passed"

    [report] = convert(tmp_path, wstf(numeric_line(case, given)))

    assert steps_of(report)[0]["numericMeas"][0]["status"] == given[0]
    assert report["result"] == given[0]


def test_compare_rules_agree_with_the_real_server_export() -> None:
    export = json.loads((SAMPLES / "uut-wsjf-export.json").read_text(encoding="utf-8"))
    numeric, strings = [], []
    pending = [export["root"]]
    while pending:
        step = pending.pop()
        pending += step.get("steps", [])
        numeric += step.get("numericMeas", [])
        strings += step.get("stringMeas", [])

    assert len(numeric) > 100
    for m in numeric:
        assert (
            numeric_status(m["value"], m["compOp"], m["lowLimit"], m["highLimit"]) == m["status"]
        ), m
    for m in strings:
        passes = STRING_OPERATORS[m["compOp"].upper()](m["value"], m["limit"] or "")
        assert ("P" if passes else "F") == m["status"], m


def test_uut_status_in_the_footer_sets_the_result(tmp_path: Path) -> None:
    text = wstf(
        "NumericLimitTest\tVCC\t\t5.0\t4.9\t5.1\tGELE\tV\n",
        footer="UUTStatus\tTerminated\nExecutionTime\t3.5\n",
    )

    [report] = convert(tmp_path, text)

    assert report["result"] == "T"
    assert report["uut"]["execTime"] == 3.5


def test_columns_are_found_by_name_in_any_order(tmp_path: Path) -> None:
    text = (
        f"--Header-Start--\n{HEADER}--Step-Data-Start--\n"
        "Unit\tValue\tStepName\tStepStatus\tStepType\tLowLimit\tHighLimit\tStepExecutionTime\n"
        "V\t5.5\tVCC\t\tNumericLimitTest\t4.9\t5.1\t0.25\n"
        "--Step-Data-End--\n--UUT-End--\n"
    )

    [report] = convert(tmp_path, text)

    [step] = steps_of(report)
    assert step["numericMeas"][0]["compOp"] == "GELE"  # implied by the two limits
    assert (step["status"], step["totTime"], step["numericMeas"][0]["unit"]) == ("F", 0.25, "V")


def test_start_without_offset_gets_the_offset_from_the_utc_time(tmp_path: Path) -> None:
    header = HEADER + "StartDateTime\t2025-01-30 14:05:00\nUTCStartDateTime\t2025-01-30 19:05:00\n"

    [report] = convert(tmp_path, wstf(header=header))

    assert report["start"] == "2025-01-30T14:05:00-05:00"


def test_start_defaults_to_the_file_time(tmp_path: Path) -> None:
    path = tmp_path / "result.txt"
    path.write_text(wstf(), encoding="cp1252")
    os.utime(path, (1_700_000_000, 1_700_000_000))

    [report] = WSTFConverter().convert(path)

    assert datetime.fromisoformat(report["start"]).timestamp() == 1_700_000_000


def test_cp1252_text_is_read_as_cp1252(tmp_path: Path) -> None:
    header = HEADER + "OperatorName\tJørgen Æsøy\nNote\t±5 % at 25 °C \u2013 ok\n"
    steps = "NumericLimitTest\tLeakage\t\t3.1\t\t5\tLE\tµA\n"

    [report] = convert(tmp_path, wstf(steps, header=header))

    assert report["uut"]["user"] == "Jørgen Æsøy"
    assert report["miscInfos"] == [{"description": "Note", "text": "±5 % at 25 °C \u2013 ok"}]
    assert steps_of(report)[0]["numericMeas"][0]["unit"] == "µA"


def test_file_encoding_argument(tmp_path: Path) -> None:
    header = HEADER + "OperatorName\t山田\n"

    [report] = convert(tmp_path, wstf(header=header), encoding="utf-8", fileEncoding="utf-8")

    assert report["uut"]["user"] == "山田"


def test_undecodable_byte_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "result.txt"
    path.write_bytes(wstf(header=HEADER + "Note\tx\n").encode().replace(b"\tx", b"\t\x81"))

    with pytest.raises(ConversionError, match=r"line 5: byte 0x81 is not valid cp1252"):
        WSTFConverter().convert(path)


def test_a_uut_without_its_end_marker_is_converted_as_virinco_does(tmp_path: Path) -> None:
    text = wstf() + wstf("NumericLimitTest\tVCC\t\t5.0\t4.9\t5.1\tGELE\tV\n")
    truncated = text[: text.rindex("--Step-Data-End--")]

    first, second = convert(tmp_path, truncated)

    assert steps_of(first) == []
    assert steps_of(second)[0]["numericMeas"][0]["value"] == 5.0


VCC = "NumericLimitTest\tVCC\t\t"


@pytest.mark.parametrize(
    ("step_line", "expected"),
    [
        (VCC + "five\t4.9\t5.1\tGELE\tV\n", "line 7: column Value: 'five' is not a number"),
        (VCC + "5\t4.9\t5.1\tBETWEEN\n", "line 7: column CompOperator: 'BETWEEN'"),
        (VCC + "5\t\t\tGE\n", "line 7: column LowLimit: compare operator GE needs a limit"),
        (VCC + "5\t4.9\t\tGELE\n", "line 7: column HighLimit: compare operator GELE needs"),
        ("Wait\tDelay\n", "line 7: column StepType: unknown step type 'Wait'"),
        ("NumericLimitTest\t\t\t5\n", "line 7: column StepName: a NumericLimitTest that starts"),
        ("PassFailTest\tSelf\t\tmaybe\n", "line 7: column Value: a PassFailTest needs a Status"),
        ("PassFailTest\tSelf\t\tTrue\t\t\t\t\tGreat\n", "line 7: column Status: 'Great' is not"),
        ("MultipleNumericLimitTest\tRails\t\t3.3\n", "line 7: column MeasureName"),
        ("EndSequenceCall\n", "line 7: EndSequenceCall without an open SequenceCall"),
        ("Chart\tLine\tVolts\n", "line 7: a Chart line must follow the step it belongs to"),
        ("ActionStep\tA\nSeries\tp\tXYG\t1;2\n", "line 8: a Series line must follow a Chart"),
        ("ActionStep\tA\nChart\tPie\n", "line 8: column StepName: 'Pie' is not a chart type"),
    ],
)
def test_bad_step_line_is_named_by_line_and_column(
    tmp_path: Path, step_line: str, expected: str
) -> None:
    message = conversion_error(tmp_path, wstf(step_line))

    assert message.startswith(str(tmp_path / "result.txt"))
    assert expected in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello\n", "line 1: expected --Header-Start--, found 'hello'"),
        ("", "no --Header-Start-- line, so this is not a WSTF file"),
        (wstf(header="SerialNumber\tSN-1\n"), "line 1: the UUT that starts here has no"),
        (wstf(header="PartNumber\tP\nRevision\tA\n"), "line 1: the UUT that starts here has no"),
        (
            wstf(header=HEADER + "OperationTypeCode\tten\n"),
            "line 5: OperationTypeCode: operation type 'ten' is a name",
        ),
        (wstf(header=HEADER + "StartDateTime\tnow\n"), "line 5: 'now' is not a date and time"),
        (wstf(footer="UUTStatus\tSkipped\n"), "line 8: UUTStatus 'Skipped' is not one of"),
        (wstf().replace("--UUT-End--", "--Header-Start--"), "line 8: the UUT that starts here"),
        (wstf(footer="UUTStatus\tMaybe\n"), "line 8: UUTStatus 'Maybe' is not one of"),
    ],
)
def test_bad_file_structure_is_named_by_line(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in conversion_error(tmp_path, text)


def test_format_wstf_round_trips_through_the_converter(tmp_path: Path) -> None:
    uut = {
        "header": {"SerialNumber": "SN-9", "PartNumber": "P", "Revision": "C", "Lot": "L-1"},
        "steps": [
            {
                "StepType": "SequenceCall",
                "StepName": "Outer",
                "steps": [
                    {
                        "StepType": "NumericLimitTest",
                        "StepName": "V",
                        "Value": 1.5,
                        "LowLimit": 1,
                        "HighLimit": 2,
                        "CompOperator": "GELE",
                        "Unit": "V",
                    },
                    {
                        "StepType": "SequenceCall",
                        "StepName": "Inner",
                        "steps": [
                            {"StepType": "PassFailTest", "StepName": "PF", "Status": "Failed"}
                        ],
                    },
                ],
            },
        ],
        "footer": {"ExecutionTime": 4.5},
    }

    [report] = convert(tmp_path, format_wstf(uut))

    outer = steps_of(report)[0]
    assert (outer["name"], outer["steps"][1]["name"]) == ("Outer", "Inner")
    assert outer["steps"][0]["numericMeas"][0]["value"] == 1.5
    assert (outer["status"], report["result"]) == ("F", "F")
    assert report["miscInfos"] == [{"description": "Lot", "text": "L-1"}]
    assert report["uut"]["execTime"] == 4.5


def test_format_wstf_refuses_a_tab_inside_a_cell() -> None:
    with pytest.raises(ValueError, match="tabs or line breaks"):
        format_wstf({"header": {"SerialNumber": "SN\t1"}, "steps": []})


def test_generated_wstf_files_convert_to_valid_reports(tmp_path: Path) -> None:
    paths = write_wstf_files(tmp_path, 3, start_index=5, uuts_per_file=2, failing_every=4)

    reports = [report for path in paths for report in WSTFConverter().convert(path)]

    assert [path.name for path in paths] == [
        "wstf_000005.txt",
        "wstf_000006.txt",
        "wstf_000007.txt",
    ]
    assert not list(tmp_path.glob(".*.tmp"))
    for report in reports:
        validate_report(report)
    assert [r["sn"] for r in reports] == [f"SN{unit:08d}" for unit in range(10, 16)]
    # Units 11 and 15 are the 12th and 16th units: every 4th fails.
    assert [r["sn"] for r in reports if r["result"] == "F"] == ["SN00000011", "SN00000015"]
    assert len({r["id"] for r in reports}) == 6


def test_generated_files_are_deterministic(tmp_path: Path) -> None:
    first = write_wstf_files(tmp_path / "a", 2, start_index=3)
    second = write_wstf_files(tmp_path / "b", 2, start_index=3)

    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert sample_uut(3) == sample_uut(3)
    assert sample_uut(3) != sample_uut(4)


def test_generated_wsjf_files_are_valid_with_distinct_ids(tmp_path: Path) -> None:
    paths = write_wsjf_files(tmp_path, 4, failing_every=2)

    reports = [json.loads(path.read_text(encoding="utf-8")) for path in paths]

    for report in reports:
        validate_report(report)
    assert len({report["id"] for report in reports}) == 4
    assert [report["result"] for report in reports] == ["P", "F", "P", "F"]


def test_windows_line_endings_and_a_utf8_byte_order_mark(tmp_path: Path) -> None:
    text = wstf("NumericLimitTest\tVCC\t\t5.0\t4.9\t5.1\tGELE\tV\n", header=HEADER + "Site\tÅs\n")
    path = tmp_path / "result.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))

    [report] = WSTFConverter().convert(path)

    assert report["sn"] == "SN-1"
    assert report["miscInfos"] == [{"description": "Site", "text": "Ås"}]
    assert report["result"] == "P"


def test_a_measurement_that_is_not_a_number_fails_and_stays_json(tmp_path: Path) -> None:
    [report] = convert(tmp_path, wstf("NumericLimitTest\tVCC\t\tNaN\t4.9\t5.1\tGELE\tV\n"))

    [measurement] = steps_of(report)[0]["numericMeas"]
    assert (measurement["value"], measurement["status"]) == ("NaN", "F")
    json.dumps(report, allow_nan=False)


def test_validate_recognises_wstf_files(tmp_path: Path) -> None:
    wstf_file = tmp_path / "a.txt"
    wstf_file.write_text(wstf(), encoding="cp1252")
    other = tmp_path / "b.txt"
    other.write_text("SerialNumber,Value\nSN,1\n", encoding="utf-8")

    assert WSTFConverter().validate(wstf_file) > 0.9
    assert WSTFConverter().validate(other) == 0.0


# -- what Virinco's converter accepts ------------------------------------------------------


def test_rows_group_into_multi_measurement_steps_as_virinco_does(tmp_path: Path) -> None:
    steps = (
        "NumericLimitTest\tRails\t3V3\t3.3\t3.2\t3.4\tGELE\tV\n"
        "NumericLimitTest\t\t1V8\t1.95\t1.7\t1.9\tGELE\tV\n"  # blank name: the step before
        "NumericLimitTest\tRails\t5V\t5.0\t\t\tLOG\tV\n"  # same name: the step before
        "PassFailTest\tRails\tgood\tTrue\n"  # another kind: a new step, even by that name
        "NumericLimitTest\tFan\t\t1200\t1000\t\tGE\trpm\n"
        "NumericLimitTest\tFan\t\t1300\t1000\t\tGE\trpm\n"  # one step, two unnamed runs
    )

    [report] = convert(tmp_path, wstf(steps))

    rails, check, fan = steps_of(report)
    assert (rails["stepType"], rails["status"]) == ("ET_MNLT", "F")
    assert [m["name"] for m in rails["numericMeas"]] == ["3V3", "1V8", "5V"]
    assert (check["stepType"], check["booleanMeas"]) == ("ET_MPFT", [{"name": "good",
                                                                       "status": "P"}])  # fmt: skip
    assert fan["stepType"] == "ET_MNLT"
    assert [(m["name"], m["value"]) for m in fan["numericMeas"]] == [
        ("Measurement 0", 1200.0),
        ("Measurement 1", 1300.0),
    ]


def test_lenient_markers_control_bytes_and_header_extras(tmp_path: Path) -> None:
    text = (
        "--Header-Start--\t\t\n"
        "SerialNumber\tSN\x01-7\textra\tvalues\n"  # a control byte, and values after the first
        "PartNumber PN-1\n"  # a space instead of the tab, as Virinco's prefix match allows
        "Revision\tA\n"
        "-- Step-Data-Start --\n"
        f"{COLUMNS}\n"
        "NumericLimitTest\tV\x02CC\t\t5.0\t4.9\t5.1\tGELE\tV\n"
        "--Step-Data-End--\n"
        "-- UUT-End--\t\t\t\n"
    )

    [report] = convert(tmp_path, text)

    assert (report["sn"], report["pn"]) == ("SN-7", "PN-1")
    assert steps_of(report)[0]["name"] == "VCC"


def test_decimal_comma_with_a_culture_code(tmp_path: Path) -> None:
    steps = "NumericLimitTest\tVCC\t\t1.234,5\t1.000,25\t2000\tGELE\tmV\n"
    text = wstf(steps, header=HEADER + "ExecutionTime\t12,5\n")

    [report] = convert(tmp_path, text, cultureCode="nb-NO")

    [measurement] = steps_of(report)[0]["numericMeas"]
    assert (measurement["value"], measurement["lowLimit"]) == (1234.5, 1000.25)
    assert report["uut"]["execTime"] == 12.5
    message = conversion_error(tmp_path, wstf("NumericLimitTest\tVCC\t\t5,02\t4\t6\tGELE\n"))
    assert "column Value: '5,02' is not a number here (a decimal comma? set the cultureCode" in (
        message
    )


def test_import_mode_takes_statuses_as_given(tmp_path: Path) -> None:
    steps = "NumericLimitTest\tVCC\t\t9.0\t4.9\t5.1\tGELE\tV\n"  # out of limits, no status

    [active] = convert(tmp_path, wstf(steps))
    [header_import] = convert(tmp_path, wstf(steps, header=HEADER + "ConverterMode\tImport\n"))
    [argument_import] = convert(tmp_path, wstf(steps), testModeType="Import")

    assert steps_of(active)[0]["status"] == "F"
    assert steps_of(header_import)[0]["status"] == "P"
    assert steps_of(argument_import)[0]["numericMeas"][0]["status"] == "P"


def test_charts_attach_to_the_step_before(tmp_path: Path) -> None:
    steps = (
        "NumericLimitTest\tSweep\t\t3.3\t3\t4\tGELE\tV\n"
        "Chart\tLine\tGain\tdB\tGain\tHz\tFrequency\n"
        "Series\tmeasured\tXYG\t1;2,5;3\t10;100;1000\n"
        "Series\tlimit\tXYG\t2;2;2\n"
    )

    [report] = convert(tmp_path, wstf(steps))

    [step] = steps_of(report)
    assert step["chart"] == {
        "chartType": "Line", "label": "Gain", "xLabel": "Frequency", "xUnit": "Hz",
        "yLabel": "Gain", "yUnit": "dB",
        "series": [
            {"dataType": "XYG", "name": "measured", "xdata": "10;100;1000", "ydata": "1;2.5;3"},
            {"dataType": "XYG", "name": "limit", "xdata": None, "ydata": "2;2;2"},
        ],
    }  # fmt: skip


def test_caused_sequence_failure_and_files_without_a_column_header(tmp_path: Path) -> None:
    text = (
        f"--Header-Start--\n{HEADER}--Step-Data-Start--\n"
        # Virinco's fixed column order, no header line: ... Status, time, text, code, message,
        # CausedSequenceFailure
        "NumericLimitTest\tVCC\t\t9\t4.9\t5.1\tGELE\tV\tFailed\t0.5\tlow\t7\tbad\tTrue\n"
        "--Step-Data-End--\n--UUT-End--\n"
    )

    [report] = convert(tmp_path, text)

    [step] = steps_of(report)
    assert (step["totTime"], step["reportText"], step["errorCode"], step["errorMessage"]) == (
        0.5, "low", 7, "bad",
    )  # fmt: skip
    assert step["causedSeqFailure"] is True


def test_operation_type_by_name_from_the_cached_process_list(tmp_path: Path) -> None:
    processes = tmp_path / "processes.json"
    store_processes(processes, [{"code": 20, "name": "Final Function Test"}])
    path = tmp_path / "result.txt"
    path.write_text(wstf(header=HEADER + "OperationTypeName\tfinal function test\n"))
    by_argument = WSTFConverter(operationTypeCode="Final Function Test")
    by_header = WSTFConverter()
    for converter in (by_argument, by_header):
        converter.processes_file = processes
    unknown = WSTFConverter(operationTypeCode="Burn-in")
    unknown.processes_file = processes

    assert by_header.convert(path)[0]["processCode"] == 20
    path.write_text(wstf())
    assert by_argument.convert(path)[0]["processCode"] == 20
    with pytest.raises(ConversionError, match=r"'Burn-in' is not in the server's process list "
                                              r"\(20 Final Function Test\)"):  # fmt: skip
        unknown.convert(path)


def test_validation_mode_truncates_or_refuses_long_texts(tmp_path: Path) -> None:
    text = wstf(header=HEADER.replace("SN-1", "S" * 120))

    [report] = convert(tmp_path, text, validationMode="AutoTruncate")

    assert report["sn"] == "S" * 100
    message = conversion_error(tmp_path, text)
    assert "line 1: sn is 120 characters long; WATS takes 100 (validationMode AutoTruncate" in (
        message
    )


def test_file_encoding_as_a_code_page_number(tmp_path: Path) -> None:
    [report] = convert(tmp_path, wstf(header=HEADER + "Note\tMüller\n"), "cp1252",
                       fileEncoding="1252")  # fmt: skip
    assert report["miscInfos"] == [{"description": "Note", "text": "Müller"}]


def test_a_flying_probe_export_groups_runs_of_one_step_name(tmp_path: Path) -> None:
    # Shaped like a real flying-probe export: every line names its measure "P-Auto"; lines of
    # one net in a row make one step with several measurements, as in Virinco's converter.
    line = "NumericLimitTest\t{}\tP-Auto\t{}\t100.0\t100.0\tGT\tO\tPassed\t1.000000\t\t0\t\t\n"
    nets = ["ISH935", "ISH94", "ISH94", "ISH94", "IP2P96", "ISH935"]
    steps = "".join(line.format(net, 200 + n) for n, net in enumerate(nets))
    columns = COLUMNS + "\tStepExecutionTime\tStepReportText\tStepErrorCode\tStepErrorMessage"
    text = wstf(steps).replace(COLUMNS, columns + "\tCausedSequenceFailure")

    [report] = convert(tmp_path, text)

    assert [(s["name"], len(s["numericMeas"])) for s in steps_of(report)] == [
        ("ISH935", 1), ("ISH94", 3), ("IP2P96", 1), ("ISH935", 1),
    ]  # fmt: skip
    assert {m["name"] for s in steps_of(report) for m in s["numericMeas"]} == {"P-Auto"}
    assert all(s["stepType"] == "ET_MNLT" for s in steps_of(report))
