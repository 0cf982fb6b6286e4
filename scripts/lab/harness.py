"""The one harness: real stations and emulators as processes, and waiting with a deadline.

Used by the tests, the benchmarks and the chaos run alike; never imported by the product.
Every station and emulator runs as a real process in a session of its own. Workers change
process group but not session, so cleanup kills every process in the sessions a run started:
a failing run never leaves a worker behind (process titles hide command lines, so we cannot
search by those). Homes are short ``/tmp`` paths because socket paths must stay under 100 bytes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests

from wats_station.ipc.client import EventStream, StationClient
from wats_station.ipc.endpoints import HOME_ENV, InstancePaths, instance_paths
from wats_station.lab.processes import kill_sessions

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"

# Fast timings, so that runs measure behaviour, not patience.
FAST_SUPERVISOR: dict[str, Any] = {
    "converter_workers": 1,
    "heartbeat_interval_s": 0.2,
    "heartbeat_timeout_s": 1.5,
    "start_timeout_s": 15.0,
    "restart_base_s": 0.2,
    "restart_cap_s": 1.0,
    "stable_uptime_s": 3.0,
    "stop_timeout_s": 3.0,
    "kill_timeout_s": 2.0,
}
FAST_UPLOAD: dict[str, Any] = {
    "retry_base_s": 0.1,
    "retry_cap_s": 0.4,
    "probe_base_s": 0.1,
    "probe_cap_s": 0.3,
    "connect_timeout_s": 1.0,
    "read_timeout_s": 2.0,
}


def minimal_report(n: int) -> dict[str, Any]:
    """The smallest valid WSJF test report, numbered: its id and serial number follow ``n``."""
    return {
        "type": "T",
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "pn": "PCBA-1",
        "sn": f"SN{n}",
        "rev": "A",
        "processCode": 10,
        "result": "P",
        "machineName": "st-1",
        "location": "here",
        "purpose": "test",
        "start": "2024-05-01T10:00:00+02:00",
        "root": {"stepType": "SequenceCall", "name": "Main", "status": "P"},
        "uut": {},
    }


_EMULATOR_BANNER = re.compile(r"listening on (http://\S+) \(admin (http://\S+)\)")


class HarnessError(AssertionError):
    """A driven process did not do what was expected; the message says what was seen."""


def wait_until(
    probe: Callable[[], T], timeout: float = 10.0, what: str = "condition", interval: float = 0.02
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with the last value seen.

    An exception from ``probe`` counts as "not yet" (what we wait for may not exist yet),
    except a HarnessError, which says waiting is pointless (the process died).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except HarnessError:
            raise
        except Exception as error:
            last = error
        else:
            if last:
                return last
        time.sleep(interval)
    raise HarnessError(f"timed out after {timeout:g} s waiting for {what}; last seen: {last!r}")


def child_env(**extra: str) -> dict[str, str]:
    """This environment without any station setting of ours, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATS_STATION_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def short_home(prefix: str = "ws-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class EmulatorProcess:
    """``python -m wats_station.emulator`` on free loopback ports, driven through its admin port.

    For runs that must not share a process with the emulator (benchmarks, the chaos run); tests
    mostly run :class:`wats_station.emulator.Emulator` in-process.
    """

    def __init__(self, *args: str, folder: Path | None = None) -> None:
        self._own_folder = folder is None
        self.folder = folder or short_home("ws-emulator-")
        self.log_path = self.folder / "emulator.out"
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.url = self.admin_url = ""
        self._http = requests.Session()

    def __enter__(self) -> EmulatorProcess:
        self._log = open(self.log_path, "w+b")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wats_station.emulator", "--host", "127.0.0.1", *self.args],
            cwd=REPO,
            env=child_env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            banner = wait_until(self._banner, 15, "the emulator to listen")
        except BaseException:
            self.stop()
            raise
        self.url, self.admin_url = banner.groups()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _banner(self) -> re.Match[str] | None:
        assert self.process is not None
        output = self.log_path.read_text(errors="replace")
        if self.process.poll() is not None:
            raise HarnessError(f"the emulator exited with {self.process.returncode}:\n{output}")
        return _EMULATOR_BANNER.search(output)

    def stop(self) -> None:
        self._http.close()
        if self.process is not None:
            kill_sessions({self.process.pid})
            self.process.wait()
            self._log.close()
            self.process = None
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, self.admin_url + path, json=body, timeout=10)
        if response.status_code != 200:
            raise HarnessError(
                f"emulator {method} {path} answered {response.status_code}: {response.text[:300]}"
            )
        return response.json()

    def stats(self) -> dict[str, int]:
        return self.admin("GET", "/_stats")

    def received(self) -> int:
        return int(self.stats()["received"])

    def set_faults(self, **faults: Any) -> None:
        self.admin("POST", "/_faults", faults)

    def reset(self) -> None:
        self.admin("POST", "/_reset")


