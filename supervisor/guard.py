"""The queue guard: the station takes new work only while its queue can keep it.

It raises three alarms, each with a log line, an ``alarm`` event, an entry under ``alarms``
in the status and the systemd STATUS line, and clears them the same way:

* ``queue_lost``: the queue file was deleted or replaced under the running station. The
  queue saved the open file's contents (``ReportQueue.check_file``); nothing is written any
  more, so no new files, no submits, no uploads, until the station is restarted.
* ``queue_write``: a write failed (the disk is full, an I/O error...), named for what it was.
  No new files, submits or uploads; after a full disk, work resumes by itself once the free
  space has grown (or after a while, to try again); after another error, after a short delay.
  Files that came meanwhile are taken again, and uploads whose answer could not be recorded
  are queued again (the same id: a resend overwrites).
* ``disk_low`` (admission control): free space on the queue's disk fell below
  ``admission.stop_below_mb``. New files stay where the test program put them and submits are
  refused; uploads go on (completed reports are purged in time). Work resumes above
  ``admission.resume_above_mb``. Nothing is ever dropped to make room.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from wats_station.supervisor.queue import DISK_FULL, QueueError, QueueLost, QueueWriteError

if TYPE_CHECKING:
    from wats_station.supervisor.config import Config


class Resumable(Protocol):
    def resume(self) -> None: ...


class Station(Protocol):
    """What the guard uses of the running station (the service implements it; this module
    does not import the service, so the import graph has no circle)."""

    config: Config
    queue: Any  # ReportQueue, or None before it is open
    uploads: Resumable
    conversions: Resumable

    def publish(self, topic: str, data: dict[str, Any]) -> None: ...


log = logging.getLogger("wats-station")

CHECK_INTERVAL_S = 0.5  # how often free space and the queue file are looked at
MB = 1024 * 1024
FULL_RESUME_GROWTH = 1 * MB  # after a full disk: this much more free space, and we try again
FULL_RETRY_S = 60.0  # ...or this long, whatever the free space says
WRITE_RETRY_S = 5.0  # after any other write error

QUEUE_LOST = "queue_lost"
QUEUE_WRITE = "queue_write"
DISK_LOW = "disk_low"


@dataclass
class Alarm:
    name: str
    message: str
    since: float  # epoch seconds
    retry_at: float = 0.0  # monotonic; queue_write only
    free_at_failure: int = 0  # bytes; queue_write only


def free_bytes(folder: os.PathLike[str] | str) -> int:
    """Space an unprivileged writer can still use on the disk holding `folder`."""
    info = os.statvfs(folder)
    return info.f_bavail * info.f_frsize


class QueueGuard:
    def __init__(self, station: Station) -> None:
        self.station = station
        self.alarms: dict[str, Alarm] = {}
        self._next_check = 0.0

    @property
    def writes_ok(self) -> bool:
        """Whether the queue can be written at all (uploads, conversions)."""
        return QUEUE_LOST not in self.alarms and QUEUE_WRITE not in self.alarms

    def refusal(self) -> str | None:
        """Why new work (files, submits) is refused right now, or None."""
        if not self.alarms:
            return None
        return "; ".join(alarm.message for alarm in self.alarms.values())

    # -- looking -----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if now < self._next_check:
            return
        self._next_check = now + CHECK_INTERVAL_S
        queue = self.station.queue
        if QUEUE_LOST not in self.alarms:
            try:
                queue.check_file()
            except QueueLost as error:
                self.note(error)
                return
        try:
            free = free_bytes(queue.path.parent)
        except OSError as error:
            log.debug("cannot read the free space of %s: %s", queue.path.parent, error)
            return
        self._admission(free)
        write = self.alarms.get(QUEUE_WRITE)
        if write is not None and (
            now >= write.retry_at or free >= write.free_at_failure + FULL_RESUME_GROWTH
        ):
            self._clear(QUEUE_WRITE, "writing to the queue again")

    def _admission(self, free: int) -> None:
        settings = self.station.config.admission
        free_mb = free / MB
        if DISK_LOW in self.alarms and free_mb >= settings.resume_above_mb:
            self._clear(DISK_LOW, f"{free_mb:.0f} MB free on the queue's disk")
        elif DISK_LOW in self.alarms or free_mb < settings.stop_below_mb:
            self._raise(  # while it lasts, the message follows the free space
                DISK_LOW,
                f"only {free_mb:.0f} MB free on the disk holding the queue "
                f"({self.station.queue.path.parent}), below admission.stop_below_mb "
                f"({settings.stop_below_mb:g} MB): no new files or submits until "
                f"{settings.resume_above_mb:g} MB are free",
            )

    # -- write errors ------------------------------------------------------------------

    def note(self, error: QueueError) -> None:
        """A queue write failed: raise the alarm it calls for (other QueueErrors are bugs)."""
        if isinstance(error, QueueLost):
            self._raise(QUEUE_LOST, str(error))
        elif isinstance(error, QueueWriteError):
            full = error.kind == DISK_FULL
            try:
                free = free_bytes(self.station.queue.path.parent)
            except OSError:
                free = 0
            alarm = self._raise(QUEUE_WRITE, f"cannot write to the queue: {error}")
            alarm.free_at_failure = free
            alarm.retry_at = time.monotonic() + (FULL_RETRY_S if full else WRITE_RETRY_S)

    @contextlib.contextmanager
    def guarding(self) -> Iterator[None]:
        """Run queue writes that may fail with the disk: a failure is an alarm, not a crash."""
        try:
            yield
        except QueueWriteError as error:
            self.note(error)

    # -- alarms ------------------------------------------------------------------------

    def _raise(self, name: str, message: str) -> Alarm:
        alarm = self.alarms.get(name)
        if alarm is not None:
            alarm.message = message
            return alarm
        alarm = self.alarms[name] = Alarm(name, message, time.time())
        log.error("ALARM %s: %s", name, message)
        self.station.publish("alarm", {"alarm": name, "active": True, "message": message})
        return alarm

    def _clear(self, name: str, why: str) -> None:
        self.alarms.pop(name)
        log.warning("alarm %s cleared: %s", name, why)
        self.station.publish("alarm", {"alarm": name, "active": False, "message": why})
        if name == QUEUE_WRITE:
            with self.guarding():
                self.station.uploads.resume()
        if self.refusal() is None:
            with self.guarding():
                self.station.conversions.resume()

    def status(self) -> list[dict[str, Any]]:
        return [
            {"alarm": a.name, "message": a.message, "since": a.since} for a in self.alarms.values()
        ]
