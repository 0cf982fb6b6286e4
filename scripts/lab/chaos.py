"""The chaos run: files pour in under kill -9 and a failing server; a ledger accounts for each.

The ledger proves that no file and no report was lost, duplicated or left behind.

    python -m wats_station.lab.chaos --files 3000 --seconds 90 --seed 7 --poison-every 25
    # harsher:
    python -m wats_station.lab.chaos --seed 6 --poison-every 1 --supervisor-kill-every 1,2.5

Good WSJF, WSTF and CSV files (wats_station.samples) and poison files (malformed JSON, garbage
bytes, an XML entity bomb, empty files, a WSTF without its serial number) are dropped into
four watch folders over time. Meanwhile, at moments drawn from the seed, a random worker and
the supervisor are killed with SIGKILL (the supervisor is started again after a short delay,
as systemd would), and the emulator's faults are switched on and off through its admin port.
At the end every fault is turned off, the station drains and stops, and the ledger compares
the files on disk, the queue database and what the emulator received. The exit status is 1
when the ledger finds a problem; the station's home is then kept for the evidence.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from wats_station.converters.base import derived_report_id
from wats_station.converters.wstf import format_wstf
from wats_station.ipc.client import CommandFailed, StationUnavailable
from wats_station.lab.harness import (
    FAST_UPLOAD,
    EmulatorProcess,
    HarnessError,
    Station,
    wait_until,
)
from wats_station.lab.processes import kill_sessions, session_pids
from wats_station.samples import sample_report, sample_uut, write_csv_files, write_wstf_files
from wats_station.supervisor.atomic import write_atomically
from wats_station.supervisor.conversions import SIDECAR_SUFFIX

TOKEN = "Y2hhb3M6Y2hhb3M="  # base64 of chaos:chaos
INSTANCE = "default"
REPO = Path(__file__).resolve().parents[2]
# converter name -> the file pattern it watches
CONVERTERS = {"wsjf": "*.json", "wsxf": "*.xml", "wstf": "*.txt", "csv": "*.csv"}
GOOD_FORMATS = ("wsjf", "wstf", "csv")
POISONS = ("malformed-json", "garbage", "entity-bomb", "empty", "wstf-without-serial")
ENTITY_BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b"<Reports>&lol3;</Reports>"
)
# Each fault with a drawer of the value that switches it on; off is the emulator's default.
FAULTS_ON: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "failure_rate": lambda r: {
        "failure_rate": round(r.uniform(0.1, 0.5), 2),
        "failure_status": r.choice((500, 502, 503, 504)),
    },
    "latency_ms": lambda r: {"latency_ms": r.randint(20, 400)},
    "rate_limit_rate": lambda r: {
        "rate_limit_rate": round(r.uniform(0.05, 0.3), 2),
        "retry_after": r.choice((0, 1)),
    },
    "down": lambda r: {"down": True},
    "drop_rate": lambda r: {"drop_rate": round(r.uniform(0.05, 0.3), 2)},
    "drop_after_store_rate": lambda r: {"drop_after_store_rate": round(r.uniform(0.05, 0.3), 2)},
}
# Each fault is off when its own key has this value (the keys drawn beside it then do nothing).
FAULTS_OFF = {
    "failure_rate": 0.0,
    "latency_ms": 0,
    "rate_limit_rate": 0.0,
    "down": False,
    "drop_rate": 0.0,
    "drop_after_store_rate": 0.0,
}


@dataclass(frozen=True)
class ChaosSettings:
    files: int = 3000
    seconds: float = 90.0
    seed: int = 1
    poison_every: int = 25  # every Kth file is poison; 0 for none
    converter_workers: int = 2
    worker_kill_every_s: tuple[float, float] = (1.0, 4.0)
    supervisor_kill_every_s: tuple[float, float] = (8.0, 20.0)
    fault_switch_every_s: tuple[float, float] = (0.5, 3.0)
    restart_delay_s: tuple[float, float] = (0.2, 1.0)  # systemd's RestartSec, jittered
    drain_timeout_s: float = 180.0


@dataclass
class ChaosResult:
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DroppedFile:
    name: str
    converter: str
    poison: str | None  # the kind of poison, None for a good file
    report_id: str | None  # the id the good file's report must carry


class ChaosError(RuntimeError):
    """The run cannot go on (the emulator or the station does not start); says what was seen."""


# -- processes ------------------------------------------------------------------------------


def process_title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def within(probe: Callable[[], Any], timeout: float, interval: float = 0.05) -> bool:
    """Whether ``probe`` returns something truthy before the deadline."""
    try:
        wait_until(probe, timeout, interval=interval)
    except HarnessError:
        return False
    return True


class SupervisedStation(Station):
    """The station as systemd runs it: a service process that is started again when it dies."""

    def __init__(self, home: Path, config: dict[str, Any]) -> None:
        super().__init__(home, INSTANCE)
        self.write_config(config)
        self.killed_by_us: set[int] = set()
        self.stopped_by_us: set[int] = set()
        self._restart_at: float | None = None
        self.exits: list[tuple[int, int]] = []  # (pid, returncode) of every incarnation

    def reap(self) -> int | None:
        """The pid of an incarnation that has just died (once), else None."""
        if self.process is None or self.process.poll() is None:
            return None
        pid = self.process.pid
        self.exits.append((pid, self.process.returncode))
        self.process = None
        return pid

    def keep_up(self, now: float, delay_s: Callable[[], float]) -> int | None:
        """What systemd's Restart=always does: start the service again a while after it died.
        Returns the pid of an incarnation found dead on this call."""
        dead = self.reap()
        if dead is not None:
            self._restart_at = now + delay_s()
        if self.process is None and self._restart_at is not None and now >= self._restart_at:
            self._restart_at = None
            self.start(wait=False)
        return dead

    def kill9(self) -> None:
        if self.alive():
            self.killed_by_us.add(self.pid)
            self.kill()

    def running(self) -> bool:
        try:
            return self.alive() and self.call("get_status", 1.0)["state"] == "running"
        except (StationUnavailable, CommandFailed):
            return False

    def terminate(self, timeout: float) -> int | None:
        """SIGTERM, as ``systemctl stop``; returns the exit status, None if it hung."""
        if not self.alive():
            return None if self.process is None else self.process.returncode
        assert self.process is not None
        self.stopped_by_us.add(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def station_config(home: Path, server_url: str, converter_workers: int) -> dict[str, Any]:
    converters = [
        {
            "name": name,
            "module": name,
            "file_patterns": [pattern],
            "watch_folder": str(home / "in" / name),
            "done_folder": str(home / "in" / name / "Done"),
            "error_folder": str(home / "in" / name / "Error"),
            # Our kill -9 of a converter looks exactly like a converter crashing on its file;
            # a high limit keeps good files from being quarantined by our own kills.
            "max_crashes": 20,
        }
        for name, pattern in CONVERTERS.items()
    ]
    return {
        "server": {"url": server_url, "token": TOKEN},
        "upload": {
            **FAST_UPLOAD,
            "max_concurrency": 4,
            # Injected 5xx must never exhaust a report: a failed report would be a loss here.
            "max_retry_attempts": 1000,
        },
        "watch": {"debounce_s": 0.2, "rescan_interval_s": 1.0},
        # Over FAST_SUPERVISOR: slower heartbeats, as two converters and our kills share 2 cores.
        "supervisor": {
            "converter_workers": converter_workers,
            "heartbeat_interval_s": 0.5,
            "heartbeat_timeout_s": 3.0,
        },
        "converters": converters,
    }


# -- files ----------------------------------------------------------------------------------


def drop_good(inbox: Path, index: int, converter: str) -> DroppedFile:
    folder = inbox / converter
    if converter == "wsjf":
        report = sample_report(index)
        name = f"wsjf_{index:06d}.json"
        write_atomically(folder / name, json.dumps(report, indent=1).encode(), durable=False)
        return DroppedFile(name, converter, None, report["id"])
    writer = write_wstf_files if converter == "wstf" else write_csv_files
    (path,) = writer(folder, 1, start_index=index)
    return DroppedFile(path.name, converter, None, derived_report_id(path.read_bytes(), 0))


def drop_poison(inbox: Path, index: int, kind: str, rng: random.Random) -> DroppedFile:
    if kind == "malformed-json":
        converter, data = "wsjf", b'{"type": "T", "id": "' + str(index).encode() + b'", "sn": '
    elif kind == "garbage":
        converter = rng.choice(GOOD_FORMATS)
        data = b"\xff\x00" + rng.randbytes(rng.randint(16, 4096))
    elif kind == "entity-bomb":
        converter, data = "wsxf", ENTITY_BOMB
    elif kind == "empty":
        converter, data = rng.choice(tuple(CONVERTERS)), b""
    else:  # a tester that wrote no serial number (a WSTF cut short converts, as Virinco's does)
        text = re.sub(r"(?m)^SerialNumber\t.*\n", "", format_wstf(sample_uut(index)))
        converter, data = "wstf", text.encode("cp1252")
    name = f"poison_{index:06d}_{kind}{CONVERTERS[converter][1:]}"
    write_atomically(inbox / converter / name, data, durable=False)
    return DroppedFile(name, converter, kind, None)


# -- the run --------------------------------------------------------------------------------


class Chaos:
    """One run: the drop schedule, the kills and the fault switches, all drawn from one seed."""

    def __init__(
        self,
        settings: ChaosSettings,
        station: SupervisedStation,
        emulator: EmulatorProcess,
        say: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.station = station
        self.emulator = emulator
        self.say = say
        # One stream per concern, so a seed always drops the same files in the same order and
        # draws the same schedule of kills and faults, however the timing interleaves them.
        self.files_rng = random.Random(f"{settings.seed}:files")
        self.kills_rng = random.Random(f"{settings.seed}:kills")
        self.faults_rng = random.Random(f"{settings.seed}:faults")
        self.restarts_rng = random.Random(f"{settings.seed}:restarts")
        self.inbox = station.home / "in"
        self.dropped: list[DroppedFile] = []
        self.worker_kills: Counter[str] = Counter()
        self.supervisor_kills = 0
        self.faults_on: set[str] = set()
        self.fault_switches: Counter[str] = Counter()
        self.problems: list[str] = []

    def _after(self, now: float, every: tuple[float, float], rng: random.Random) -> float:
        return now + rng.uniform(*every)

    def run(self) -> None:
        settings = self.settings
        start = time.monotonic()
        end = start + settings.seconds
        kills, faults = self.kills_rng, self.faults_rng
        next_worker_kill = self._after(start, settings.worker_kill_every_s, kills)
        next_supervisor_kill = self._after(start, settings.supervisor_kill_every_s, kills)
        next_fault = self._after(start, settings.fault_switch_every_s, faults)
        next_progress = start + 10
        while (now := time.monotonic()) < end or len(self.dropped) < settings.files:
            due = min(settings.files, int((now - start) / settings.seconds * settings.files) + 1)
            while len(self.dropped) < due:
                self._drop(len(self.dropped))
            self.keep_station_up(now)
            if now >= next_worker_kill:
                self._kill_worker()
                next_worker_kill = self._after(now, settings.worker_kill_every_s, kills)
            if now >= next_supervisor_kill and self.station.alive():
                self.station.kill9()
                self.supervisor_kills += 1
                next_supervisor_kill = self._after(now, settings.supervisor_kill_every_s, kills)
            if now >= next_fault:
                self._switch_fault(faults.choice(tuple(FAULTS_ON)))
                next_fault = self._after(now, settings.fault_switch_every_s, faults)
            if now >= next_progress:
                next_progress = now + 10
                self.say(self._progress(now - start))
            time.sleep(0.01)  # the scheduler's tick, not a wait for a condition

    def keep_station_up(self, now: float) -> None:
        delays = self.settings.restart_delay_s
        dead = self.station.keep_up(now, lambda: self.restarts_rng.uniform(*delays))
        if dead is not None:
            self._check_orphans(dead)

    def _progress(self, elapsed: float) -> str:
        return (
            f"  {elapsed:5.0f} s: {len(self.dropped)} files dropped, "
            f"{self.supervisor_kills} supervisor kills, {sum(self.worker_kills.values())} "
            f"worker kills, faults on: {', '.join(sorted(self.faults_on)) or 'none'}"
        )

    def _drop(self, index: int) -> None:
        every = self.settings.poison_every
        if every and (index + 1) % every == 0:
            kind = self.files_rng.choice(POISONS)
            dropped = drop_poison(self.inbox, index, kind, self.files_rng)
        else:
            dropped = drop_good(self.inbox, index, self.files_rng.choice(GOOD_FORMATS))
        self.dropped.append(dropped)

    def _kill_worker(self) -> None:
        if not self.station.alive():
            return
        try:
            workers = [w for w in self.station.call("list_workers", 0.5) if w["pid"]]
        except (StationUnavailable, CommandFailed):
            return  # starting up or just killed: a later draw finds it
        if not workers:
            return
        victim = self.kills_rng.choice(workers)
        # Only a process of a station we started: a pid is never taken on trust.
        if victim["pid"] not in session_pids(self.station.sessions):
            return
        try:
            os.kill(victim["pid"], signal.SIGKILL)
        except ProcessLookupError:
            return
        self.worker_kills[victim["kind"]] += 1

    def _switch_fault(self, name: str) -> None:
        if name in self.faults_on:
            self.faults_on.discard(name)
            update = {name: FAULTS_OFF[name]}
        else:
            self.faults_on.add(name)
            update = FAULTS_ON[name](self.faults_rng)
        self.emulator.admin("POST", "/_faults", update)
        self.fault_switches[name] += 1

    def all_faults_off(self) -> None:
        self.emulator.admin("POST", "/_faults", FAULTS_OFF)
        self.faults_on.clear()

    def _check_orphans(self, pid: int) -> None:
        """Workers must die with their supervisor, whatever killed it."""
        if within(lambda: not session_pids({pid}), 3.0):
            return
        self.problems.append(
            f"workers outlived their supervisor (pid {pid}) by 3 s: "
            + ", ".join(f"{p} {process_title(p)!r}" for p in session_pids({pid}))
        )

    def drained(self) -> bool:
        """Every file in Done or Error and nothing waiting to be uploaded; keeps the station up."""
        self.keep_station_up(time.monotonic())
        if located(self.inbox, self.dropped) < len(self.dropped):
            return False
        try:
            stats = self.station.call("get_queue_stats")
        except (StationUnavailable, CommandFailed):
            return False
        return stats["pending"] == 0 and stats["processing"] == 0

    def drain_state(self) -> str:
        settled = located(self.inbox, self.dropped)
        try:
            queue = self.station.call("get_queue_stats")
            server = self.station.call("get_status")["server"]
        except (StationUnavailable, CommandFailed) as error:
            queue, server = {}, {"state": f"not answering: {error}"}
        files = f"{settled} of {len(self.dropped)} files in Done or Error"
        return f"{files}; queue {queue}; server {server}"


def located(inbox: Path, dropped: list[DroppedFile]) -> int:
    """How many dropped files are in a Done or an Error folder."""
    settled = 0
    for name in CONVERTERS:
        names = _listing(inbox / name / "Done") | _listing(inbox / name / "Error")
        settled += sum(1 for d in dropped if d.converter == name and d.name in names)
    return settled


# -- the ledger -----------------------------------------------------------------------------


def _listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()


def _shown(items: list[str], limit: int = 10) -> str:
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def file_problems(inbox: Path, dropped: list[DroppedFile]) -> list[str]:
    """Every file in exactly one of Done and Error, poison in Error with a reason, good in Done."""
    problems = []
    places = {
        (name, where): _listing(inbox / name / sub)
        for name in CONVERTERS
        for where, sub in (("watch", "."), ("Done", "Done"), ("Error", "Error"))
    }
    expected: dict[tuple[str, str], set[str]] = {key: set() for key in places}
    for item in dropped:
        found = [w for w in ("watch", "Done", "Error") if item.name in places[(item.converter, w)]]
        where = f"{item.converter}/{item.name}"
        if not found:
            problems.append(f"lost file: {where} is in neither Done nor Error")
        elif len(found) > 1:
            problems.append(f"file in two places: {where} is in {' and '.join(found)}")
        elif found == ["watch"]:
            problems.append(f"file left behind: {where} is still in its watch folder")
        elif item.poison and found == ["Done"]:
            problems.append(f"poison file converted: {where} ({item.poison}) is in Done")
        elif not item.poison and found == ["Error"]:
            reason = _sidecar_reason(inbox / item.converter / "Error" / item.name)
            problems.append(f"good file in Error: {where}: {reason}")
        if "Error" in found:
            reason = _sidecar_reason(inbox / item.converter / "Error" / item.name)
            if not reason:
                problems.append(f"no reason for {where} in Error: its sidecar is missing or empty")
            expected[(item.converter, "Error")].add(item.name + SIDECAR_SUFFIX)
        for place in found:
            expected[(item.converter, place)].add(item.name)
    for (name, where), listed in places.items():
        stray = sorted(listed - expected[(name, where)])
        if stray:
            problems.append(f"unexpected files in {name}/{where}: {_shown(stray)}")
    return problems


def _sidecar_reason(path: Path) -> str:
    try:
        sidecar = json.loads(path.with_name(path.name + SIDECAR_SUFFIX).read_text())
    except (OSError, ValueError):
        return ""
    return str(sidecar.get("error") or sidecar.get("message") or "")


def read_queue(db: Path) -> tuple[dict[str, str], list[tuple[str, str, int]]]:
    """(report id -> state, [(source file name, state, report count)]), read-only."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        reports = dict(connection.execute("SELECT id, state FROM report"))
        sources = [
            (Path(path).name, state, count)
            for path, state, count in connection.execute(
                "SELECT path, state, report_count FROM source_file"
            )
        ]
    finally:
        connection.close()
    return reports, sources


