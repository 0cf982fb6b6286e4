"""The CSV converter turns measurement rows into one valid WSJF report per serial number."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from wats_station.converters.base import ConversionError
from wats_station.converters.csvfile import CSVConverter
from wats_station.converters.wsjf import validate_report
from wats_station.samples import write_csv_files

HEADER = "SerialNumber,PartNumber,Revision,TestName,Value,LowLimit,HighLimit,Unit"


def convert(
    tmp_path: Path, text: str, file_encoding: str = "utf-8", **arguments: Any
) -> list[dict]:
    path = tmp_path / "results.csv"
    path.write_bytes(text.encode(file_encoding))
    reports = CSVConverter(**arguments).convert(path)
    for report in reports:
        validate_report(report)
    return reports


def conversion_error(tmp_path: Path, text: str, **arguments: Any) -> str:
    with pytest.raises(ConversionError) as caught:
        convert(tmp_path, text, **arguments)
    return str(caught.value)


def measurements(report: dict) -> list[dict]:
    return [step["numericMeas"][0] for step in report["root"]["steps"]]


def test_default_columns_map_to_a_report(tmp_path: Path) -> None:
    text = (
        f"{HEADER},Status,StartTime,Operator\n"
        "SN-1,PCBA-100,B,VCC,5.02,4.9,5.1,V,,2025-06-01T09:30:00+02:00,kari\n"
        "SN-1,PCBA-100,B,Idle current,0.12,,0.25,A,,,\n"
        "SN-1,PCBA-100,B,Temperature,31.5,25,,C,,,\n"
        "SN-1,PCBA-100,B,Fan speed,2500,,,rpm,,,\n"
    )

    [report] = convert(tmp_path, text, process_code=50, station_name="FCT-1", location="Line 2")

    assert (report["sn"], report["pn"], report["rev"], report["processCode"]) == (
        "SN-1",
        "PCBA-100",
        "B",
        50,
    )
    assert (report["machineName"], report["location"], report["purpose"]) == (
        "FCT-1",
        "Line 2",
        "Production",
    )
    assert report["start"] == "2025-06-01T09:30:00+02:00"
    assert report["uut"]["user"] == "kari"
    assert [step["name"] for step in report["root"]["steps"]] == [
        "VCC",
        "Idle current",
        "Temperature",
        "Fan speed",
    ]
    assert {step["stepType"] for step in report["root"]["steps"]} == {"ET_NLT"}
    # A single limit is in lowLimit, whichever side it bounds.
    assert [(m["compOp"], m.get("lowLimit"), m.get("highLimit")) for m in measurements(report)] == [
        ("GELE", 4.9, 5.1),
        ("LE", 0.25, None),
        ("GE", 25.0, None),
        ("LOG", None, None),
    ]
    assert measurements(report)[0] == {
        "compOp": "GELE",
        "value": 5.02,
        "unit": "V",
        "status": "P",
        "lowLimit": 4.9,
        "highLimit": 5.1,
    }
    assert report["result"] == "P"


@pytest.mark.parametrize(
    ("value", "low", "high", "expected"),
    [
        ("5.2", "4.9", "5.1", "F"),
        ("4.8", "4.9", "5.1", "F"),
        ("0.3", "", "0.25", "F"),
        ("24", "25", "", "F"),
        ("-1e9", "", "", "P"),
    ],
)
def test_status_is_computed_from_the_limits(
    tmp_path: Path, value: str, low: str, high: str, expected: str
) -> None:
    [report] = convert(tmp_path, f"{HEADER}\nSN-1,P,A,Step,{value},{low},{high},V\n")

    assert measurements(report)[0]["status"] == expected
    assert report["root"]["status"] == expected
    assert report["result"] == expected


def test_status_column_wins_over_the_limits(tmp_path: Path) -> None:
    text = f"{HEADER},Status\nSN-1,P,A,VCC,9,4.9,5.1,V,Passed\nSN-1,P,A,Idle,0.1,,0.25,A,Failed\n"

    [report] = convert(tmp_path, text)

    assert [m["status"] for m in measurements(report)] == ["P", "F"]
    assert report["result"] == "F"


def test_custom_columns_delimiter_and_encoding(tmp_path: Path) -> None:
    text = (
        "Serienummer;Artikkel;Rev;Test;Målt;Min;Maks;Enhet;Operatør\n"
        "SN-7;PN-3;C;Strøm;0.5;;;mA;Jørgen\n"
    )
    columns = {
        "serial_number": "Serienummer",
        "part_number": "Artikkel",
        "revision": "Rev",
        "step_name": "Test",
        "value": "Målt",
        "low_limit": "Min",
        "high_limit": "Maks",
        "unit": "Enhet",
        "operator": "Operatør",
    }

    [report] = convert(tmp_path, text, "cp1252", columns=columns, delimiter=";", encoding="cp1252")

    assert (report["sn"], report["pn"], report["rev"]) == ("SN-7", "PN-3", "C")
    assert report["root"]["steps"][0]["name"] == "Strøm"
    assert measurements(report)[0] == {"compOp": "LOG", "value": 0.5, "unit": "mA", "status": "P"}
    assert report["uut"]["user"] == "Jørgen"


def test_rows_group_into_one_report_per_serial_in_order_of_first_appearance(
    tmp_path: Path,
) -> None:
    text = (
        f"{HEADER}\n"
        "SN-B,P,A,VCC,5.0,4.9,5.1,V\n"
        "SN-A,P,A,VCC,5.5,4.9,5.1,V\n"
        "SN-B,P,A,Idle,0.1,,0.25,A\n"
        "\n"
        "SN-A,P,A,Idle,0.1,,0.25,A\n"
        "SN-C,P,A,VCC,5.0,4.9,5.1,V\n"
    )

    reports = convert(tmp_path, text)
    again = convert(tmp_path, text)

    assert [(r["sn"], r["result"]) for r in reports] == [
        ("SN-B", "P"),
        ("SN-A", "F"),
        ("SN-C", "P"),
    ]
    assert [[s["name"] for s in r["root"]["steps"]] for r in reports] == [
        ["VCC", "Idle"],
        ["VCC", "Idle"],
        ["VCC"],
    ]
    assert len({r["id"] for r in reports}) == 3
    assert [r["id"] for r in again] == [r["id"] for r in reports]


def test_missing_column_is_named_with_the_header_found(tmp_path: Path) -> None:
    message = conversion_error(tmp_path, "SerialNumber,PartNumber,TestName,Value\nSN,P,T,1\n")

    assert "row 1: missing column(s) Revision" in message
    assert "['SerialNumber', 'PartNumber', 'TestName', 'Value']" in message


def test_wrong_delimiter_gets_a_hint(tmp_path: Path) -> None:
    message = conversion_error(tmp_path, HEADER.replace(",", ";") + "\nSN;P;A;T;1;;;V\n")

    assert "is the delimiter ',' right?" in message


def test_a_configured_optional_column_must_exist(tmp_path: Path) -> None:
    message = conversion_error(
        tmp_path, f"{HEADER}\nSN,P,A,T,1,,,V\n", columns={"status": "Result"}
    )

    assert "missing column(s) Result" in message


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("SN-1,P,A,VCC,high,4.9,5.1,V", "row 3, column 'Value': 'high' is not a number"),
        ("SN-1,P,A,VCC,5,low,5.1,V", "row 3, column 'LowLimit': 'low' is not a number"),
        (",P,A,VCC,5,4.9,5.1,V", "row 3, column 'SerialNumber': is empty"),
        ("SN-1,P,A,VCC,,4.9,5.1,V", "row 3, column 'Value': is empty"),
        ("SN-1,P,A,,5,4.9,5.1,V", "row 3, column 'TestName': is empty"),
        ("SN-1,OTHER,A,VCC,5,4.9,5.1,V", "row 3, column 'PartNumber': 'OTHER' differs from 'P'"),
    ],
)
def test_bad_row_is_named_by_row_and_column(tmp_path: Path, row: str, expected: str) -> None:
    message = conversion_error(tmp_path, f"{HEADER}\nSN-1,P,A,Idle,0.1,,0.25,A\n{row}\n")

    assert message.startswith(str(tmp_path / "results.csv"))
    assert expected in message


def test_bad_status_and_start_are_named(tmp_path: Path) -> None:
    status = conversion_error(tmp_path, f"{HEADER},Status\nSN,P,A,T,1,,,V,maybe\n")
    start = conversion_error(tmp_path, f"{HEADER},StartTime\nSN,P,A,T,1,,,V,soon\n")

    assert "row 2, column 'Status': 'maybe' is not a status" in status
    assert "row 2, column 'StartTime': 'soon' is not a date and time" in start


def test_file_without_data_rows_is_refused(tmp_path: Path) -> None:
    assert "no data rows below the header" in conversion_error(tmp_path, HEADER + "\n\n")
    assert "the file is empty" in conversion_error(tmp_path, "")


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        CSVConverter(columns={"serial": "SN"})
    with pytest.raises(ValueError, match="unknown argument"):
        CSVConverter(sheet="1")
    with pytest.raises(ValueError, match="not one character"):
        CSVConverter(delimiter=";;")


def test_generated_csv_files_convert_to_valid_reports(tmp_path: Path) -> None:
    paths = write_csv_files(tmp_path, 2, start_index=1, uuts_per_file=3, failing_every=2)

    reports = [report for path in paths for report in CSVConverter().convert(path)]

    for report in reports:
        validate_report(report)
    assert [r["sn"] for r in reports] == [f"SN{unit:08d}" for unit in range(3, 9)]
    assert [r["result"] for r in reports] == ["F", "P", "F", "P", "F", "P"]
    assert reports[0]["start"] == "2025-03-03T08:02:21+01:00"
    assert not list(tmp_path.glob(".*.tmp"))


def test_validate_recognises_the_configured_header(tmp_path: Path) -> None:
    matching = tmp_path / "a.csv"
    matching.write_text(f"{HEADER}\nSN,P,A,T,1,,,V\n", encoding="utf-8")
    other = tmp_path / "b.csv"
    other.write_text("Time,Temperature\n1,20\n", encoding="utf-8")

    assert CSVConverter().validate(matching) > 0.5
    assert CSVConverter().validate(other) < 0.5
