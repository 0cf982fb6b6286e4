"""Measure the whole pipeline: files dropped into watch folders until the emulator accepts them.

Run in a development install:
``python -m wats_station.bench.pipeline_bench [--runs N] [--files N]``.
Everything runs on this machine: the station, the emulator and this script. The stations use
``watch.debounce_s`` 0.2 and otherwise shipped defaults. Each run, for 1 and 2 converter
workers (a fresh station each), drops N small WSJF files, then N WSTF files (one UUT each),
by renaming them from a staging folder into the watch folder, and times from the first drop
until the emulator's ``/_stats`` counts them all; conversions per second count from the first
to the last converted file in ``get_status``. In the same run a straight single-process loop
(read, convert and validate with the same converter class, POST with one requests.Session,
move to a done folder) does the same files for comparison. Then one station takes single
WSJF drops, each timed until its ``report.completed`` event, debounce subtracted: first into
an idle station (``IDLE_GAP_S`` after the previous upload), then back to back.
Default 3 runs (each takes about a minute).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from wats_station.bench.common import (
    cpu_seconds,
    machine_line,
    median,
    percentile,
    print_table,
    session_pids,
    stop_on_sigterm,
    verdict,
)
from wats_station.converters.base import ensure_report_ids
from wats_station.converters.registry import load_converter_class
from wats_station.converters.wsjf import validate_report
from wats_station.lab.harness import EmulatorProcess, HarnessError, ThrowawayStation
from wats_station.samples import write_wsjf_files, write_wstf_files
from wats_station.supervisor.config import StationSettings

DEBOUNCE_S = 0.2
WORKER_COUNTS = (1, 2)
WRITERS: dict[str, Callable[..., list[Path]]] = {
    "wsjf": write_wsjf_files,
    "wstf": write_wstf_files,
}
THROUGHPUT_GOAL = 300.0
LATENCY_GOAL_MS = 150.0
POLL_S = 0.02
# watchdog holds an unmatched IN_MOVED_FROM (a converted file moved into Done/) for 0.5 s and
# every later event waits behind it; a station is idle only once that has passed.
IDLE_GAP_S = 0.6
BACK_TO_BACK_DROPS = 20
PROCESS_KINDS = ("supervisor", "watcher", "converter", "uploader", "emulator")


@dataclass
class Throughput:
    files_per_s: float  # first drop to the last report received by the emulator
    conversions_per_s: float  # first to last converted file
    cpu_ms: dict[str, float]  # CPU milliseconds per file, by kind of process


def station_config(server_url: str, workers: int | None) -> dict[str, Any]:
    config: dict[str, Any] = {"server": {"url": server_url}, "watch": {"debounce_s": DEBOUNCE_S}}
    if workers is not None:
        config["supervisor"] = {"converter_workers": workers}
    return config


def staged_files(folder: Path, converter: str, count: int, first: int = 0) -> list[Path]:
    """Fresh sample files (units ``first`` on) in a folder that no converter watches."""
    staging = folder / f"staging-{converter}-{time.monotonic_ns()}"
    return WRITERS[converter](staging, count, start_index=first)


def cpu_by_kind(station: ThrowawayStation, emulator: EmulatorProcess) -> dict[str, float]:
    assert emulator.process is not None
    totals = dict.fromkeys(PROCESS_KINDS, 0.0)
    totals["supervisor"] = cpu_seconds(station.pid)
    totals["emulator"] = cpu_seconds(emulator.process.pid)
    for name, pid in station.worker_pids().items():
        totals[name.split("-")[0]] += cpu_seconds(pid)
    return totals


def files_counts(station: ThrowawayStation) -> dict[str, int]:
    return station.call("get_status")["files"]


@dataclass
class Progress:
    """perf_counter times at which a batch of files reached each stage."""

    first_converted: float = 0.0
    converted_by_then: int = 0
    last_converted: float = 0.0
    last_received: float = 0.0


def follow(
    station: ThrowawayStation,
    emulator: EmulatorProcess,
    converter: str,
    count: int,
    before: dict[str, int],
) -> Progress:
    """Poll the station's file counts and the emulator until all ``count`` files are through."""
    progress = Progress()
    deadline = time.monotonic() + 600
    while not (progress.last_converted and progress.last_received):
        if time.monotonic() > deadline:
            raise HarnessError(f"{count} {converter} files not through after 600 s: {progress}")
        counts = files_counts(station)
        if counts["failed"] != before["failed"]:
            raise HarnessError(f"{counts['failed'] - before['failed']} {converter} files failed")
        converted = counts["converted"] - before["converted"]
        now = time.perf_counter()
        if converted and not progress.first_converted:
            progress.first_converted, progress.converted_by_then = now, converted
        if converted >= count and not progress.last_converted:
            progress.last_converted = now
        if not progress.last_received and emulator.received() >= count:
            progress.last_received = time.perf_counter()
        time.sleep(POLL_S)
    return progress