def report_problems(
    dropped: list[DroppedFile],
    reports: dict[str, str],
    sources: list[tuple[str, str, int]],
    received: list[str],
) -> list[str]:
    """Every good file's report queued once, completed, and on the server by the same id."""
    problems = []
    unfinished = sorted(f"{i} ({s})" for i, s in reports.items() if s != "completed")
    if unfinished:
        problems.append(f"reports not completed once the server was healthy: {_shown(unfinished)}")
    queued, unique = set(reports), set(received)
    expected = {d.report_id for d in dropped if d.report_id}
    checks = [
        (expected - queued, "good files whose report was never queued"),
        (queued - expected, "queued reports no good file explains (a duplicate by another id?)"),
        (queued - unique, "queued reports the server never received (lost)"),
        (unique - queued, "reports on the server the station never queued"),
        ({d.report_id for d in dropped if d.converter == "wsjf" and d.report_id} - unique,
         "WSJF files whose own id the server never received"),
    ]  # fmt: skip
    problems += [f"{what}: {_shown(sorted(ids))}" for ids, what in checks if ids]
    by_name: dict[str, list[tuple[str, int]]] = {}
    for name, state, count in sources:
        by_name.setdefault(name, []).append((state, count))
    for item in dropped:
        rows = by_name.get(item.name, [])
        wanted = [("failed", 0)] if item.poison else [("done", 1)]
        if rows != wanted:
            problems.append(f"{item.name}: source records {rows}, expected {wanted}")
    return problems


