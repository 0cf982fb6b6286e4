"""Measure how fast a station drains a backlog of queued reports into the WATS emulator.

Run in a development install:
``python -m wats_station.bench.upload_bench [--runs N] [--reports N]``.
Each run and each ``upload.max_concurrency`` (1, then 5) gets a fresh station: with the
emulator down, ``submit_report`` queues N small sample reports (distinct ids), then the
emulator comes up and we time, by polling its ``/_stats``, from its first received report to
its last. The offline probe delays are shortened (``upload.probe_base_s`` 0.05 s,
``probe_cap_s`` 0.2 s) only so that a run does not wait for the next probe; that wait is
outside the timed span anyway. In the same run one client loop (one thread, one
``requests.Session``, one POST after the other, the payloads serialised beforehand) sends the
same reports to the same emulator: the station should drain at least 1,000 reports/s, or come
within 1.5x of that loop.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import requests

from wats_station.bench.common import (
    cpu_seconds,
    machine_line,
    median,
    print_table,
    stop_on_sigterm,
    verdict,
)
from wats_station.lab.harness import EmulatorProcess, HarnessError, ThrowawayStation, wait_until
from wats_station.samples import sample_report

CONCURRENCIES = (1, 5)
RATE_GOAL = 1000.0
LOOP_RATIO_GOAL = 1 / 1.5  # station (concurrency 5) / client loop, same run
POLL_S = 0.01


def station_config(server_url: str, concurrency: int) -> dict[str, Any]:
    return {
        "server": {"url": server_url},
        "upload": {"max_concurrency": concurrency, "probe_base_s": 0.05, "probe_cap_s": 0.2},
    }


@dataclass
class Drain:
    rate: float  # reports per second, first to last received
    cpu_ms: dict[str, float]  # CPU milliseconds per report, by process


def cpu_by_process(station: ThrowawayStation, emulator: EmulatorProcess) -> dict[str, float]:
    pids = {"supervisor": station.pid, "uploader": station.worker_pids()["uploader"]}
    assert emulator.process is not None
    pids["emulator"] = emulator.process.pid
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def drain(emulator: EmulatorProcess, concurrency: int, reports: list[dict[str, Any]]) -> Drain:
    """Queue ``reports`` while the emulator is down, then bring it up and time the uploads."""
    emulator.reset()
    emulator.set_faults(down=True)
    with ThrowawayStation(station_config(emulator.url, concurrency)) as station:
        for report in reports:
            station.client().call("submit_report", report=report)
        queued = station.call("get_queue_stats")
        if queued["pending"] + queued["processing"] != len(reports):
            raise HarnessError(f"expected {len(reports)} queued reports, the queue has {queued}")
        emulator.set_faults(down=False)
        first_seen = wait_until(emulator.received, 60, "the first upload", POLL_S)
        first_at = time.perf_counter()
        cpu_before = cpu_by_process(station, emulator)
        wait_until(lambda: emulator.received() >= len(reports), 300, "every upload", POLL_S)
        elapsed = time.perf_counter() - first_at
        cpu_after = cpu_by_process(station, emulator)
        wait_until(
            lambda: station.call("get_queue_stats")["completed"] == len(reports),
            60,
            "the station to mark every report completed",
            0.05,
        )
    uploaded = len(reports) - first_seen
    cpu_ms = {name: 1e3 * (cpu_after[name] - cpu_before[name]) / uploaded for name in cpu_after}
    return Drain(uploaded / elapsed, cpu_ms)


def client_loop(emulator: EmulatorProcess, reports: list[dict[str, Any]]) -> float:
    """Reports per second one plain client loop POSTs into the same emulator."""
    emulator.reset()
    payloads = [json.dumps(r, separators=(",", ":")).encode() for r in reports]
    with requests.Session() as session:
        session.headers["Content-Type"] = "application/json"
        start = time.perf_counter()
        for payload in payloads:
            session.post(emulator.url + "/api/Report/WSJF", data=payload, timeout=30)
        elapsed = time.perf_counter() - start
    return len(payloads) / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs (5)")
    parser.add_argument("--reports", type=int, default=2_000, help="reports per run (2,000)")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    print(machine_line())
    reports = [sample_report(unit) for unit in range(args.reports)]
    drains: dict[int, list[Drain]] = {c: [] for c in CONCURRENCIES}
    loops: list[float] = []
    duplicates = 0
    with EmulatorProcess() as emulator:
        for run in range(args.runs):
            for concurrency in CONCURRENCIES:
                drains[concurrency].append(drain(emulator, concurrency, reports))
                duplicates += emulator.stats()["duplicates"]
            loops.append(client_loop(emulator, reports))
            print(
                f"run {run + 1}: "
                + ", ".join(f"concurrency {c}: {drains[c][-1].rate:,.0f}/s" for c in CONCURRENCIES)
                + f", client loop: {loops[-1]:,.0f}/s",
                flush=True,
            )
    rows = []
    for concurrency in CONCURRENCIES:
        rate = median(d.rate for d in drains[concurrency])
        rows.append(
            (
                f"uploads, max_concurrency {concurrency}",
                f"{rate:,.0f} /s",
                f">= {RATE_GOAL:,.0f} /s: {verdict(rate, RATE_GOAL, at_most=False)}",
            )
        )
        for name in drains[concurrency][0].cpu_ms:
            cpu_ms = median(d.cpu_ms[name] for d in drains[concurrency])
            rows.append((f"  CPU per report: {name}", f"{cpu_ms:.2f} ms", ""))
    ratio = median(five.rate / one.rate for one, five in zip(drains[1], drains[5], strict=True))
    loop_ratio = median(d.rate / loop for d, loop in zip(drains[5], loops, strict=True))
    rows += [
        ("ratio concurrency 5 / concurrency 1, same run", f"{ratio:.2f}", ""),
        ("one client loop POSTing the same reports", f"{median(loops):,.0f} /s", ""),
        (
            "ratio station (concurrency 5) / client loop, same run",
            f"{loop_ratio:.2f}",
            f">= {LOOP_RATIO_GOAL:.2f}: {verdict(loop_ratio, LOOP_RATIO_GOAL, at_most=False)}",
        ),
        ("duplicates the emulator saw, all runs", f"{duplicates}", "must be 0"),
    ]
    print_table(f"upload: medians of {args.runs} runs of {args.reports:,} reports", rows)
    return 0 if duplicates == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