def station_throughput(
    station: ThrowawayStation, emulator: EmulatorProcess, converter: str, count: int
) -> Throughput:
    files = staged_files(station.home, converter, count)
    drop = station.watch_folder(converter)
    drop.mkdir(parents=True, exist_ok=True)
    emulator.reset()
    before = files_counts(station)
    pids_before = sorted(session_pids(station.pid))
    cpu_before = cpu_by_kind(station, emulator)
    started = time.perf_counter()
    for path in files:
        os.rename(path, drop / path.name)
    progress = follow(station, emulator, converter, count, before)
    cpu_after = cpu_by_kind(station, emulator)
    if sorted(session_pids(station.pid)) != pids_before:
        raise HarnessError("a station process started or ended while files went through")
    if emulator.stats()["duplicates"]:
        raise HarnessError(f"the emulator saw duplicates: {emulator.stats()}")
    conversion_span = progress.last_converted - progress.first_converted
    converted_in_span = count - progress.converted_by_then
    return Throughput(
        files_per_s=count / (progress.last_received - started),
        conversions_per_s=converted_in_span / conversion_span if conversion_span else math.inf,
        cpu_ms={kind: 1e3 * (cpu_after[kind] - cpu_before[kind]) / count for kind in cpu_after},
    )


def straight_loop(folder: Path, emulator: EmulatorProcess, converter: str, count: int) -> float:
    """Files per second of one process doing read, convert, validate, POST and move in turn."""
    files = staged_files(folder, converter, count)
    done = files[0].parent / "Done"
    done.mkdir()
    station = StationSettings()
    instance = load_converter_class(converter)(
        station_name=station.name, location=station.location, purpose=station.purpose
    )
    emulator.reset()
    url = f"{emulator.url}/api/Report/WSJF"
    with requests.Session() as session:
        session.headers.update({"Authorization": "Basic ", "User-Agent": "wats-station"})
        started = time.perf_counter()
        for path in files:
            content = path.read_bytes()
            for report in ensure_report_ids(list(instance.convert(path)), content):
                validate_report(report)
                body = json.dumps(report, ensure_ascii=False, separators=(",", ":")).encode()
                answer = session.post(
                    url, data=body, headers={"Content-Type": "application/json"}, timeout=30
                )
                if answer.status_code != 200:
                    raise HarnessError(f"the emulator answered {answer.status_code}: {answer.text}")
            os.rename(path, done / path.name)
        elapsed = time.perf_counter() - started
    if emulator.received() != count:
        raise HarnessError(
            f"the straight loop sent {count} reports, the emulator has {emulator.stats()}"
        )
    return count / elapsed


def single_drop_latencies_ms(
    station: ThrowawayStation, emulator: EmulatorProcess, drops: int, gap_s: float, first: int
) -> list[float]:
    """Drop one WSJF file at a time, ``gap_s`` after the previous one was uploaded; ms from
    each drop until the station reports its upload accepted, less the debounce."""
    files = staged_files(station.home, "wsjf", drops, first)
    drop = station.watch_folder("wsjf")
    drop.mkdir(parents=True, exist_ok=True)
    emulator.reset()
    latencies = []
    with station.subscribe() as events:
        for path in files:
            report_id = json.loads(path.read_bytes())["id"]
            time.sleep(gap_s)  # a deliberate quiet period, not a wait for a condition
            started = time.perf_counter()
            os.rename(path, drop / path.name)
            deadline = time.monotonic() + 30
            while True:
                event = events.next(max(0.0, deadline - time.monotonic()))
                if event is None:
                    raise HarnessError(f"{path.name} was not uploaded within 30 s")
                if event.topic == "resync":
                    raise HarnessError("the event stream fell behind; cannot time this drop")
                if event.topic == "report.completed" and event.data["id"] == report_id:
                    break
            latencies.append((time.perf_counter() - started - DEBOUNCE_S) * 1e3)
    if emulator.received() != drops:
        raise HarnessError(f"{drops} single drops, but the emulator has {emulator.stats()}")
    return latencies