def process_problems(sessions: set[int]) -> list[str]:
    if within(lambda: not session_pids(sessions), 5.0):
        return []
    return [
        "processes left running after the station stopped: "
        + ", ".join(f"{p} {process_title(p)!r}" for p in session_pids(sessions))
    ]


def log_notes(output: str) -> list[str]:
    """Tracebacks and unhandled messages in the station's log: worth a look even when clean."""
    notes = []
    tracebacks = output.count("Traceback (most recent call last)")
    if tracebacks:
        first = output.index("Traceback (most recent call last)")
        notes.append(f"{tracebacks} traceback(s) in the station log; the first:\n"
                     f"{output[max(0, first - 300):first + 1500]}")  # fmt: skip
    handled = re.findall(r".*could not handle .*", output)
    if handled:
        notes.append(f"{len(handled)} message(s) the supervisor could not handle: {handled[0]}")
    return notes


# -- putting it together --------------------------------------------------------------------


def run_chaos(
    settings: ChaosSettings, home: Path, say: Callable[[str], None] = print
) -> ChaosResult:
    """One whole run in ``home`` (a short path: socket names must stay under 100 bytes)."""
    began = time.monotonic()
    for name in CONVERTERS:
        (home / "in" / name).mkdir(parents=True, exist_ok=True)
    emulator = EmulatorProcess("--token", TOKEN, "--seed", str(settings.seed), folder=home)
    emulator.__enter__()
    station: SupervisedStation | None = None
    try:
        station = SupervisedStation(
            home, station_config(home, emulator.url, settings.converter_workers)
        )
        station.start()
        if not within(station.running, 60, 0.1):
            raise ChaosError(f"the station did not start:\n{station.output()[-3000:]}")
        say(f"chaos: seed {settings.seed}, {settings.files} files over {settings.seconds:g} s "
            f"in {home}")  # fmt: skip
        chaos = Chaos(settings, station, emulator, say)
        chaos_began = time.monotonic()
        chaos.run()
        chaos_s = time.monotonic() - chaos_began
        chaos.all_faults_off()
        say("chaos over: every fault off; draining")
        result = ChaosResult()
        if not within(chaos.drained, settings.drain_timeout_s, 0.2):
            result.problems.append(
                f"not drained within {settings.drain_timeout_s:g} s: {chaos.drain_state()}"
            )
        drain_s = time.monotonic() - chaos_began - chaos_s
        result.problems += stop_problems(station)
        result.problems += chaos.problems
        result.problems += process_problems(station.sessions)
        reports, sources = read_queue(station.paths.queue_db)
        received = emulator.admin("GET", "/_received")
        result.problems += file_problems(home / "in", chaos.dropped)
        result.problems += report_problems(chaos.dropped, reports, sources, received)
        result.notes += log_notes(station.output())
        result.figures = figures(chaos, reports, received, emulator.admin("GET", "/_stats"))
        result.figures |= {
            "chaos phase (s)": round(chaos_s, 1),
            "drain (s)": round(drain_s, 1),
            "total (s)": round(time.monotonic() - began, 1),
        }
        return result
    finally:
        if station is not None:
            kill_sessions(station.sessions)
        emulator.stop()


