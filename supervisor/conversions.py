"""The life of an input file on the supervisor's side: record, dispatch, commit, post-process.

1. ``file_ready`` records the file durably, by the fingerprint (size, mtime, sha256) the
   watcher took through one handle, before anything else happens; the supervisor itself never
   reads a dropped file. A file already recorded is recognised, so after a crash a file
   whose reports were committed is only post-processed, never converted again.
2. ``tick`` hands one file at a time to each idle converter worker, with the converter's
   deadline.
3. ``job_done`` commits the worker's (already validated) reports in the same transaction
   that marks the file converted; the post action follows that commit (``Turn``).
4. A worker that dies on a file costs that file one crash; at ``max_crashes`` the file is
   quarantined to the error folder with a sidecar that says why. Other files flow on. A worker
   stopped on purpose costs its file nothing: the file simply waits for the next worker.

While the queue guard refuses new work (low disk, a failed write, a lost queue file), a ready
file is only remembered (``deferred``) and stays where it is; a file whose record or commit
fails is remembered the same way, its in-flight mark cleared. ``resume`` takes them again.

A file from a subfolder of the watch folder (a recursive converter) keeps its relative path:
``drop/lineA/x.json`` goes to ``Done/lineA/x.json``, ``Error/lineA/x.json`` (its reason beside
it) or ``lineA/x.json`` in the archive.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import traceback
import zipfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from wats_station.ipc.contract import EventTopic, WorkerKind
from wats_station.ipc.protocol import JobKind
from wats_station.ipc.states import ReportState, SourceState
from wats_station.supervisor.atomic import fsync_dir, write_atomically
from wats_station.supervisor.config import Config, ConverterSettings
from wats_station.supervisor.fleet import Fleet
from wats_station.supervisor.pathnames import real_path, stored_path
from wats_station.supervisor.process import Job
from wats_station.supervisor.queue import QueueWriteError, ReportQueue
from wats_station.supervisor.trust import inside_folder
from wats_station.supervisor.turn import Turn
from wats_station.workers.crashpoints import crash_point

log = logging.getLogger("wats-station")

SIDECAR_SUFFIX = ".error.json"


@dataclass
class Pending:
    source_id: int
    path: str
    converter: str


def readable(text: str) -> str:
    """Text safe for the database and for people: undecodable bytes shown as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name (2)``, ``name (3)``... whichever does not exist yet."""
    candidate = folder / name
    stem, dot, suffix = name.partition(".")
    counter = 2
    while candidate.exists() or candidate.is_symlink():
        candidate = folder / f"{stem} ({counter}){dot}{suffix}"
        counter += 1
    return candidate


def relative_folder(path: str | Path, conv: ConverterSettings) -> Path:
    """The subfolder of the converter's watch folder that holds `path` ('.' at the top, and for
    a file that is not under the watch folder at all)."""
    folder = os.path.dirname(os.path.abspath(path))
    relative = os.path.relpath(folder, os.path.abspath(conv.watch_folder))
    if relative == os.curdir or relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return Path(os.curdir)
    return Path(relative)


class Conversions:
    def __init__(
        self,
        queue: ReportQueue,
        config: Callable[[], Config],
        fleet: Fleet,
        turn: Turn,
        *,
        publish: Callable[[str, dict[str, Any]], None],
        reports_queued: Callable[[], None],
        refusal: Callable[[], str | None],
        note_error: Callable[[QueueWriteError], None],
        paused: Callable[[], bool],
        dropped: Callable[[], None],
    ) -> None:
        self.queue = queue
        self.config = config
        self.fleet = fleet
        self.turn = turn
        self.publish = publish
        self.reports_queued = reports_queued
        self.refusal = refusal  # the queue guard's: why new work is refused, or None
        self.note_error = note_error  # tell the queue guard a write failed
        self.paused = paused  # conversions paused by an operator
        self.dropped = dropped  # count a message we ignored
        self.waiting: deque[Pending] = deque()
        self.in_flight: set[str] = set()  # paths waiting or converting
        self.deferred: dict[str, dict[str, Any]] = {}  # path -> FILE_READY body, until resume()
        self._bodies: dict[str, dict[str, Any]] = {}  # in-flight path -> its FILE_READY body
        self.counts = {"converted": 0, "failed": 0, "reports": 0}
        self._recover()

    def converter(self, name: str) -> ConverterSettings | None:
        return self.config().converter(name)

    # -- recovery ---------------------------------------------------------------------

    def _recover(self) -> None:
        for record in self.queue.unfinished_sources():
            path = real_path(record.path)
            conv = self.converter(record.converter)
            if conv is None:
                log.warning(
                    "file %s was left by converter %r, which is no longer configured",
                    path,
                    record.converter,
                )
                continue
            if record.state is SourceState.CONVERTED:
                log.info(
                    "finishing the post action of %s (its reports were already committed)",
                    path,
                )
                self._post_process(record.id, path, conv)
            elif os.path.lexists(path):
                self._enqueue(record.id, path, conv.name)
            else:
                self.queue.finish_source(
                    record.id,
                    state=SourceState.FAILED,
                    final_path=None,
                    error="the file vanished before it was converted",
                )

    # -- new files --------------------------------------------------------------------

    def file_ready(self, body: dict[str, Any]) -> None:
        path = os.fsdecode(body["path"])
        if path in self.in_flight:
            return
        if self.refusal() is not None:
            self.deferred[path] = body  # left in its folder; taken when the guard allows
            return
        self._retake_on_rollback(path, body)
        try:
            self._take(path, body)
        except QueueWriteError as error:
            self._retake_later(path, body)
            self.note_error(error)

    def _retake_on_rollback(self, path: str, item: dict[str, Any] | Pending) -> None:
        """If this turn's writes are rolled back (a full disk), the file is taken again."""
        self.turn.on_rollback(lambda: self._retake_later(path, item))

    def _retake_later(self, path: str, item: dict[str, Any] | Pending) -> None:
        """What this turn did with the file is undone: it is taken again from the start, by
        its FILE_READY (``deferred``, until ``resume``) or, recorded in an earlier turn, from
        the waiting line (conversions do not run while the queue cannot be written)."""
        self.in_flight.discard(path)
        if path in self.deferred:
            return  # already to be taken again from its FILE_READY
        if any(pending.path == path for pending in self.waiting):
            self.waiting = deque(pending for pending in self.waiting if pending.path != path)
        body = item if isinstance(item, dict) else self._bodies.get(path)
        self._bodies.pop(path, None)
        if body is not None:
            self.deferred[path] = body
        elif isinstance(item, Pending) and os.path.lexists(path):
            self._enqueue(item.source_id, path, item.converter)

    def _done_with(self, path: str) -> None:
        self.in_flight.discard(path)
        self._bodies.pop(path, None)

    def resume(self) -> None:
        """The guard takes new work again: the files that waited meanwhile are taken now."""
        deferred, self.deferred = self.deferred, {}
        if deferred:
            log.info("taking %d file(s) that waited while new work was refused", len(deferred))
        for body in deferred.values():
            self.file_ready(body)

    def _take(self, path: str, body: dict[str, Any]) -> None:
        conv = self.converter(body["converter"])
        if conv is None or not conv.enabled or not self._in_watch_folder(path, conv):
            return
        fingerprint = (stored_path(path), body["size"], body["mtime_ns"], body["sha256"])
        if (
            conv.post_action == "keep"
            and self.queue.find_source(*fingerprint) is None
            and self.queue.find_source(*fingerprint, finished=True) is not None
        ):
            return  # kept after an earlier conversion
        record = self.queue.record_source(*fingerprint, conv.name)  # or the one it already has
        self._bodies[path] = body
        if record.state is SourceState.RECORDED:
            self.turn.after_commit(lambda: crash_point("after-file-recorded"), first=True)
        if record.state is SourceState.CONVERTED:
            self.in_flight.add(path)
            self.turn.after_commit(lambda: self._post_process(record.id, path, conv))
        else:
            self._enqueue(record.id, path, conv.name)

    def _enqueue(self, source_id: int, path: str, converter: str) -> None:
        self.in_flight.add(path)
        self.waiting.append(Pending(source_id, path, converter))

    def file_rejected(self, body: dict[str, Any]) -> None:
        path = os.fsdecode(body["path"])
        conv = self.converter(body["converter"])
        if conv is None or path in self.in_flight or not self._in_watch_folder(path, conv):
            return
        if os.path.lexists(path):
            self._to_error_folder(path, conv, {"error": body["reason"]})

    def _in_watch_folder(self, path: str, conv: ConverterSettings) -> bool:
        """Whoever names a file, we touch only files in the converter's own watch folder."""
        if inside_folder(path, conv.watch_folder):
            return True
        self.dropped()
        log.warning("ignored %s: not inside the watch folder of converter %r", path, conv.name)
        return False

    def tick(self, now: float) -> None:
        if self.paused():
            return  # files stay in their drop folders, recorded and waiting
        while self.waiting:
            workers = self.fleet.idle(WorkerKind.CONVERTER)
            if not workers:
                return
            item = self.waiting.popleft()
            conv = self.converter(item.converter)
            if conv is None:
                self._done_with(item.path)
                continue
            data = {
                "path": os.fsencode(item.path),
                "converter": conv.name,
                "source_id": item.source_id,
            }
            if self.fleet.dispatch(workers[0], JobKind.CONVERT, data, conv.deadline_s) is None:
                self.waiting.appendleft(item)
                return
            # Rolled back, the job never went out: the file goes first again.
            self.turn.on_rollback(partial(self._not_dispatched, item))

    def _not_dispatched(self, item: Pending) -> None:
        if item.path in self.in_flight and all(p.path != item.path for p in self.waiting):
            self.waiting.appendleft(item)

    # -- results ----------------------------------------------------------------------

    def job_done(self, job: Job, body: dict[str, Any]) -> None:
        source_id, path = job.data["source_id"], os.fsdecode(job.data["path"])
        conv = self.converter(job.data["converter"])
        if conv is None:
            self._done_with(path)
            return
        if not body["ok"]:
            error = body.get("error") or {}
            self._fail(source_id, path, conv, {**error, "attempts": 1})
            return
        reports = body["data"]["reports"]
        rows = [(r["id"], r["json"]) for r in reports]
        # A file is the test program's word: a different report under a known id replaces the
        # stored one (as WATS itself would), but never silently.
        stored = self.queue.stored_payloads([report_id for report_id, _ in rows])
        self._retake_on_rollback(path, Pending(source_id, path, conv.name))
        try:
            self.queue.commit_conversion(
                source_id,
                rows,
                body["data"].get("converter_version", ""),
                priority=conv.priority,
            )
        except QueueWriteError as error:
            # Nothing is committed: the file stays recorded and is converted again later.
            log.warning("could not commit the reports of %s: %s", path, error)
            self._retake_later(path, Pending(source_id, path, conv.name))
            self.note_error(error)
            return
        for report_id, payload in rows:
            if report_id in stored and stored[report_id][1] != payload:
                note_replacement(self.publish, report_id, stored[report_id][0], path)
        self.counts["reports"] += len(reports)
        self.reports_queued()
        for report in reports:
            self.publish(EventTopic.REPORT_QUEUED, {"id": report["id"], "source": path})
        self.turn.after_commit(lambda: crash_point("after-report-committed"), first=True)
        self.turn.after_commit(lambda: self._post_process(source_id, path, conv))

    def job_lost(self, job: Job, reason: str, output_tail: str, charge: bool = True) -> None:
        source_id, path = job.data["source_id"], os.fsdecode(job.data["path"])
        conv = self.converter(job.data["converter"])
        if conv is None:
            self._done_with(path)
            return
        if not charge:
            log.info("converter worker stopped while on %s (%s); it goes first again", path, reason)
            self.waiting.appendleft(Pending(source_id, path, conv.name))
            return
        self._retake_on_rollback(path, Pending(source_id, path, conv.name))
        try:
            crashes = self.queue.record_crash(source_id, readable(reason))
        except QueueWriteError as error:
            self._retake_later(path, Pending(source_id, path, conv.name))
            self.note_error(error)
            return
        log.warning(
            "converter worker died on %s (%s); crash %d of %d",
            path,
            reason,
            crashes,
            conv.max_crashes,
        )
        if crashes >= conv.max_crashes:
            details = {
                "error": f"the converter worker died on this file {crashes} times; last: {reason}",
                "attempts": crashes,
                "output_tail": output_tail,
            }
            self._fail(source_id, path, conv, details)
        else:
            self.waiting.append(Pending(source_id, path, conv.name))  # behind the others

    def _fail(
        self, source_id: int, path: str, conv: ConverterSettings, details: dict[str, Any]
    ) -> None:
        self._done_with(path)
        final = self._to_error_folder(path, conv, details)
        self.queue.finish_source(
            source_id,
            state=SourceState.FAILED,
            final_path=final and stored_path(final),
            error=readable(str(details.get("error") or details.get("message"))),
        )
        self.counts["failed"] += 1

    def _to_error_folder(
        self, path: str, conv: ConverterSettings, details: dict[str, Any]
    ) -> str | None:
        folder = Path(conv.error_folder) / relative_folder(path, conv)
        folder.mkdir(parents=True, exist_ok=True)
        source = Path(path)
        target = free_name(folder, source.name)
        sidecar = {
            "file": path,
            "converter": conv.name,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **details,
        }
        # The reason goes down first: a crash between the two steps must never leave a file
        # in Error without one.
        sidecar_path = target.with_name(target.name + SIDECAR_SUFFIX)
        if not os.path.lexists(source):
            sidecar["error"] = (
                f"{details.get('error') or details.get('message')} (the file has since vanished)"
            )
            sidecar_path = target.with_name(target.name + ".missing" + SIDECAR_SUFFIX)
        write_atomically(sidecar_path, json.dumps(sidecar, indent=2, default=str).encode())
        try:
            os.rename(source, target)
        except FileNotFoundError:
            target = target.with_name(target.name + ".missing")
        except OSError:
            shutil.move(source, target)  # another file system
        fsync_dir(folder)
        log.warning("%s -> %s: %s", path, target, details.get("error") or details.get("message"))
        self.publish(
            EventTopic.FILE_FAILED,
            {
                "path": path,
                "converter": conv.name,
                "error_folder": str(folder),
                "error": str(details.get("error") or details.get("message")),
            },
        )
        return str(target)

    def _post_process(self, source_id: int, path: str, conv: ConverterSettings) -> None:
        """Runs after the reports' commit; marking the file done waits for the next commit,
        after the folder it moved to is synced."""
        self._done_with(path)
        try:
            final = post_action(Path(path), conv, self.turn.sync_dir)
        except OSError as error:
            log.error(
                "post action %r failed for %s: %s (the reports are safe in the queue)",
                conv.post_action,
                path,
                "".join(traceback.format_exception_only(error)).strip(),
            )
            return
        crash_point("after-post-action")
        self.turn.next_turn(lambda: self._finish_done(source_id, path, conv, final))

    def _finish_done(
        self, source_id: int, path: str, conv: ConverterSettings, final: str | None
    ) -> None:
        self.queue.finish_source(
            source_id, state=SourceState.DONE, final_path=final and stored_path(final)
        )
        self.counts["converted"] += 1
        self.publish(
            EventTopic.FILE_DONE,
            {
                "path": path,
                "converter": conv.name,
                "action": conv.post_action,
                "final_path": final,
            },
        )

    # -- reporting --------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        return {
            "waiting": len(self.waiting),
            "in_flight": len(self.in_flight),
            "deferred": len(self.deferred),
            **self.counts,
        }

    def describe(self) -> list[dict[str, Any]]:
        described = describe_converters(self.config().converters)
        for entry in described:
            entry["waiting"] = sum(p.converter == entry["name"] for p in self.waiting)
        return described


