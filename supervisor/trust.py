"""Whom the supervisor believes, and what it keeps to itself.

* A worker is believed only after a HELLO that proves it is the process spawned for that
  name (``ipc.handshake``); then each kind may send only its own kinds of message, and a path
  it names is acted on only if it lies inside a configured watch folder.
* Workers inherit no secret through the environment: the uploader receives the token in its
  WELCOME, nobody else ever sees it.
* Everything the station writes is owner-only (umask 0077 and a repair of older files), the
  same with or without systemd's ``UMask=``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import zmq

from wats_station.ipc.endpoints import InstancePaths
from wats_station.ipc.handshake import peer_pid, proves
from wats_station.ipc.protocol import MsgType
from wats_station.supervisor.config import TOKEN_ENV
from wats_station.supervisor.notify import SYSTEMD_ONLY_ENV


class SpawnedWorker(Protocol):
    """What the HELLO check needs of the worker we spawned (process.WorkerProcess is one)."""

    name: str
    pid: int | None
    secret: bytes | None


PRIVATE_UMASK = 0o077
# Never handed to a worker: the token reaches the uploader in its WELCOME, and only there.
SECRET_ENV = frozenset({TOKEN_ENV})

# What each kind of worker may tell the supervisor (besides HELLO, checked on its own).
MESSAGES_FROM: dict[str, frozenset[MsgType]] = {
    "watcher": frozenset({MsgType.HEARTBEAT, MsgType.FILE_READY, MsgType.FILE_REJECTED}),
    "converter": frozenset({MsgType.HEARTBEAT, MsgType.JOB_DONE}),
    "uploader": frozenset({MsgType.HEARTBEAT, MsgType.JOB_DONE}),
    "metrics": frozenset({MsgType.HEARTBEAT}),  # it only reads the event stream
}


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k not in SYSTEMD_ONLY_ENV and k not in SECRET_ENV}


def hello_refusal(
    worker: SpawnedWorker | None, body: dict[str, Any], peer_address: str | None
) -> str | None:
    """Why this HELLO must be refused, or None when it comes from the worker we spawned."""
    if worker is None:
        return "no worker of that name"
    if worker.pid is None or worker.pid != body["pid"]:
        return f"pid {body['pid']} is not the running {worker.name} (pid {worker.pid})"
    if not proves(worker.secret, body.get("proof")):
        # The secret is spent by the first HELLO, so this also refuses a second one.
        return "it did not prove that the supervisor spawned it (wrong, spent or missing secret)"
    sender = peer_pid(peer_address)
    if sender is not None and sender != worker.pid:
        return f"it was sent by pid {sender}, not by {worker.name} (pid {worker.pid})"
    return None


def peer_address(frame: zmq.Frame) -> str | None:
    """libzmq's account of who sent this frame (with SO_PEERCRED: ``host:uid:gid:pid``)."""
    try:
        return frame.get("Peer-Address")
    except (zmq.ZMQError, AttributeError):
        return None  # this libzmq or transport does not say


def may_send(kind: str, message_type: MsgType) -> bool:
    return message_type in MESSAGES_FROM.get(kind, frozenset())


def inside_folder(path: str, folder: str) -> bool:
    """Whether ``path`` names an entry of ``folder`` or of a folder below it.

    The last component is not resolved (a symlink in the folder is the folder's entry, wherever
    it points), but every folder above it is, so ``..`` or a symlinked folder cannot lead out.
    """
    if not folder or not path:
        return False
    entry = Path(os.path.abspath(path))
    if entry.name in ("", ".", ".."):
        return False
    parent = os.path.realpath(entry.parent)
    root = os.path.realpath(folder)
    return parent == root or parent.startswith(root.rstrip(os.sep) + os.sep)


def make_files_private(paths: InstancePaths) -> None:
    """From now on create files owner-only; and take group and other access away from the
    instance's folders and the queue and log files an older version (or a looser umask) left
    readable."""
    os.umask(PRIVATE_UMASK)
    for folder, prefix in (
        (paths.data_dir, paths.queue_db.name),
        (paths.log_dir, paths.log_file.name),
    ):
        try:
            names = [e.name for e in os.scandir(folder) if e.name.startswith(prefix)]
        except OSError:
            continue  # not there yet: it will be created owner-only
        for path in (folder, *(folder / name for name in names)):
            _owner_only(path)


def _owner_only(path: Path) -> None:
    try:
        info = path.lstat()
        if not stat.S_ISLNK(info.st_mode) and stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(info.st_mode) & 0o700)
    except OSError:
        pass  # not ours to change (a folder systemd made for us, say): it stays as it was
