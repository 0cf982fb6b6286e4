"""Socket helpers shared by every process: sockets that never linger, and framed send/receive."""

from __future__ import annotations

import zmq

from wats_station.ipc.protocol import Message, encode


def new_socket(context: zmq.Context, kind: int, max_message_bytes: int | None = None) -> zmq.Socket:
    """A socket with LINGER 0, so closing it never blocks on unsent messages.

    ``max_message_bytes`` makes libzmq drop a peer that sends more than twice the decode
    limit: a message between the limit and that gets a proper error reply, and nothing can
    make us buffer gigabytes.
    """
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if max_message_bytes is not None:
        sock.setsockopt(zmq.MAXMSGSIZE, 2 * max_message_bytes)
    return sock


def send(sock: zmq.Socket, message: Message, envelope: list[bytes] = ()) -> None:
    sock.send_multipart([*envelope, encode(message)], copy=False)
