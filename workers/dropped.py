"""Reading a dropped file safely: once, through one handle, never following a symlink, never
blocking on a FIFO or device, never reading more than the configured limit.

Test programs write the drop folders, and so can anyone with access to them: a name may be
swapped for a symlink to ``/dev/zero`` between two looks. Whatever is read is therefore read
through a handle opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked with ``fstat`` on that same
handle, so what was checked is what is read.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

CHUNK = 1 << 20


class NotReadable(Exception):
    """A dropped file that must not be read; the message says why, for the error sidecar."""


def open_dropped(path: Path | str, max_bytes: int) -> tuple[int, os.stat_result]:
    """An open read-only descriptor and its fstat; NotReadable for anything but a regular
    file within the limit. FileNotFoundError passes through (the file is simply gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise NotReadable("a symlink: symlinks are not followed") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotReadable("not a regular file: it is not read")
        if info.st_size > max_bytes:
            raise NotReadable(
                f"{info.st_size} bytes, larger than the limit of {max_bytes} bytes "
                "(watch.max_file_mb): it is not read"
            )
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def fingerprint(path: Path | str, max_bytes: int) -> tuple[int, int, str]:
    """(size, mtime_ns, sha256) of a dropped file, all from one handle. NotReadable if the file
    is not a regular file within the limit, or changed while it was read."""
    fd, before = open_dropped(path, max_bytes)
    digest = hashlib.sha256()
    read = 0
    try:
        while read <= max_bytes and (chunk := os.read(fd, CHUNK)):
            digest.update(chunk)
            read += len(chunk)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or read != (
        after.st_size
    ):
        raise FileChanged(f"{path} changed while it was read")
    return after.st_size, after.st_mtime_ns, digest.hexdigest()


def read_dropped(path: Path | str, max_bytes: int) -> bytes:
    """The whole content of a dropped file, read through one checked handle."""
    fd, _ = open_dropped(path, max_bytes)
    try:
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise NotReadable(f"grew beyond the limit of {max_bytes} bytes while it was read")
    return data


class FileChanged(Exception):
    """The file changed while it was fingerprinted: it is not stable yet."""