def stop_problems(station: SupervisedStation) -> list[str]:
    """Stop the station as systemd would; a hang, a bad exit or a crash of its own is a finding."""
    problems = []
    try:
        unhandled = station.call("get_status")["failed_messages"]
        if unhandled:
            problems.append(f"the supervisor failed to handle {unhandled} worker message(s)")
    except (StationUnavailable, CommandFailed) as error:
        problems.append(f"the station did not answer get_status before stopping: {error}")
    code = station.terminate(timeout=30)
    if code is None:
        problems.append("the station did not stop within 30 s of SIGTERM (a hang)")
    elif code != 0:
        problems.append(f"the station stopped with exit status {code}")
    station.kill9()
    station.reap()
    crashed = [
        f"pid {pid} exited with {returncode}"
        for pid, returncode in station.exits
        if pid not in station.killed_by_us | station.stopped_by_us
    ]
    if crashed:
        problems.append(
            f"the supervisor died on its own: {', '.join(crashed)} (see {station.log_path})"
        )
    return problems


def _breakdown(counts: Counter[str]) -> str:
    return f"{sum(counts.values())} ({', '.join(f'{k} {n}' for k, n in sorted(counts.items()))})"


def figures(
    chaos: Chaos, reports: dict[str, str], received: list[str], stats: dict[str, int]
) -> dict[str, Any]:
    return {
        "seed": chaos.settings.seed,
        "files dropped": len(chaos.dropped),
        "good files": _breakdown(Counter(d.converter for d in chaos.dropped if not d.poison)),
        "poison files": _breakdown(Counter(d.poison for d in chaos.dropped if d.poison)),
        "reports queued": len(reports),
        "reports received (unique ids)": len(set(received)),
        "resends of the same id": len(received) - len(set(received)),
        "worker kills (kill -9)": _breakdown(chaos.worker_kills),
        "supervisor kills (kill -9)": chaos.supervisor_kills,
        "station incarnations": len(chaos.station.exits),
        "fault switches": _breakdown(chaos.fault_switches),
        "faults injected by the emulator": stats["faults_injected"],
        "requests to the emulator": stats["requests"],
    }


