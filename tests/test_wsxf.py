"""WSXF files become the reports a server would export as WSJF; unsafe XML is refused."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wats_station.converters.base import ConversionError, Converter
from wats_station.converters.registry import (
    STANDARD_CONVERTERS,
    ConverterLoadError,
    load_converter_class,
)
from wats_station.converters.wsjf import WSJFConverter
from wats_station.converters.wsxf import SERVER_SIDE_KEYS, WSXFConverter

SAMPLES = Path(__file__).parent.parent / "scripts" / "sample_files"
NAMESPACE = "http://wats.virinco.com/schemas/WATS/Report/wsxf"


def first_difference(converted: Any, expected: Any, path: str = "") -> str | None:
    """The path of the first place where the two differ (value, int vs float, keys), or None."""
    if isinstance(expected, dict) and isinstance(converted, dict):
        ignored = SERVER_SIDE_KEYS if path == "" else frozenset()
        for key in sorted((expected.keys() | converted.keys()) - ignored):
            where = f"{path}.{key}" if path else key
            if key not in converted:
                return f"{where}: missing, expected {expected[key]!r:.80}"
            if key not in expected:
                return f"{where}: unexpected {converted[key]!r:.80}"
            difference = first_difference(converted[key], expected[key], where)
            if difference:
                return difference
        return None
    if isinstance(expected, list) and isinstance(converted, list):
        if len(converted) != len(expected):
            return f"{path}: {len(converted)} items, expected {len(expected)}"
        for position, (mine, theirs) in enumerate(zip(converted, expected, strict=True)):
            difference = first_difference(mine, theirs, f"{path}[{position}]")
            if difference:
                return difference
        return None
    if type(converted) is not type(expected) or converted != expected:
        return f"{path}: {converted!r:.80}, expected {expected!r:.80}"
    return None


def write(tmp_path: Path, content: str | bytes, name: str = "input.xml") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def report_xml(report_id: str = "", step_status: str = "Passed", group: str = "Setup") -> str:
    id_attribute = f'ID="{report_id}" ' if report_id else ""
    return f"""
  <Report type="UUT" {id_attribute}Start="2026-01-30T22:01:41+01:00" Result="Passed"
          SN="SN1" PN="PN1" Rev="A" MachineName="ST-1" Location="Line 1" Purpose="Test">
    <UUT UserLoginName="op" ExecutionTime="1.5" />
    <Process Code="10" Name="Final test" />
    <Step Id="1" Group="Main" Name="MainSequence Callback" StepType="SequenceCall"
          Status="Passed" total_time="1.5">
      <SequenceCall Name="MainSequence Callback" Version="1.0" Filepath="main.seq" />
      <Step Id="2" Group="{group}" Name="VCC" StepType="ET_NLT" Status="{step_status}"
            total_time="0.1">
        <NumericLimit NumericValue="5.02" Units="V" CompOperator="GELE" LowLimit="4.9"
                      HighLimit="5.1" Status="Passed" />
      </Step>
    </Step>
  </Report>"""


def wsxf(*reports: str) -> str:
    declaration = '<?xml version="1.0" encoding="utf-8"?>'
    return f'{declaration}\n<Reports xmlns="{NAMESPACE}">{"".join(reports)}\n</Reports>\n'


def convert(path: Path) -> list[dict[str, Any]]:
    return WSXFConverter().convert(path)


def test_the_sample_converts_to_the_servers_own_wsjf_export() -> None:
    (converted,) = convert(SAMPLES / "uut-wsxf-export.xml")
    expected = json.loads((SAMPLES / "uut-wsjf-export.json").read_bytes())
    assert first_difference(converted, expected) is None


def test_the_comparison_helper_sees_an_int_where_a_float_belongs() -> None:
    expected = {"root": {"numericMeas": [{"value": 500.0}]}, "origin": "server only"}
    converted = {"root": {"numericMeas": [{"value": 500}]}}
    assert first_difference(converted, expected) == (
        "root.numericMeas[0].value: 500, expected 500.0"
    )


def test_several_reports_in_one_file(tmp_path: Path) -> None:
    given = "33A2D408-3FC8-480B-B554-6866C77FD91C"
    content = wsxf(report_xml(given), report_xml(), report_xml())
    reports = convert(write(tmp_path, content))
    again = convert(write(tmp_path, content, "copy.xml"))
    assert reports[0]["id"] == given.lower()
    derived = [report["id"] for report in reports[1:]]
    assert derived == [report["id"] for report in again[1:]]  # same bytes, same ids
    assert derived[0] != derived[1]  # a different position, a different id


def test_a_small_report_maps_every_header_field(tmp_path: Path) -> None:
    (report,) = convert(write(tmp_path, wsxf(report_xml("6f1c2a9e-0d7b-4c1e-9a4f-2b8e5d3c7a10"))))
    assert {key: value for key, value in report.items() if key not in ("root", "uut")} == {
        "type": "T",
        "id": "6f1c2a9e-0d7b-4c1e-9a4f-2b8e5d3c7a10",
        "pn": "PN1",
        "sn": "SN1",
        "rev": "A",
        "processCode": 10,
        "result": "P",
        "machineName": "ST-1",
        "location": "Line 1",
        "purpose": "Test",
        "start": "2026-01-30T22:01:41+01:00",
        "miscInfos": [],
        "subUnits": [],
        "assets": [],
        "additionalData": [],
    }
    vcc = report["root"]["steps"][0]
    assert vcc["numericMeas"] == [
        {"compOp": "GELE", "name": None, "status": "P", "unit": "V", "value": 5.02,
         "highLimit": 5.1, "lowLimit": 4.9}
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("word", "letter"),
    [("Passed", "P"), ("Failed", "F"), ("Done", "D"), ("Skipped", "S"), ("Error", "E"),
     ("Terminated", "T")],
)  # fmt: skip
def test_status_words_become_letters(tmp_path: Path, word: str, letter: str) -> None:
    (report,) = convert(write(tmp_path, wsxf(report_xml(step_status=word))))
    assert report["root"]["steps"][0]["status"] == letter


@pytest.mark.parametrize(("word", "letter"), [("Main", "M"), ("Setup", "S"), ("Cleanup", "C")])
def test_group_words_become_letters(tmp_path: Path, word: str, letter: str) -> None:
    (report,) = convert(write(tmp_path, wsxf(report_xml(group=word))))
    assert report["root"]["steps"][0]["group"] == letter


def test_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, 10)
    ]
    bomb = (
        '<?xml version="1.0"?>\n<!DOCTYPE Reports [\n'
        + "\n".join(entities)
        + f'\n]>\n<Reports xmlns="{NAMESPACE}">&lol9;</Reports>\n'
    )
    path = write(tmp_path, bomb)
    start = time.perf_counter()
    with pytest.raises(ConversionError) as caught:
        convert(path)
    assert time.perf_counter() - start < 0.5
    assert str(caught.value).startswith(f"{path}: line 3: the DTD declares the entity 'lol0'")
    assert "refused" in str(caught.value)


def test_external_entity_is_refused_without_reading_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("station password")
    content = (
        f'<?xml version="1.0"?>\n<!DOCTYPE Reports [\n<!ENTITY x SYSTEM "file://{secret}">\n]>\n'
        f'<Reports xmlns="{NAMESPACE}"><Report>&x;</Report></Reports>\n'
    )
    with pytest.raises(ConversionError) as caught:
        convert(write(tmp_path, content))
    assert "line 3: the DTD declares the entity 'x'" in str(caught.value)
    assert "station password" not in str(caught.value)


def test_malformed_xml_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, f'<Reports xmlns="{NAMESPACE}">\n  <Report>\n  </Reprt>\n</Reports>')
    with pytest.raises(ConversionError) as caught:
        convert(path)
    assert str(caught.value) == f"{path}: malformed XML at line 3, column 5: mismatched tag"


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ('Status="Passed" total_time="0.1"', ""),  # the unbroken document, for contrast
        ('Status="Fine" total_time="0.1"', "line 10, <Step>: Status='Fine' is not one of Passed"),
        ('Status="Passed" total_time="fast"', "line 10, <Step>: total_time='fast' is not a number"),
    ],
)
def test_bad_values_name_the_line(tmp_path: Path, broken: str, message: str) -> None:
    content = wsxf(report_xml()).replace('Status="Passed"\n            total_time="0.1"', broken)
    assert broken in content
    path = write(tmp_path, content)
    if not message:
        convert(path)
        return
    with pytest.raises(ConversionError) as caught:
        convert(path)
    assert str(caught.value).startswith(f"{path}: {message}")


@pytest.mark.parametrize(
    ("replace", "by", "message"),
    [
        ('type="UUT"', 'type="UUR"', "<UUT>: not supported inside <Report>"),
        ('<UUT UserLoginName="op"', '<Fixture SN="A1"/><UUT UserLoginName="op"',
         "line 5, <Fixture>: not supported inside <Report>"),
        ('<UUT UserLoginName="op"', '<Asset UsageCount="3"/><UUT UserLoginName="op"',
         "line 5, <Asset>: an asset needs its serial number"),
        ('ID="', 'ID="x', "ID='x6f1c2a9e-0d7b-4c1e-9a4f-2b8e5d3c7a10' is not a UUID"),
        ('Result="Passed"', 'Result="Skipped"', "invalid report: result: 'S' is not one of"),
        ('PN="PN1"', 'PN=" "', "invalid report: pn: is required"),
        ('<Process Code="10" Name="Final test" />', "", "needs a <Process Code=...> element"),
    ],
)  # fmt: skip
def test_reports_the_server_would_reject_are_refused(
    tmp_path: Path, replace: str, by: str, message: str
) -> None:
    content = wsxf(report_xml("6f1c2a9e-0d7b-4c1e-9a4f-2b8e5d3c7a10"))
    assert replace in content
    with pytest.raises(ConversionError) as caught:
        convert(write(tmp_path, content.replace(replace, by, 1)))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (f'<Reports xmlns="{NAMESPACE}"/>'.encode(), "contains no <Report> element"),
        (b'<Reports xmlns="urn:other"/>', "this is not WSXF (namespace 'urn:other')"),
        (b"\x00\x01\x02binary", "malformed XML at line 1, column 1"),
    ],
)
def test_unusable_files_say_why(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(ConversionError) as caught:
        convert(write(tmp_path, content))
    assert message in str(caught.value)


def test_absurdly_deep_nesting_is_an_error_not_a_crash(tmp_path: Path) -> None:
    step = '<Step Name="s" StepType="SequenceCall"><SequenceCall Name="s" />'
    nested = step * 20_000 + "</Step>" * 20_000
    content = wsxf(report_xml()).replace("</Step>\n    </Step>", f"</Step>{nested}</Step>")
    with pytest.raises(ConversionError, match="nested too deeply"):
        convert(write(tmp_path, content))


def test_confidence_prefers_the_wsxf_namespace(tmp_path: Path) -> None:
    converter = WSXFConverter()
    assert converter.validate(SAMPLES / "uut-wsxf-export.xml") > 0.5
    assert converter.validate(write(tmp_path, "<html></html>")) < 0.5


def test_registry_knows_the_standard_names() -> None:
    assert set(STANDARD_CONVERTERS) == {
        "wsjf", "wsxf", "wstf", "csv", "atml", "teststand-xml", "openhtf"
    }  # fmt: skip
    assert load_converter_class("wsjf") is WSJFConverter
    assert load_converter_class("wsxf") is WSXFConverter
    assert load_converter_class("wats_station.converters.wsxf.WSXFConverter") is WSXFConverter


@pytest.fixture
def station_converters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A station's converters folder; sys.path and the imported modules are restored after."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    folder = tmp_path / "converters_folder"
    folder.mkdir()
    (folder / "line3_tester.py").write_text(
        textwrap.dedent(
            """
            from wats_station.converters.base import Converter

            class TesterConverter(Converter):
                name = "line3"
                file_patterns = ("*.log",)

                def convert(self, path):
                    return [{"sn": path.read_text().strip()}]

            class NotAConverter:
                pass

            NOT_A_CLASS = 3
            """
        )
    )
    (folder / "broken_tester.py").write_text("import definitely_not_installed_xyz\n")
    yield folder
    for module_name in ("line3_tester", "broken_tester"):
        sys.modules.pop(module_name, None)


def test_registry_loads_a_converter_from_a_station_folder(
    station_converters: Path, tmp_path: Path
) -> None:
    converter_class = load_converter_class("line3_tester.TesterConverter", [station_converters])
    assert issubclass(converter_class, Converter)
    assert converter_class.name == "line3"
    log = tmp_path / "unit.log"
    log.write_text("SN42\n")
    assert converter_class().convert(log) == [{"sn": "SN42"}]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "nodots",
            "not a standard converter (wsjf, wsxf, wstf, csv, atml, teststand-xml, openhtf)",
        ),
        ("missing_module_xyz.Converter", "no module named 'missing_module_xyz'"),
        ("line3_tester.Missing", "has no 'Missing'"),
        ("line3_tester.NotAConverter", "is not a subclass of converters.base.Converter"),
        ("line3_tester.NOT_A_CLASS", "is not a subclass of converters.base.Converter"),
        ("broken_tester.Converter", "needs 'definitely_not_installed_xyz'"),
        ("wats_station.converters.base.Converter", "the base class converts nothing"),
    ],
)
def test_registry_errors_name_the_spec(station_converters: Path, spec: str, message: str) -> None:
    with pytest.raises(ConverterLoadError) as caught:
        load_converter_class(spec, [station_converters])
    assert str(caught.value).startswith(f"converter {spec!r}: ")
    assert message in str(caught.value)


def test_attachments_are_kept_and_single_limits_sit_in_low_limit(tmp_path: Path) -> None:
    step = """<NumericLimit NumericValue="5.02" Units="V" CompOperator="GELE" LowLimit="4.9"
                      HighLimit="5.1" Status="Passed" />"""
    content = wsxf(report_xml()).replace(
        step,
        '<NumericLimit NumericValue="5.02" Units="V" CompOperator="LE" HighLimit="5.1" '
        'Status="Passed" /><Attachment Name="scope.png" ContentType="image/png">'
        "iVBORw0K\n  Ggo=</Attachment>",
    )
    assert "<Attachment" in content

    (report,) = convert(write(tmp_path, content))

    vcc = report["root"]["steps"][0]
    assert vcc["numericMeas"][0]["lowLimit"] == 5.1  # as the server stores a single limit
    assert vcc["numericMeas"][0]["highLimit"] is None
    assert vcc["attachment"] == {
        "name": "scope.png",
        "contentType": "image/png",
        "data": "iVBORw0KGgo=",
    }


def test_an_attachment_exported_without_its_bytes_keeps_what_it_has(tmp_path: Path) -> None:
    # Server exports name the file and its type but leave the bytes out (Size only).
    content = wsxf(report_xml()).replace(
        'HighLimit="5.1" Status="Passed" />',
        'HighLimit="5.1" Status="Passed" />'
        '<Attachment Name="winhlp32.exe" ContentType="application/x-msdownload" Size="10240" />',
    )

    (report,) = convert(write(tmp_path, content))

    assert report["root"]["steps"][0]["attachment"] == {
        "name": "winhlp32.exe",
        "contentType": "application/x-msdownload",
    }


def test_assets_are_kept(tmp_path: Path) -> None:
    content = wsxf(report_xml()).replace(
        '<UUT UserLoginName="op"',
        '<Asset AssetSN="DMM-7" UsageCount="1200" /><UUT UserLoginName="op"',
    )
    (report,) = convert(write(tmp_path, content))
    assert report["assets"] == [{"sn": "DMM-7", "usageCount": 1200}]
