"""The loop every worker runs: hello, settings, heartbeats, jobs, and a graceful exit.

The main thread owns the ZeroMQ socket and never runs a job itself: jobs run on a small
thread pool, so heartbeats keep flowing while a job works, and stop only when the whole
process is frozen (SIGSTOP, or native code holding the GIL). A job that merely runs long is
the supervisor's deadline's business. Threads hand messages back through ``post``, which
queues them and wakes the main loop through a pipe.

A worker exits by itself when its supervisor is gone: PR_SET_PDEATHSIG on Linux, a parent
pid check on every heartbeat everywhere, and a long silence from the supervisor.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import queue
import signal
import sys
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar

import zmq
from setproctitle import setproctitle

from wats_station.ipc.contract import EXIT_ORPHANED, EXIT_REPLACE_ME, check_job, check_settings
from wats_station.ipc.handshake import SECRET_FD_OPTION, read_secret, routing_identity
from wats_station.ipc.protocol import Message, MsgType, ProtocolError, decode
from wats_station.ipc.sockets import new_socket, send
from wats_station.workers.crashpoints import crash_point

log = logging.getLogger("wats-station")

PR_SET_PDEATHSIG = 1
# How many heartbeat timeouts of silence from the supervisor make a worker give up.
SUPERVISOR_SILENCE_FACTOR = 5


class JobError(Exception):
    """A job that failed in a way the worker understands; ``details`` travel to the supervisor."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


def die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl took effect.
    if os.getppid() != parent_pid:
        os._exit(EXIT_ORPHANED)


