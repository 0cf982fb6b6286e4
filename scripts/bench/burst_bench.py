"""Measure whether anything can stall the supervisor's loop: bursts, big payloads, floods.

Run in a development install:
``python -m wats_station.bench.burst_bench [--files N] [--report-mb M] [--clients C]``.
One station with the shipped supervisor timings (heartbeat every 1 s, frozen after 3.5 s;
2 converter workers), ``watch.debounce_s`` 0.2, against the emulator, with systemd's watchdog
emulated: ``NOTIFY_SOCKET`` is a datagram socket this script reads and ``WATCHDOG_USEC`` is 1 s,
so the station pings every 0.5 s. A thread pings the station (``ping``) every 10 ms
throughout; what would hold this process's GIL for long (the big report) runs in another.
Then, one after the other:

* burst: N WSJF files (default 20,000) renamed into the watch folder at once, timed until the
  emulator holds them all;
* big report: one ``wats-station submit`` (its own process) of a report of about M MB
  (default 50);
* big files: a sparse 2 GB file dropped (over ``watch.max_file_mb``, so it goes to Error
  unread) and a sparse 200 MB one (under it: the watcher hashes it, a converter fails on it);
* control flood: C clients (default 50) each pipelining 200 ``get_status`` requests;
* garbage: 20,000 frames that are not messages, sent to the workers' socket.

For each phase: ping round trips (median, p99, worst), the longest gap between two WATCHDOG=1,
and, over the whole run, worker restarts, crashes charged to files and duplicates the emulator
saw. Goals (issue 9): ping p99 <= 50 ms and never over 0.5 s, no watchdog gap over 1 s, no
restart, no crash, every report delivered once.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import socket
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from wats_station.bench.common import (
    machine_line,
    median,
    percentile,
    print_table,
    rss_mb,
    stop_on_sigterm,
    verdict,
)
from wats_station.ipc.client import StationClient
from wats_station.ipc.protocol import Message, MsgType, encode
from wats_station.lab.harness import EmulatorProcess, Station, short_home, wait_until
from wats_station.samples import sample_report, write_wsjf_files

PING_P99_GOAL_MS = 50.0
PING_MAX_GOAL_MS = 500.0
WATCHDOG_USEC = 1_000_000
PING_EVERY_S = 0.01


@dataclass
class Phase:
    name: str
    pings: list[float] = field(default_factory=list)  # seconds
    watchdog_gap: float = 0.0
    note: str = ""


class Pinger(threading.Thread):
    """Pings all the time; the current phase collects the round trips."""

    def __init__(self, station: Station) -> None:
        super().__init__(daemon=True)
        self.station = station
        self.phase: Phase | None = None
        self.stop = threading.Event()
        self.failures = 0

    def run(self) -> None:
        with StationClient(paths=self.station.paths, timeout_s=10) as client:
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    client.call("ping")
                except Exception:
                    self.failures += 1
                elapsed = time.perf_counter() - start
                if self.phase is not None:
                    self.phase.pings.append(elapsed)
                time.sleep(PING_EVERY_S)


class Watchdog(threading.Thread):
    """systemd's side of sd_notify: notes when each WATCHDOG=1 arrives."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.pings: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            if b"WATCHDOG=1" in data:
                self.pings.append(time.monotonic())

    def longest_gap(self, since: float, until: float) -> float:
        times = [since] + [t for t in self.pings if since <= t <= until] + [until]
        return max(b - a for a, b in itertools.pairwise(times))


def big_report(megabytes: float) -> dict[str, Any]:
    report = sample_report(1_000_000)
    steps = report["root"]["steps"]
    report["root"]["steps"] = steps * (int(megabytes * 1e6 / len(json.dumps(steps))) + 1)
    return report


def flood(station: Station, clients: int, requests: int) -> None:
    """``clients`` DEALER sockets each send ``requests`` get_status at once, then read all."""
    context = zmq.Context.instance()
    sockets = []
    for _ in range(clients):
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(station.paths.control_endpoint)
        sockets.append(sock)
    request = encode(Message(MsgType.REQUEST, {"command": "get_status", "args": {}}, 1))
    for sock in sockets:
        for _ in range(requests):
            sock.send(request)
    deadline = time.monotonic() + 120
    for sock in sockets:
        for _ in range(requests):
            if not sock.poll(max(0.0, deadline - time.monotonic()) * 1000):
                break
            sock.recv()
        sock.close()


def garbage(station: Station, frames: int) -> None:
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(station.paths.workers_endpoint)
    for index in range(frames):
        sock.send(b"\xc1not msgpack %d" % index)
    sock.close()


