"""What the station benchmarks share: a real station and emulator as subprocesses, and the table.

Every process a benchmark starts runs in a session of its own, and leaving a ``with`` block
kills the whole session, so a worker never outlives a benchmark, even on Ctrl-C, SIGTERM or an
error (workers change process group but not session; their titles hide their command lines).
The station's home is a short ``/tmp`` directory because socket paths must stay under 100 bytes.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import requests

from wats_station.ipc.client import CommandFailed, EventStream, StationClient, StationUnavailable
from wats_station.ipc.endpoints import InstancePaths, instance_paths
from wats_station.lab import processes

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
INSTANCE = "default"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_EMULATOR_BANNER = re.compile(r"listening on (http://\S+) \(admin (http://\S+)\)")


class BenchError(RuntimeError):
    """A benchmark cannot go on; the message says what was seen."""


def wait_until(probe: Callable[[], T], timeout: float, what: str, interval: float = 0.005) -> T:
    """Poll ``probe`` until it returns something truthy; raise BenchError with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:g} s waiting for {what}; last seen: {last!r}")


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the ``with`` blocks clean up as they do on Ctrl-C."""

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)


# -- processes ------------------------------------------------------------------------------


def session_pids(session: int) -> list[int]:
    """Every live process of a session (the session id is its leader's pid)."""
    return processes.session_pids({session})


def kill_session(session: int) -> None:
    processes.kill_sessions({session})


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = processes.stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"/proc/{pid}/status has no VmRSS line")


def _bench_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATS_STATION_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


class EmulatorProcess:
    """``python -m wats_station.emulator`` on free loopback ports, driven through its admin port."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="wsb-emulator-", dir="/tmp"))
        self.log_path = self.folder / "emulator.out"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = self.admin_url = ""
        self._http = requests.Session()

    def __enter__(self) -> EmulatorProcess:
        self._log = open(self.log_path, "w+b")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wats_station.emulator", "--host", "127.0.0.1"],
            cwd=REPO,
            env=_bench_env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            banner = wait_until(self._banner, 15, "the emulator to listen", interval=0.02)
        except BaseException:
            self.__exit__()
            raise
        self.url, self.admin_url = banner.groups()
        return self

    def _banner(self) -> re.Match[str] | None:
        assert self.process is not None
        output = self.log_path.read_text(errors="replace")
        if self.process.poll() is not None:
            raise BenchError(f"the emulator exited with {self.process.returncode}:\n{output}")
        return _EMULATOR_BANNER.search(output)

    def __exit__(self, *exc: object) -> None:
        self._http.close()
        if self.process is not None:
            kill_session(self.process.pid)
            self.process.wait()
            self._log.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, self.admin_url + path, json=body, timeout=10)
        if response.status_code != 200:
            raise BenchError(
                f"emulator {method} {path} answered {response.status_code}: {response.text[:300]}"
            )
        return response.json()

    def stats(self) -> dict[str, int]:
        return self._admin("GET", "/_stats")

    def received(self) -> int:
        return int(self.stats()["received"])

    def set_faults(self, **faults: Any) -> None:
        self._admin("POST", "/_faults", faults)

    def reset(self) -> None:
        self._admin("POST", "/_reset")


class StationProcess:
    """``python -m wats_station.cli service`` in a throw-away WATS_STATION_HOME under /tmp."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.home = Path(tempfile.mkdtemp(prefix="wsb-", dir="/tmp"))
        self.paths: InstancePaths = instance_paths(
            INSTANCE, env={"WATS_STATION_HOME": str(self.home)}
        )
        self.process: subprocess.Popen[bytes] | None = None
        self._client: StationClient | None = None

    def __enter__(self) -> StationProcess:
        try:
            self.paths.config_file.parent.mkdir(parents=True, exist_ok=True)
            self.paths.config_file.write_text(json.dumps(self.config, indent=2))
            self._log = open(self.home / "service.out", "wb")
            self.process = subprocess.Popen(
                [sys.executable, "-m", "wats_station.cli", "service", "--instance-id", INSTANCE],
                cwd=REPO,
                env=_bench_env(WATS_STATION_HOME=str(self.home)),
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            wait_until(self._running, 60, "the station to be running", interval=0.02)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _running(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise BenchError(
                f"the station exited with {self.process.returncode}:\n{self.output()[-3000:]}"
            )
        if not os.path.exists(self.paths.control_endpoint.removeprefix("ipc://")):
            return False
        try:
            return self.call("get_status", timeout_s=1.0)["state"] == "running"
        except (StationUnavailable, CommandFailed):  # the socket exists before the loop answers
            return False

    def __exit__(self, *exc: object) -> None:
        try:
            if self._client is not None:
                self._client.close()
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    pass  # the session kill below ends it
        finally:
            if self.process is not None:
                kill_session(self.process.pid)
                self.process.wait()
                self._log.close()
            shutil.rmtree(self.home, ignore_errors=True)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def output(self) -> str:
        log = self.home / "service.out"
        return log.read_text(errors="replace") if log.exists() else ""

    def client(self) -> StationClient:
        """One long-lived control connection, as a GUI or a test program would hold."""
        if self._client is None:
            self._client = StationClient(paths=self.paths, timeout_s=10)
        return self._client

    def call(self, command: str, timeout_s: float | None = None, **args: Any) -> Any:
        return self.client().call(command, timeout_s=timeout_s, **args)

    def subscribe(self, timeout: float = 10) -> EventStream:
        """Every event, from a stream known to receive. PUB/SUB joins late, so we publish a
        harmless event (a reload of the unchanged config) until one arrives. We filter on our
        side: the sequence numbers span all topics, so a topic-filtered EventStream would see a
        gap, and resync, at almost every event."""
        events = EventStream(paths=self.paths)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.call("reload")
            stop_at = time.monotonic() + 0.2
            while (event := events.next(max(0.0, stop_at - time.monotonic()))) is not None:
                if event.topic == "service.reloaded":
                    return events
        events.close()
        raise BenchError(f"no event arrived on {self.paths.events_endpoint} within {timeout:g} s")

    def worker_pids(self) -> dict[str, int]:
        return {w["name"]: w["pid"] for w in self.call("list_workers") if w["pid"]}

    def watch_folder(self, converter: str) -> Path:
        return self.paths.data_dir / "drop" / converter


# -- numbers and output ---------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks (p99 of 50 values is near the maximum)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def verdict(value: float, goal: float, *, at_most: bool) -> str:
    met = value <= goal if at_most else value >= goal
    return "met" if met else "NOT met"


def machine_line() -> str:
    """When and where: the figures mean little without the machine and the load on it."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{when}; {os.cpu_count()} CPUs ({model.group(1) if model else platform.machine()}); "
        f"Python {platform.python_version()}; Linux {platform.release()}; load average {load}"
    )


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    width = max(len(row[0]) for row in rows)
    print(f"\n{title}")
    print(f"{'measure':<{width}}  {'median':>14}  goal / note")
    for what, value, note in rows:
        print(f"{what:<{width}}  {value:>14}  {note}")
    sys.stdout.flush()