class Station:
    """One ``wats-station service`` process in its own WATS_STATION_HOME."""

    def __init__(
        self, home: Path, instance: str = "default", env: dict[str, str] | None = None
    ) -> None:
        self.home = home
        self.instance = instance
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.sessions: set[int] = set()
        self.log_path = home / f"service-{instance}.out"
        self._client: StationClient | None = None

    @property
    def paths(self) -> InstancePaths:
        return instance_paths(self.instance, env={HOME_ENV: str(self.home)})

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def env(self) -> dict[str, str]:
        return child_env(**{HOME_ENV: str(self.home)}, **self.extra_env)

    def write_config(
        self, config: dict[str, Any], timings: dict[str, Any] | None = FAST_SUPERVISOR
    ) -> None:
        """Write the instance's config; ``timings`` (None for the shipped defaults) go under
        what ``config["supervisor"]`` sets itself."""
        config = json.loads(json.dumps(config))
        if timings is not None:
            config["supervisor"] = {**timings, **config.get("supervisor", {})}
        self.paths.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.paths.config_file.write_text(json.dumps(config, indent=2))

    def cli(
        self, *args: str, timeout: float = 30, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "wats_station.cli", *args, "--instance-id", self.instance],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise HarnessError(
                f"wats-station {' '.join(args)} failed ({result.returncode}): {result.stderr}"
            )
        return result

    def start(self, wait: bool = True) -> Station:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "wats_station.cli",
                    "service",
                    "--instance-id",
                    self.instance,
                ],
                cwd=REPO,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.sessions.add(self.process.pid)
        if wait:
            self.wait_ready()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            if self.process is not None and self.process.poll() is not None:
                raise HarnessError(
                    f"station exited with {self.process.returncode}:\n{self.output()[-3000:]}"
                )
            status = self.call("get_status", timeout_s=1.0)
            return status if status["state"] == "running" else None

        return wait_until(ready, timeout, "the station to be running")

    def call(self, command: str, timeout_s: float = 5.0, **args: Any) -> Any:
        """One command on a fresh connection, as a one-shot CLI call makes."""
        with StationClient(paths=self.paths, timeout_s=timeout_s) as client:
            return client.call(command, **args)

    def client(self) -> StationClient:
        """One long-lived control connection, as a GUI or a test program would hold."""
        if self._client is None:
            self._client = StationClient(paths=self.paths, timeout_s=10)
        return self._client

    def subscribe(self, timeout: float = 10) -> EventStream:
        """Every event, from a stream known to receive. PUB/SUB joins late, so we publish a
        harmless event (a reload of the unchanged config) until one arrives."""
        events = EventStream(paths=self.paths)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.call("reload")
            stop_at = time.monotonic() + 0.2
            while (event := events.next(max(0.0, stop_at - time.monotonic()))) is not None:
                if event.topic == "service.reloaded":
                    return events
        events.close()
        raise HarnessError(f"no event arrived on {self.paths.events_endpoint} in {timeout:g} s")

    def worker(self, name: str) -> dict[str, Any]:
        return next(w for w in self.call("list_workers") if w["name"] == name)

    def worker_pids(self) -> dict[str, int]:
        return {w["name"]: w["pid"] for w in self.call("list_workers") if w["pid"]}

    def wait_worker(
        self,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 10.0,
        what: str = "",
    ) -> dict[str, Any]:
        return wait_until(
            lambda: (w := self.worker(name)) and predicate(w) and w,
            timeout,
            what or f"{name} state",
        )

    def watch_folder(self, converter: str) -> Path:
        """Where a standard converter's files go in a config that names no folder."""
        return self.paths.data_dir / "drop" / converter

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, as ``systemctl stop``; SIGKILL after ``timeout``. The exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def cleanup(self) -> None:
        """End every process this station ever started, whatever state it is in."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self.kill()
        kill_sessions(self.sessions)

    def __enter__(self) -> Station:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.alive():
                self.stop(timeout=10)
        finally:
            self.cleanup()


class ThrowawayStation(Station):
    """A station in a fresh ``/tmp`` home that is removed, with every process, on exit."""

    def __init__(self, config: dict[str, Any], timings: dict[str, Any] | None = None) -> None:
        super().__init__(short_home())
        self.write_config(config, timings)

    def __enter__(self) -> ThrowawayStation:
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            shutil.rmtree(self.home, ignore_errors=True)
