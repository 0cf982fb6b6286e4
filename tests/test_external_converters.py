"""Process and native (shared library) converters: reports out, and clear errors when they fail."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wats_station.converters.base import ConversionError, derived_report_id
from wats_station.converters.external import ProcessConverter
from wats_station.converters.native import NativeConverter
from wats_station.converters.wsjf import validate_report
from wats_station.lab.harness import wait_until
from wats_station.lab.processes import pid_alive

CONVERTERS = Path(__file__).resolve().parents[1] / "converters"

# A converter program: the report's serial number is the input file's first line.
REPORT_PROGRAM = """\
import json, os, sys
assert sys.stdin.read() == ""  # stdin is closed, so a stray read cannot hang the worker
serial = open(sys.argv[1], encoding="utf-8").readline().strip()
report = {
    "type": "T", "pn": "PN-EXT", "sn": serial, "rev": "A", "processCode": 10, "result": "P",
    "machineName": "M", "location": os.environ.get("TEST_LOCATION", "L"), "purpose": "P",
    "start": "2025-01-01T08:00:00+01:00", "uut": {"user": "u"},
    "root": {"stepType": "SequenceCall", "name": "Main", "status": "P", "steps": []},
}
text = json.dumps([report, {**report, "sn": serial + "-2"}])
if len(sys.argv) > 2:
    open(sys.argv[2], "w", encoding="utf-8").write(text)
else:
    print(text)
"""

NATIVE_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "native_abi.h"

int wats_test_frees = 0;

static char *copy(const char *text) {
    char *p = malloc(strlen(text) + 1);
    strcpy(p, text);
    return p;
}

int wats_convert(const char *input_path, char **out_json, char **out_error) {
    char serial[64] = {0};
    char json[1024];
    FILE *f = fopen(input_path, "r");
    if (!f) {
        *out_error = copy("cannot open the input file");
        return 2;
    }
    if (!fgets(serial, sizeof serial, f)) serial[0] = 0;
    fclose(f);
    serial[strcspn(serial, "\r\n")] = 0;
    if (strncmp(serial, "BAD", 3) == 0) {
        *out_error = copy("line 1: serial number BAD is blocked \xc3\x98");
        return 7;
    }
    snprintf(json, sizeof json,
        "{\"type\":\"T\",\"pn\":\"PN-NAT\",\"sn\":\"%s\",\"rev\":\"A\",\"processCode\":10,"
        "\"result\":\"P\",\"machineName\":\"M\",\"location\":\"L\",\"purpose\":\"P\","
        "\"start\":\"2025-01-01T08:00:00+01:00\",\"uut\":{\"user\":\"u\"},"
        "\"root\":{\"stepType\":\"SequenceCall\",\"name\":\"Main\",\"status\":\"P\",\"steps\":[]}}",
        serial);
    *out_json = copy(json);
    return 0;
}

void wats_free(char *p) {
    if (p) {
        wats_test_frees++;
        free(p);
    }
}

const char *wats_converter_name(void) { return "test-native 1.0"; }
"""

WITHOUT_FREE_SOURCE = r"""
#include "native_abi.h"
int wats_convert(const char *input_path, char **out_json, char **out_error) { return 1; }
"""


def program(tmp_path: Path, source: str) -> list[str]:
    script = tmp_path / "converter_program.py"
    script.write_text(textwrap.dedent(source), encoding="utf-8")
    return [sys.executable, str(script), "{input}"]


def input_file(tmp_path: Path, first_line: str) -> Path:
    path = tmp_path / "input.dat"
    path.write_text(f"{first_line}\nmore data\n", encoding="utf-8")
    return path


