"""Named crash points for fault-injection testing (for tests only; never set in production).

``WATS_STATION_CRASH_AT`` holds comma-separated point names, each optionally qualified,
e.g. ``worker-start:uploader`` or ``after-report-committed``. A process that reaches a
listed point kills itself with SIGKILL, exactly as a power cut or an OOM kill would, so a
test can prove that every promise holds across a crash at that instant.

A point may end in ``@FILE``: then it fires only if FILE does not exist yet, and creates it
first, so it fires once across restarts (``after-post-sent@/tmp/x/once``).
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "WATS_STATION_CRASH_AT"

# Every point, in the order a file and its report pass them, and the process it kills.
POINTS = {
    "service-started": "supervisor: sockets bound, queue open, before the first tick",
    "worker-start": "any worker (qualify with its kind): before it says hello",
    "after-file-recorded": "supervisor: the file is fingerprinted and recorded, not converted",
    "before-convert": "converter (qualify with the converter name): the job is received",
    "after-report-committed": "supervisor: reports committed with the file marked converted; "
    "the file is not yet moved",
    "after-post-action": "supervisor: the file is moved/deleted/archived, not yet marked done",
    "before-post": "uploader: the report is claimed and handed over, not yet POSTed",
    "after-post-answered": "uploader: the server stored the report; its answer is not passed on",
    "before-report-completed": "supervisor: the answer arrived, the report is not yet completed",
}


def _armed(entry: str) -> bool:
    _, _, once_file = entry.partition("@")
    if not once_file:
        return True
    try:
        os.close(os.open(once_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True


def crash_point(name: str, qualifier: str = "") -> None:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    if name not in POINTS:
        raise ValueError(f"crash point {name!r} is not in crashpoints.POINTS")
    wanted = {name, f"{name}:{qualifier}"} if qualifier else {name}
    for entry in spec.split(","):
        point = entry.strip().partition("@")[0]
        if point in wanted and _armed(entry.strip()):
            os.kill(os.getpid(), signal.SIGKILL)
