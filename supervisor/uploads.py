"""The upload scheduler: which queued report goes to the uploader when, and what an answer means.

The uploader worker only speaks HTTP and classifies the answer (UploadOutcome); every
decision that changes the queue is taken here, in the process that owns the database:

* accepted      -> completed.
* rejected      -> failed at once, keeping the server's message.
* unauthorized  -> the whole queue pauses (server state Unauthorized); the report goes back
                   without an attempt counted; a slow probe checks the token until it works
                   or a reload brings a new one.
* rate_limited  -> back without an attempt; the whole queue waits for Retry-After.
* server_error  -> back with an attempt counted and exponential backoff with jitter; after
                   ``max_retry_attempts`` the report is failed.
* offline       -> back without an attempt; the station is Offline and only probes
                   ``GET /api/App/Version`` with backoff, so a week offline costs nothing.
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Any

from wats_station.ipc.protocol import JobKind, UploadOutcome
from wats_station.ipc.states import ServerState
from wats_station.workers.crashpoints import crash_point

if TYPE_CHECKING:
    from wats_station.supervisor.process import Job
    from wats_station.supervisor.service import Station

log = logging.getLogger("wats-station")

PURGE_INTERVAL_S = 3600.0
RECHECK_S = 1.0


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with equal jitter: attempt 1 waits base/2..base, doubling to the cap."""
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return rng.uniform(delay / 2, delay)