def print_result(result: ChaosResult) -> None:
    width = max(len(name) for name in result.figures)
    for name, value in result.figures.items():
        print(f"{name:<{width}}  {value}")
    for note in result.notes:
        print(f"note: {note}")
    if result.problems:
        print(f"\nFAILED: {len(result.problems)} problem(s)")
        for problem in result.problems:
            print(f"  - {problem}")
    else:
        print("\nledger clean: nothing lost, nothing duplicated, nothing left behind")


def _leave_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every process we started is killed on the way out."""

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)


def seconds_range(text: str) -> tuple[float, float]:
    """``MIN,MAX`` seconds, for argparse."""
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX in seconds, got {text!r}") from None
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError(f"expected 0 < MIN <= MAX, got {text!r}")
    return low, high


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        "python -m wats_station.lab.chaos", description=__doc__.split("\n")[0]
    )
    defaults = ChaosSettings()
    parser.add_argument("--files", type=int, default=defaults.files, help="files to drop")
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="chaos duration")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="reproduce a run")
    parser.add_argument("--poison-every", type=int, default=defaults.poison_every, metavar="K",
                        help="every Kth file is poison (0: none)")  # fmt: skip
    parser.add_argument("--converter-workers", type=int, default=defaults.converter_workers)
    for what in ("worker_kill", "supervisor_kill", "fault_switch"):
        parser.add_argument(f"--{what.replace('_', '-')}-every", type=seconds_range,
                            default=getattr(defaults, f"{what}_every_s"), metavar="MIN,MAX",
                            help="seconds between two, drawn uniformly")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the home of a clean run too")
    args = parser.parse_args(argv)
    if args.files < 1 or args.seconds <= 0 or args.poison_every < 0:
        parser.error("--files must be >= 1, --seconds > 0 and --poison-every >= 0")
    settings = ChaosSettings(
        files=args.files,
        seconds=args.seconds,
        seed=args.seed,
        poison_every=args.poison_every,
        converter_workers=args.converter_workers,
        worker_kill_every_s=args.worker_kill_every,
        supervisor_kill_every_s=args.supervisor_kill_every,
        fault_switch_every_s=args.fault_switch_every,
    )
    _leave_on_sigterm()
    home = Path(tempfile.mkdtemp(prefix="wsc-", dir="/tmp"))
    try:
        result = run_chaos(settings, home)
    except (ChaosError, HarnessError) as error:
        print(f"Error: {error}\n(home kept in {home})", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit) as stop:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
        print("interrupted; every process the run started is stopped", file=sys.stderr)
        return 130 if isinstance(stop, KeyboardInterrupt) else int(stop.code or 1)
    print_result(result)
    if result.problems or args.keep:
        print(f"evidence (service.out, queue database, folders) kept in {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)
    return 1 if result.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
