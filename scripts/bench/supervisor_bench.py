"""Measure the supervisor: worker replacement after SIGKILL, control round trips, idle CPU, memory.

Run from the project root:
``python -m wats_station.bench.supervisor_bench [--runs N] [--idle-seconds S]``.
One station (shipped supervisor defaults, so one converter worker per CPU) runs against the
emulator for the whole benchmark. Memory is read once after start-up and idle CPU over one
window of ``--idle-seconds``; the ping and the kill figures are medians over ``--runs`` runs.
A kill round SIGKILLs every worker once, each only after ``supervisor.stable_uptime_s`` of
uptime, so every restart is the immediate first one, not a backoff.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections import defaultdict

from wats_station.bench.common import (
    cpu_seconds,
    machine_line,
    median,
    percentile,
    print_table,
    rss_mb,
    session_pids,
    stop_on_sigterm,
    verdict,
)
from wats_station.ipc.client import EventStream
from wats_station.lab.harness import EmulatorProcess, HarnessError, ThrowawayStation, wait_until

PINGS = 2_000
REPLACEMENT_GOAL_S = 0.5
PING_GOAL_MS = 1.0
IDLE_GOAL_PERCENT = 1.0
SUPERVISOR_RSS_GOAL_MB = 40.0


def all_workers_running(station: ThrowawayStation) -> bool:
    return all(w["state"] == "running" for w in station.call("list_workers"))


def memory_rows(station: ThrowawayStation) -> list[tuple[str, str, str]]:
    supervisor = rss_mb(station.pid)
    rows = [
        (
            "resident memory: supervisor",
            f"{supervisor:.1f} MB",
            f"<= {SUPERVISOR_RSS_GOAL_MB:g} MB: "
            f"{verdict(supervisor, SUPERVISOR_RSS_GOAL_MB, at_most=True)}",
        )
    ]
    workers = station.worker_pids()
    for name, pid in sorted(workers.items()):
        rows.append((f"resident memory: {name}", f"{rss_mb(pid):.1f} MB", ""))
    total = supervisor + sum(rss_mb(pid) for pid in workers.values())
    rows.append(("resident memory: whole station", f"{total:.1f} MB", "sum of VmRSS"))
    return rows


def idle_cpu_percent(station: ThrowawayStation, seconds: float) -> tuple[float, float]:
    """Percent of one core used by the whole station and by the supervisor alone."""
    pids = session_pids(station.pid)
    before = {pid: cpu_seconds(pid) for pid in pids}
    started = time.monotonic()
    time.sleep(seconds)  # the measurement window itself, not a wait for a condition
    elapsed = time.monotonic() - started
    if sorted(session_pids(station.pid)) != sorted(pids):
        raise HarnessError("a station process started or ended during the idle window")
    used = {pid: cpu_seconds(pid) - before[pid] for pid in pids}
    return 100 * sum(used.values()) / elapsed, 100 * used[station.pid] / elapsed


def ping_latencies_ms(station: ThrowawayStation, count: int) -> list[float]:
    client = station.client()
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        client.call("ping")
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def wait_stable(station: ThrowawayStation, name: str, stable_s: float) -> int:
    """Wait until the worker has run long enough that its next restart is immediate."""

    def stable_pid() -> int | None:
        worker = next(w for w in station.call("list_workers") if w["name"] == name)
        uptime = worker["uptime_s"]
        return worker["pid"] if uptime is not None and uptime >= stable_s else None

    return wait_until(stable_pid, stable_s + 30, f"{name} to run {stable_s:g} s", interval=0.1)


def replacement_seconds(
    station: ThrowawayStation, events: EventStream, name: str, pid: int
) -> float:
    """SIGKILL ``pid`` and time until a new process of worker ``name`` has said hello."""
    started = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        event = events.next(max(0.0, deadline - time.monotonic()))
        if event is None:
            break
        if event.topic == f"worker.{name}":
            replaced = event.data["state"] == "running" and event.data["pid"] != pid
        elif event.topic == "resync":  # we fell behind: the snapshot tells the state
            replaced = any(
                w["name"] == name and w["state"] == "running" and w["pid"] != pid
                for w in event.data["workers"]
            )
        else:
            continue
        if replaced:
            return time.perf_counter() - started
    raise HarnessError(f"{name} was not replaced within 30 s after SIGKILL of pid {pid}")


def kill_rows(station: ThrowawayStation, runs: int) -> list[tuple[str, str, str]]:
    stable_s = station.call("get_config")["supervisor"]["stable_uptime_s"]
    names = sorted(station.worker_pids())
    by_kind: dict[str, list[float]] = defaultdict(list)
    with station.subscribe() as events:
        for _ in range(runs):
            for name in names:
                pid = wait_stable(station, name, stable_s)
                by_kind[name.split("-")[0]].append(replacement_seconds(station, events, name, pid))
    every = [value for values in by_kind.values() for value in values]
    overall = median(every)
    rows = [
        (
            "SIGKILL -> replacement running, all workers",
            f"{overall * 1e3:.0f} ms",
            f"<= {REPLACEMENT_GOAL_S * 1e3:.0f} ms: "
            f"{verdict(overall, REPLACEMENT_GOAL_S, at_most=True)}; "
            f"worst {max(every) * 1e3:.0f} ms of {len(every)}",
        )
    ]
    for kind, values in sorted(by_kind.items()):
        rows.append(
            (f"SIGKILL -> replacement running, {kind}", f"{median(values) * 1e3:.0f} ms", "")
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="ping runs and kill rounds (5)")
    parser.add_argument(
        "--idle-seconds", type=float, default=60.0, help="idle CPU window in seconds (60)"
    )
    args = parser.parse_args(argv)
    stop_on_sigterm()
    print(machine_line())
    rows: list[tuple[str, str, str]] = []
    with EmulatorProcess() as emu, ThrowawayStation({"server": {"url": emu.url}}) as station:
        wait_until(lambda: all_workers_running(station), 30, "every worker to run", 0.05)
        rows += memory_rows(station)

        total, supervisor = idle_cpu_percent(station, args.idle_seconds)
        rows += [
            (
                f"idle CPU, whole station, over {args.idle_seconds:g} s",
                f"{total:.2f} %",
                f"< {IDLE_GOAL_PERCENT:g} % of one core: "
                f"{'met' if total < IDLE_GOAL_PERCENT else 'NOT met'}",
            ),
            ("idle CPU, supervisor alone", f"{supervisor:.2f} %", ""),
        ]

        ping_latencies_ms(station, 100)  # warm-up: connect, first allocations
        samples = [ping_latencies_ms(station, PINGS) for _ in range(args.runs)]
        ping_median = median(median(run) for run in samples)
        ping_p99 = median(percentile(run, 0.99) for run in samples)
        rows += [
            (
                f"ping round trip, median of {PINGS:,}",
                f"{ping_median:.3f} ms",
                f"<= {PING_GOAL_MS:g} ms: {verdict(ping_median, PING_GOAL_MS, at_most=True)}",
            ),
            (f"ping round trip, p99 of {PINGS:,}", f"{ping_p99:.3f} ms", ""),
        ]

        rows += kill_rows(station, args.runs)
    print_table(f"supervisor: medians of {args.runs} runs (memory and idle CPU: one)", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
