"""Sample input files (WSTF, CSV, WSJF) for the demo, the tests and the benchmarks.

Every unit's content follows from its index alone, so a run is reproducible and a benchmark
can write a million files without keeping any of them in memory. Files appear atomically
(written as ``.name.tmp``, then renamed), so a folder watcher never sees half a file.

    python -m wats_station.samples wstf Incoming 100 --failing-every 10
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from wats_station.converters.wstf import UUTDefaults, format_wstf, parse_wstf
from wats_station.supervisor.atomic import write_atomically

PART_NUMBER = "PCBA-100"
REVISION = "B"
STATION = "SAMPLE-STATION-1"
FIRMWARE = "1.8.0"
FIRST_START = datetime(2025, 3, 3, 8, 0, tzinfo=timezone(timedelta(hours=1)))
SECONDS_PER_UNIT = 47
SAMPLE_ID_NAMESPACE = uuid.UUID("0c5e7f1a-93d2-4b8e-a6f0-5d1c2b3a4e97")
CSV_HEADER = (
    "SerialNumber", "PartNumber", "Revision", "TestName", "Value", "LowLimit", "HighLimit",
    "Unit", "Status", "StartTime", "Operator",
)  # fmt: skip


def write_wstf_files(
    folder: Path,
    count: int,
    *,
    start_index: int = 0,
    uuts_per_file: int = 1,
    failing_every: int = 0,
) -> list[Path]:
    """``count`` WSTF files ``wstf_NNNNNN.txt``, each with ``uuts_per_file`` UUTs."""
    paths = []
    for index in range(start_index, start_index + count):
        units = range(index * uuts_per_file, (index + 1) * uuts_per_file)
        text = "".join(format_wstf(sample_uut(unit, failing_every)) for unit in units)
        paths.append(_write_atomically(folder / f"wstf_{index:06d}.txt", text.encode("cp1252")))
    return paths


def write_csv_files(
    folder: Path,
    count: int,
    *,
    start_index: int = 0,
    uuts_per_file: int = 1,
    failing_every: int = 0,
) -> list[Path]:
    """``count`` CSV files ``csv_NNNNNN.csv`` in the CSV converter's default columns."""
    paths = []
    for index in range(start_index, start_index + count):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for unit in range(index * uuts_per_file, (index + 1) * uuts_per_file):
            writer.writerows(_csv_rows(unit, failing_every))
        paths.append(_write_atomically(folder / f"csv_{index:06d}.csv", buffer.getvalue().encode()))
    return paths


def write_wsjf_files(
    folder: Path, count: int, *, start_index: int = 0, failing_every: int = 0
) -> list[Path]:
    """``count`` WSJF files ``wsjf_NNNNNN.json``, one valid report each, with distinct ids."""
    paths = []
    for index in range(start_index, start_index + count):
        data = json.dumps(sample_report(index, failing_every), indent=1).encode()
        paths.append(_write_atomically(folder / f"wsjf_{index:06d}.json", data))
    return paths


def sample_report(unit: int, failing_every: int = 0) -> dict[str, Any]:
    """The WSJF report of sample unit ``unit``, with an id that depends on ``unit`` only."""
    defaults = UUTDefaults(station_name=STATION, location="Sample line")
    text = format_wstf(sample_uut(unit, failing_every))
    report = parse_wstf(text, defaults, source=f"sample unit {unit}")[0]
    report["id"] = str(uuid.uuid5(SAMPLE_ID_NAMESPACE, f"unit-{unit}"))
    return report


