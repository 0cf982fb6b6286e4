"""The station: one single-threaded loop that owns the workers, the sockets and the queue.

Each pass of the loop: wait on every socket, pidfd and pipe (with a timeout that is the
next timer), then handle signals, worker exits, worker messages and control requests, then
``tick``: heartbeats, restarts, stop escalation, job dispatch, systemd pings. Nothing in the
loop blocks for long, so one worker's crash loop never slows the control socket.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import socket
import time
import uuid
from dataclasses import asdict
from typing import Any

import zmq
from setproctitle import setproctitle

from wats_station.converters.processes import PROCESSES_FILE_NAME
from wats_station.ipc.endpoints import InstancePaths, prepare_runtime_dir
from wats_station.ipc.protocol import (
    ErrorCode,
    JobKind,
    Message,
    MsgType,
    ProtocolError,
    decode,
    encode,
    reply_error,
)
from wats_station.ipc.sockets import new_socket, send
from wats_station.ipc.states import ServiceState, WorkerState
from wats_station.supervisor import control
from wats_station.supervisor.config import Config, ConfigError, load_config
from wats_station.supervisor.conversions import Conversions
from wats_station.supervisor.guard import QueueGuard
from wats_station.supervisor.health import Health
from wats_station.supervisor.lock import InstanceLock
from wats_station.supervisor.logs import flush_repeats, setup_logging
from wats_station.supervisor.notify import Notifier
from wats_station.supervisor.pause import Pause
from wats_station.supervisor.process import Job, WorkerProcess, worker_command
from wats_station.supervisor.queue import QueueWriteError, ReportQueue
from wats_station.supervisor.telemetry import Telemetry
from wats_station.supervisor.trust import hello_refusal, may_send, peer_address
from wats_station.supervisor.uploads import Uploads
from wats_station.workers.crashpoints import crash_point

log = logging.getLogger("wats-station")

# Workers stop in this order, so nothing is handed to a worker that is already gone: the
# watcher first (no new files), the converters next, the uploader, then metrics (which serves
# the station's health until the end).
STOP_ORDER = ("watcher", "converter", "uploader", "metrics")


class StartupError(Exception):
    """The station cannot start; the message says why and what to do."""


class Station:
    def __init__(self, paths: InstancePaths, config: Config) -> None:
        self.paths = paths
        self.config = config
        self.state = ServiceState.STARTING
        self.epoch = uuid.uuid4().hex[:12]
        self.seq = 0
        self.topic_seqs: dict[str, int] = {}
        self.started_at = time.time()
        self.dropped_messages = 0
        self.failed_messages = 0
        self.max_message_bytes = int(config.supervisor.max_message_mb * 1024 * 1024)
        self.workers: dict[str, WorkerProcess] = {}
        self.by_identity: dict[bytes, WorkerProcess] = {}
        self.notifier = Notifier()
        self._ready_sent = False
        self._last_status_line = ""
        self._next_watchdog = 0.0
        self._next_beat = 0.0
        self._stop_requested = False
        self._reload_requested = False
        self._job_ids = 0
        self._lock: InstanceLock | None = None
        self._context: zmq.Context | None = None
        self.queue: ReportQueue | None = None
        self.health = Health(self)
        self.telemetry = Telemetry(self)

    # -- start-up ---------------------------------------------------------------------

    def open(self) -> None:
        prepare_runtime_dir(self.paths.runtime_dir)
        self._lock = InstanceLock.acquire(self.paths.lock_file, self.paths.instance)
        self.paths.data_dir.mkdir(parents=True, exist_ok=True)
        self.queue = ReportQueue(self.paths.queue_db)
        if self.queue.created:
            log.warning("no queue database at %s: created an empty queue", self.paths.queue_db)
        recovered = self.queue.recover()
        if recovered:
            log.info(
                "%d report(s) were being uploaded when the station stopped; queued again", recovered
            )
        self._context = zmq.Context()
        self._context.setsockopt(zmq.LINGER, 0)
        self.worker_socket = new_socket(self._context, zmq.ROUTER, self.max_message_bytes)
        self.worker_socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.worker_socket.bind(self.paths.workers_endpoint)
        self.control_socket = new_socket(self._context, zmq.ROUTER, self.max_message_bytes)
        self.control_socket.bind(self.paths.control_endpoint)
        self.event_socket = new_socket(self._context, zmq.PUB)
        self.event_socket.setsockopt(zmq.SNDHWM, 100_000)
        self.event_socket.bind(self.paths.events_endpoint)
        self.pause = Pause(self.queue)
        if self.pause.describe():
            log.warning("%s (resume with: wats-station resume)", self.pause.describe())
        self.uploads = Uploads(self)
        self.guard = QueueGuard(self)
        self.conversions = Conversions(self)  # recovers unfinished files: needs the events socket
        self._signal_r, self._signal_w = socket.socketpair()
        self._signal_r.setblocking(False)
        self._signal_w.setblocking(False)
        signal.set_wakeup_fd(self._signal_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: None)  # the wakeup fd carries the number to the loop
        self._build_workers(self.config)
        self.set_title("running")

    def _build_workers(self, config: Config) -> None:
        wanted = {"watcher": "watcher", "uploader": "uploader"}
        for index in range(1, config.supervisor.converter_workers + 1):
            wanted[f"converter-{index}"] = "converter"
        if config.metrics.listen:
            wanted["metrics"] = "metrics"
        for name, kind in wanted.items():
            if name not in self.workers:
                worker = WorkerProcess(name, kind, config.supervisor, self._worker_changed)
                worker.capacity = self._capacity(kind, config)
                worker.next_start_at = 0.0
                self.workers[name] = worker
        for name in set(self.workers) - set(wanted):
            self.workers[name].request_stop(time.monotonic(), "no longer configured")

    @staticmethod
    def _capacity(kind: str, config: Config) -> int:
        # The watcher and the metrics worker run no jobs.
        return {"uploader": config.upload.max_concurrency, "converter": 1}.get(kind, 0)

    def set_title(self, doing: str) -> None:
        setproctitle(f"wats-station[{self.paths.instance}]: supervisor {doing}")

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        poller = zmq.Poller()
        poller.register(self.worker_socket, zmq.POLLIN)
        poller.register(self.control_socket, zmq.POLLIN)
        poller.register(self._signal_r.fileno(), zmq.POLLIN)
        self.publish("service.state", {"state": str(self.state)})
        registered: set[int] = set()
        while True:
            now = time.monotonic()
            self.tick(now)
            if self.state is ServiceState.STOPPING and not any(
                w.alive for w in self.workers.values()
            ):
                return 0
            registered = self._sync_poller(poller, registered)
            timeout = self._poll_timeout(now)
            for item, _ in poller.poll(timeout * 1000):
                if item is self.control_socket:
                    self._serve_control()
                elif item is self.worker_socket:
                    self._serve_workers()
                elif item == self._signal_r.fileno():
                    self._read_signals()
                else:
                    self._serve_fd(item)

    def _sync_poller(self, poller: zmq.Poller, registered: set[int]) -> set[int]:
        fds = set()
        for worker in self.workers.values():
            fds.update(fd for fd in (worker.pidfd, worker.output_fd) if fd is not None)
        for fd in registered - fds:
            poller.unregister(fd)
        for fd in fds - registered:
            poller.register(fd, zmq.POLLIN)
        return fds

    def _poll_timeout(self, now: float) -> float:
        deadlines = [self._next_beat]
        if self.notifier.watchdog_interval_s:
            deadlines.append(self._next_watchdog)
        for worker in self.workers.values():
            deadlines += [
                d for d in (worker.next_start_at, worker.stop_deadline, worker.kill_deadline) if d
            ]
            deadlines += [job.deadline for job in worker.jobs.values() if job.deadline]
        # Stopping, or a queue that cannot be written: no uploads are dispatched.
        if self.state is not ServiceState.STOPPING and self.guard.writes_ok:
            deadlines.append(self.uploads.next_wake(now))
            deadlines.append(self.health.next_due)
            if self.telemetry.enabled:
                deadlines.append(self.telemetry.next_due)
        return min(max(0.0, min(deadlines) - now), self.config.supervisor.heartbeat_interval_s)

    def _serve_fd(self, fd: int) -> None:
        now = time.monotonic()
        for worker in self.workers.values():
            if fd == worker.output_fd:
                worker.read_output(self._log_worker_line)
            elif fd == worker.pidfd:
                self._worker_exited(worker, now)

    def _log_worker_line(self, worker: WorkerProcess, line: str) -> None:
        pid = worker.popen.pid if worker.popen else None
        extra = {"worker": worker.name, "worker_pid": pid, "line": line, "repeat_key": worker.name}
        log.info("%s[%s]: %s", worker.name, pid or "?", line, extra=extra)

    def _read_signals(self) -> None:
        try:
            data = self._signal_r.recv(64)
        except BlockingIOError:
            return
        for signum in data:
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info("received %s: stopping", signal.Signals(signum).name)
                self.request_stop()
            elif signum == signal.SIGHUP:
                log.info("received SIGHUP: reloading the configuration")
                with contextlib.suppress(ConfigError):  # logged; the running config stays
                    self.reload()

    # -- the tick ---------------------------------------------------------------------

    def tick(self, now: float) -> None:
        for worker in self.workers.values():
            self._check_worker(worker, now)
        if self.state is ServiceState.STOPPING:
            self._advance_stop(now)
        else:
            self.guard.tick(now)
            if self.guard.writes_ok:
                with self.guard.guarding():
                    self.conversions.tick(now)
                    self.uploads.tick(now)
            self.health.tick(now)
            self.telemetry.tick(now)
        if now >= self._next_beat:
            flush_repeats()
            self._send_heartbeats()
            self._next_beat = now + self.config.supervisor.heartbeat_interval_s
        self._notify_systemd(now)

    def _check_worker(self, worker: WorkerProcess, now: float) -> None:
        settings = self.config.supervisor
        if (
            worker.state is WorkerState.STARTING
            and now - worker.spawned_at > settings.start_timeout_s
        ):
            worker.kill(f"did not say hello within {settings.start_timeout_s:g} s")
        elif (
            worker.state is WorkerState.RUNNING
            and now - worker.last_seen > settings.heartbeat_timeout_s
        ):
            worker.kill(f"no heartbeat for {now - worker.last_seen:.1f} s (frozen?)")
        worker.escalate_stop(now)
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
        if worker.start_due(now) and self.state is not ServiceState.STOPPING:
            if worker.exit_reason:
                worker.restarts += 1
            worker.spawn(self._command(worker), now)

    def _command(self, worker: WorkerProcess) -> list[str]:
        return worker_command(
            worker.kind,
            worker.name,
            self.paths.instance,
            self.paths.workers_endpoint,
            self.config.supervisor,
            self.max_message_bytes,
        )

    def _send_heartbeats(self) -> None:
        for worker in self.workers.values():
            if worker.identity is not None:
                self._send_to(worker, Message(MsgType.HEARTBEAT, {}))

    def _notify_systemd(self, now: float) -> None:
        starting = self.state is ServiceState.STARTING
        if starting and not self._ready_sent and self._all_workers_tried():
            self._ready_sent = True
            self.state = ServiceState.RUNNING
            self.publish("service.state", {"state": str(self.state)})
            self.notifier.send(READY=1, STATUS=self.status_line())
            log.info("station '%s' is ready: %s", self.paths.instance, self.status_line())
        if self._ready_sent and self.notifier.watchdog_interval_s and now >= self._next_watchdog:
            # From the loop itself: a hung loop stops the pings and systemd restarts us.
            self.notifier.send(WATCHDOG=1)
            self._next_watchdog = now + self.notifier.watchdog_interval_s
        line = self.status_line()
        if line != self._last_status_line and self._ready_sent:
            self._last_status_line = line
            self.notifier.send(STATUS=line)

    def _all_workers_tried(self) -> bool:
        return all(
            w.state is WorkerState.RUNNING or w.exit_reason or not w.wanted
            for w in self.workers.values()
        )

    def status_line(self) -> str:
        running = sum(w.state is WorkerState.RUNNING for w in self.workers.values())
        counts = self.queue.stats() if self.queue else {}
        paused = [kind for kind, stamp in self.pause.as_dict().items() if stamp]
        line = (
            f"{self.health.current['verdict']}; "
            + (f"{' and '.join(paused)} paused; " if paused else "")
            + f"{running}/{len(self.workers)} workers running; server {self.uploads.server_state}; "
            f"queue {counts.get('pending', 0)} pending, {counts.get('failed', 0)} failed"
        )
        refusal = self.guard.refusal() if self.queue else None
        return f"ALARM: {refusal}; {line}" if refusal else line

    # -- workers ----------------------------------------------------------------------

    def _worker_changed(self, worker: WorkerProcess, old: WorkerState, reason: str) -> None:
        level = (
            logging.WARNING
            if worker.state in (WorkerState.BACKOFF, WorkerState.CRASH_LOOPING)
            else logging.INFO
        )
        log.log(level, "%s: %s -> %s (%s)", worker.name, old, worker.state, reason)
        self.publish(
            f"worker.{worker.name}",
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

    def _worker_exited(self, worker: WorkerProcess, now: float) -> None:
        if worker.output_fd is not None:
            worker.read_output(self._log_worker_line)
        identity = worker.identity
        lost = list(worker.jobs.values())
        worker.jobs.clear()
        reason = worker.reap(now)
        if identity is not None:
            self.by_identity.pop(identity, None)
        for job in lost:
            with self.guard.guarding():  # a full disk must not take the loop down with it
                self._job_lost(worker, job, reason)

    def _job_lost(self, worker: WorkerProcess, job: Job, reason: str) -> None:
        tail = "\n".join(worker.output_tail)
        if job.kind == JobKind.CONVERT:
            self.conversions.job_lost(job, reason, tail)
        else:
            self.uploads.job_lost(job, reason)

    def _serve_workers(self) -> None:
        now = time.monotonic()
        while self.worker_socket.poll(0):
            frames = self.worker_socket.recv_multipart(copy=False)
            identity, payload = frames[0].bytes, frames[-1].bytes
            try:
                message = decode(payload, self.max_message_bytes)
            except ProtocolError as error:
                self.dropped_messages += 1
                log.warning("dropped a bad message from worker %r: %s", identity, error)
                continue
            if message.type is MsgType.HELLO:
                self._hello(identity, message.body, now, peer_address(frames[-1]))
                continue
            worker = self.by_identity.get(identity)
            if worker is None:
                self.dropped_messages += 1  # from an incarnation we have already buried
                continue
            if not may_send(worker.kind, message.type):
                self.dropped_messages += 1
                log.warning(
                    "dropped %s from %s: not a %s message", message.type, worker.name, worker.kind
                )
                continue
            # Not the batch's start: a long batch (1000 files fingerprinted at start-up) would
            # make every heartbeat in it look seconds old, and kill healthy workers.
            worker.last_seen = time.monotonic()
            try:
                self._handle_worker_message(worker, message)
            except QueueWriteError as error:  # the guard raises the alarm and resumes later
                self.failed_messages += 1
                self.guard.note(error)
                log.error("could not record %s from %s: %s", message.type, worker.name, error)
            except Exception:
                # One message we cannot handle (a bug, a full disk) must not stop the
                # station; what it concerned is retried after a restart or a rescan.
                self.failed_messages += 1
                log.exception("could not handle %s from %s", message.type, worker.name)

    def _handle_worker_message(self, worker: WorkerProcess, message: Message) -> None:
        if message.type is MsgType.JOB_DONE:
            self._job_done(worker, message.body)
        elif message.type is MsgType.FILE_READY:
            self.conversions.file_ready(message.body)
        elif message.type is MsgType.FILE_REJECTED:
            self.conversions.file_rejected(message.body)

    def _hello(self, identity: bytes, body: dict[str, Any], now: float, peer: str | None) -> None:
        worker = self.workers.get(body["name"])
        refusal = hello_refusal(worker, body, peer)
        if refusal is not None:
            self.dropped_messages += 1
            log.warning("refused hello from %r (pid %s): %s", body["name"], body["pid"], refusal)
            return
        assert worker is not None
        self.by_identity[identity] = worker
        worker.hello(identity, now)
        self._send_to(
            worker,
            Message(
                MsgType.WELCOME,
                {
                    "settings": {
                        **self.worker_settings(worker.kind, self.config),
                        # uploaders refresh this cache, converters read it (converters.processes)
                        "processes_file": str(self.paths.data_dir / PROCESSES_FILE_NAME),
                    }
                },
            ),
        )
        if worker.state is WorkerState.STOPPING:
            self._send_to(worker, Message(MsgType.SHUTDOWN))

    @staticmethod
    def worker_settings(kind: str, config: Config) -> dict[str, Any]:
        """What a worker of this kind is told in its welcome: all it knows of the config."""
        if kind == "uploader":
            return {"server": asdict(config.server), "upload": asdict(config.upload)}
        if kind == "watcher":
            return {
                "watch": asdict(config.watch),
                "converters": [asdict(c) for c in config.converters if c.enabled],
            }
        if kind == "converter":
            return {
                "converters": [asdict(c) for c in config.converters],
                "converters_folder": config.converters_folder,
                "station": asdict(config.station),
            }
        if kind == "metrics":
            return {"metrics": asdict(config.metrics)}
        return {}

    def _send_to(self, worker: WorkerProcess, message: Message) -> bool:
        if worker.identity is None:
            return False
        try:
            send(self.worker_socket, message, [worker.identity])
        except zmq.ZMQError as error:  # EHOSTUNREACH: it is gone; its pidfd will tell us soon
            log.debug("could not send to %s: %s", worker.name, error)
            return False
        return True

    def idle_workers(self, kind: str) -> list[WorkerProcess]:
        return [w for w in self.workers.values() if w.kind == kind and w.idle_slots > 0]

    def dispatch(
        self, worker: WorkerProcess, kind: JobKind, data: dict[str, Any], deadline_s: float | None
    ) -> Job | None:
        self._job_ids += 1
        now = time.monotonic()
        job = Job(
            f"{self.epoch}-{self._job_ids}",
            str(kind),
            data,
            now,
            now + deadline_s if deadline_s else None,
        )
        if not self._send_to(
            worker, Message(MsgType.JOB, {"job_id": job.job_id, "kind": job.kind, "data": data})
        ):
            return None
        worker.jobs[job.job_id] = job
        return job

    def _job_done(self, worker: WorkerProcess, body: dict[str, Any]) -> None:
        job = worker.jobs.pop(body["job_id"], None)
        if job is None:
            return
        if job.kind == JobKind.CONVERT:
            self.conversions.job_done(job, body)
        else:
            self.uploads.job_done(job, body)

    # -- operator actions -------------------------------------------------------------

    def stop_worker(self, worker: WorkerProcess, reason: str) -> None:
        now = time.monotonic()
        if worker.request_stop(now, reason):
            self._send_to(worker, Message(MsgType.SHUTDOWN))
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

    def request_stop(self) -> None:
        if self.state is ServiceState.STOPPING:
            return  # idempotent
        self.state = ServiceState.STOPPING
        self.set_title("stopping")
        self.notifier.send(STOPPING=1, STATUS="stopping")
        self.publish("service.state", {"state": str(self.state)})
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

    def reload(self) -> dict[str, Any]:
        """Apply a changed config; one that does not validate is refused, the old one stays."""
        # systemd wants the monotonic time with RELOADING=1 (sd_notify(3), Type=notify-reload).
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notifier.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec, STATUS="reloading")
        try:
            return self._reload()
        finally:
            self.notifier.send(READY=1, STATUS=self.status_line())

    def _reload(self) -> dict[str, Any]:
        try:
            new = load_config(self.paths)
        except ConfigError as error:
            log.error("reload refused, keeping the running configuration: %s", error)
            raise
        old, self.config = self.config, new
        changed = [
            kind
            for kind in STOP_ORDER
            if self.worker_settings(kind, old) != self.worker_settings(kind, new)
        ]
        if old.logging != new.logging:
            setup_logging(self.paths, new.logging)
        if old.supervisor != new.supervisor:
            for worker in self.workers.values():
                worker.settings = new.supervisor
        self._build_workers(new)
        for worker in self.workers.values():
            worker.capacity = self._capacity(worker.kind, new)
            if worker.kind in changed and worker.wanted:
                self.restart_worker(worker)
        self.uploads.config_changed()
        log.info("configuration reloaded; restarted: %s", ", ".join(changed) or "nothing")
        self.publish("service.reloaded", {"restarted": changed})
        return {"restarted": changed}

    # -- control and events -----------------------------------------------------------

    def publish(self, topic: str, data: dict[str, Any]) -> None:
        """Publish an event. ``topic_seq`` counts this topic's events alone, so a subscriber
        to some topics can tell its own gaps."""
        self.seq += 1
        self.telemetry.observe(topic, data)
        self.topic_seqs[topic] = self.topic_seqs.get(topic, 0) + 1
        body = {
            "epoch": self.epoch,
            "seq": self.seq,
            "topic": topic,
            "topic_seq": self.topic_seqs[topic],
            "time": time.time(),
            "data": data,
        }
        try:
            self.event_socket.send_multipart(
                [topic.encode(), encode(Message(MsgType.EVENT, body))], zmq.NOBLOCK
            )
        except zmq.ZMQError:
            pass  # no subscriber keeps up: they resync from the sequence gap

    def _serve_control(self) -> None:
        while self.control_socket.poll(0):
            frames = self.control_socket.recv_multipart()
            envelope, payload = frames[:-1], frames[-1]
            if len(frames) < 2:
                self.dropped_messages += 1
                continue
            try:
                message = decode(payload, self.max_message_bytes)
                if message.type is not MsgType.REQUEST:
                    raise ProtocolError(
                        ErrorCode.UNKNOWN_TYPE,
                        f"expected a request, got {message.type}",
                        message.id,
                    )
            except ProtocolError as error:
                self.dropped_messages += 1
                send(
                    self.control_socket,
                    reply_error(error.request_id, error.code, str(error)),
                    envelope,
                )
                continue
            reply = control.dispatch(self, message)
            send(self.control_socket, reply, envelope)
            if self._stop_requested:
                self._stop_requested = False
                self.request_stop()

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "instance": self.paths.instance,
            "state": str(self.state),
            "pid": os.getpid(),
            "started": self.started_at,
            "uptime_s": round(time.time() - self.started_at, 3),
            "server": {
                "url": self.config.server.url,
                "state": str(self.uploads.server_state),
                "detail": self.uploads.server_detail,
            },
            "queue": self.queue.stats() if self.queue else {},
            "alarms": self.guard.status(),
            "pending_by_priority": [
                {"priority": priority, "pending": n}
                for priority, n in (self.queue.pending_by_priority() if self.queue else {}).items()
            ],
            "files": self.conversions.stats(),
            "paused": self.pause.as_dict(),
            "health": self.health.evaluate(now),
            "workers": [w.status(now) for w in self.workers.values()],
            "dropped_messages": self.dropped_messages,
            "failed_messages": self.failed_messages,
        }

    # -- shutdown ---------------------------------------------------------------------

    def close(self) -> None:
        flush_repeats(everything=True)
        signal.set_wakeup_fd(-1)
        for worker in self.workers.values():
            worker.kill("station closing")
            if worker.popen is not None and worker.popen.returncode is None:
                worker.popen.wait()
        if self._context is not None:
            self._context.destroy(linger=0)
        if self.queue is not None:
            self.queue.close()
        self.notifier.close()
        if self._lock is not None:
            self._lock.release()


def run_service(paths: InstancePaths) -> int:
    # A person (or a test) can ask a stuck station where it is: kill -USR1 <pid>.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        config = load_config(paths)
    except ConfigError as error:
        raise StartupError(f"configuration error: {error}") from None
    station = Station(paths, config)
    try:
        station.open()
        crash_point("service-started")
        return station.run()
    finally:
        station.close()