class Uploads:
    def __init__(self, station: Station) -> None:
        self.station = station
        self.server_state = ServerState.UNKNOWN
        self.server_detail = ""
        self.paused_until = 0.0  # monotonic; 429 slows the whole queue
        self.probe_failures = 0
        self.next_probe_at = 0.0
        self.probe_in_flight = False
        self._next_check = 0.0
        self._next_purge = 0.0
        self._rng = random.Random()

    @property
    def settings(self) -> Any:
        return self.station.config.upload

    def wake(self) -> None:
        self._next_check = 0.0

    def config_changed(self) -> None:
        """A reload may have fixed the token or the URL: try again at once."""
        if self.server_state in (ServerState.UNAUTHORIZED, ServerState.OFFLINE):
            self.probe_failures = 0
            self.next_probe_at = 0.0
        self.wake()

    def next_wake(self, now: float) -> float:
        """When the loop must tick for us at the latest; answers from workers tick it anyway."""
        if self.station.pause.uploads:
            return now + RECHECK_S
        if not self.station.idle_workers("uploader"):
            return now + RECHECK_S
        if self.server_state in (ServerState.OFFLINE, ServerState.UNAUTHORIZED):
            return now + RECHECK_S if self.probe_in_flight else self.next_probe_at
        return max(self._next_check, self.paused_until)

    def tick(self, now: float) -> None:
        if now >= self._next_purge:
            self._purge(now)
        if self.station.pause.uploads:
            return  # reports stay queued; nothing is sent, not even a probe
        if self.server_state in (ServerState.OFFLINE, ServerState.UNAUTHORIZED):
            self._probe_if_due(now)
            return
        if now < self.paused_until or now < self._next_check:
            return
        self._dispatch(now)

    def _purge(self, now: float) -> None:
        self._next_purge = now + PURGE_INTERVAL_S
        removed = self.station.queue.purge_completed(self.settings.completed_retention_days * 86400)
        if removed:
            log.info(
                "purged %d completed report(s) older than %g days",
                removed,
                self.settings.completed_retention_days,
            )

    def _dispatch(self, now: float) -> None:
        queue = self.station.queue
        for worker in self.station.idle_workers("uploader"):
            claimed = queue.claim_due(worker.idle_slots)
            for report in claimed:
                data = {
                    "report_id": report.id,
                    "payload": report.payload,
                    "attempts": report.attempts,
                }
                if self.station.dispatch(worker, JobKind.UPLOAD, data, None) is None:
                    queue.release([report.id])
        # Sleep until the next retry is due. New reports wake us at once; looking again at
        # least every second also covers rows changed behind our back (queue retry, say).
        due_at = queue.next_due_at()
        wait = RECHECK_S if due_at is None else min(RECHECK_S, max(0.0, due_at - time.time()))
        self._next_check = now + wait

    def _probe_if_due(self, now: float) -> None:
        if self.probe_in_flight or now < self.next_probe_at:
            return
        for worker in self.station.idle_workers("uploader"):
            if self.station.dispatch(worker, JobKind.PROBE, {}, None) is not None:
                self.probe_in_flight = True
                return

    # -- answers ----------------------------------------------------------------------

    def job_done(self, job: Job, body: dict[str, Any]) -> None:
        if job.kind == JobKind.PROBE:
            self._probe_done(body)
            return
        self.wake()  # a slot is free, and the retry schedule may have changed
        report_id = job.data["report_id"]
        if not body["ok"]:  # the uploader itself failed: a bug, not the server's answer
            self.station.telemetry.upload_answered("uploader_error", time.monotonic() - job.started)
            error = (body.get("error") or {}).get("message", "uploader error")
            self._retry(report_id, job, f"uploader error: {error}", None, count_attempt=True)
            return
        data = body["data"]
        outcome = UploadOutcome(data["outcome"])
        self.station.telemetry.upload_answered(str(outcome), time.monotonic() - job.started)
        self._clock(data)
        status, message = data.get("http_status"), data.get("message") or ""
        queue = self.station.queue
        if outcome is UploadOutcome.ACCEPTED:
            crash_point("before-report-completed")
            queue.complete(report_id, status or 200)
            self._set_server(ServerState.ONLINE, "")
            self.station.publish("report.completed", {"id": report_id, "http_status": status})
        elif outcome is UploadOutcome.REJECTED:
            queue.fail(report_id, error=message, http_status=status)
            self._set_server(ServerState.ONLINE, "")
            log.warning("report %s rejected by the server (%s): %s", report_id, status, message)
            self.station.publish(
                "report.failed", {"id": report_id, "http_status": status, "error": message}
            )
        elif outcome is UploadOutcome.UNAUTHORIZED:
            queue.release([report_id])
            if self.server_state is not ServerState.UNAUTHORIZED:
                self._enter_probing(ServerState.UNAUTHORIZED, f"HTTP {status}: {message}")
        elif outcome is UploadOutcome.RATE_LIMITED:
            delay = float(data.get("retry_after_s") or self.settings.retry_base_s)
            queue.retry_later(
                report_id,
                delay_s=delay,
                error=f"HTTP 429: {message}",
                http_status=status,
                count_attempt=False,
            )
            self.paused_until = max(self.paused_until, time.monotonic() + delay)
            log.warning("server rate limit: pausing uploads for %.1f s", delay)
        elif outcome is UploadOutcome.SERVER_ERROR:
            self._set_server(ServerState.ONLINE, "")
            self._retry(report_id, job, f"HTTP {status}: {message}", status, count_attempt=True)
        else:  # OFFLINE
            queue.release([report_id])
            if self.server_state is not ServerState.OFFLINE:
                self._enter_probing(ServerState.OFFLINE, message)

    def _retry(
        self, report_id: str, job: Job, error: str, status: int | None, *, count_attempt: bool
    ) -> None:
        attempts = int(job.data.get("attempts", 0)) + 1
        queue = self.station.queue
        if attempts >= self.settings.max_retry_attempts:
            queue.fail(
                report_id, error=f"{error} (gave up after {attempts} attempts)", http_status=status
            )
            self.station.publish(
                "report.failed", {"id": report_id, "http_status": status, "error": error}
            )
            return
        delay = backoff(attempts, self.settings.retry_base_s, self.settings.retry_cap_s, self._rng)
        queue.retry_later(
            report_id, delay_s=delay, error=error, http_status=status, count_attempt=count_attempt
        )

    def job_lost(self, job: Job, reason: str) -> None:
        """The uploader died with this job: nothing is known of the answer, so send it again."""
        if job.kind == JobKind.PROBE:
            self.probe_in_flight = False
            return
        self.station.telemetry.upload_answered("lost", None)
        self.station.queue.release([job.data["report_id"]])
        self.wake()

    def _clock(self, data: dict[str, Any]) -> None:
        if data.get("clock_skew_s") is not None:
            self.station.health.clock_skew_s = float(data["clock_skew_s"])

    def _probe_done(self, body: dict[str, Any]) -> None:
        self.probe_in_flight = False
        data = body.get("data") or {}
        self._clock(data)
        outcome = data.get("outcome") if body["ok"] else UploadOutcome.OFFLINE
        if outcome == UploadOutcome.ACCEPTED:
            log.info(
                "server %s answers again (version %s)",
                self.station.config.server.url,
                data.get("message"),
            )
            self.probe_failures = 0
            self._set_server(ServerState.ONLINE, "")
            self.wake()
        elif outcome == UploadOutcome.UNAUTHORIZED:
            self._enter_probing(ServerState.UNAUTHORIZED, data.get("message", ""))
        else:
            self._enter_probing(ServerState.OFFLINE, data.get("message", ""))

    def _enter_probing(self, state: ServerState, detail: str) -> None:
        self.probe_failures += 1
        if state is ServerState.UNAUTHORIZED:
            delay = self.settings.probe_cap_s  # a person has to fix the token: probe slowly
        else:
            delay = backoff(
                self.probe_failures,
                self.settings.probe_base_s,
                self.settings.probe_cap_s,
                self._rng,
            )
        self.next_probe_at = time.monotonic() + delay
        self._set_server(state, detail)

    def _set_server(self, state: ServerState, detail: str) -> None:
        if state is self.server_state:
            return
        old, self.server_state, self.server_detail = self.server_state, state, detail
        level = logging.INFO if state is ServerState.ONLINE else logging.WARNING
        log.log(level, "server %s: %s -> %s %s", self.station.config.server.url, old, state, detail)
        self.station.publish(
            "server.state", {"state": str(state), "from": str(old), "detail": detail}
        )