def crashes(station: Station) -> int:
    with sqlite3.connect(f"file:{station.paths.queue_db}?mode=ro", uri=True) as db:
        return db.execute("SELECT COALESCE(SUM(crashes), 0) FROM source_file").fetchone()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000, help="files in the burst (20,000)")
    parser.add_argument("--report-mb", type=float, default=50.0, help="big report size (50)")
    parser.add_argument("--clients", type=int, default=50, help="flooding clients (50)")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    print(machine_line(), flush=True)
    home = short_home("ws-burst-")
    watch = home / "in"
    staged = write_wsjf_files(home / "staging", args.files)
    report_file = home / "big-report.json"
    report_file.write_text(json.dumps(big_report(args.report_mb)))
    size_mb = report_file.stat().st_size / 1e6
    print(f"staged {len(staged):,} files and a {size_mb:.0f} MB report", flush=True)
    phases: list[Phase] = []
    with EmulatorProcess() as emulator:
        watchdog = Watchdog(home / "notify")
        env = {"NOTIFY_SOCKET": str(watchdog.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        station = Station(home, env=env)
        station.write_config(
            {
                "server": {"url": emulator.url},
                "watch": {"debounce_s": 0.2},
                "supervisor": {"converter_workers": 2},
                "converters": [
                    {
                        "name": "wsjf",
                        "module": "wsjf",
                        "file_patterns": ["*.json", "*.bin"],
                        "watch_folder": str(watch),
                        "done_folder": str(watch / "Done"),
                        "error_folder": str(watch / "Error"),
                    }
                ],
            },
            timings=None,  # the shipped supervisor timings
        )
        watchdog.start()
        pinger = Pinger(station)
        try:
            station.start()
            pids = station.worker_pids()
            pinger.start()

            def phase(name: str, action: Any, done: Any = None, timeout: float = 600) -> None:
                current = Phase(name)
                pinger.phase = current
                start = time.monotonic()
                action()
                if done is not None:
                    wait_until(done, timeout, name, 0.05)
                time.sleep(1.0)  # and a moment after, for what follows the work
                pinger.phase = None
                current.watchdog_gap = watchdog.longest_gap(start, time.monotonic())
                current.note = f"{time.monotonic() - start - 1.0:.1f} s"
                phases.append(current)
                print(f"{name}: {current.note}", flush=True)

            total = args.files

            def drop_all() -> None:
                for path in staged:
                    path.rename(watch / path.name)

            phase("burst", drop_all, lambda: emulator.stats()["unique"] >= total)
            burst_s = float(phases[-1].note.split()[0])

            def submit() -> None:
                # From a process of its own (the CLI, as a user would): encoding 50 MB holds a
                # GIL for a while, and the pinger and the watchdog listener live in this one.
                station.cli("submit", str(report_file), "--timeout", "120", timeout=180, check=True)

            phase("big report", submit, lambda: emulator.stats()["unique"] >= total + 1)

            def big_files() -> None:
                for name, size in (("huge.bin", 2 << 30), ("large.bin", 200 << 20)):
                    with open(watch / f".{name}", "wb") as handle:
                        handle.truncate(size)
                    os.rename(watch / f".{name}", watch / name)

            def big_files_settled() -> bool:
                error = watch / "Error"
                return error.exists() and {"huge.bin", "large.bin"} <= {
                    p.name for p in error.iterdir()
                }

            phase("big files", big_files, big_files_settled)
            phase("control flood", lambda: flood(station, args.clients, 200))
            supervisor_rss = rss_mb(station.pid)
            phase("garbage frames", lambda: garbage(station, 20_000))
            workers = station.call("list_workers")
            restarts = sum(w["restarts"] for w in workers)
            replaced = [w["name"] for w in workers if w["pid"] != pids[w["name"]]]
            charged = crashes(station)
            stats = emulator.stats()
            log_lines = station.output().count("\n")
            warnings = [line for line in station.output().splitlines() if "WARNING" in line]
            print("station warnings:", *warnings, sep="\n  ")
            if replaced:
                why = [line for line in station.output().splitlines() if " -> backoff" in line]
                print("restarts:", *why, sep="\n  ")
        finally:
            pinger.stop.set()
            watchdog.stop.set()
            station.stop()
            station.cleanup()
            shutil.rmtree(home, ignore_errors=True)
    rows = [
        ("burst: files", f"{total:,}", ""),
        ("burst: drop -> all accepted", f"{total / burst_s:,.0f} files/s", f"{burst_s:.1f} s"),
    ]
    for current in phases:
        ms = [1e3 * p for p in current.pings] or [0.0]
        p99, worst = percentile(ms, 0.99), max(ms)
        rows += [
            (f"{current.name}: ping median", f"{median(ms):.2f} ms", f"{len(ms):,} pings"),
            (
                f"{current.name}: ping p99",
                f"{p99:.1f} ms",
                f"<= {PING_P99_GOAL_MS:g} ms: {verdict(p99, PING_P99_GOAL_MS, at_most=True)}",
            ),
            (
                f"{current.name}: ping worst",
                f"{worst:.1f} ms",
                f"<= {PING_MAX_GOAL_MS:g} ms: {verdict(worst, PING_MAX_GOAL_MS, at_most=True)}",
            ),
            (
                f"{current.name}: longest WATCHDOG=1 gap",
                f"{current.watchdog_gap * 1e3:.0f} ms",
                f"pings every 500 ms; <= 1000 ms: "
                f"{verdict(current.watchdog_gap, 1.0, at_most=True)}",
            ),
        ]
    rows += [
        ("workers restarted", f"{restarts}", f"must be 0; replaced: {replaced or 'none'}"),
        ("crashes charged to files", f"{charged}", "must be 0"),
        ("reports on the emulator", f"{stats['unique']:,}", f"of {total + 1:,}"),
        ("duplicates the emulator saw", f"{stats['duplicates']}", "must be 0"),
        ("pings that failed", f"{pinger.failures}", "must be 0"),
        ("supervisor RSS after the flood", f"{supervisor_rss:.0f} MB", ""),
        ("station log lines, whole run", f"{log_lines:,}", "20,000 garbage frames inside"),
    ]
    print_table(f"burst and stalls ({args.files:,} files, {args.report_mb:g} MB report)", rows)
    ok = restarts == 0 and charged == 0 and stats["duplicates"] == 0
    return 0 if ok and stats["unique"] == total + 1 else 1


if __name__ == "__main__":
    sys.exit(main())