def parse_worker_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="a wats-station worker (started by the supervisor)"
    )
    parser.add_argument("--instance", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--supervisor-pid", type=int, required=True)
    parser.add_argument("--heartbeat-interval", type=float, default=1.0)
    parser.add_argument("--heartbeat-timeout", type=float, default=3.5)
    parser.add_argument("--max-message-bytes", type=int, default=128 * 1024 * 1024)
    parser.add_argument(SECRET_FD_OPTION, type=int, help="inherited pipe holding the hello secret")
    return parser.parse_args(argv)


class Worker:
    """Subclasses set ``kind``, may set ``capacity`` in ``configure``, and implement ``run_job``.

    The supervisor sends at most as many jobs at once as the capacity it computes from the
    same settings, so the two agree by construction.
    """

    kind: ClassVar[str] = ""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.name: str = args.name
        # First of all, so the secret spends as little time as possible in a readable pipe.
        self._secret = read_secret(args.secret_fd) if args.secret_fd is not None else b""
        self.capacity = 1
        self.settings: dict[str, Any] = {}
        self._outbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._jobs: dict[str, Future] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._shutting_down = False
        self.exit_after_job = False  # set by a job that leaves the process in doubt (MemoryError)

    # -- for subclasses ---------------------------------------------------------------

    def configure(self, settings: dict[str, Any]) -> None:
        """Called once with the settings from the supervisor's welcome."""

    def start(self) -> None:
        """Called after configure, before the first job (start threads, open sessions)."""

    def stop(self) -> None:
        """Called on the way out (stop threads)."""

    def run_job(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        raise JobError(f"{self.kind} workers do not run {kind} jobs")

    def post(self, message: Message) -> None:
        """Send a message from any thread."""
        self._outbox.put(message)
        os.write(self._wake_w, b"\0")

    def set_title(self, doing: str) -> None:
        title = f"wats-station[{self.args.instance}]: {self.name} {doing}".rstrip()
        # A file name need not be valid UTF-8; the title shows its odd bytes as escapes.
        setproctitle(title.encode("utf-8", "backslashreplace").decode("utf-8"))

    # -- the loop ---------------------------------------------------------------------

    def main(self) -> int:
        die_with_parent(self.args.supervisor_pid)
        signal.signal(
            signal.SIGINT, signal.SIG_IGN
        )  # Ctrl-C reaches the supervisor, which stops us
        signal.signal(signal.SIGTERM, lambda *_: self._request_shutdown())
        self.set_title("starting")
        crash_point("worker-start", self.kind)
        context = zmq.Context()
        sock = new_socket(context, zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, routing_identity(self.name))
        sock.connect(self.args.endpoint)
        try:
            return self._serve(sock)
        finally:
            self.stop()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            sock.close(linger=0)
            context.term()

    def _request_shutdown(self) -> None:
        self._shutting_down = True
        os.write(self._wake_w, b"\0")

    def _serve(self, sock: zmq.Socket) -> int:
        hello = {"name": self.name, "kind": self.kind, "pid": os.getpid(), "proof": self._secret}
        self._secret = b""
        send(sock, Message(MsgType.HELLO, hello))
        welcome = self._await_welcome(sock)
        if welcome is None:
            return EXIT_REPLACE_ME  # the supervisor never answered
        check_settings(self.kind, welcome)  # a ProtocolError here is a bug: crash, loudly
        self.configure(welcome)
        self._pool = ThreadPoolExecutor(self.capacity, thread_name_prefix=self.kind)
        self.start()
        self.set_title("idle")
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        interval = self.args.heartbeat_interval
        silence_limit = max(10.0, SUPERVISOR_SILENCE_FACTOR * self.args.heartbeat_timeout)
        last_heard = next_beat = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_beat:
                if os.getppid() != self.args.supervisor_pid or now - last_heard > silence_limit:
                    return EXIT_ORPHANED  # never outlive the supervisor
                send(sock, Message(MsgType.HEARTBEAT, {"jobs": list(self._jobs)}))
                next_beat = now + interval
            if self._shutting_down and not self._jobs:
                return 0
            if self.exit_after_job and not self._jobs:
                return EXIT_REPLACE_ME
            for socket_or_fd, _ in poller.poll(max(0.0, next_beat - now) * 1000):
                if socket_or_fd is sock:
                    last_heard = time.monotonic()
                    self._receive(sock)
                else:
                    self._flush_outbox(sock)

    def _await_welcome(self, sock: zmq.Socket) -> dict[str, Any] | None:
        deadline = time.monotonic() + max(
            10.0, SUPERVISOR_SILENCE_FACTOR * self.args.heartbeat_timeout
        )
        while (remaining := deadline - time.monotonic()) > 0:
            if not sock.poll(remaining * 1000):
                break
            try:
                message = decode(sock.recv_multipart()[-1], self.args.max_message_bytes)
            except ProtocolError as error:
                log.warning("%s: dropped a bad message from the supervisor: %s", self.name, error)
                continue
            if message.type is MsgType.WELCOME:
                return message.body["settings"]
        return None

    def _receive(self, sock: zmq.Socket) -> None:
        while sock.poll(0):
            try:
                message = decode(sock.recv_multipart()[-1], self.args.max_message_bytes)
            except ProtocolError as error:
                log.warning("%s: dropped a bad message from the supervisor: %s", self.name, error)
                continue
            if message.type is MsgType.JOB:
                self._start_job(message.body)
            elif message.type is MsgType.SHUTDOWN:
                self._shutting_down = True
                self.set_title("finishing")

    def _flush_outbox(self, sock: zmq.Socket) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                message = self._outbox.get_nowait()
            except queue.Empty:
                return
            if message.type is MsgType.JOB_DONE:
                self._jobs.pop(message.body["job_id"], None)
                if not self._jobs:
                    self.set_title("idle")
            send(sock, message)

    def _start_job(self, body: dict[str, Any]) -> None:
        job_id, kind, data = body["job_id"], body["kind"], body["data"]
        try:
            check_job(kind, data)
        except ProtocolError as error:
            failed = {"job_id": job_id, "ok": False, "error": {"message": str(error)}}
            self.post(Message(MsgType.JOB_DONE, failed))
            return
        assert self._pool is not None
        self._jobs[job_id] = self._pool.submit(self._run_job, job_id, kind, data)

    def _run_job(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        try:
            result = self.run_job(kind, data)
            done = {"job_id": job_id, "ok": True, "data": result}
        except JobError as error:
            done = {
                "job_id": job_id,
                "ok": False,
                "error": {"message": str(error), **error.details},
            }
        except Exception as error:
            done = {
                "job_id": job_id,
                "ok": False,
                "error": {
                    "message": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc(limit=20),
                },
            }
        self.post(Message(MsgType.JOB_DONE, done))


def run_worker(worker_class: type[Worker], argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(levelname)s %(message)s",
    )
    worker = worker_class(parse_worker_args(argv))
    raise SystemExit(worker.main())
