"""The station's health verdict, judged from its pipeline rather than from process liveness.

``gather`` reads the inputs (cheap: O(1) queue queries, no scans); ``judge`` turns them into
``ok``, ``degraded`` or ``failing`` with one reason per check that is not ok, using the
thresholds of the ``health`` and ``admission`` config sections. ``Health.tick`` does both
every ``health.interval_s`` and announces a change as a ``health`` event; the verdict also
goes into ``get_status`` and systemd's STATUS line.
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from wats_station.ipc.states import HealthVerdict, ServerState, WorkerState
from wats_station.supervisor import trail
from wats_station.supervisor.config import AdmissionSettings, HealthSettings

if TYPE_CHECKING:
    from wats_station.supervisor.config import Config
    from wats_station.supervisor.guard import QueueGuard
    from wats_station.supervisor.pause import Pause
    from wats_station.supervisor.process import WorkerProcess
    from wats_station.supervisor.queue import ReportQueue


class Station(Protocol):
    """What the health verdict reads of the running station (the service implements it; this
    module does not import the service, so the import graph has no circle)."""

    config: Config
    queue: ReportQueue
    workers: dict[str, WorkerProcess]
    uploads: Any  # server_state, server_detail, paused_until
    pause: Pause
    guard: QueueGuard

    def publish(self, topic: str, data: dict[str, Any]) -> None: ...


MB = 1024 * 1024
# The worker kinds without which results stop flowing: all of a kind crash-looping is failing.
PIPELINE_KINDS = ("watcher", "converter", "uploader")
ORDER = (HealthVerdict.OK, HealthVerdict.DEGRADED, HealthVerdict.FAILING)


def worst(verdicts: list[HealthVerdict]) -> HealthVerdict:
    return max(verdicts, key=ORDER.index, default=HealthVerdict.OK)


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _by_threshold(
    value: float | None, degraded: float, failing: float | None = None
) -> HealthVerdict:
    if value is None or value < degraded:
        return HealthVerdict.OK
    return (
        HealthVerdict.FAILING
        if failing is not None and value >= failing
        else HealthVerdict.DEGRADED
    )


def judge(
    inputs: dict[str, Any], settings: HealthSettings, admission: AdmissionSettings
) -> dict[str, Any]:
    """The verdict and its reasons for these inputs (see ``gather`` for their names)."""
    reasons: list[dict[str, str]] = []

    def check(name: str, verdict: HealthVerdict, message: str) -> None:
        if verdict is not HealthVerdict.OK:
            reasons.append({"check": name, "verdict": str(verdict), "message": message})

    age = inputs["oldest_unsent_s"]
    check(
        "unsent",
        _by_threshold(age, settings.unsent_degraded_s, settings.unsent_failing_s),
        f"the oldest undelivered report is {duration(age or 0)} old "
        f"({inputs['unsent']} undelivered)",
    )
    waiting, oldest = inputs["files_waiting"], inputs["oldest_waiting_s"]
    verdict = worst(
        [
            _by_threshold(oldest, settings.waiting_degraded_s, settings.waiting_failing_s),
            _by_threshold(waiting, settings.waiting_files_degraded),
        ]
    )
    check(
        "files",
        verdict,
        f"{waiting} file(s) waiting to be converted, the oldest for {duration(oldest or 0)}",
    )
    failures = inputs["conversion_failures"]
    check(
        "conversions",
        _by_threshold(failures, settings.failures_degraded, settings.failures_failing),
        f"{failures} file(s) quarantined in the last {duration(settings.failures_window_s)}",
    )
    looping = inputs["crash_looping"]
    dead_kinds = [
        kind for kind, names in inputs["workers_by_kind"].items() if names and names <= looping
    ]
    check(
        "workers",
        HealthVerdict.FAILING
        if any(kind in PIPELINE_KINDS for kind in dead_kinds)
        else (HealthVerdict.DEGRADED if looping else HealthVerdict.OK),
        f"crash-looping: {', '.join(sorted(looping))}",
    )
    _check_server(inputs, check)
    free = inputs["free_mb"]
    check(
        "disk",
        HealthVerdict.FAILING
        if free < admission.stop_below_mb
        else (HealthVerdict.DEGRADED if free < admission.resume_above_mb else HealthVerdict.OK),
        f"{free:.0f} MB free on the queue's disk (no new files below "
        f"{admission.stop_below_mb:g} MB, taken again above {admission.resume_above_mb:g} MB)",
    )
    skew = inputs["clock_skew_s"]
    check(
        "clock",
        _by_threshold(None if skew is None else abs(skew), settings.clock_skew_s),
        f"this station's clock is {abs(skew or 0):.0f} s "
        f"{'ahead of' if (skew or 0) > 0 else 'behind'} the server's",
    )
    for message in inputs["queue_alarms"].values():  # the queue file left us, or cannot be written
        check("queue", HealthVerdict.FAILING, message)
    if inputs["paused"]:
        check("paused", HealthVerdict.DEGRADED, inputs["paused"])
    return {
        "verdict": str(worst([HealthVerdict(r["verdict"]) for r in reasons])),
        "reasons": reasons,
    }


def _check_server(inputs: dict[str, Any], check: Any) -> None:
    state, detail = inputs["server_state"], inputs["server_detail"]
    suffix = f": {detail}" if detail else ""
    if state == ServerState.OFFLINE:
        check("server", HealthVerdict.DEGRADED, f"the server cannot be reached{suffix}")
    elif state == ServerState.UNAUTHORIZED:
        check("server", HealthVerdict.FAILING, f"the server refuses our token{suffix}")
    elif state == ServerState.NOT_WATS:
        check("server", HealthVerdict.FAILING, f"the server does not answer like WATS{suffix}")
    elif inputs["rate_limited_s"] > 0:
        check(
            "server",
            HealthVerdict.DEGRADED,
            f"the server limits our rate; uploads wait {inputs['rate_limited_s']:.0f} s",
        )


class Health:
    def __init__(self, station: Station) -> None:
        self.station = station
        self.current: dict[str, Any] = {"verdict": str(HealthVerdict.OK), "reasons": []}
        self.inputs: dict[str, Any] = {}
        self.clock_skew_s: float | None = None  # last seen by the uploader, local minus server
        self.failures: deque[float] = deque()  # monotonic times of quarantined files
        self.next_due = 0.0

    def file_failed(self) -> None:
        self.failures.append(time.monotonic())

    def gather(self, now: float) -> dict[str, Any]:
        station = self.station
        queue = station.queue
        wall = time.time()
        window = station.config.health.failures_window_s
        while self.failures and self.failures[0] < now - window:
            self.failures.popleft()
        counts = queue.stats()
        oldest = trail.oldest_unsent(queue)
        waiting_since = trail.oldest_waiting_file(queue)
        by_kind: dict[str, set[str]] = {}
        for worker in station.workers.values():
            if worker.wanted:
                by_kind.setdefault(worker.kind, set()).add(worker.name)
        uploads = station.uploads
        return {
            "unsent": counts.get("pending", 0) + counts.get("processing", 0),
            "oldest_unsent_s": None if oldest is None else max(0.0, wall - oldest),
            "files_waiting": queue.source_stats().get("recorded", 0),
            "oldest_waiting_s": None if waiting_since is None else max(0.0, wall - waiting_since),
            "conversion_failures": len(self.failures),
            "crash_looping": {
                w.name for w in station.workers.values() if w.state is WorkerState.CRASH_LOOPING
            },
            "workers_by_kind": by_kind,
            "server_state": str(uploads.server_state),
            "server_detail": uploads.server_detail,
            "rate_limited_s": max(0.0, uploads.paused_until - now),
            "free_mb": shutil.disk_usage(queue.path.parent).free / MB,
            "clock_skew_s": self.clock_skew_s,
            "paused": station.pause.describe(),
            "queue_alarms": {
                a["alarm"]: a["message"] for a in station.guard.status() if a["alarm"] != "disk_low"
            },
        }

    def evaluate(self, now: float) -> dict[str, Any]:
        self.inputs = self.gather(now)
        config = self.station.config
        verdict = judge(self.inputs, config.health, config.admission)
        if verdict != self.current:
            old, self.current = self.current, verdict
            self.station.publish("health", {**verdict, "from": old["verdict"]})
        return verdict

    def tick(self, now: float) -> None:
        if now >= self.next_due:
            self.next_due = now + self.station.config.health.interval_s
            self.evaluate(now)

    def report(self) -> dict[str, Any]:
        """``get_health``: the verdict, its reasons and the inputs it was judged from."""
        verdict = self.evaluate(time.monotonic())
        inputs = {
            **self.inputs,
            "crash_looping": sorted(self.inputs["crash_looping"]),
            "workers_by_kind": {k: sorted(v) for k, v in self.inputs["workers_by_kind"].items()},
        }
        return {**verdict, "inputs": inputs}
