"""After an outage, every high-priority report reaches the server before any low-priority one.

Real station processes, real files in watch folders, the CLI, and the emulator over HTTP: the
emulator's own record of the order it stored reports in is what the test checks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wats_station.emulator import Emulator
from wats_station.lab.harness import Station, wait_until
from wats_station.samples import sample_report

TOKEN = "cHJpbzpwcmlv"


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(token=TOKEN) as server:
        yield server


def converter(home: Path, name: str, priority: int) -> dict:
    return {
        "name": name, "module": "wsjf", "file_patterns": ["*.json"], "priority": priority,
        "watch_folder": str(home / "in" / name),
    }  # fmt: skip


def drop(folder: Path, units: range) -> dict[str, Path]:
    """Write one WSJF file per unit; returns report id -> file."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for unit in units:
        report = sample_report(unit)
        path = folder / f"unit{unit}.json"
        path.write_text(json.dumps(report))
        written[report["id"]] = path
    return written


def submit(station: Station, tmp_path: Path, units: range, priority: int) -> set[str]:
    ids = set()
    for unit in units:
        report = sample_report(unit)
        path = tmp_path / f"submit{unit}.json"
        path.write_text(json.dumps(report))
        result = station.cli("submit", str(path), "--priority", str(priority), check=True)
        assert f"at priority {priority}" in result.stdout or priority == 0
        ids.add(report["id"])
    return ids


def pending(station: Station) -> int:
    return station.call("get_queue_stats")["pending"]


def assert_delivered_high_first(emulator: Emulator, high: set[str], low: set[str]) -> None:
    received = wait_until(
        lambda: (ids := emulator.received_ids()) and len(ids) >= len(high | low) and ids,
        60,
        "the whole backlog on the server",
    )
    assert len(received) == len(set(received)) == len(high | low), "a report arrived twice"
    assert set(received) == high | low
    last_high = max(received.index(report_id) for report_id in high)
    first_low = min(received.index(report_id) for report_id in low)
    assert last_high < first_low, f"high priority up to #{last_high}, low from #{first_low}"


@pytest.mark.timeout(120)
def test_after_an_outage_high_priority_reports_arrive_first_and_none_twice(
    make_station, emulator, home, tmp_path
):
    emulator.set_faults(down=True)
    station = make_station(
        config={
            "server": {"url": emulator.url, "token": TOKEN},
            "upload": {"max_concurrency": 5, "probe_base_s": 0.1, "probe_cap_s": 0.3},
            "watch": {"debounce_s": 0.1, "rescan_interval_s": 1.0},
            "converters": [converter(home, "bulk", 0), converter(home, "urgent", 10)],
        }
    )
    low = set(drop(home / "in" / "bulk", range(0, 12)))  # the oldest, so FIFO would send them first
    wait_until(lambda: pending(station) == 12, 30, "the low-priority files queued")
    high = set(drop(home / "in" / "urgent", range(100, 112)))
    low |= submit(station, tmp_path, range(200, 203), 0)
    high |= submit(station, tmp_path, range(300, 303), 10)
    wait_until(lambda: pending(station) == 30, 30, "the whole mixed backlog queued")

    listed = json.loads(station.cli("queue", "list", "--json", check=True).stdout)
    assert {r["id"]: r["priority"] for r in listed} == {i: 10 for i in high} | {i: 0 for i in low}
    table = station.cli("queue", "list", check=True).stdout
    assert "PRIORITY" in table.splitlines()[0]
    assert "pending by priority: 15 at 10, 15 at 0" in station.cli("status", check=True).stdout
    status = station.call("get_status")
    assert status["pending_by_priority"] == [
        {"priority": 10, "pending": 15},
        {"priority": 0, "pending": 15},
    ]

    emulator.set_faults(down=False)
    assert_delivered_high_first(emulator, high, low)

    # A second outage of another kind: the server answers, but refuses the token.
    emulator.reset()
    emulator.set_faults(unauthorized=True)
    low = set(drop(home / "in" / "bulk", range(400, 410)))
    wait_until(lambda: station.call("get_status")["server"]["state"] == "Unauthorized", 30, "401")
    wait_until(lambda: pending(station) == 10, 30, "the low-priority files queued")
    high = set(drop(home / "in" / "urgent", range(500, 510)))
    wait_until(lambda: pending(station) == 20, 30, "the second backlog queued")
    emulator.set_faults(unauthorized=False)
    station.call("reload")  # what a person does after fixing the token: probe at once
    assert_delivered_high_first(emulator, high, low)


def test_submit_refuses_a_priority_out_of_range(make_station, emulator, tmp_path):
    station = make_station(config={"server": {"url": emulator.url, "token": TOKEN}})
    path = tmp_path / "r.json"
    path.write_text(json.dumps(sample_report(1)))
    result = station.cli("submit", str(path), "--priority", "5000")
    assert result.returncode == 1
    assert "priority must be between -1000 and 1000, got 5000" in result.stderr
    assert station.call("get_queue_stats")["pending"] == 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.timeout(60)
def test_a_low_report_waiting_for_a_high_one_in_flight_costs_no_cpu(
    make_station, emulator, tmp_path
):
    emulator.set_faults(down=True)
    station = make_station(
        config={
            "server": {"url": emulator.url, "token": TOKEN},
            "upload": {"max_concurrency": 5, "probe_base_s": 0.1, "probe_cap_s": 0.3},
        }
    )
    high = submit(station, tmp_path, range(1, 2), 5)
    low = submit(station, tmp_path, range(2, 3), 0)
    emulator.set_faults(down=False, latency_ms=2000)  # the high one stays in flight for 2 s
    wait_until(lambda: station.call("get_queue_stats")["processing"] == 1, 10, "the upload")
    pid = station.call("get_status")["pid"]
    before, started = cpu_seconds(pid), time.monotonic()
    wait_until(lambda: emulator.received_ids(), 10, "the high report on the server")
    spent, held = cpu_seconds(pid) - before, time.monotonic() - started
    assert_delivered_high_first(emulator, high, low)
    assert held > 1.0, "the test must watch a real wait"
    assert spent < 0.25 * held, f"the supervisor used {spent:.2f} s of CPU in {held:.2f} s"
