"""The instance lock: one supervisor per instance, taken before any socket is bound.

The lock is an exclusive ``flock`` on ``<runtime>/station.lock``; the file holds the
holder's pid, instance and start time so a refusal can name who holds it. A lock left by a
dead process is free by construction (the kernel drops a flock with its owner), so a stale
file is simply taken over.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path


class InstanceLocked(Exception):
    """Another live process holds this instance."""

    def __init__(self, path: Path, holder: dict) -> None:
        self.path = path
        self.holder = holder
        pid = holder.get("pid", "?")
        since = holder.get("started", "?")
        super().__init__(
            f"instance '{holder.get('instance', '?')}' is already running as pid {pid} "
            f"(since {since}; lock {path})"
        )


def read_holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


@dataclass
class InstanceLock:
    path: Path
    fd: int

    @classmethod
    def acquire(cls, path: Path, instance: str) -> InstanceLock:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InstanceLocked(path, read_holder(path)) from None
        holder = {
            "pid": os.getpid(),
            "instance": instance,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self.fd >= 0:
            # Unlink while still holding the lock, so nobody can lock the doomed inode.
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = -1


def is_locked(path: Path) -> bool:
    """True when a live process holds the lock at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def remove_stale_lock(path: Path) -> dict | None:
    """Remove a lock file nobody holds; returns what it said. Raises InstanceLocked if held."""
    if not path.exists():
        return None
    holder = read_holder(path)
    if is_locked(path):
        raise InstanceLocked(path, holder)
    path.unlink(missing_ok=True)
    return holder
