"""The client library for CLIs, GUIs and test programs: call a running station, follow its events.

    with StationClient("ict") as station:
        print(station.call("get_status"))

    for event in EventStream("ict"):
        print(event.seq, event.topic, event.data)

A call that no station answers raises StationUnavailable with a message that says which
instance and socket were tried, instead of hanging.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import zmq

from wats_station.ipc.endpoints import DEFAULT_INSTANCE, InstancePaths, instance_paths
from wats_station.ipc.protocol import Message, MsgType, ProtocolError, decode
from wats_station.ipc.sockets import new_socket, send


class StationUnavailable(Exception):
    """No station answered."""


class CommandFailed(Exception):
    """The station answered with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _socket_file(endpoint: str) -> str:
    return endpoint.removeprefix("ipc://")


def listening(endpoint: str) -> bool:
    """Whether a process accepts connections on this ipc:// socket. A station killed with
    SIGKILL leaves its socket files behind, and ZeroMQ would wait on one for ever; a plain
    connect is refused at once when nobody listens."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)  # a full backlog blocks connect(): someone is there, only busy
    try:
        probe.connect(_socket_file(endpoint))
    except TimeoutError:
        return True
    except OSError:  # refused (stale file), missing, or not ours to open
        return False
    finally:
        probe.close()
    return True


class StationClient:
    def __init__(
        self,
        instance: str = DEFAULT_INSTANCE,
        *,
        paths: InstancePaths | None = None,
        timeout_s: float = 5.0,
        context: zmq.Context | None = None,
    ) -> None:
        self.paths = paths or instance_paths(instance)
        self.timeout_s = timeout_s
        self._context = context or zmq.Context.instance()
        self._ids = itertools.count(1)
        self._socket: zmq.Socket | None = None

    def __enter__(self) -> StationClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _connected(self) -> zmq.Socket:
        if self._socket is None:
            endpoint = self.paths.control_endpoint
            if not listening(endpoint):
                raise StationUnavailable(self._not_running())
            self._socket = new_socket(self._context, zmq.DEALER)
            self._socket.connect(endpoint)
        return self._socket

    def _not_running(self) -> str:
        return (
            f"no station is running for instance '{self.paths.instance}' "
            f"(nothing answers on {self.paths.control_endpoint}); "
            f"start it with: wats-station service --instance-id {self.paths.instance}"
        )

    def call(self, command: str, *, timeout_s: float | None = None, **args: Any) -> Any:
        """Send one command and return its result; raises CommandFailed or StationUnavailable."""
        sock = self._connected()
        request_id = next(self._ids)
        send(sock, Message(MsgType.REQUEST, {"command": command, "args": args}, request_id))
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while (remaining := deadline - time.monotonic()) > 0:
            if not sock.poll(remaining * 1000):
                break
            try:
                reply = decode(sock.recv_multipart()[-1])
            except ProtocolError:
                continue
            if reply.type is not MsgType.REPLY or reply.id != request_id:
                continue  # a late answer to an earlier call that timed out
            if reply.body["ok"]:
                return reply.body.get("result")
            error = reply.body.get("error") or {}
            raise CommandFailed(str(error.get("code", "error")), str(error.get("message", "")))
        # The socket may still receive the late reply; a fresh one keeps later calls clean.
        self.close()
        if not listening(self.paths.control_endpoint):
            raise StationUnavailable(self._not_running())  # it stopped or died meanwhile
        raise StationUnavailable(
            f"station '{self.paths.instance}' did not answer '{command}' within "
            f"{self.timeout_s if timeout_s is None else timeout_s:g} s"
        )


@dataclass(frozen=True)
class Event:
    seq: int
    topic: str
    time: float
    data: dict[str, Any]


class EventStream:
    """Live events, in order. A gap in sequence numbers (a slow reader, a restarted station)
    is reported as a synthetic ``resync`` event carrying a fresh status snapshot, so a GUI
    never silently misses state.

    Each event carries the sequence number of its own topic too (``topic_seq``), and the
    snapshot the numbers each topic had reached; gaps are judged per topic, so the events a
    ``topics`` filter leaves out never look like losses."""

    def __init__(
        self,
        instance: str = DEFAULT_INSTANCE,
        *,
        topics: tuple[str, ...] = ("",),
        paths: InstancePaths | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.paths = paths or instance_paths(instance)
        self._context = context or zmq.Context.instance()
        if not listening(self.paths.events_endpoint):
            raise StationUnavailable(StationClient(paths=self.paths)._not_running())
        self._sub = new_socket(self._context, zmq.SUB)
        for topic in topics:
            self._sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._sub.connect(self.paths.events_endpoint)
        self._seqs: dict[str, int] = {}  # topic -> the last sequence number seen
        self._synced = False  # a snapshot told us every topic's number
        self._epoch: str | None = None

    def close(self) -> None:
        self._sub.close(linger=0)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def snapshot(self) -> Event:
        """Fetch the current status and the sequence number it corresponds to."""
        with StationClient(paths=self.paths, context=self._context) as client:
            snap = client.call("get_snapshot")
        self._seqs = {**(snap.get("topics") or {}), "": snap["seq"]}
        self._synced = True
        self._epoch = snap["epoch"]
        return Event(snap["seq"], "resync", time.time(), snap["status"])

    def next(self, timeout_s: float | None = None) -> Event | None:
        """The next event, or None when ``timeout_s`` passes without one."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait_ms = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
            if not self._sub.poll(wait_ms):
                return None
            frames = self._sub.recv_multipart()
            try:
                message = decode(frames[-1])
            except ProtocolError:
                continue
            body = message.body
            if self._epoch is not None and body["epoch"] != self._epoch:
                return self.snapshot()  # the station restarted
            self._epoch = body["epoch"]
            verdict = self._judge(body)
            if verdict == "gap":
                return self.snapshot()
            if verdict == "seen":
                continue
            return Event(body["seq"], body["topic"], float(body["time"]), body["data"])

    def _judge(self, body: dict[str, Any]) -> str:
        """``new``, ``seen`` (covered by the snapshot) or ``gap`` (events of its topic were
        lost). Before the first snapshot a topic's first event starts its count."""
        topic_seq = body.get("topic_seq")
        # A station without topic sequences is judged by its global sequence ("" key).
        key, seq = ("", body["seq"]) if topic_seq is None else (body["topic"], topic_seq)
        last = self._seqs.get(key)
        if last is None and not self._synced:
            self._seqs[key] = seq
            return "new"
        if seq <= (last or 0):
            return "seen"
        self._seqs[key] = seq
        return "new" if seq == (last or 0) + 1 else "gap"

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.next()
            if event is not None:
                yield event
