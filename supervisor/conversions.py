"""The life of an input file on the supervisor's side: record, dispatch, commit, post-process.

1. ``file_ready`` fingerprints the file (size, mtime, sha256) and records it durably before
   anything else happens; a file already recorded is recognised, so after a crash a file
   whose reports were committed is only post-processed, never converted again.
2. ``tick`` hands one file at a time to each idle converter worker, with the converter's
   deadline.
3. ``job_done`` commits the worker's (already validated) reports in the same transaction
   that marks the file converted, then performs the post action.
4. A worker that dies on a file costs that file one crash; at ``max_crashes`` the file is
   quarantined to the error folder with a sidecar that says why. Other files flow on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import traceback
import zipfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wats_station.ipc.protocol import JobKind
from wats_station.ipc.states import SourceState
from wats_station.supervisor.config import ConverterSettings
from wats_station.workers.crashpoints import crash_point

if TYPE_CHECKING:
    from wats_station.supervisor.process import Job
    from wats_station.supervisor.service import Station

log = logging.getLogger("wats-station")

SIDECAR_SUFFIX = ".error.json"


@dataclass
class Pending:
    source_id: int
    path: str
    converter: str


def stored_path(path: str) -> str:
    """A path as the queue database keeps it. SQLite text must be valid UTF-8, so a name
    that is not (Linux allows any bytes) is kept as ``hex:`` and its bytes, reversibly."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "hex:" + os.fsencode(path).hex()
    return path


def readable(text: str) -> str:
    """Text safe for the database and for people: undecodable bytes shown as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def real_path(stored: str) -> str:
    return os.fsdecode(bytes.fromhex(stored[4:])) if stored.startswith("hex:") else stored


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name (2)``, ``name (3)``... whichever does not exist yet."""
    candidate = folder / name
    stem, dot, suffix = name.partition(".")
    counter = 2
    while candidate.exists() or candidate.is_symlink():
        candidate = folder / f"{stem} ({counter}){dot}{suffix}"
        counter += 1
    return candidate


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Conversions:
    def __init__(self, station: Station) -> None:
        self.station = station
        self.waiting: deque[Pending] = deque()
        self.in_flight: set[str] = set()  # paths waiting or converting
        self.counts = {"converted": 0, "failed": 0, "reports": 0}
        self._recover()

    @property
    def queue(self) -> Any:
        return self.station.queue

    def converter(self, name: str) -> ConverterSettings | None:
        return self.station.config.converter(name)

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
        conv = self.converter(body["converter"])
        if conv is None or not conv.enabled:
            return
        try:
            sha = file_sha256(path)
            info = os.stat(path)
        except FileNotFoundError:
            return  # gone before we looked: nothing to convert, nothing lost
        except OSError as error:
            log.warning("cannot read %s: %s", path, error)
            return
        record = self.queue.find_source(stored_path(path), info.st_size, info.st_mtime_ns, sha)
        if record is None and conv.post_action == "keep" and self._kept_already(path, info, sha):
            return
        if record is None:
            record = self.queue.record_source(
                stored_path(path), info.st_size, info.st_mtime_ns, sha, conv.name
            )
            crash_point("after-file-recorded")
        if record.state is SourceState.CONVERTED:
            self._post_process(record.id, path, conv)
        else:
            self._enqueue(record.id, path, conv.name)

    def _kept_already(self, path: str, info: os.stat_result, sha: str) -> bool:
        return (
            self.queue.find_source(
                stored_path(path), info.st_size, info.st_mtime_ns, sha, finished=True
            )
            is not None
        )

    def _enqueue(self, source_id: int, path: str, converter: str) -> None:
        self.in_flight.add(path)
        self.waiting.append(Pending(source_id, path, converter))

    def file_rejected(self, body: dict[str, Any]) -> None:
        path = os.fsdecode(body["path"])
        conv = self.converter(body["converter"])
        if conv is None or path in self.in_flight or not os.path.lexists(path):
            return
        self._to_error_folder(path, conv, {"error": body["reason"]})

    def tick(self, now: float) -> None:
        if self.station.pause.conversions:
            return  # files stay in their drop folders, recorded and waiting
        while self.waiting:
            workers = self.station.idle_workers("converter")
            if not workers:
                return
            item = self.waiting.popleft()
            conv = self.converter(item.converter)
            if conv is None:
                self.in_flight.discard(item.path)
                continue
            data = {
                "path": os.fsencode(item.path),
                "converter": conv.name,
                "source_id": item.source_id,
            }
            if self.station.dispatch(workers[0], JobKind.CONVERT, data, conv.deadline_s) is None:
                self.waiting.appendleft(item)
                return

    # -- results ----------------------------------------------------------------------

    def job_done(self, job: Job, body: dict[str, Any]) -> None:
        source_id, path = job.data["source_id"], os.fsdecode(job.data["path"])
        conv = self.converter(job.data["converter"])
        if conv is None:
            self.in_flight.discard(path)
            return
        if not body["ok"]:
            error = body.get("error") or {}
            self._fail(source_id, path, conv, {**error, "attempts": 1})
            return
        reports = body["data"]["reports"]
        self.queue.commit_conversion(
            source_id,
            [(r["id"], r["json"]) for r in reports],
            body["data"].get("converter_version", ""),
        )
        crash_point("after-report-committed")
        self.counts["reports"] += len(reports)
        self.station.uploads.wake()
        for report in reports:
            self.station.publish("report.queued", {"id": report["id"], "source": path})
        self._post_process(source_id, path, conv)

    def job_lost(self, job: Job, reason: str, output_tail: str) -> None:
        source_id, path = job.data["source_id"], os.fsdecode(job.data["path"])
        conv = self.converter(job.data["converter"])
        if conv is None:
            self.in_flight.discard(path)
            return
        crashes = self.queue.record_crash(source_id, readable(reason))
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
        self.in_flight.discard(path)
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
        folder = Path(conv.error_folder)
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
        self.station.publish(
            "file.failed",
            {
                "path": path,
                "converter": conv.name,
                "error_folder": str(folder),
                "error": str(details.get("error") or details.get("message")),
            },
        )
        return str(target)

    def _post_process(self, source_id: int, path: str, conv: ConverterSettings) -> None:
        self.in_flight.discard(path)
        try:
            final = post_action(Path(path), conv)
        except OSError as error:
            log.error(
                "post action %r failed for %s: %s (the reports are safe in the queue)",
                conv.post_action,
                path,
                "".join(traceback.format_exception_only(error)).strip(),
            )
            return
        crash_point("after-post-action")
        self.queue.finish_source(
            source_id, state=SourceState.DONE, final_path=final and stored_path(final)
        )
        self.counts["converted"] += 1
        self.station.publish(
            "file.done",
            {
                "path": path,
                "converter": conv.name,
                "action": conv.post_action,
                "final_path": final,
            },
        )

    # -- reporting --------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        return {"waiting": len(self.waiting), "in_flight": len(self.in_flight), **self.counts}

    def describe(self) -> list[dict[str, Any]]:
        described = describe_converters(self.station.config.converters)
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
            "waiting": 0,
            "errors": count_files(conv.error_folder, exclude_suffix=SIDECAR_SUFFIX),
        }
        for conv in converters
    ]


