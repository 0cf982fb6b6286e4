"""The contract between the station's processes: worker kinds, jobs and their answers, the
settings each worker kind is given, and event topics, each defined once and checked on arrival.

``protocol.py`` checks the envelope and body of every message; this module checks what those
bodies carry: a job's ``data`` for its kind (in the worker, when a JOB arrives), a job's answer
for its kind (in the supervisor, when JOB_DONE arrives) and a worker's settings (in the worker,
when WELCOME arrives). A mismatch is a ProtocolError with code ``bad_field`` naming the field.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from wats_station.ipc.protocol import ANY, ErrorCode, JobKind, ProtocolError, check_fields

FieldSpec = dict[str, tuple[tuple[type, ...], bool]]


class WorkerKind(StrEnum):
    WATCHER = "watcher"
    CONVERTER = "converter"
    UPLOADER = "uploader"
    METRICS = "metrics"  # serves /metrics over HTTP; sends only heartbeats, runs no jobs


# Workers stop in this order, so nothing is handed to a worker that is already gone: the
# watcher first (no new files), the converters next, the uploader, then metrics (which serves
# the station's health until the end).
STOP_ORDER = (WorkerKind.WATCHER, WorkerKind.CONVERTER, WorkerKind.UPLOADER, WorkerKind.METRICS)

# How a worker exits when it is not crashing: its supervisor is gone (orphaned), or it asks to
# be replaced (its heap is in doubt after a MemoryError, or it never got its settings).
EXIT_ORPHANED = 70
EXIT_REPLACE_ME = 75

# Which worker kind runs which job.
JOB_RUNNER: dict[JobKind, WorkerKind] = {
    JobKind.CONVERT: WorkerKind.CONVERTER,
    JobKind.VALIDATE: WorkerKind.CONVERTER,
    JobKind.UPLOAD: WorkerKind.UPLOADER,
    JobKind.PROBE: WorkerKind.UPLOADER,
}

# A report as a converter worker hands it over: validated WSJF, serialised to JSON bytes.
REPORT_FIELDS: FieldSpec = {"id": ((str,), True), "json": ((bytes,), True)}

UPLOAD_ANSWER: FieldSpec = {
    "outcome": ((str,), True),  # an UploadOutcome
    "http_status": ((int,), False),
    "message": ((str,), False),
    "retry_after_s": ((float, int), False),
    "clock_skew_s": ((float, int), False),  # the server's clock minus ours (health)
}

JOB_DATA: dict[JobKind, FieldSpec] = {
    JobKind.CONVERT: {
        "path": ((bytes,), True),
        "converter": ((str,), True),
        "source_id": ((int,), True),
    },
    # submit_report's raw request frame: decoding and validating a big report is worker work.
    JobKind.VALIDATE: {"frame": ((bytes,), True)},
    JobKind.UPLOAD: {
        "report_id": ((str,), True),
        "payload": ((bytes,), True),
        "attempts": ((int,), True),
    },
    JobKind.PROBE: {},
}

JOB_RESULT: dict[JobKind, FieldSpec] = {
    JobKind.CONVERT: {"reports": ((list,), True), "converter_version": ((str,), False)},
    # The request's other arguments come back checked, for the supervisor to act on.
    JobKind.VALIDATE: {
        "request_id": ((ANY,), False),
        "reports": ((list,), True),
        "priority": ((int,), False),
        "replace": ((bool,), False),
    },
    JobKind.UPLOAD: UPLOAD_ANSWER,
    JobKind.PROBE: UPLOAD_ANSWER,
}

WORKER_SETTINGS: dict[WorkerKind, FieldSpec] = {
    WorkerKind.WATCHER: {"watch": ((dict,), True), "converters": ((list,), True)},
    WorkerKind.CONVERTER: {
        "converters": ((list,), True),
        "converters_folder": ((str,), False),
        "station": ((dict,), True),
        "max_file_bytes": ((int,), True),
        "processes_file": ((str,), False),  # converters.processes: read by converters
    },
    WorkerKind.UPLOADER: {
        "server": ((dict,), True),
        "upload": ((dict,), True),
        "processes_file": ((str,), False),  # refreshed by the uploader
    },
    WorkerKind.METRICS: {"metrics": ((dict,), True)},
}


class EventTopic(StrEnum):
    """Every event topic. Worker events are ``worker.<name>`` (``worker_topic``)."""

    SERVICE_STATE = "service.state"
    SERVICE_RELOADED = "service.reloaded"
    WORKER = "worker."
    SERVER_STATE = "server.state"
    REPORT_QUEUED = "report.queued"
    REPORT_COMPLETED = "report.completed"
    REPORT_FAILED = "report.failed"
    REPORT_REPLACED = "report.replaced"
    FILE_DONE = "file.done"
    FILE_FAILED = "file.failed"
    FILE_RETRIED = "file.retried"
    HEALTH = "health"
    PAUSE = "pause"
    ALARM = "alarm"
    METRICS = "metrics"


def worker_topic(name: str) -> str:
    return f"{EventTopic.WORKER}{name}"


def check_job(kind: str, data: dict[str, Any]) -> JobKind:
    try:
        job_kind = JobKind(kind)
    except ValueError:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"unknown job kind {kind!r}") from None
    check_fields(f"{job_kind} job", JOB_DATA[job_kind], data)
    return job_kind


def check_result(kind: JobKind, data: dict[str, Any]) -> None:
    check_fields(f"{kind} job answer", JOB_RESULT[kind], data)
    if kind in (JobKind.CONVERT, JobKind.VALIDATE):
        for index, report in enumerate(data["reports"]):
            if not isinstance(report, dict):
                raise ProtocolError(ErrorCode.BAD_FIELD, f"{kind} report {index + 1} is not a map")
            check_fields(f"{kind} report {index + 1}", REPORT_FIELDS, report)


def check_settings(kind: str, settings: dict[str, Any]) -> WorkerKind:
    worker_kind = WorkerKind(kind)
    check_fields(f"{worker_kind} settings", WORKER_SETTINGS[worker_kind], settings)
    return worker_kind
