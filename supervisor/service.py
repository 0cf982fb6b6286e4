"""The station: one single-threaded loop that owns the sockets, the queue and the worker fleet.

Each pass of the loop (a turn) has a budget. It waits on every socket, pidfd and pipe (with a
timeout that is the next timer), then pings systemd and the workers, handles signals and worker
exits, reads at most ``WORKER_MESSAGES_PER_TURN`` worker messages and ``CONTROL_PER_TURN``
control requests (and stops reading early once ``TURN_BUDGET_S`` is spent), then takes the
fleet's timed transitions and dispatches jobs. All queue writes of a turn are one transaction
(``Turn``), and answers, events and file moves follow its commit. Nothing in a turn reads a
dropped file or decodes a big report: the watcher fingerprints files and a converter worker
decodes and validates big ``submit_report`` requests, so no message, report or file can
stall the loop.
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
from functools import partial
from typing import Any

import zmq
from setproctitle import setproctitle

from wats_station.ipc.contract import EventTopic, WorkerKind, check_result
from wats_station.ipc.endpoints import InstancePaths, prepare_runtime_dir
from wats_station.ipc.protocol import (
    ErrorCode,
    JobKind,
    Message,
    MsgType,
    ProtocolError,
    decode,
    encode,
    peek_id,
    reply_error,
    reply_ok,
)
from wats_station.ipc.sockets import new_socket, send
from wats_station.ipc.states import ServiceState, WorkerState
from wats_station.supervisor import control
from wats_station.supervisor.config import Config, ConfigError, load_config
from wats_station.supervisor.conversions import Conversions
from wats_station.supervisor.fleet import Fleet, worker_settings
from wats_station.supervisor.guard import QueueGuard
from wats_station.supervisor.health import Health
from wats_station.supervisor.lock import InstanceLock
from wats_station.supervisor.logs import flush_repeats, setup_logging
from wats_station.supervisor.notify import Notifier
from wats_station.supervisor.pause import Pause
from wats_station.supervisor.process import Job, WorkerProcess
from wats_station.supervisor.queue import QueueWriteError, ReportQueue
from wats_station.supervisor.telemetry import Telemetry
from wats_station.supervisor.trust import peer_address
from wats_station.supervisor.turn import Turn
from wats_station.supervisor.uploads import Uploads
from wats_station.workers.crashpoints import crash_point

log = logging.getLogger("wats-station")

# A turn stops reading once it has spent this long, so control requests, heartbeats and the
# systemd watchdog are served at least this often whatever arrives.
TURN_BUDGET_S = 0.02
WORKER_MESSAGES_PER_TURN = 500
CONTROL_PER_TURN = 32
# A turn that began this much later than its poll timeout allowed means the supervisor was
# away (stopped, starved): that time is forgiven to every worker.
LATE_S = 0.1
# Control requests larger than this are decoded and validated by a converter worker, which
# may hold its GIL for seconds doing so: such a job is judged by its deadline, not heartbeats.
INLINE_REQUEST_BYTES = 256 * 1024
VALIDATE_DEADLINE_S = 300.0
DROP_LOG_INTERVAL_S = 5.0
SLOW_TURN_S = 0.25
STATUS_INTERVAL_S = 1.0
# The answer to a request whose turn's writes were rolled back (a full disk).
UNRECORDED = (ErrorCode.UNAVAILABLE, "the queue could not be written (see the alarms); try again")


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
        self.notifier = Notifier()
        self._ready_sent = False
        self._last_status_line = ""
        self._next_status = 0.0
        self._next_watchdog = 0.0
        self._next_beat = 0.0
        self._stop_requested = False
        self._slow_logged_at = 0.0
        self._submits: dict[str, tuple[list[bytes], Any]] = {}  # validate job -> who asked
        self._lock: InstanceLock | None = None
        self._context: zmq.Context | None = None
        self.queue: ReportQueue | None = None
        self.fleet: Fleet | None = None
        self.turn: Turn | None = None
        self._ready: dict[Any, int] = {}
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
        self.turn = Turn(self.queue, may_write=lambda: self.guard.writes_ok)
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
        self.fleet = Fleet(
            self.paths,
            self.config,
            self.worker_socket,
            epoch=self.epoch,
            max_message_bytes=self.max_message_bytes,
            publish=self.publish,
            job_lost=self._job_lost,
            after_commit=lambda action: self.turn.after_commit(action, first=True),
            on_rollback=self.turn.on_rollback,
        )
        self.pause = Pause(self.queue)
        if self.pause.describe():
            log.warning("%s (resume with: wats-station resume)", self.pause.describe())
        self.guard = QueueGuard(self)
        self.uploads = Uploads(
            self.queue,
            lambda: self.config,
            self.fleet,
            self.publish,
            paused=lambda: self.pause.uploads,
            answered=self.telemetry.upload_answered,
            clock_skew=self._clock_skew,
            on_rollback=self.turn.on_rollback,
        )
        # Recovers unfinished files: needs the events socket.
        self.conversions = Conversions(
            self.queue,
            lambda: self.config,
            self.fleet,
            self.turn,
            publish=self.publish,
            reports_queued=self.uploads.wake,
            refusal=self.guard.refusal,
            note_error=self.guard.note,
            paused=lambda: self.pause.conversions,
            dropped=self._count_dropped,
        )
        self._signal_r, self._signal_w = socket.socketpair()
        self._signal_r.setblocking(False)
        self._signal_w.setblocking(False)
        signal.set_wakeup_fd(self._signal_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: None)  # the wakeup fd carries the number to the loop
        self.set_title("running")

    def _clock_skew(self, seconds: float) -> None:
        self.health.clock_skew_s = seconds

    def _count_dropped(self) -> None:
        self.dropped_messages += 1

    @property
    def workers(self) -> dict[str, WorkerProcess]:
        assert self.fleet is not None
        return self.fleet.workers

    def set_title(self, doing: str) -> None:
        setproctitle(f"wats-station[{self.paths.instance}]: supervisor {doing}")

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        assert self.fleet is not None
        poller = zmq.Poller()
        poller.register(self.worker_socket, zmq.POLLIN)
        poller.register(self.control_socket, zmq.POLLIN)
        poller.register(self._signal_r.fileno(), zmq.POLLIN)
        self.publish(EventTopic.SERVICE_STATE, {"state": str(self.state)})
        registered: set[int] = set()
        drained = True
        woke_by = time.monotonic()  # the latest the current turn should have begun
        while True:
            now = time.monotonic()
            if now - woke_by > LATE_S:
                # The supervisor itself was late (stopped, starved, a slow turn): the workers
                # were not silent, we were not listening.
                self.fleet.forgive(now - woke_by)
            self._keep_rhythm(now)
            drained = True
            try:
                with self.turn.run():
                    drained = self._serve(now)
                    self.tick(now, judge=drained)
                    served = time.monotonic()
            except QueueWriteError as error:
                served = time.monotonic()
                self._turn_rolled_back(error)
            self._note_slow_turn(now, served)
            stopped = self.state is ServiceState.STOPPING and not self.fleet.any_alive()
            if stopped and not self.turn.has_next:  # files moved are marked done first
                return 0
            registered = self._sync_poller(poller, registered)
            now = time.monotonic()
            busy = not drained or self.turn.has_next
            timeout = 0.0 if busy else self._poll_timeout(now)
            woke_by = now + timeout
            self._ready = dict(poller.poll(timeout * 1000))

    def _turn_rolled_back(self, error: QueueWriteError) -> None:
        """The turn's commit failed (a full disk): nothing of it is durable, and the handlers
        have undone what they kept in memory (``Turn.on_rollback``), so no answer, event or
        job of it went out. The guard raises its alarm and stops conversions and uploads until
        writes work again; then everything flows on, with no restart."""
        self.failed_messages += 1
        log.error("a loop turn's queue writes were rolled back: %s", error)
        self.guard.note(error)

    def _note_slow_turn(self, began: float, served: float) -> None:
        """Say when a turn overran, and where: reading and handling, or committing and what
        followed the commit (a slow disk shows here)."""
        ended = time.monotonic()
        if ended - began > SLOW_TURN_S and ended - self._slow_logged_at > DROP_LOG_INTERVAL_S:
            self._slow_logged_at = ended
            log.warning(
                "a loop turn took %.0f ms: %.0f ms handling, %.0f ms committing and after",
                1e3 * (ended - began),
                1e3 * (served - began),
                1e3 * (ended - served),
            )

    def _serve(self, now: float) -> bool:
        """Everything that arrived, within the turn's budget; False if messages are left."""
        ready = self._ready
        if self._signal_r.fileno() in ready:
            self._read_signals()
        for fd in ready:
            if isinstance(fd, int) and fd != self._signal_r.fileno():
                self.fleet.serve_fd(fd, now, self._log_worker_line)
        drained = self._serve_workers(time.monotonic() + TURN_BUDGET_S)
        self._serve_control(time.monotonic() + TURN_BUDGET_S / 2)
        return drained

    def _sync_poller(self, poller: zmq.Poller, registered: set[int]) -> set[int]:
        fds = self.fleet.fds()
        for fd in registered - fds:
            poller.unregister(fd)
        for fd in fds - registered:
            poller.register(fd, zmq.POLLIN)
        return fds

    def _poll_timeout(self, now: float) -> float:
        deadlines = [self._next_beat]
        if self.notifier.watchdog_interval_s:
            deadlines.append(self._next_watchdog)
        fleet_due = self.fleet.next_deadline()
        if fleet_due is not None:
            deadlines.append(fleet_due)
        # Stopping, or a queue that cannot be written: no uploads are dispatched.
        if self.state is not ServiceState.STOPPING and self.guard.writes_ok:
            deadlines.append(self.uploads.next_wake(now))
        if self.state is not ServiceState.STOPPING:
            deadlines.append(self.health.next_due)
            if self.telemetry.enabled:
                deadlines.append(self.telemetry.next_due)
        return min(max(0.0, min(deadlines) - now), self.config.supervisor.heartbeat_interval_s)

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

    def _keep_rhythm(self, now: float) -> None:
        """First thing in every turn, whatever else it has to do: heartbeats to the workers
        and the systemd watchdog keep their interval."""
        if now >= self._next_beat:
            flush_repeats()
            self.fleet.send_heartbeats()
            self._next_beat = now + self.config.supervisor.heartbeat_interval_s
        if self._ready_sent and self.notifier.watchdog_interval_s and now >= self._next_watchdog:
            # From the loop itself: a hung loop stops the pings and systemd restarts us.
            self.notifier.send(WATCHDOG=1)
            self._next_watchdog = now + self.notifier.watchdog_interval_s

    def tick(self, now: float, *, judge: bool = True) -> None:
        self.fleet.tick(now, judge=judge)
        if self.state is not ServiceState.STOPPING:
            self.guard.tick(now)
            if self.guard.writes_ok:
                # A failed write spoils the turn (it is rolled back); the rest of it still runs.
                with self.guard.guarding():
                    self.conversions.tick(now)
                    self.uploads.tick(now)
            self.health.tick(now)
            self.telemetry.tick(now)
        self._notify_systemd(now)

    def _notify_systemd(self, now: float) -> None:
        starting = self.state is ServiceState.STARTING
        if starting and not self._ready_sent and self.fleet.all_tried():
            self._ready_sent = True
            self.state = ServiceState.RUNNING
            self.publish(EventTopic.SERVICE_STATE, {"state": str(self.state)})
            self.notifier.send(READY=1, STATUS=self.status_line())
            log.info("station '%s' is ready: %s", self.paths.instance, self.status_line())
        if self._ready_sent and self.notifier.enabled and now >= self._next_status:
            self._next_status = now + STATUS_INTERVAL_S
            line = self.status_line()
            if line != self._last_status_line:
                self._last_status_line = line
                self.notifier.send(STATUS=line)

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

    def _job_lost(self, job: Job, reason: str, tail: str, charge: bool) -> None:
        if job.kind == JobKind.CONVERT:
            self.conversions.job_lost(job, reason, tail, charge)
        elif job.kind == JobKind.VALIDATE:
            self._submit_failed(
                job.job_id, ErrorCode.UNAVAILABLE, f"the worker checking the report died ({reason})"
            )
        else:
            with self.guard.guarding():  # a full disk must not lose the worker's other jobs
                self.uploads.job_lost(job, reason)

    def _note_drop(self, what: str, error: object) -> None:
        """Count a bad message and log it; a flood does not become a flood of log lines, as
        the log lets a burst of lines of one kind through and counts the rest (logs.py)."""
        self.dropped_messages += 1
        log.warning("dropped a bad message from %s: %s", what, error)

    def _serve_workers(self, budget_end: float) -> bool:
        for _ in range(WORKER_MESSAGES_PER_TURN):
            try:
                frames = self.worker_socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return True
            now = time.monotonic()
            self._worker_message(frames[0].bytes, frames[-1], now)
            if now >= budget_end:
                break
        return not self.worker_socket.poll(0)

    def _worker_message(self, identity: bytes, frame: zmq.Frame, now: float) -> None:
        try:
            message = decode(frame.bytes, self.max_message_bytes)
        except ProtocolError as error:
            self._note_drop(f"worker {identity!r}", error)
            return
        if message.type is MsgType.HELLO:
            if not self.fleet.hello(identity, message.body, now, peer_address(frame)):
                self.dropped_messages += 1
            return
        worker = self.fleet.seen(identity, now)
        if worker is None:
            self.dropped_messages += 1  # from an incarnation we have already buried
            return
        if not self.fleet.may_send(worker, message.type):
            self.dropped_messages += 1
            return
        try:
            if message.type is MsgType.JOB_DONE:
                self._job_done(worker, message.body)
            elif message.type is MsgType.FILE_READY:
                self.conversions.file_ready(message.body)
            elif message.type is MsgType.FILE_REJECTED:
                self.conversions.file_rejected(message.body)
        except QueueWriteError as error:  # the guard raises the alarm; the turn rolls back
            self.failed_messages += 1
            self.guard.note(error)
            log.error("could not record %s from %s: %s", message.type, worker.name, error)
        except Exception:
            # One message we cannot handle (a bug, a full disk) must not stop the
            # station; what it concerned is retried after a restart or a rescan.
            self.failed_messages += 1
            log.exception("could not handle %s from %s", message.type, worker.name)

    def _job_done(self, worker: WorkerProcess, body: dict[str, Any]) -> None:
        job = self.fleet.job_done(worker, body["job_id"])
        if job is None:
            return
        kind = JobKind(job.kind)
        if body["ok"]:
            try:
                check_result(kind, body.get("data") or {})
            except ProtocolError as error:
                log.error("%s answered a %s job wrongly: %s", worker.name, kind, error)
                body = {**body, "ok": False, "error": {"message": f"bad answer: {error}"}}
        if kind is JobKind.CONVERT:
            self.conversions.job_done(job, body)
        elif kind is JobKind.VALIDATE:
            self._submit_validated(job, body)
        else:
            self.uploads.job_done(job, body)

    # -- operator actions -------------------------------------------------------------

    def stop_worker(self, worker: WorkerProcess, reason: str) -> None:
        self.fleet.stop_worker(worker, reason)

    def start_worker(self, worker: WorkerProcess) -> None:
        self.fleet.start_worker(worker)

    def restart_worker(self, worker: WorkerProcess) -> None:
        self.fleet.restart_worker(worker)

    def stop_after_reply(self) -> None:
        self._stop_requested = True

    def request_stop(self) -> None:
        if self.state is ServiceState.STOPPING:
            return  # idempotent
        self.state = ServiceState.STOPPING
        self.set_title("stopping")
        self.notifier.send(STOPPING=1, STATUS="stopping")
        self.publish(EventTopic.SERVICE_STATE, {"state": str(self.state)})
        self.fleet.stop_all()

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
            str(kind)
            for kind in WorkerKind
            if worker_settings(kind, old) != worker_settings(kind, new)
        ]
        if old.logging != new.logging:
            setup_logging(self.paths, new.logging)
        self.fleet.build(new)
        for worker in self.workers.values():
            if worker.kind in changed and worker.wanted:
                self.fleet.restart_worker(worker)
        self.uploads.config_changed()
        log.info("configuration reloaded; restarted: %s", ", ".join(changed) or "nothing")
        self.publish(EventTopic.SERVICE_RELOADED, {"restarted": changed})
        return {"restarted": changed}

    # -- submitted reports ------------------------------------------------------------

    def _validate_off_loop(self, envelope: list[bytes], frame: bytes) -> bool:
        """Hand a big request to a converter worker to decode and validate; False if none
        is free, and then the loop decodes it itself rather than make the client wait."""
        for worker in self.fleet.idle(WorkerKind.CONVERTER):
            job = self.fleet.dispatch(
                worker, JobKind.VALIDATE, {"frame": frame}, VALIDATE_DEADLINE_S
            )
            if job is not None:
                self._submits[job.job_id] = (envelope, peek_id(frame))
                self.turn.on_rollback(partial(self._submit_failed, job.job_id, *UNRECORDED))
                return True
        return False

    def _submit_validated(self, job: Job, body: dict[str, Any]) -> None:
        envelope, request_id = self._submits.pop(job.job_id, (None, None))
        if envelope is None:
            return
        if not body["ok"]:
            error = body.get("error") or {}
            code = error.get("code") or ErrorCode.INTERNAL
            self._reply(envelope, reply_error(request_id, code, error["message"]))
            return
        data = body["data"]
        (report,) = data["reports"]
        try:
            result = control.queue_submitted(
                self,
                report["id"],
                report["json"],
                priority=data.get("priority") or 0,
                replace=bool(data.get("replace")),
            )
        except control.CommandError as error:
            self._reply(envelope, reply_error(request_id, error.code, str(error)))
            return
        self._reply(envelope, reply_ok(request_id, result))

    def _submit_failed(self, job_id: str, code: ErrorCode, message: str) -> None:
        envelope, request_id = self._submits.pop(job_id, (None, None))
        if envelope is not None:
            self._reply(envelope, reply_error(request_id, code, message))

    # -- control and events -----------------------------------------------------------

    def publish(self, topic: str, data: dict[str, Any]) -> None:
        """Publish an event once the turn's writes are committed. ``topic_seq`` counts this
        topic's events alone, so a subscriber to some topics can tell its own gaps."""
        self.seq += 1
        topic = str(topic)
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
        frames = [topic.encode(), encode(Message(MsgType.EVENT, body))]
        # An alarm promises nothing durable, and the turn that raises it may be rolled back.
        if self.turn is None or topic == EventTopic.ALARM:
            self._send_event(frames)
        else:
            self.turn.after_commit(lambda: self._send_event(frames))

    def _send_event(self, frames: list[bytes]) -> None:
        try:
            self.event_socket.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # no subscriber keeps up: they resync from the sequence gap

    def _reply(self, envelope: list[bytes], reply: Message) -> None:
        """Answer a client once the turn's writes are committed: an answer is a promise. If
        they are rolled back instead, the client hears that nothing was done."""
        self.turn.after_commit(lambda: send(self.control_socket, reply, envelope), first=True)
        self.turn.on_rollback(lambda: self._reply_rolled_back(envelope, reply.id))

    def _reply_rolled_back(self, envelope: list[bytes], request_id: Any) -> None:
        failure = self.turn.failure if self.turn is not None else None
        message = f"not done: {failure}" if failure is not None else UNRECORDED[1]
        send(self.control_socket, reply_error(request_id, UNRECORDED[0], message), envelope)

    def _serve_control(self, budget_end: float) -> None:
        for _ in range(CONTROL_PER_TURN):
            try:
                frames = self.control_socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._control_request(frames)
            if time.monotonic() >= budget_end:
                return

    def _control_request(self, frames: list[bytes]) -> None:
        envelope, payload = frames[:-1], frames[-1]
        if len(frames) < 2:
            self.dropped_messages += 1
            return
        big = INLINE_REQUEST_BYTES < len(payload) <= self.max_message_bytes
        if big and self._validate_off_loop(envelope, payload):
            return
        try:
            message = decode(payload, self.max_message_bytes)
            if message.type is not MsgType.REQUEST:
                raise ProtocolError(
                    ErrorCode.UNKNOWN_TYPE,
                    f"expected a request, got {message.type}",
                    message.id,
                )
        except ProtocolError as error:
            self._note_drop("a control client", error)
            self._reply(envelope, reply_error(error.request_id, error.code, str(error)))
            return
        self._reply(envelope, control.dispatch(self, message))
        if self._stop_requested:
            self._stop_requested = False
            self.turn.after_commit(self.request_stop)

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
            "workers": self.fleet.status(now),
            "dropped_messages": self.dropped_messages,
            "failed_messages": self.failed_messages,
        }

    # -- shutdown ---------------------------------------------------------------------

    def close(self) -> None:
        flush_repeats(everything=True)
        signal.set_wakeup_fd(-1)
        if self.fleet is not None:
            self.fleet.kill_all("station closing")
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