def count_files(folder: str, exclude_suffix: str = "") -> int:
    try:
        return sum(
            1
            for e in os.scandir(folder)
            if e.is_file() and not e.name.endswith(exclude_suffix or "\0")
        )
    except OSError:
        return 0


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def post_action(source: Path, conv: ConverterSettings) -> str | None:
    """Perform the converter's post action on a converted file; returns where it ended up."""
    if conv.post_action == "keep":
        return str(source)
    if not source.exists() and not source.is_symlink():
        return None  # already done before a crash; nothing left to do
    if conv.post_action == "delete":
        source.unlink()
        fsync_dir(source.parent)
        return None
    done = Path(conv.done_folder)
    done.mkdir(parents=True, exist_ok=True)
    if conv.post_action == "archive":
        return archive(source, done)
    target = free_name(done, source.name)
    try:
        os.rename(source, target)
    except OSError:
        shutil.move(source, target)
    fsync_dir(done)
    return str(target)


def archive(source: Path, done: Path) -> str:
    """Append the file to ``Done/YYYY-MM.zip`` and delete it once the archive is on disk."""
    zip_path = done / f"{time.strftime('%Y-%m')}.zip"
    with zipfile.ZipFile(zip_path, "a", compression=zipfile.ZIP_DEFLATED) as archive_file:
        names = set(archive_file.namelist())
        name, counter = source.name, 2
        while name in names:
            name = f"{source.stem} ({counter}){source.suffix}"
            counter += 1
        archive_file.write(source, arcname=name)
    with open(zip_path, "rb") as handle:
        os.fsync(handle.fileno())
    source.unlink()
    fsync_dir(source.parent)
    return f"{zip_path}:{name}"