def throughput_rows(
    measured: dict[tuple[int, str], list[Throughput]], straight: dict[str, list[float]]
) -> list[tuple[str, str, str]]:
    rows = []
    for (workers, converter), results in measured.items():
        rate = median(r.files_per_s for r in results)
        rows.append(
            (
                f"drop -> accepted, {converter}, {workers} converter worker(s)",
                f"{rate:,.0f} files/s",
                f">= {THROUGHPUT_GOAL:g}/s: {verdict(rate, THROUGHPUT_GOAL, at_most=False)}",
            )
        )
    for (workers, converter), results in measured.items():
        per_worker = median(r.conversions_per_s for r in results) / workers
        rows.append(
            (
                f"conversions per worker, {converter}, {workers} worker(s)",
                f"{per_worker:,.0f} /s",
                "",
            )
        )
    for converter, rates in straight.items():
        rows.append((f"straight loop, {converter}", f"{median(rates):,.0f} files/s", ""))
    for (workers, converter), results in measured.items():
        ratio = median(r.files_per_s / s for r, s in zip(results, straight[converter], strict=True))
        rows.append(
            (f"ratio station/straight, {converter}, {workers} worker(s)", f"{ratio:.2f}", "")
        )
    for (workers, converter), results in measured.items():
        cpu = ", ".join(
            f"{kind} {median(r.cpu_ms[kind] for r in results):.2f}" for kind in PROCESS_KINDS
        )
        rows.append((f"CPU ms per file, {converter}, {workers} worker(s)", "", cpu))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="throughput runs (3)")
    parser.add_argument("--files", type=int, default=2_000, help="files per format and run (2,000)")
    parser.add_argument("--drops", type=int, default=50, help="single drops for latency (50)")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    print(machine_line())
    measured: dict[tuple[int, str], list[Throughput]] = {
        (workers, converter): [] for workers in WORKER_COUNTS for converter in WRITERS
    }
    straight: dict[str, list[float]] = {converter: [] for converter in WRITERS}
    with EmulatorProcess() as emulator:
        for run in range(args.runs):
            for workers in WORKER_COUNTS:
                with ThrowawayStation(station_config(emulator.url, workers)) as station:
                    for converter in WRITERS:
                        result = station_throughput(station, emulator, converter, args.files)
                        measured[workers, converter].append(result)
                        print(
                            f"run {run + 1}, {workers} worker(s), {converter}: "
                            f"{result.files_per_s:,.0f} files/s",
                            flush=True,
                        )
                    if workers == WORKER_COUNTS[-1]:
                        for converter in WRITERS:
                            rate = straight_loop(station.home, emulator, converter, args.files)
                            straight[converter].append(rate)
                            print(f"run {run + 1}, straight loop, {converter}: {rate:,.0f} files/s")
        with ThrowawayStation(station_config(emulator.url, None)) as station:
            idle = single_drop_latencies_ms(station, emulator, args.drops, IDLE_GAP_S, 0)
            rushed = single_drop_latencies_ms(
                station, emulator, BACK_TO_BACK_DROPS, 0.0, args.drops
            )
    rows = throughput_rows(measured, straight)
    latency = median(idle)
    rows += [
        (
            f"one file into an idle station, beyond the {DEBOUNCE_S:g} s debounce, median",
            f"{latency:.0f} ms",
            f"<= {LATENCY_GOAL_MS:g} ms: {verdict(latency, LATENCY_GOAL_MS, at_most=True)}",
        ),
        (
            f"one file into an idle station, beyond the debounce, p99 of {len(idle)}",
            f"{percentile(idle, 0.99):.0f} ms",
            f"{IDLE_GAP_S:g} s after the previous upload",
        ),
        (
            "one file right after the previous upload, beyond the debounce, median",
            f"{median(rushed):.0f} ms",
            f"{len(rushed)} drops; p99 {percentile(rushed, 0.99):.0f} ms",
        ),
    ]
    print_table(
        f"pipeline: medians of {args.runs} runs of {args.files:,} files; "
        f"latency: {args.drops} single drops",
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
