"""The control API: one registered object per command (name, arguments, help, handler).

``dispatch`` is the only place where a request becomes a reply: it looks the command up,
checks the arguments (an unknown or mistyped argument is an error, never ignored), runs
the handler, and turns any exception into an error reply with a code, never a traceback
on the wire and never a crash of the station.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from wats_station.converters.base import canonical_id
from wats_station.converters.wsjf import InvalidReport, serialise_submitted
from wats_station.ipc.contract import EventTopic
from wats_station.ipc.endpoints import InstancePaths
from wats_station.ipc.protocol import ErrorCode, JobKind, Message, reply_error, reply_ok
from wats_station.ipc.states import PauseTarget, ReportState
from wats_station.supervisor import files, trail
from wats_station.supervisor.config import (
    PRIORITY_RANGE,
    Config,
    ConfigError,
    config_to_dict,
    merge_config_changes,
    parse_config,
    write_config_file,
)
from wats_station.supervisor.conversions import Conversions, note_replacement
from wats_station.supervisor.guard import QueueGuard
from wats_station.supervisor.health import Health
from wats_station.supervisor.pause import Pause
from wats_station.supervisor.process import WorkerProcess
from wats_station.supervisor.queue import QueueError, QueueWriteError, ReportQueue
from wats_station.supervisor.uploads import Uploads

log = logging.getLogger("wats-station")


class Station(Protocol):
    """What the commands use of the running station, and all they may use: the service
    module implements it, and this module does not import the service (no import circle)."""

    paths: InstancePaths
    config: Config
    seq: int
    topic_seqs: dict[str, int]
    epoch: str
    queue: ReportQueue
    conversions: Conversions
    uploads: Uploads
    pause: Pause
    health: Health
    guard: QueueGuard

    @property
    def workers(self) -> dict[str, WorkerProcess]: ...
    def status(self) -> dict[str, Any]: ...
    def reload(self) -> dict[str, Any]: ...
    def publish(self, topic: str, data: dict[str, Any]) -> None: ...
    def stop_after_reply(self) -> None: ...
    def stop_worker(self, worker: WorkerProcess, reason: str) -> None: ...
    def start_worker(self, worker: WorkerProcess) -> None: ...
    def restart_worker(self, worker: WorkerProcess) -> None: ...


Handler = Callable[["Station", dict[str, Any]], Any]
ArgSpec = dict[str, tuple[tuple[type, ...], bool]]


class CommandError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    args: ArgSpec
    handler: Handler


COMMANDS: dict[str, Command] = {}


def command(
    name: str, help: str, /, **args: tuple[tuple[type, ...], bool]
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        if name in COMMANDS:
            raise ValueError(f"control command {name!r} is registered twice")
        COMMANDS[name] = Command(name, help, args, handler)
        return handler

    return register


def run(station: Any, name: str, args: dict[str, Any]) -> Any:
    """Run one command; raises CommandError for anything the caller did wrong."""
    cmd = COMMANDS.get(name)
    if cmd is None:
        raise CommandError(
            ErrorCode.UNKNOWN_COMMAND,
            f"unknown command {name!r}; known: {', '.join(sorted(COMMANDS))}",
        )
    check_args(cmd, args)
    return cmd.handler(station, args)


def dispatch(station: Station, request: Message) -> Message:
    name = request.body["command"]
    args = request.body.get("args") or {}
    try:
        return reply_ok(request.id, run(station, name, args))
    except CommandError as error:
        return reply_error(request.id, error.code, str(error))
    except QueueWriteError as error:  # the disk, not the request: say which
        return reply_error(request.id, ErrorCode.UNAVAILABLE, f"{name}: {error}")
    except RecursionError:
        return reply_error(request.id, ErrorCode.BAD_ARGUMENTS, f"{name}: nested too deeply")
    except UnicodeError as error:
        return reply_error(
            request.id, ErrorCode.BAD_ARGUMENTS, f"{name}: text that is not valid Unicode: {error}"
        )
    except Exception as error:
        log.exception("control command %r failed", name)
        return reply_error(
            request.id, ErrorCode.INTERNAL, f"{name} failed: {type(error).__name__}: {error}"
        )


def check_args(cmd: Command, args: dict[str, Any]) -> None:
    unknown = sorted(set(args) - set(cmd.args))
    if unknown:
        raise CommandError(
            ErrorCode.BAD_ARGUMENTS,
            f"{cmd.name}: unknown argument '{unknown[0]}' "
            f"(accepted: {', '.join(cmd.args) or 'none'})",
        )
    for arg, (types, required) in cmd.args.items():
        if arg not in args or args[arg] is None:
            if required:
                raise CommandError(
                    ErrorCode.BAD_ARGUMENTS, f"{cmd.name}: argument '{arg}' is required"
                )
            continue
        value = args[arg]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = " or ".join(t.__name__ for t in types)
            raise CommandError(
                ErrorCode.BAD_ARGUMENTS,
                f"{cmd.name}: argument '{arg}' must be {wanted}, not {type(value).__name__}",
            )


STR = ((str,), True)
OPT_STR = ((str,), False)
OPT_INT = ((int,), False)
OPT_BOOL = ((bool,), False)
OPT_NUM = ((int, float), False)
# The most rows one list call returns: enough for any screen, small enough for one reply.
MAX_LIST_LIMIT = 10_000
MAX_OFFSET = 2**63 - 1  # SQLite's largest integer


def _bounded(
    command: str, args: dict[str, Any], name: str, low: int, high: int, default: int
) -> int:
    value = args.get(name)
    if value is None:
        return default
    if not low <= value <= high:
        raise CommandError(
            ErrorCode.BAD_ARGUMENTS,
            f"{command}: {name} must be between {low} and {high}, got {value}",
        )
    return value


def _report_id(command: str, value: object) -> str:
    """A report id as the queue keys it (any UUID spelling is accepted)."""
    try:
        return canonical_id(value)  # type: ignore[arg-type]
    except ValueError:
        raise CommandError(
            ErrorCode.BAD_ARGUMENTS, f"{command}: {str(value)[:80]!r} is not a report id (a UUID)"
        ) from None


def _worker(station: Station, name: str) -> WorkerProcess:
    worker = station.workers.get(name)
    if worker is None:
        raise CommandError(
            ErrorCode.NOT_FOUND, f"no worker named {name!r}; workers: {', '.join(station.workers)}"
        )
    return worker


# -- the service --------------------------------------------------------------------------


@command("ping", "Answer at once; proves the station's loop is alive.")
def ping(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    return {"pong": True, "instance": station.paths.instance, "time": time.time()}


@command("get_status", "Service state, server link, queue counts and every worker.")
def get_status(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    return station.status()


@command("get_snapshot", "Status plus the event sequence number it matches (to resync events).")
def get_snapshot(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "seq": station.seq,
        "topics": dict(station.topic_seqs),
        "epoch": station.epoch,
        "status": station.status(),
    }


@command("get_config", "The running configuration, secrets masked.")
def get_config(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    return config_to_dict(station.config)


@command("stop", "Stop the station gracefully (the reply comes first).")
def stop(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    station.stop_after_reply()
    return {"stopping": True}


@command("restart", "Restart every worker gracefully, one kind at a time.")
def restart(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    for worker in station.workers.values():
        station.restart_worker(worker)
    return {"restarting": list(station.workers)}


@command("reload", "Re-read the config file; restart only the workers it affects.")
def reload(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    try:
        return station.reload()
    except ConfigError as error:
        raise CommandError(
            ErrorCode.BAD_ARGUMENTS, f"config refused, the running one stays: {error}"
        ) from None


# -- workers ------------------------------------------------------------------------------


@command("list_workers", "Every worker with its kind, pid, state, restarts and current jobs.")
def list_workers(station: Station, args: dict[str, Any]) -> list[dict[str, Any]]:
    now = time.monotonic()
    return [w.status(now) for w in station.workers.values()]


@command("restart_worker", "Restart one worker gracefully.", name=STR)
def restart_worker(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    worker = _worker(station, args["name"])
    station.restart_worker(worker)
    return {"name": worker.name, "state": str(worker.state)}


@command("stop_worker", "Stop one worker; it stays stopped until start_worker.", name=STR)
def stop_worker(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    worker = _worker(station, args["name"])
    station.stop_worker(worker, "stopped by command")
    return {"name": worker.name, "state": str(worker.state)}


@command("start_worker", "Start a stopped worker (also ends a crash-loop backoff).", name=STR)
def start_worker(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    worker = _worker(station, args["name"])
    station.start_worker(worker)
    return {"name": worker.name, "state": str(worker.state)}


# -- the queue ----------------------------------------------------------------------------


def _report_summary(report: Any, *, with_payload: bool = False) -> dict[str, Any]:
    summary = {
        "id": report.id,
        "state": str(report.state),
        "attempts": report.attempts,
        "next_attempt_at": report.next_attempt_at,
        "last_error": report.last_error,
        "last_http_status": report.last_http_status,
        "created_at": report.created_at,
        "updated_at": report.updated_at,
        "priority": report.priority,
    }
    if with_payload:
        summary["report"] = json.loads(report.payload)
    return summary


@command("get_queue_stats", "How many reports are in each state.")
def get_queue_stats(station: Station, args: dict[str, Any]) -> dict[str, int]:
    return station.queue.stats()


@command(
    "list_reports", "Queued reports, oldest first.", state=OPT_STR, limit=OPT_INT, offset=OPT_INT
)
def list_reports(station: Station, args: dict[str, Any]) -> list[dict[str, Any]]:
    state = args.get("state")
    if state is not None and state not in set(ReportState):
        raise CommandError(
            ErrorCode.BAD_ARGUMENTS,
            f"list_reports: no state {state!r}; states: {', '.join(ReportState)}",
        )
    limit = _bounded("list_reports", args, "limit", 1, MAX_LIST_LIMIT, 100)
    offset = _bounded("list_reports", args, "offset", 0, MAX_OFFSET, 0)
    reports = station.queue.list(ReportState(state) if state else None, limit, offset)
    return [_report_summary(r) for r in reports]


@command("get_report", "One report with its WSJF content.", id=STR)
def get_report(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    try:
        report = station.queue.get(_report_id("get_report", args["id"]))
    except QueueError as error:  # its payload is damaged: say so, not "internal"
        raise CommandError(ErrorCode.UNAVAILABLE, str(error)) from None
    if report is None:
        raise CommandError(ErrorCode.NOT_FOUND, f"no report with id {args['id']!r} in the queue")
    return _report_summary(report, with_payload=True)


@command(
    "retry_reports",
    "Queue reports for upload again now (by id, or every failed one).",
    ids=((list,), False),
    failed=OPT_BOOL,
)
def retry_reports(station: Station, args: dict[str, Any]) -> dict[str, int]:
    ids = [_report_id("retry_reports", i) for i in args.get("ids") or ()]
    if not ids and not args.get("failed"):
        raise CommandError(ErrorCode.BAD_ARGUMENTS, "retry_reports: give 'ids' or failed=true")
    unknown = sorted(set(ids) - set(station.queue.stored_payloads(ids)))
    if unknown:
        raise CommandError(
            ErrorCode.NOT_FOUND, f"retry_reports: no report {', '.join(unknown)} in the queue"
        )
    return {"retried": station.queue.retry(ids, failed=bool(args.get("failed")))}


@command(
    "clean_reports",
    "Delete completed (and, if asked, failed) reports.",
    completed=OPT_BOOL,
    failed=OPT_BOOL,
    older_than_s=OPT_NUM,
)
def clean_reports(station: Station, args: dict[str, Any]) -> dict[str, int]:
    removed = station.queue.clean(
        completed=args.get("completed", True) is not False,
        failed=bool(args.get("failed")),
        older_than_s=args.get("older_than_s"),
    )
    return {"removed": removed}


@command(
    "submit_report",
    "Queue one WSJF report; the reply comes after it is durably committed. A different report "
    "under the id of a queued or completed one is refused (conflict) unless replace=true.",
    report=((dict, str, bytes), True),
    replace=OPT_BOOL,
    priority=OPT_INT,
)
def submit_report(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    # Requests over a few hundred kilobytes never get here: a converter worker decodes and
    # validates them (JobKind.VALIDATE), so a big report cannot stall the station's loop; its
    # answer goes through queue_submitted all the same.
    try:
        report_id, payload = serialise_submitted(args["report"])
    except InvalidReport as error:
        raise CommandError(ErrorCode.INVALID_REPORT, f"invalid report: {error}") from None
    return queue_submitted(
        station,
        report_id,
        payload,
        priority=args.get("priority") or 0,
        replace=bool(args.get("replace")),
    )


def queue_submitted(
    station: Station, report_id: str, payload: bytes, *, priority: int, replace: bool
) -> dict[str, Any]:
    """Queue one validated report (``serialise_submitted``: canonical id, no NaN) for
    submit_report, decoded here or in a converter worker; durable when the turn commits."""
    low, high = PRIORITY_RANGE
    if not low <= priority <= high:
        raise CommandError(
            ErrorCode.BAD_ARGUMENTS,
            f"submit_report: priority must be between {low} and {high}, got {priority}",
        )
    guard = getattr(station, "guard", None)  # None: a queue command on a stopped station
    if guard is not None and (refusal := guard.refusal()):
        raise CommandError(ErrorCode.UNAVAILABLE, f"not taking new reports: {refusal}")
    stored = station.queue.stored_payloads([report_id]).get(report_id)
    if stored is not None and stored[1] == payload:
        return {"id": report_id, "state": str(stored[0]), "unchanged": True}
    if stored is not None:
        if not replace:
            raise CommandError(
                ErrorCode.CONFLICT,
                f"a different report with id {report_id} is already {stored[0]}; "
                "submit it with replace=true to replace it",
            )
        note_replacement(station.publish, report_id, stored[0], "submit_report")
    try:
        station.queue.enqueue([(report_id, payload)], priority=priority)
    except QueueWriteError as error:
        if guard is not None:
            guard.note(error)
        raise CommandError(ErrorCode.UNAVAILABLE, f"report not queued: {error}") from None
    uploads = getattr(station, "uploads", None)
    if uploads is not None:
        uploads.wake()
    station.publish(EventTopic.REPORT_QUEUED, {"id": report_id, "source": "submit_report"})
    return {"id": report_id, "state": str(ReportState.PENDING), "priority": priority}


@command("list_converters", "Every configured converter with its folders and file counts.")
def list_converters(station: Station, args: dict[str, Any]) -> list[dict[str, Any]]:
    return station.conversions.describe()


# -- operations: pause, health, files, the custody trail -----------------------------------
# These also run on a stopped station (scripts/offline.py), where `station` carries only the
# queue, the config and the pause; what needs the live station is looked up with getattr.


def _check_what(command_name: str, what: str) -> str:
    if what not in set(PauseTarget):
        raise CommandError(
            ErrorCode.BAD_ARGUMENTS,
            f"{command_name}: 'what' must be one of {', '.join(PauseTarget)}, not {what!r}",
        )
    return what


@command(
    "pause",
    "Pause uploads and/or conversions until resumed, across restarts; nothing is lost.",
    what=OPT_STR,
    by=OPT_STR,
)
def pause(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    what = _check_what("pause", args.get("what") or "all")
    by = args.get("by") or "unknown"
    paused = station.pause.pause(what, by)
    log.warning("%s paused by %s", what, by)
    station.publish("pause", {"action": "pause", "what": what, "by": by, "paused": paused})
    return {"paused": paused}


@command("resume", "Resume what pause stopped; queued work goes at the usual pace.", what=OPT_STR)
def resume(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    what = _check_what("resume", args.get("what") or "all")
    paused = station.pause.resume(what)
    log.warning("%s resumed", what)
    station.publish("pause", {"action": "resume", "what": what, "paused": paused})
    uploads = getattr(station, "uploads", None)
    if uploads is not None:
        uploads.wake()
    return {"paused": paused}


@command("get_health", "The health verdict, its reasons, and the inputs it was judged from.")
def get_health(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    return station.health.report()


def _converting(station: Station) -> dict[str, str]:
    return {
        os.fsdecode(job.data["path"]): job.data["converter"]
        for worker in getattr(station, "workers", {}).values()
        for job in worker.jobs.values()
        if job.kind == JobKind.CONVERT
    }


@command(
    "list_files",
    "Input files: waiting, converting, in error (with the reason) or done.",
    state=OPT_STR,
    converter=OPT_STR,
    limit=OPT_INT,
)
def list_files(station: Station, args: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        return files.list_files(
            station.queue,
            station.config,
            state=args.get("state"),
            converter=args.get("converter"),
            limit=args.get("limit") or 100,
            converting=_converting(station),
        )
    except files.FilesError as error:
        raise CommandError(ErrorCode.BAD_ARGUMENTS, str(error)) from None


@command(
    "retry_files",
    "Put quarantined files back through their converter (by name, or every one).",
    names=((list,), False),
    all_errors=OPT_BOOL,
    converter=OPT_STR,
)
def retry_files(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    try:
        result = files.retry(
            station.queue,
            station.config,
            names=[str(n) for n in args.get("names") or ()],
            all_errors=bool(args.get("all_errors")),
            converter=args.get("converter"),
        )
    except files.FilesError as error:
        raise CommandError(ErrorCode.NOT_FOUND, str(error)) from None
    for path in result["files"]:
        log.info("retrying %s", path)
        station.publish("file.retried", {"path": path})
    return result


@command("trace", "The custody trail of a file (path, name, sha256) or a report id.", target=STR)
def trace(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    found = trail.trace(station.queue, args["target"])
    if found is None:
        raise CommandError(
            ErrorCode.NOT_FOUND, f"the queue knows no file or report {args['target']!r}"
        )
    return found


@command(
    "save_config",
    "Change keys of the config file (a partial document), check, write it and reload.",
    changes=((dict,), True),
)
def save_config(station: Station, args: dict[str, Any]) -> dict[str, Any]:
    file = station.paths.config_file
    try:
        document = json.loads(file.read_text(encoding="utf-8")) if file.exists() else {}
    except (OSError, ValueError) as error:
        raise CommandError(ErrorCode.CONFLICT, f"{file}: cannot read: {error}") from None
    if not isinstance(document, dict):
        raise CommandError(ErrorCode.CONFLICT, f"{file}: is not a JSON object")
    merged = merge_config_changes(document, args["changes"])
    try:
        parse_config(merged, station.paths)
    except ConfigError as error:
        raise CommandError(ErrorCode.BAD_ARGUMENTS, f"config refused: {error}") from None
    write_config_file(file, merged)
    result = reload(station, {})
    return {"saved": str(file), **result}
