"""How a worker proves it is the process its supervisor spawned.

Any process of the same user can connect to the workers socket, and can read every other
process's argv and environment in /proc, so neither may carry a secret. Instead the supervisor
writes a fresh random secret into a pipe before each spawn and lets the child inherit only the
read end (its number travels in argv; the number is no secret). The worker reads the secret as
the very first thing it does, closes the pipe, and sends the secret in its HELLO. The
supervisor compares it in constant time and, where libzmq reports the peer's credentials
(SO_PEERCRED on Linux, in the message property ``Peer-Address`` as ``...:uid:gid:pid``), also
checks that the HELLO came from the very pid it spawned, so a leaked secret is useless to any
other process. A wrong HELLO earns no WELCOME, hence no settings and never the server token.

The worker's routing identity is random too: a stranger cannot predict it and connect first
under it to lock the real worker out.
"""

from __future__ import annotations

import hmac
import os
import secrets

SECRET_BYTES = 32
SECRET_FD_OPTION = "--secret-fd"


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def secret_pipe(secret: bytes) -> int:
    """A pipe holding ``secret``; returns its read end, to be inherited by exactly one child."""
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, secret)  # far below the pipe buffer: never blocks
    finally:
        os.close(write_fd)
    return read_fd


def read_secret(fd: int) -> bytes:
    """The worker side: take the secret from the inherited descriptor and close it."""
    chunks = []
    try:
        while chunk := os.read(fd, SECRET_BYTES):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def proves(expected: bytes | None, given: object) -> bool:
    return (
        expected is not None and isinstance(given, bytes) and hmac.compare_digest(expected, given)
    )


def peer_pid(peer_address: str | None) -> int | None:
    """The pid in libzmq's ``Peer-Address`` of an ipc:// peer (``host:uid:gid:pid``), if any."""
    if not peer_address:
        return None
    last = peer_address.rsplit(":", 1)[-1]
    return int(last) if last.isdigit() and peer_address.count(":") >= 3 else None


def routing_identity(name: str) -> bytes:
    return f"{name}:{secrets.token_hex(8)}".encode()