def compile_library(folder: Path, name: str, source: str) -> Path:
    compiler = shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler (cc) on PATH to build the test library")
    source_path = folder / f"{name}.c"
    source_path.write_text(source, encoding="utf-8")
    library = folder / f"lib{name}.so"
    flags = ["-shared", "-fPIC", "-Wall", "-Werror", f"-I{CONVERTERS}"]
    command = [compiler, *flags, "-o", str(library), str(source_path)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return library


@pytest.fixture(scope="module")
def native_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_library(tmp_path_factory.mktemp("native"), "testconv", NATIVE_SOURCE)


# -- process converters ------------------------------------------------------------------------


def test_process_converter_reads_reports_from_stdout(tmp_path: Path) -> None:
    source = input_file(tmp_path, "SN-100")
    converter = ProcessConverter(
        command=program(tmp_path, REPORT_PROGRAM), timeout_s=30, env={"TEST_LOCATION": "Line 9"}
    )

    reports = converter.convert(source)
    again = converter.convert(source)

    for report in reports:
        validate_report(report)
    assert [(r["sn"], r["location"]) for r in reports] == [
        ("SN-100", "Line 9"),
        ("SN-100-2", "Line 9"),
    ]
    # Ids come from the input file, so converting it again cannot duplicate a report.
    assert [r["id"] for r in reports] == [derived_report_id(source.read_bytes(), i) for i in (0, 1)]
    assert [r["id"] for r in again] == [r["id"] for r in reports]


def test_process_converter_reads_reports_from_its_output_file(tmp_path: Path) -> None:
    command = [*program(tmp_path, REPORT_PROGRAM), "{output}"]
    converter = ProcessConverter(command=command, output="file", timeout_s=30)

    reports = converter.convert(input_file(tmp_path, "SN-200"))

    assert [r["sn"] for r in reports] == ["SN-200", "SN-200-2"]


def test_exit_status_and_stderr_tail_are_in_the_error(tmp_path: Path) -> None:
    source = """\
    import sys
    for number in range(30):
        print(f"problem line {number:02d}", file=sys.stderr)
    sys.exit(3)
    """
    converter = ProcessConverter(command=program(tmp_path, source), timeout_s=30)

    with pytest.raises(ConversionError) as caught:
        converter.convert(input_file(tmp_path, "SN-1"))

    message = str(caught.value)
    assert "converter_program.py '{input}'` failed with exit status 3" in message
    assert "input.dat" in message
    assert "problem line 29" in message
    assert "problem line 10" in message  # the last 20 lines ...
    assert "problem line 09" not in message  # ... and no more


def test_death_by_signal_is_named(tmp_path: Path) -> None:
    source = """\
    import os, resource, signal, sys
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the working directory
    print("about to crash", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
    """
    converter = ProcessConverter(command=program(tmp_path, source), timeout_s=30)

    with pytest.raises(ConversionError, match=r"killed by signal SIGSEGV(.|\n)*about to crash"):
        converter.convert(input_file(tmp_path, "SN-1"))


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    source = f"""\
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    open({str(pid_file)!r}, "w").write(str(child.pid))
    print("working on it", file=sys.stderr, flush=True)
    time.sleep(60)
    """
    converter = ProcessConverter(command=program(tmp_path, source), timeout_s=2)

    started = time.monotonic()
    with pytest.raises(ConversionError) as caught:
        converter.convert(input_file(tmp_path, "SN-1"))
    elapsed = time.monotonic() - started

    message = str(caught.value)
    assert "within the timeout of 2 s" in message
    assert "working on it" in message
    assert elapsed < 10
    grandchild = int(pid_file.read_text())
    wait_until(lambda: not pid_alive(grandchild), 5, "the converter's own child to die")


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("print('hello')", "wrote no valid WSJF JSON on stdout: malformed JSON at line 1"),
        ("pass", "wrote no valid WSJF JSON on stdout: the output is empty"),
        ("print('[1, 2]')", "item [0] is int, not a report object"),
        ("print('[]')", "an empty list of reports"),
    ],
)
def test_bad_output_is_refused(tmp_path: Path, output: str, expected: str) -> None:
    converter = ProcessConverter(command=program(tmp_path, output), timeout_s=30)

    with pytest.raises(ConversionError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        converter.convert(input_file(tmp_path, "SN-1"))


def test_missing_output_file_is_an_error(tmp_path: Path) -> None:
    command = [*program(tmp_path, "pass"), "{output}"]
    converter = ProcessConverter(command=command, output="file", timeout_s=30)

    with pytest.raises(ConversionError, match="wrote no output file"):
        converter.convert(input_file(tmp_path, "SN-1"))


def test_program_that_cannot_start_is_named(tmp_path: Path) -> None:
    converter = ProcessConverter(command=[str(tmp_path / "no-such-program"), "{input}"])

    with pytest.raises(ConversionError, match=r"cannot start .*no-such-program"):
        converter.convert(input_file(tmp_path, "SN-1"))


def test_bad_process_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty list"):
        ProcessConverter(command=[])
    with pytest.raises(ValueError, match="output must be one of"):
        ProcessConverter(command=["x"], output="pipe")
    with pytest.raises(ValueError, match=r"needs an \{output\} placeholder"):
        ProcessConverter(command=["x", "{input}"], output="file")


# -- native converters -------------------------------------------------------------------------


def test_native_converter_returns_the_library_report(tmp_path: Path, native_library: Path) -> None:
    frees = ctypes.c_int.in_dll(ctypes.CDLL(str(native_library)), "wats_test_frees")
    before = frees.value
    source = input_file(tmp_path, "SN-Ø1")

    [report] = NativeConverter(library=native_library).convert(source)

    validate_report(report)
    assert (report["pn"], report["sn"]) == ("PN-NAT", "SN-Ø1")
    assert report["id"] == derived_report_id(source.read_bytes(), 0)
    assert frees.value == before + 1  # the JSON string went back to the library's allocator


def test_native_converter_error_is_reported(tmp_path: Path, native_library: Path) -> None:
    frees = ctypes.c_int.in_dll(ctypes.CDLL(str(native_library)), "wats_test_frees")
    before = frees.value
    converter = NativeConverter(library=native_library)

    with pytest.raises(ConversionError) as caught:
        converter.convert(input_file(tmp_path, "BAD-1"))

    message = str(caught.value)
    assert "libtestconv.so (test-native 1.0)" in message
    assert "line 1: serial number BAD is blocked Ø" in message
    assert "wats_convert returned 7" in message
    assert frees.value == before + 1


def test_missing_library_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "libnothere.so"

    with pytest.raises(ConversionError, match=f"cannot load native converter {missing}"):
        NativeConverter(library=missing)


def test_missing_symbol_is_named(tmp_path: Path) -> None:
    library = compile_library(tmp_path, "withoutfree", WITHOUT_FREE_SOURCE)

    with pytest.raises(ConversionError, match=f"{library} does not export wats_free"):
        NativeConverter(library=library)
