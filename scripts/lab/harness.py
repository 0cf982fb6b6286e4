"""The one harness: real stations in throw-away homes, and waiting with a deadline.

Used by the tests, the benchmarks and the chaos run alike; never imported by the product.
Every station runs as a real ``wats-station service`` process with its own WATS_STATION_HOME,
in a session of its own. Workers change process group but not session, so cleanup kills every
process in the sessions a station started: a failing run never leaves a worker behind
(process titles hide command lines, so we cannot search by those).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from wats_station.ipc.client import StationClient
from wats_station.ipc.endpoints import InstancePaths, instance_paths
from wats_station.lab.processes import kill_sessions

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"

# Fast timings so that tests measure behaviour, not patience.
FAST_SUPERVISOR = {
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


def wait_until(
    probe: Callable[[], T], timeout: float = 10.0, what: str = "condition", interval: float = 0.02
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as error:  # the thing we wait for may not exist yet
            last = error
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last seen: {last!r}")


class Station:
    """One ``wats-station service`` process under test."""

    def __init__(
        self, home: Path, instance: str = "default", env: dict[str, str] | None = None
    ) -> None:
        self.home = home
        self.instance = instance
        self.extra_env = env or {}
        self.process: subprocess.Popen | None = None
        self.sessions: set[int] = set()
        self.log_path = home / f"service-{instance}.out"

    @property
    def paths(self) -> InstancePaths:
        return instance_paths(self.instance, env={"WATS_STATION_HOME": str(self.home)})

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATS_STATION_")}
        env.update({"WATS_STATION_HOME": str(self.home), "PYTHONUNBUFFERED": "1", **self.extra_env})
        return env

    def write_config(self, config: dict[str, Any]) -> None:
        config = json.loads(json.dumps(config))
        config.setdefault("supervisor", {})
        config["supervisor"] = {**FAST_SUPERVISOR, **config["supervisor"]}
        self.paths.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.paths.config_file.write_text(json.dumps(config, indent=2))

    def cli(
        self, *args: str, timeout: float = 30, check: bool = False
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "wats_station.cli", *args, "--instance-id", self.instance],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"wats-station {' '.join(args)} failed ({result.returncode}): {result.stderr}"
            )
        return result

    def start(self, wait: bool = True) -> Station:
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wats_station.cli", "service", "--instance-id", self.instance],
            env=self.env(),
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.sessions.add(self.process.pid)
        if wait:
            self.wait_ready()
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"station exited with {self.process.returncode}:\n{self.output()[-3000:]}"
                )
            status = self.call("get_status", timeout_s=1.0)
            return status if status["state"] == "running" else None

        return wait_until(ready, timeout, "the station to be running")

    def call(self, command: str, timeout_s: float = 5.0, **args: Any) -> Any:
        with StationClient(paths=self.paths, timeout_s=timeout_s) as client:
            return client.call(command, **args)

    def worker(self, name: str) -> dict[str, Any]:
        return next(w for w in self.call("list_workers") if w["name"] == name)

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

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def cleanup(self) -> None:
        self.kill()
        if self.process is not None:
            self.log_file.close()
        kill_sessions(self.sessions)
