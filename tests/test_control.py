"""The control socket answers bad frames with errors (or counts them) and keeps serving."""

from __future__ import annotations

import os
import signal
import socket
import time

import msgpack
import pytest
import zmq

from wats_station.ipc.client import CommandFailed, EventStream
from wats_station.ipc.protocol import PROTOCOL_VERSION, Message, MsgType, encode
from wats_station.lab.harness import wait_until


@pytest.fixture
def raw(make_station):
    station = make_station(config={"supervisor": {"max_message_mb": 0.05}})
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(station.paths.control_endpoint)

    def exchange(*frames: bytes) -> dict | None:
        sock.send_multipart(list(frames))
        if not sock.poll(3000):
            return None
        return msgpack.unpackb(sock.recv_multipart()[-1], raw=False)

    try:
        yield station, exchange
    finally:
        sock.close()
        context.term()


def request(command: str, request_id: int = 7, version: int = PROTOCOL_VERSION, **args) -> bytes:
    return msgpack.packb(
        {
            "v": version,
            "type": "request",
            "id": request_id,
            "body": {"command": command, "args": args},
        }
    )


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\xc1garbage", "malformed"),
        (request("ping")[:-3], "malformed"),
        (msgpack.packb([1, 2, 3]), "malformed"),
        (request("ping", version=99), "unsupported_version"),
        (
            msgpack.packb({"v": PROTOCOL_VERSION, "type": "bogus", "id": 1, "body": {}}),
            "unknown_type",
        ),
        (encode(Message(MsgType.HELLO, {"name": "x", "kind": "y", "pid": 1})), "unknown_type"),
        (
            msgpack.packb(
                {"v": PROTOCOL_VERSION, "type": "request", "id": 1, "body": {"command": 5}}
            ),
            "bad_field",
        ),
        (request("no_such_command"), "unknown_command"),
        (request("restart_worker"), "bad_arguments"),
        (request("restart_worker", name=3), "bad_arguments"),
        (request("ping", extra=1), "bad_arguments"),
        (request("restart_worker", name="nobody"), "not_found"),
        (request("ping") + b"x" * 60_000, "too_large"),
    ],
)
def test_bad_frames_get_error_replies(raw, frame, code):
    _, exchange = raw
    reply = exchange(frame)
    assert reply is not None, "no reply"
    assert reply["type"] == "reply"
    assert reply["body"]["ok"] is False
    assert reply["body"]["error"]["code"] == code
    assert reply["body"]["error"]["message"]
    assert exchange(request("ping", 8))["body"]["result"]["pong"] is True


def test_request_id_is_echoed_even_for_a_wrong_version(raw):
    _, exchange = raw
    assert exchange(request("ping", 1234, version=0))["id"] == 1234


def test_frames_far_beyond_the_limit_are_dropped_and_service_continues(raw):
    station, exchange = raw
    assert exchange(b"x" * 300_000) is None  # libzmq drops the peer; nothing to answer
    assert station.call("ping")["pong"] is True


def test_a_flood_of_garbage_is_counted_and_ping_stays_prompt(raw):
    station, exchange = raw
    for _ in range(200):
        exchange(os.urandom(64))
    started = time.perf_counter()
    assert station.call("ping")["pong"]
    assert time.perf_counter() - started < 0.2
    assert station.call("get_status")["dropped_messages"] >= 200


def test_client_reports_command_errors(make_station):
    station = make_station()
    with pytest.raises(CommandFailed) as failure:
        station.call("stop_worker", name="ghost")
    assert failure.value.code == "not_found"
    assert "ghost" in str(failure.value)


def test_events_carry_topics_and_sequence_numbers_and_resync(make_station):
    station = make_station()
    with EventStream(paths=station.paths, topics=("worker.",)) as events:
        snap = events.snapshot()
        assert snap.topic == "resync" and snap.data["state"] == "running"
        station.call("restart_worker", name="watcher")
        seen = []
        wait_until(
            lambda: (
                ((e := events.next(0.5)) and seen.append(e))
                or any(x.data["state"] == "running" and x.data["name"] == "watcher" for x in seen)
            ),
            10,
            "watcher events",
        )
    seqs = [e.seq for e in seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    states = [e.data["state"] for e in seen if e.topic == "worker.watcher"]
    assert states[:1] == ["stopping"] and states[-1] == "running"


def test_systemd_notify_ready_watchdog_status_stopping_in_order(make_station, home):
    address = str(home / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(0.2)
    messages: list[str] = []

    def collect() -> None:
        try:
            while True:
                messages.extend(listener.recv(4096).decode().split("\n"))
        except TimeoutError:
            pass

    try:
        station = make_station(env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
        wait_until(
            lambda: collect() or sum(m == "WATCHDOG=1" for m in messages) >= 3, 10, "watchdog pings"
        )
        station.process.send_signal(signal.SIGTERM)
        wait_until(lambda: collect() or "STOPPING=1" in messages, 10, "STOPPING=1")
        assert station.process.wait(20) == 0
    finally:
        listener.close()
    first = {
        key: next(i for i, m in enumerate(messages) if m.startswith(key))
        for key in ("READY=1", "WATCHDOG=1", "STATUS=", "STOPPING=1")
    }
    assert first["READY=1"] < first["WATCHDOG=1"] < first["STOPPING=1"]
    assert first["STATUS="] < first["STOPPING=1"]
    status = next(m for m in messages if m.startswith("STATUS="))
    assert "3/3 workers running" in status and "queue 0 pending" in status
