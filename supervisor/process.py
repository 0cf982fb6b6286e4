"""One worker process: how it is spawned, signalled and reaped, and its restart state machine.

``change_state`` is the only writer of a worker's state; every edge is logged with the
reason and announced as an event. Exits are noticed through a pidfd in the supervisor's
poll set, so a death is seen at once. We signal only our own un-reaped children (whose pid
cannot have been reused) and always their whole process group, so a converter's own
children die with it.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wats_station.ipc.handshake import SECRET_FD_OPTION, new_secret, secret_pipe
from wats_station.ipc.states import WorkerState
from wats_station.supervisor.config import SupervisorSettings
from wats_station.supervisor.trust import worker_environment

log = logging.getLogger("wats-station")

OUTPUT_TAIL_LINES = 40
_MAX_LINE = 64 * 1024


@dataclass
class Job:
    job_id: str
    kind: str
    data: dict[str, Any]
    started: float  # monotonic
    deadline: float | None = None  # monotonic


def restart_delay(failures: int, settings: SupervisorSettings) -> float:
    """Nominal delay before restart number ``failures`` in a row: 0, base, 2*base ... cap."""
    if failures <= 1:
        return 0.0
    return min(settings.restart_cap_s, settings.restart_base_s * 2 ** (failures - 2))


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


@dataclass
class WorkerProcess:
    name: str
    kind: str
    settings: SupervisorSettings
    on_change: Callable[[WorkerProcess, WorkerState, str], None]
    wanted: bool = True  # operator intent: a worker stopped by command stays stopped
    restart_when_stopped: bool = False
    state: WorkerState = WorkerState.STOPPED
    popen: subprocess.Popen | None = None
    pidfd: int | None = None
    output_fd: int | None = None
    identity: bytes | None = None
    secret: bytes | None = None  # what this incarnation must say in its HELLO (ipc.handshake)
    capacity: int = 1
    restarts: int = 0
    failures: int = 0
    backoff_s: float = 0.0
    next_start_at: float | None = None
    spawned_at: float = 0.0
    ready_at: float | None = None
    last_seen: float = 0.0
    stop_deadline: float | None = None
    kill_deadline: float | None = None
    exit_reason: str = ""
    kill_reason: str = ""
    jobs: dict[str, Job] = field(default_factory=dict)
    output_tail: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_TAIL_LINES))
    _partial: bytes = b""
    _rng: random.Random = field(default_factory=random.Random)

    # -- facts ------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None and self.popen.returncode is None else None

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode if self.popen is not None else None

    @property
    def alive(self) -> bool:
        return self.pid is not None

    @property
    def idle_slots(self) -> int:
        if self.state is not WorkerState.RUNNING:
            return 0
        return max(0, self.capacity - len(self.jobs))

    def uptime(self, now: float) -> float | None:
        return now - self.ready_at if self.ready_at is not None and self.alive else None

    # -- state ------------------------------------------------------------------------

    def change_state(self, new: WorkerState, reason: str) -> None:
        old, self.state = self.state, new
        if old is not new:
            self.on_change(self, old, reason)

    def spawn(self, command: list[str], now: float) -> None:
        env = worker_environment(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        self.secret = new_secret()
        secret_fd = secret_pipe(self.secret)
        read_fd, write_fd = os.pipe()
        try:
            self.popen = subprocess.Popen(
                [*command, SECRET_FD_OPTION, str(secret_fd)],
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                env=env,
                process_group=0,
                close_fds=True,
                pass_fds=(secret_fd,),
            )
        except OSError as error:
            os.close(read_fd)
            os.close(write_fd)
            self.popen = self.secret = None
            self.exit_reason = f"could not start: {error}"
            self._schedule_restart(now, self.exit_reason)
            return
        finally:
            os.close(secret_fd)
            if self.popen is not None:
                os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.output_fd = read_fd
        self.pidfd = os.pidfd_open(self.popen.pid)
        self.spawned_at = self.last_seen = now
        self.ready_at = self.identity = None
        self.next_start_at = self.stop_deadline = self.kill_deadline = None
        self.kill_reason = ""
        self.output_tail.clear()
        self.change_state(WorkerState.STARTING, f"spawned as pid {self.popen.pid}")

    def hello(self, identity: bytes, now: float) -> None:
        self.identity = identity
        self.secret = None  # one HELLO per incarnation
        self.ready_at = self.last_seen = now
        if self.state is WorkerState.STARTING:
            self.change_state(WorkerState.RUNNING, "said hello")

    def signal_group(self, sig: signal.Signals) -> None:
        if self.pid is None:
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            pass

    def kill(self, reason: str) -> None:
        if self.alive and not self.kill_reason:
            self.kill_reason = reason
            log.warning("%s (pid %s): %s; killing it", self.name, self.pid, reason)
            self.signal_group(signal.SIGKILL)

    def request_stop(self, now: float, reason: str) -> bool:
        """Begin a graceful stop; returns True when a SHUTDOWN message should be sent."""
        self.wanted = False
        self.next_start_at = None
        if not self.alive:
            self.change_state(WorkerState.STOPPED, reason)
            return False
        if self.state is WorkerState.STOPPING:
            return False
        self.stop_deadline = now + self.settings.stop_timeout_s
        self.change_state(WorkerState.STOPPING, reason)
        return self.identity is not None

    def escalate_stop(self, now: float) -> None:
        if self.state is not WorkerState.STOPPING or not self.alive:
            return
        if (
            self.kill_deadline is None
            and self.stop_deadline is not None
            and now >= self.stop_deadline
        ):
            log.warning(
                "%s did not exit within %.1f s; sending SIGTERM",
                self.name,
                self.settings.stop_timeout_s,
            )
            self.signal_group(signal.SIGTERM)
            self.kill_deadline = now + self.settings.kill_timeout_s
        elif self.kill_deadline is not None and now >= self.kill_deadline:
            self.kill(f"still running {self.settings.kill_timeout_s:.1f} s after SIGTERM")

    # -- output and exit --------------------------------------------------------------

    def read_output(self, emit: Callable[[WorkerProcess, str], None]) -> bool:
        """Read what the worker wrote; returns False at end of file."""
        if self.output_fd is None:
            return False
        while True:
            try:
                chunk = os.read(self.output_fd, 65536)
            except BlockingIOError:
                return True
            if not chunk:
                if self._partial:
                    self._emit_line(self._partial, emit)
                    self._partial = b""
                os.close(self.output_fd)
                self.output_fd = None
                return False
            *lines, self._partial = (self._partial + chunk).split(b"\n")
            for line in lines:
                self._emit_line(line, emit)
            if len(self._partial) > _MAX_LINE:
                self._emit_line(self._partial, emit)
                self._partial = b""

    def _emit_line(self, raw: bytes, emit: Callable[[WorkerProcess, str], None]) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        self.output_tail.append(line)
        emit(self, line)

    def reap(self, now: float) -> str:
        """Collect the exit status after the pidfd fired; returns what happened in words."""
        assert self.popen is not None
        # The zombie still holds the group id, so this cannot hit a stranger: it ends any
        # children the worker left behind (a process converter's command, say).
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        returncode = self.popen.wait()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        reason = describe_exit(returncode)
        if self.kill_reason:
            reason = f"{reason} ({self.kill_reason})"
        self.exit_reason = reason
        self.identity = self.secret = None
        stable = self.ready_at is not None and now - self.ready_at >= self.settings.stable_uptime_s
        if self.restart_when_stopped:
            self.restart_when_stopped = False
            self.wanted = True
            self.failures = 0
            self.next_start_at = now
            self.change_state(WorkerState.BACKOFF, f"{reason}; restarting as requested")
        elif not self.wanted:
            self.change_state(WorkerState.STOPPED, reason)
        else:
            self.failures = 1 if stable else self.failures + 1
            self._schedule_restart(now, reason)
        self.ready_at = None
        return reason

    def _schedule_restart(self, now: float, reason: str) -> None:
        self.backoff_s = restart_delay(self.failures, self.settings)
        jittered = self.backoff_s * self._rng.uniform(0.8, 1.0)
        self.next_start_at = now + jittered
        looping = self.failures >= self.settings.crash_loop_after
        state = WorkerState.CRASH_LOOPING if looping else WorkerState.BACKOFF
        self.change_state(state, f"{reason}; restart in {jittered:.2f} s")

    def start_due(self, now: float) -> bool:
        return (
            self.wanted
            and not self.alive
            and self.next_start_at is not None
            and now >= self.next_start_at
        )

    def want_start(self, now: float) -> None:
        """Operator start: clears the intent to stay stopped and any pending backoff."""
        self.wanted = True
        if not self.alive:
            self.failures = 0
            self.next_start_at = now

    def status(self, now: float) -> dict[str, Any]:
        uptime = self.uptime(now)
        return {
            "name": self.name,
            "kind": self.kind,
            "pid": self.pid,
            "state": str(self.state),
            "restarts": self.restarts,
            "failures_in_a_row": self.failures,
            "backoff_s": round(self.backoff_s, 3),
            "uptime_s": None if uptime is None else round(uptime, 3),
            "jobs": [
                {
                    "job_id": j.job_id,
                    "kind": j.kind,
                    "what": job_label(j),
                    "for_s": round(now - j.started, 3),
                }
                for j in self.jobs.values()
            ],
            "last_exit": self.exit_reason or None,
        }


def job_label(job: Job) -> str:
    if "path" in job.data:
        return os.fsdecode(job.data["path"])
    return str(job.data.get("report_id", job.kind))


def worker_command(
    kind: str,
    name: str,
    instance: str,
    endpoint: str,
    settings: SupervisorSettings,
    max_message_bytes: int,
) -> list[str]:
    return [
        sys.executable,
        "-m",
        f"wats_station.workers.{kind}",
        "--instance",
        instance,
        "--name",
        name,
        "--endpoint",
        endpoint,
        "--supervisor-pid",
        str(os.getpid()),
        "--heartbeat-interval",
        str(settings.heartbeat_interval_s),
        "--heartbeat-timeout",
        str(settings.heartbeat_timeout_s),
        "--max-message-bytes",
        str(max_message_bytes),
    ]
