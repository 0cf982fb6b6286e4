"""Every state name a station reports: of its service, its workers, its server link and its reports.

This module must not depend on anything outside the standard library: the supervisor,
the workers, the CLI and GUIs all import it.
"""

from enum import StrEnum


class ServiceState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


class WorkerState(StrEnum):
    STARTING = "starting"  # spawned, has not said hello yet
    RUNNING = "running"  # said hello and keeps sending heartbeats
    BACKOFF = "backoff"  # exited; waiting to be started again
    CRASH_LOOPING = "crash-looping"  # keeps dying; retried at the capped interval
    STOPPING = "stopping"  # asked to exit
    STOPPED = "stopped"  # not running, and nobody wants it to


class ServerState(StrEnum):
    UNKNOWN = "Unknown"
    ONLINE = "Online"
    OFFLINE = "Offline"
    UNAUTHORIZED = "Unauthorized"
    NOT_WATS = "NotWATS"  # it answers, but not like WATS (a proxy, a portal, a wrong URL)


class ReportState(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


class SourceState(StrEnum):
    """Where a watched input file is in its life."""

    RECORDED = "recorded"  # seen and fingerprinted, not yet converted
    CONVERTED = "converted"  # its reports are committed; the post action is due
    DONE = "done"  # post action performed (moved, deleted, archived or kept)
    FAILED = "failed"  # moved to the error folder with a reason beside it


class HealthVerdict(StrEnum):
    """The station's health, judged from its pipeline (supervisor/health.py), worst last."""

    OK = "ok"
    DEGRADED = "degraded"  # working, but a person should look
    FAILING = "failing"  # results are not getting through, or soon will not


class PauseTarget(StrEnum):
    """What an operator can pause: uploads, conversions, or both ("all")."""

    ALL = "all"
    UPLOADS = "uploads"
    CONVERSIONS = "conversions"
