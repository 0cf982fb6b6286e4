"""The worker fleet: which workers should run, spawning them, judging their liveness, restarting
and stopping them, and handing them jobs.

Every timed transition of a worker (start timeout, heartbeat silence, job deadline, stop
escalation, restart after backoff) is taken in ``tick``, and ``next_deadline`` tells the loop
when the next one is due. Liveness is judged fairly:

* a message is stamped with the time it was read, and a worker is judged only after the loop
  has read everything waiting on the worker socket, so a busy supervisor never mistakes its own
  backlog for a worker's silence;
* when the supervisor itself was late (stopped, starved, or a long turn), ``forgive`` moves
  every worker's clocks on by the time lost: nobody is blamed for the supervisor's absence;
* a job is charged to its file (``charge``) only when its worker died on its own or was killed
  for that job (deadline, frozen while working); a worker stopped or restarted on purpose costs
  its file nothing.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import zmq

from wats_station.converters.processes import PROCESSES_FILE_NAME
from wats_station.ipc.contract import (
    EXIT_ORPHANED,
    JOB_RUNNER,
    STOP_ORDER,
    WorkerKind,
    worker_topic,
)
from wats_station.ipc.endpoints import InstancePaths
from wats_station.ipc.protocol import JobKind, Message, MsgType
from wats_station.ipc.sockets import send
from wats_station.ipc.states import WorkerState
from wats_station.supervisor.config import Config
from wats_station.supervisor.process import Job, WorkerProcess, worker_command
from wats_station.supervisor.trust import hello_refusal, may_send

log = logging.getLogger("wats-station")

JobLost = Callable[[Job, str, str, bool], None]  # job, reason, output tail, charge the file


def worker_settings(kind: str, config: Config) -> dict[str, Any]:
    """What a worker of this kind is told in its welcome: all it knows of the config
    (the fields are ``ipc.contract.WORKER_SETTINGS``)."""
    if kind == WorkerKind.UPLOADER:
        return {"server": asdict(config.server), "upload": asdict(config.upload)}
    if kind == WorkerKind.WATCHER:
        return {
            "watch": asdict(config.watch),
            "converters": [asdict(c) for c in config.converters if c.enabled],
        }
    if kind == WorkerKind.CONVERTER:
        return {
            "converters": [asdict(c) for c in config.converters],
            "converters_folder": config.converters_folder,
            "station": asdict(config.station),
            "max_file_bytes": int(config.watch.max_file_mb * 1024 * 1024),
        }
    if kind == WorkerKind.METRICS:
        return {"metrics": asdict(config.metrics)}
    return {}


def capacity(kind: str, config: Config) -> int:
    """How many jobs a worker of this kind is given at once (the watcher and the metrics
    worker run none). (An uploader given more jobs
    than connections would keep one waiting, saving a round trip per upload, but would
    then POST it even after a 429 told the whole queue to wait.)"""
    if kind == WorkerKind.UPLOADER:
        return config.upload.max_concurrency
    return 1 if kind == WorkerKind.CONVERTER else 0


class Fleet:
    def __init__(
        self,
        paths: InstancePaths,
        config: Config,
        sock: zmq.Socket,
        *,
        epoch: str,
        max_message_bytes: int,
        publish: Callable[[str, dict[str, Any]], None],
        job_lost: JobLost,
        after_commit: Callable[[Callable[[], None]], None],
        on_rollback: Callable[[Callable[[], None]], None] = lambda action: None,
    ) -> None:
        self.paths = paths
        self.config = config
        self.socket = sock
        self.epoch = epoch
        self.max_message_bytes = max_message_bytes
        self.publish = publish
        self.job_lost = job_lost
        self.after_commit = after_commit
        self.on_rollback = on_rollback
        self.workers: dict[str, WorkerProcess] = {}
        self.by_identity: dict[bytes, WorkerProcess] = {}
        self.stopping = False
        self._job_ids = 0
        self.build(config)

    # -- who should run ---------------------------------------------------------------

    def build(self, config: Config) -> None:
        self.config = config
        wanted = {"watcher": WorkerKind.WATCHER, "uploader": WorkerKind.UPLOADER}
        for index in range(1, config.supervisor.converter_workers + 1):
            wanted[f"converter-{index}"] = WorkerKind.CONVERTER
        if config.metrics.listen:
            wanted["metrics"] = WorkerKind.METRICS
        for name, kind in wanted.items():
            if name not in self.workers:
                worker = WorkerProcess(name, str(kind), config.supervisor, self._changed)
                worker.next_start_at = 0.0
                self.workers[name] = worker
        for name in set(self.workers) - set(wanted):
            self.workers[name].request_stop(time.monotonic(), "no longer configured")
        for worker in self.workers.values():
            worker.settings = config.supervisor
            worker.capacity = capacity(worker.kind, config)

    def _changed(self, worker: WorkerProcess, old: WorkerState, reason: str) -> None:
        level = (
            logging.WARNING
            if worker.state in (WorkerState.BACKOFF, WorkerState.CRASH_LOOPING)
            else logging.INFO
        )
        log.log(level, "%s: %s -> %s (%s)", worker.name, old, worker.state, reason)
        self.publish(
            worker_topic(worker.name),
            {
                "name": worker.name,
                "kind": worker.kind,
                "state": str(worker.state),
                "from": str(old),
                "reason": reason,
                "pid": worker.pid,
                "restarts": worker.restarts,
            },
        )

    # -- facts ------------------------------------------------------------------------

    def idle(self, kind: WorkerKind) -> list[WorkerProcess]:
        return [w for w in self.workers.values() if w.kind == kind and w.idle_slots > 0]

    def running(self, kind: WorkerKind) -> bool:
        return any(w.kind == kind and w.state is WorkerState.RUNNING for w in self.workers.values())

    def all_tried(self) -> bool:
        return all(
            w.state is WorkerState.RUNNING or w.exit_reason or not w.wanted
            for w in self.workers.values()
        )

    def any_alive(self) -> bool:
        return any(w.alive for w in self.workers.values())

    def fds(self) -> set[int]:
        fds = set()
        for worker in self.workers.values():
            fds.update(fd for fd in (worker.pidfd, worker.output_fd) if fd is not None)
        return fds

    def status(self, now: float) -> list[dict[str, Any]]:
        return [w.status(now) for w in self.workers.values()]

    # -- the wire ---------------------------------------------------------------------

    def send(self, worker: WorkerProcess, message: Message) -> bool:
        if worker.identity is None:
            return False
        try:
            send(self.socket, message, [worker.identity])
        except zmq.ZMQError as error:  # EHOSTUNREACH: it is gone; its pidfd will tell us soon
            log.debug("could not send to %s: %s", worker.name, error)
            return False
        return True

    def hello(self, identity: bytes, body: dict[str, Any], now: float, peer: str | None) -> bool:
        """Welcome a worker we spawned (supervisor.trust: its secret, its pid, the peer pid
        libzmq saw); anyone else gets no answer, so no settings and never the token."""
        worker = self.workers.get(body["name"])
        refusal = hello_refusal(worker, body, peer)
        if refusal is not None:
            log.warning("refused hello from %r (pid %s): %s", body["name"], body["pid"], refusal)
            return False
        assert worker is not None
        self.by_identity[identity] = worker
        worker.hello(identity, now)
        settings = worker_settings(worker.kind, self.config)
        if worker.kind in (WorkerKind.CONVERTER, WorkerKind.UPLOADER):
            # uploaders refresh this cache, converters read it (converters.processes)
            settings["processes_file"] = str(self.paths.data_dir / PROCESSES_FILE_NAME)
        welcome = {"settings": settings}
        self.send(worker, Message(MsgType.WELCOME, welcome))
        if worker.state is WorkerState.STOPPING:
            self.send(worker, Message(MsgType.SHUTDOWN))
        return True

    def seen(self, identity: bytes, now: float) -> WorkerProcess | None:
        worker = self.by_identity.get(identity)
        if worker is not None:
            worker.last_seen = max(worker.last_seen, now)
        return worker

    @staticmethod
    def may_send(worker: WorkerProcess, message_type: MsgType) -> bool:
        """Whether a worker of this kind sends messages of this type (supervisor.trust)."""
        if may_send(worker.kind, message_type):
            return True
        log.warning("dropped %s from %s: not a %s message", message_type, worker.name, worker.kind)
        return False

    def dispatch(
        self, worker: WorkerProcess, kind: JobKind, data: dict[str, Any], deadline_s: float | None
    ) -> Job | None:
        assert worker.kind == JOB_RUNNER[kind], f"{kind} jobs run on {JOB_RUNNER[kind]} workers"
        self._job_ids += 1
        now = time.monotonic()
        job = Job(
            f"{self.epoch}-{self._job_ids}",
            str(kind),
            data,
            now,
            now + deadline_s if deadline_s else None,
        )
        if worker.identity is None:
            return None
        message = Message(MsgType.JOB, {"job_id": job.job_id, "kind": job.kind, "data": data})
        # A job goes out once the turn's writes are committed: a report is never POSTed, nor a
        # file converted, on the strength of a record that a crash could still undo. If the
        # worker is gone by then, its exit hands the job back (job_lost).
        self.after_commit(lambda: self.send(worker, message))
        # Rolled back, the job never went out: its worker's slot is free again.
        self.on_rollback(lambda: worker.jobs.pop(job.job_id, None))
        worker.jobs[job.job_id] = job
        return job

    def job_done(self, worker: WorkerProcess, job_id: str) -> Job | None:
        return worker.jobs.pop(job_id, None)

    def send_heartbeats(self) -> None:
        for worker in self.workers.values():
            if worker.identity is not None:
                self.send(worker, Message(MsgType.HEARTBEAT, {}))

    # -- exits ------------------------------------------------------------------------

    def serve_fd(self, fd: int, now: float, log_line: Callable[[WorkerProcess, str], None]) -> None:
        for worker in self.workers.values():
            if fd == worker.output_fd:
                worker.read_output(log_line)
            elif fd == worker.pidfd:
                self._exited(worker, now, log_line)

    def _exited(
        self, worker: WorkerProcess, now: float, log_line: Callable[[WorkerProcess, str], None]
    ) -> None:
        if worker.output_fd is not None:
            worker.read_output(log_line)
        identity = worker.identity
        lost = list(worker.jobs.values())
        worker.jobs.clear()
        stopping = worker.state is WorkerState.STOPPING
        reason = worker.reap(now)
        # A worker asked to stop (by an operator, a reload or the station stopping), or one
        # that left because it lost its supervisor, was not stopped by its file: the file is
        # not charged, even if the worker had to be killed.
        charge = not stopping and worker.returncode != EXIT_ORPHANED
        if identity is not None:
            self.by_identity.pop(identity, None)
        tail = "\n".join(worker.output_tail)
        for job in lost:
            self.job_lost(job, reason, tail, charge)

    # -- timed transitions ------------------------------------------------------------

    def forgive(self, lost_s: float) -> None:
        """The supervisor was away for ``lost_s``: move every worker's clocks on by as much."""
        for worker in self.workers.values():
            worker.last_seen += lost_s
            worker.spawned_at += lost_s
            for job in worker.jobs.values():
                if job.deadline is not None:
                    job.deadline += lost_s

    def tick(self, now: float, *, judge: bool) -> None:
        """Take every transition that is due. ``judge`` is False while messages are still
        waiting to be read: then silence proves nothing and nobody is declared frozen."""
        for worker in self.workers.values():
            if judge:
                self._judge(worker, now)
            worker.escalate_stop(now)
            if worker.start_due(now) and not self.stopping:
                if worker.exit_reason:
                    worker.restarts += 1
                worker.spawn(self._command(worker), now)
        if self.stopping:
            self._advance_stop(now)

    def _judge(self, worker: WorkerProcess, now: float) -> None:
        settings = self.config.supervisor
        # Decoding a big report (a validate job) holds the worker's GIL for seconds in C code:
        # its silence then proves nothing, and the job's deadline guards against a hang.
        validating = any(job.kind == JobKind.VALIDATE for job in worker.jobs.values())
        if (
            worker.state is WorkerState.STARTING
            and now - worker.spawned_at > settings.start_timeout_s
        ):
            worker.kill(f"did not say hello within {settings.start_timeout_s:g} s")
        elif (
            worker.state is WorkerState.RUNNING
            and now - worker.last_seen > settings.heartbeat_timeout_s
            and not validating
        ):
            worker.kill(f"no heartbeat for {now - worker.last_seen:.1f} s (frozen?)")
        for job in list(worker.jobs.values()):
            if (
                job.deadline is not None
                and now > job.deadline
                and worker.alive
                and not worker.kill_reason
            ):
                worker.kill(
                    f"{job.kind} job passed its deadline of {job.deadline - job.started:g} s"
                )

    def next_deadline(self) -> float | None:
        deadlines: list[float] = []
        for worker in self.workers.values():
            deadlines += [
                d for d in (worker.next_start_at, worker.stop_deadline, worker.kill_deadline) if d
            ]
            deadlines += [job.deadline for job in worker.jobs.values() if job.deadline]
        return min(deadlines, default=None)

    def _command(self, worker: WorkerProcess) -> list[str]:
        return worker_command(
            worker.kind,
            worker.name,
            self.paths.instance,
            self.paths.workers_endpoint,
            self.config.supervisor,
            self.max_message_bytes,
        )

    # -- operator actions -------------------------------------------------------------

    def stop_worker(self, worker: WorkerProcess, reason: str) -> None:
        now = time.monotonic()
        if worker.request_stop(now, reason):
            self.send(worker, Message(MsgType.SHUTDOWN))
        elif worker.alive and worker.identity is None and worker.kill_deadline is None:
            # Still starting: it cannot hear a SHUTDOWN yet, so SIGTERM pre-empts the start.
            worker.signal_group(signal.SIGTERM)
            worker.kill_deadline = now + self.config.supervisor.kill_timeout_s

    def start_worker(self, worker: WorkerProcess) -> None:
        worker.want_start(time.monotonic())

    def restart_worker(self, worker: WorkerProcess) -> None:
        if worker.alive:
            self.stop_worker(worker, "restart requested")
            worker.restart_when_stopped = True
        else:
            worker.want_start(time.monotonic())

    def stop_all(self) -> None:
        """The station is stopping: nothing starts again, and workers stop in STOP_ORDER."""
        self.stopping = True
        for worker in self.workers.values():
            worker.wanted = worker.restart_when_stopped = False
            worker.next_start_at = None  # pre-empts any start that was due
            if not worker.alive:
                worker.change_state(WorkerState.STOPPED, "station stopping")

    def _advance_stop(self, now: float) -> None:
        for kind in STOP_ORDER:
            group = [w for w in self.workers.values() if w.kind == kind and w.alive]
            if group:
                for worker in group:
                    if worker.state is not WorkerState.STOPPING:
                        self.stop_worker(worker, "station stopping")
                return

    def kill_all(self, reason: str) -> None:
        for worker in self.workers.values():
            worker.kill(reason)
            if worker.popen is not None and worker.popen.returncode is None:
                worker.popen.wait()