def describe_converters(converters: list[ConverterSettings]) -> list[dict[str, Any]]:
    """What ``converters list`` shows of each converter, with running or stopped station."""
    return [
        {
            "name": conv.name,
            "kind": conv.kind,
            "enabled": conv.enabled,
            "module": conv.module,
            "watch_folder": conv.watch_folder,
            "done_folder": conv.done_folder,
            "error_folder": conv.error_folder,
            "file_patterns": conv.file_patterns,
            "post_action": conv.post_action,
            "recursive": conv.recursive,
            "max_depth": conv.max_depth,
            "priority": conv.priority,
            "waiting": 0,
            "errors": count_files(conv.error_folder, exclude_suffix=SIDECAR_SUFFIX),
        }
        for conv in converters
    ]


def count_files(folder: str, exclude_suffix: str = "") -> int:
    """Files in `folder` and its subfolders (where a recursive converter's files land)."""
    return sum(
        1
        for _, _, names in os.walk(folder)
        for name in names
        if not name.endswith(exclude_suffix or "\0")
    )


def post_action(
    source: Path, conv: ConverterSettings, sync_dir: Callable[[Path], None] = fsync_dir
) -> str | None:
    """Perform the converter's post action on a converted file; returns where it ended up.
    ``sync_dir`` makes a folder's change durable (at once, or once per loop pass)."""
    if conv.post_action == "keep":
        return str(source)
    if not source.exists() and not source.is_symlink():
        return None  # already done before a crash; nothing left to do
    if conv.post_action == "delete":
        source.unlink()
        sync_dir(source.parent)
        return None
    relative = relative_folder(source, conv)
    done = Path(conv.done_folder)
    if conv.post_action == "archive":
        done.mkdir(parents=True, exist_ok=True)
        return archive(source, done, relative)
    done = done / relative
    done.mkdir(parents=True, exist_ok=True)
    target = free_name(done, source.name)
    try:
        os.rename(source, target)
    except OSError:
        shutil.move(source, target)
    sync_dir(done)
    return str(target)


