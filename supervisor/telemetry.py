"""The supervisor's figures for metrics: counters it keeps, gauges it reads, one snapshot a tick.

The supervisor never serves HTTP. When ``metrics.listen`` is set it publishes a ``metrics``
event every ``metrics.interval_s`` carrying every figure (counters since the station
started, gauges read at that moment); the metrics worker (workers/metrics.py) turns the
latest one into the Prometheus text format. Counters live here, not in the worker, so a
restarted worker loses nothing.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

from wats_station.supervisor import trail

if TYPE_CHECKING:
    from wats_station.supervisor.config import Config
    from wats_station.supervisor.health import Health
    from wats_station.supervisor.pause import Pause
    from wats_station.supervisor.process import WorkerProcess
    from wats_station.supervisor.queue import ReportQueue


class Station(Protocol):
    """What the counters read of the running station (the service implements it; this module
    does not import the service, so the import graph has no circle)."""

    config: Config
    queue: ReportQueue
    state: Any  # a ServiceState
    workers: dict[str, WorkerProcess]
    uploads: Any  # server_state
    health: Health
    pause: Pause

    def publish(self, topic: str, data: dict[str, Any]) -> None: ...


# Upload round trips, in seconds: from handing a report to the uploader to its answer.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Telemetry:
    def __init__(self, station: Station) -> None:
        self.station = station
        self.files: Counter[tuple[str, str]] = Counter()  # (converter, outcome)
        self.uploads: Counter[str] = Counter()  # outcome class
        self.latency_counts = [0] * len(LATENCY_BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.reports_queued = 0
        self.loop_lag_s = 0.0
        self.next_due = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.station.config.metrics.listen)

    # -- what happens ------------------------------------------------------------------

    def observe(self, topic: str, data: dict[str, Any]) -> None:
        """Count what the station publishes (called for every event)."""
        if topic == "file.done":
            self.files[(data.get("converter", ""), "converted")] += 1
        elif topic == "file.failed":
            self.files[(data.get("converter", ""), "failed")] += 1
            self.station.health.file_failed()
        elif topic == "report.queued":
            self.reports_queued += 1

    def upload_answered(self, outcome: str, latency_s: float | None) -> None:
        """Count one upload's outcome; its round trip too, unless there was none (lost)."""
        self.uploads[outcome] += 1
        if latency_s is None:
            return
        self.latency_sum += latency_s
        self.latency_count += 1
        for index, bound in enumerate(LATENCY_BUCKETS):
            if latency_s <= bound:
                self.latency_counts[index] += 1
                break

    # -- publishing --------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if not self.enabled or now < self.next_due:
            return
        # The loop should wake right at next_due; how late it is measures the loop's lag.
        self.loop_lag_s = max(0.0, now - self.next_due) if self.next_due else 0.0
        self.next_due = now + self.station.config.metrics.interval_s
        self.station.publish("metrics", self.snapshot(now))

    def snapshot(self, now: float) -> dict[str, Any]:
        station = self.station
        queue = station.queue
        wall = time.time()
        oldest = trail.oldest_unsent(queue)
        waiting_since = trail.oldest_waiting_file(queue)
        cumulative, buckets = 0, []
        for bound, count in zip(LATENCY_BUCKETS, self.latency_counts, strict=True):
            cumulative += count
            buckets.append([bound, cumulative])
        return {
            "state": str(station.state),
            "interval_s": station.config.metrics.interval_s,
            "files": [
                {"converter": conv, "outcome": outcome, "n": n}
                for (conv, outcome), n in sorted(self.files.items())
            ],
            "files_waiting": queue.source_stats().get("recorded", 0),
            "oldest_waiting_s": None if waiting_since is None else max(0.0, wall - waiting_since),
            "reports": queue.stats(),
            "reports_queued": self.reports_queued,
            "uploads": dict(self.uploads),
            "upload_seconds": {
                "buckets": buckets,
                "sum": self.latency_sum,
                "count": self.latency_count,
            },
            "oldest_unsent_s": None if oldest is None else max(0.0, wall - oldest),
            "worker_restarts": {w.name: w.restarts for w in station.workers.values()},
            "workers_running": sum(w.pid is not None for w in station.workers.values()),
            "loop_lag_s": self.loop_lag_s,
            "queue_bytes": queue_bytes(queue.path),
            "health": station.health.evaluate(now),  # fresh, so it agrees with the counts
            "paused": station.pause.as_dict(),
            "server_state": str(station.uploads.server_state),
        }


def queue_bytes(path: Any) -> int:
    """The queue's size on disk: the database and its write-ahead log."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.stat(f"{path}{suffix}").st_size
        except OSError:
            pass
    return total