def sample_uut(unit: int, failing_every: int = 0) -> dict[str, Any]:
    """The format_wstf description of sample unit ``unit``: power, self test, firmware."""
    readings = _readings(unit, _fails(unit, failing_every))
    numeric = [
        {"StepType": "NumericLimitTest", "StepName": name, "Value": value, "LowLimit": low,
         "HighLimit": high, "CompOperator": operator, "Unit": unit_name, "StepTime": 0.05}
        for name, value, low, high, operator, unit_name in readings[:2]
    ]  # fmt: skip
    rails = [
        {"StepType": "MultipleNumericLimitTest", "StepName": "Rails", "MeasureName": name,
         "Value": value, "LowLimit": low, "HighLimit": high, "CompOperator": operator,
         "Unit": unit_name}
        for name, value, low, high, operator, unit_name in readings[2:]
    ]  # fmt: skip
    return {
        "header": {
            "SerialNumber": _serial(unit),
            "PartNumber": PART_NUMBER,
            "Revision": REVISION,
            "OperationTypeCode": 10,
            "StationName": STATION,
            "OperatorName": f"operator{unit % 3 + 1}",
            "SoftwareName": "PCBA-100 functional test",
            "SoftwareVersion": "2.4.1",
            "FixtureId": f"FX-{unit % 4 + 1}",
            "StartDateTime": _start(unit).isoformat(),
            "ExecutionTime": 12.5,
            "FirmwareBuild": f"{FIRMWARE}+{unit % 7}",
        },
        "steps": [
            {"StepType": "SequenceCall", "StepName": "Power", "steps": [*numeric, *rails]},
            {"StepType": "PassFailTest", "StepName": "Self test", "Value": "True"},
            {
                "StepType": "StringValueTest",
                "StepName": "Firmware version",
                "Value": FIRMWARE,
                "LowLimit": FIRMWARE,
                "CompOperator": "CASESENSIT",
            },
            {"StepType": "ActionStep", "StepName": "Power off"},
        ],
    }


def _readings(unit: int, failing: bool) -> list[tuple[str, float, float, float | None, str, str]]:
    """(name, value, low, high, compare operator, unit) of the numeric measurements."""
    rng = random.Random(unit)
    vcc = 5.61 if failing else round(rng.uniform(4.9, 5.1), 3)
    return [
        ("VCC", vcc, 4.75, 5.25, "GELE", "V"),
        ("Idle current", round(rng.uniform(0.08, 0.2), 4), 0.25, None, "LE", "A"),
        ("3V3", round(rng.uniform(3.25, 3.35), 3), 3.2, 3.4, "GELE", "V"),
        ("1V8", round(rng.uniform(1.77, 1.83), 3), 1.7, 1.9, "GELE", "V"),
    ]


def _csv_rows(unit: int, failing_every: int) -> list[list[object]]:
    rows = []
    for name, value, low, high, operator, unit_name in _readings(unit, _fails(unit, failing_every)):
        # The CSV format knows limits only by position: a single upper limit is HighLimit.
        low_cell, high_cell = ("", low) if operator == "LE" else (low, high)
        row = [
            _serial(unit), PART_NUMBER, REVISION, name, value, low_cell, high_cell, unit_name, "",
            _start(unit).isoformat(), f"operator{unit % 3 + 1}",
        ]  # fmt: skip
        rows.append(row)
    return rows


def _fails(unit: int, failing_every: int) -> bool:
    return failing_every > 0 and (unit + 1) % failing_every == 0


def _serial(unit: int) -> str:
    return f"SN{unit:08d}"


def _start(unit: int) -> datetime:
    return FIRST_START + timedelta(seconds=SECONDS_PER_UNIT * unit)


def _write_atomically(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, data, mode=0o644, durable=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wats_station.samples", description=__doc__)
    parser.add_argument("format", choices=("wstf", "csv", "wsjf"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("count", type=int)
    parser.add_argument("--start-index", type=int, default=0)
    parser.add_argument("--uuts-per-file", type=int, default=1, help="WSTF and CSV only")
    parser.add_argument("--failing-every", type=int, default=0, help="every Nth unit fails")
    options = parser.parse_args(argv)
    common = {"start_index": options.start_index, "failing_every": options.failing_every}
    if options.format == "wsjf":
        paths = write_wsjf_files(options.folder, options.count, **common)
    else:
        writer = write_wstf_files if options.format == "wstf" else write_csv_files
        paths = writer(options.folder, options.count, uuts_per_file=options.uuts_per_file, **common)
    print(f"wrote {len(paths)} {options.format} file(s) to {options.folder}")


if __name__ == "__main__":
    main()