def archive(source: Path, done: Path, relative: Path = Path(os.curdir)) -> str:
    """Append the file to ``Done/YYYY-MM.zip`` (under its relative folder) and delete it once
    the archive is on disk."""
    zip_path = done / f"{time.strftime('%Y-%m')}.zip"
    folder = "" if relative == Path(os.curdir) else relative.as_posix() + "/"
    with zipfile.ZipFile(zip_path, "a", compression=zipfile.ZIP_DEFLATED) as archive_file:
        names = set(archive_file.namelist())
        name, counter = folder + source.name, 2
        while name in names:
            name = f"{folder}{source.stem} ({counter}){source.suffix}"
            counter += 1
        archive_file.write(source, arcname=name)
    with open(zip_path, "rb") as handle:
        os.fsync(handle.fileno())
    source.unlink()
    fsync_dir(source.parent)
    return f"{zip_path}:{name}"


def note_replacement(
    publish: Callable[[str, dict[str, Any]], None], report_id: str, state: ReportState, source: str
) -> None:
    """A different report takes the place of a stored one: say so, in the log and as an event."""
    log.warning(
        "report %s (%s) is replaced by a different report from %s", report_id, state, source
    )
    publish(EventTopic.REPORT_REPLACED, {"id": report_id, "was": str(state), "source": source})
