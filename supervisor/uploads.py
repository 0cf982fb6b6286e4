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
* answer_lost   -> the request went out and its answer was lost (the server may have stored
                   it): back with an attempt counted and backoff, like a 5xx; a working
                   version probe does not make it due again.
* not_wats      -> a 2xx that is not WATS's receipt: never completed; back with an attempt
                   counted and backoff, and the server is NotWATS: only the version probe
                   runs (it too must answer like WATS) until the server answers like WATS.

A report whose stored payload is damaged is failed by the queue when claimed, with the reason.
If the answer to an upload cannot be written (the disk is full, the turn's commit failed), the
report is remembered and put back to pending when the queue guard sees writes work again;
reports claimed in a turn that was rolled back are forgotten (they are pending again).
While uploads are paused nothing is sent, not even a probe.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from wats_station.ipc.contract import EventTopic, WorkerKind
from wats_station.ipc.protocol import JobKind, UploadOutcome
from wats_station.ipc.states import ServerState
from wats_station.supervisor.config import Config, UploadSettings
from wats_station.supervisor.fleet import Fleet
from wats_station.supervisor.process import Job
from wats_station.supervisor.queue import QueuedReport, QueueWriteError, ReportQueue
from wats_station.workers.crashpoints import crash_point

log = logging.getLogger("wats-station")

PURGE_INTERVAL_S = 3600.0
RECHECK_S = 1.0
CLAIM_BATCH_PER_SLOT = 2
PROBING = (ServerState.OFFLINE, ServerState.UNAUTHORIZED, ServerState.NOT_WATS)


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with equal jitter: attempt 1 waits base/2..base, doubling to the cap."""
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return rng.uniform(delay / 2, delay)


class Uploads:
    def __init__(
        self,
        queue: ReportQueue,
        config: Callable[[], Config],
        fleet: Fleet,
        publish: Callable[[str, dict[str, Any]], None],
        *,
        paused: Callable[[], bool],
        answered: Callable[[str, float | None], None],
        clock_skew: Callable[[float], None],
        on_rollback: Callable[[Callable[[], None]], None],
    ) -> None:
        self.queue = queue
        self.config = config
        self.fleet = fleet
        self.publish = publish
        self.paused = paused  # uploads paused by an operator
        self.answered = answered  # telemetry: an upload's outcome and latency
        self.clock_skew = clock_skew  # health: the server's clock minus ours
        self.on_rollback = on_rollback  # undo memory if the turn's writes are rolled back
        self.unrecorded: set[str] = set()  # answered, but the queue could not record it
        self.server_state = ServerState.UNKNOWN
        self.server_detail = ""
        self.paused_until = 0.0  # monotonic; 429 slows the whole queue
        self.probe_failures = 0
        self.next_probe_at = 0.0
        self.probe_in_flight = False
        self._next_check = 0.0
        self._next_purge = 0.0
        self._rng = random.Random()
        self._claimed: deque[QueuedReport] = deque()

    @property
    def settings(self) -> UploadSettings:
        return self.config().upload

    def wake(self) -> None:
        self._next_check = 0.0

    def config_changed(self) -> None:
        """A reload may have fixed the token or the URL: try again at once."""
        if self.server_state in PROBING:
            self.probe_failures = 0
            self.next_probe_at = 0.0
        self.wake()

    def next_wake(self, now: float) -> float:
        """When the loop must tick for us at the latest; answers from workers tick it anyway."""
        if self.paused():
            return now + RECHECK_S
        if not self.fleet.idle(WorkerKind.UPLOADER):
            return now + RECHECK_S
        if self.server_state in PROBING:
            return now + RECHECK_S if self.probe_in_flight else self.next_probe_at
        return max(self._next_check, self.paused_until)

    def tick(self, now: float) -> None:
        if self._claimed and not self.fleet.running(WorkerKind.UPLOADER):
            self._release_claimed()  # no uploader to take them for now
        if now >= self._next_purge:
            self._purge(now)
        if self.paused():
            self._release_claimed()
            return  # reports stay queued; nothing is sent, not even a probe
        if self.server_state in PROBING:
            self._probe_if_due(now)
            return
        if now < self.paused_until or now < self._next_check:
            return
        self._dispatch(now)

    def _purge(self, now: float) -> None:
        self._next_purge = now + PURGE_INTERVAL_S
        removed = self.queue.purge_completed(self.settings.completed_retention_days * 86400)
        if removed:
            log.info(
                "purged %d completed report(s) older than %g days",
                removed,
                self.settings.completed_retention_days,
            )

    def _dispatch(self, now: float) -> None:
        held_back = False
        for worker in self.fleet.idle(WorkerKind.UPLOADER):
            slots = worker.idle_slots
            if len(self._claimed) < slots:
                # Claim a batch ahead: one claim (a window read and an update) then serves
                # several answers instead of one. A claim holds one priority, so fewer than
                # wanted may come while a due report waits behind a higher priority in flight.
                wanted = CLAIM_BATCH_PER_SLOT * worker.capacity - len(self._claimed)
                claimed = self.queue.claim_due(wanted, self._damaged)
                held_back = held_back or len(self._claimed) + len(claimed) < slots
                self._forget_on_rollback(claimed)
                self._claimed.extend(claimed)
            while slots and self._claimed:
                report = self._claimed.popleft()
                data = {
                    "report_id": report.id,
                    "payload": report.payload,
                    "attempts": report.attempts,
                }
                if self.fleet.dispatch(worker, JobKind.UPLOAD, data, None) is None:
                    self._claimed.appendleft(report)
                    break
                # Rolled back, the job never went out: the report is claimed ahead again
                # (or forgotten, if it was claimed in the same turn).
                self.on_rollback(partial(self._not_dispatched, report))
                slots -= 1
        if self._claimed:
            self._next_check = now + RECHECK_S  # an answer frees a slot and wakes us
            return
        # Sleep until the next retry is due. New reports wake us at once; looking again at
        # least every second also covers rows changed behind our back (queue retry, say).
        # A report that is due but was not claimed waits for a higher priority in flight: the
        # answer to that upload wakes us, so do not spin meanwhile.
        due_at = self.queue.next_due_at()
        if due_at is None or (held_back and due_at <= time.time()):
            wait = RECHECK_S
        else:
            wait = min(RECHECK_S, max(0.0, due_at - time.time()))
        self._next_check = now + wait

    def _forget_on_rollback(self, claimed: list[QueuedReport]) -> None:
        """Claimed in a turn whose writes were rolled back: they are pending again, so this
        scheduler forgets them (their jobs never went out)."""
        if claimed:
            ids = {report.id for report in claimed}
            self.on_rollback(lambda: self._forget(ids))

    def _not_dispatched(self, report: QueuedReport) -> None:
        self._claimed.appendleft(report)
        self.wake()

    def _forget(self, ids: set[str]) -> None:
        self._claimed = deque(report for report in self._claimed if report.id not in ids)
        self.wake()

    def _damaged(self, report_id: str, reason: str) -> None:
        log.error("report %s failed: %s", report_id, reason)
        self.publish(
            EventTopic.REPORT_FAILED, {"id": report_id, "http_status": None, "error": reason}
        )

    def _release_claimed(self) -> None:
        """Claimed ahead but not sent: back to pending, as if never claimed."""
        if self._claimed:
            ids = [report.id for report in self._claimed]
            self._claimed.clear()
            self._unrecorded_on_rollback(ids)
            try:
                self.queue.release(ids)
            except QueueWriteError:
                self.unrecorded.update(ids)  # still processing in the queue: resume() frees them
                raise

    def _unrecorded_on_rollback(self, ids: list[str]) -> None:
        """What this turn wrote of these reports may be rolled back: then they are still
        processing in the queue, and ``resume`` puts them back to pending."""
        self.on_rollback(lambda: self.unrecorded.update(ids))

    def resume(self) -> None:
        """Writes work again: answers that could not be recorded are sent again (same id)."""
        if self.unrecorded:
            ids = sorted(self.unrecorded)
            self._unrecorded_on_rollback(ids)
            self.unrecorded.clear()
            released = self.queue.release(ids)
            log.info("%d report(s) whose upload could not be recorded are queued again", released)
        self.wake()

    def _probe_if_due(self, now: float) -> None:
        if self.probe_in_flight or now < self.next_probe_at:
            return
        for worker in self.fleet.idle(WorkerKind.UPLOADER):
            if self.fleet.dispatch(worker, JobKind.PROBE, {}, None) is not None:
                self.probe_in_flight = True
                self.on_rollback(self._probe_not_sent)
                return

    def _probe_not_sent(self) -> None:
        self.probe_in_flight = False

    # -- answers ----------------------------------------------------------------------

    def job_done(self, job: Job, body: dict[str, Any]) -> None:
        if job.kind == JobKind.PROBE:
            self._probe_done(body)
            return
        self.wake()  # a slot is free, and the retry schedule may have changed
        report_id = job.data["report_id"]
        self._unrecorded_on_rollback([report_id])
        try:
            self._record_answer(report_id, job, body)
        except QueueWriteError:
            self.unrecorded.add(report_id)  # still processing in the queue: resume() frees it
            raise

    def _record_answer(self, report_id: str, job: Job, body: dict[str, Any]) -> None:
        if not body["ok"]:  # the uploader itself failed: a bug, not the server's answer
            self.answered("uploader_error", time.monotonic() - job.started)
            error = (body.get("error") or {}).get("message", "uploader error")
            self._retry(report_id, job, f"uploader error: {error}", None, count_attempt=True)
            return
        data = body["data"]
        outcome = UploadOutcome(data["outcome"])
        self.answered(str(outcome), time.monotonic() - job.started)
        self._clock(data)
        status, message = data.get("http_status"), data.get("message") or ""
        queue = self.queue
        if outcome is UploadOutcome.ACCEPTED:
            crash_point("before-report-completed")
            queue.complete(report_id, status or 200)
            self._set_server(ServerState.ONLINE, "")
            self.publish(EventTopic.REPORT_COMPLETED, {"id": report_id, "http_status": status})
        elif outcome is UploadOutcome.REJECTED:
            queue.fail(report_id, error=message, http_status=status)
            self._set_server(ServerState.ONLINE, "")
            log.warning("report %s rejected by the server (%s): %s", report_id, status, message)
            self.publish(
                EventTopic.REPORT_FAILED, {"id": report_id, "http_status": status, "error": message}
            )
        elif outcome is UploadOutcome.UNAUTHORIZED:
            queue.release([report_id])
            if self.server_state is not ServerState.UNAUTHORIZED:
                self._enter_probing(ServerState.UNAUTHORIZED, f"HTTP {status}: {message}")
        elif outcome is UploadOutcome.RATE_LIMITED:
            self._release_claimed()
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
        elif outcome is UploadOutcome.ANSWER_LOST:
            self._retry(report_id, job, message, None, count_attempt=True)
            log.warning("report %s: %s", report_id, message)
        elif outcome is UploadOutcome.NOT_WATS:
            self._retry(report_id, job, message, status, count_attempt=True)
            if self.server_state is not ServerState.NOT_WATS:
                self._enter_probing(ServerState.NOT_WATS, message)
        else:  # OFFLINE
            queue.release([report_id])
            if self.server_state is not ServerState.OFFLINE:
                self._enter_probing(ServerState.OFFLINE, message)

    def _retry(
        self, report_id: str, job: Job, error: str, status: int | None, *, count_attempt: bool
    ) -> None:
        attempts = int(job.data.get("attempts", 0)) + 1
        queue = self.queue
        if attempts >= self.settings.max_retry_attempts:
            queue.fail(
                report_id, error=f"{error} (gave up after {attempts} attempts)", http_status=status
            )
            self.publish(
                EventTopic.REPORT_FAILED, {"id": report_id, "http_status": status, "error": error}
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
        self.answered("lost", None)
        report_id = job.data["report_id"]
        self._unrecorded_on_rollback([report_id])
        try:
            self.queue.release([report_id])
        except QueueWriteError:
            self.unrecorded.add(report_id)
            raise
        self.wake()

    def _clock(self, data: dict[str, Any]) -> None:
        if data.get("clock_skew_s") is not None:
            self.clock_skew(float(data["clock_skew_s"]))

    def _probe_done(self, body: dict[str, Any]) -> None:
        self.probe_in_flight = False
        data = body.get("data") or {}
        self._clock(data)
        outcome = data.get("outcome") if body["ok"] else UploadOutcome.OFFLINE
        if outcome == UploadOutcome.ACCEPTED:
            log.info(
                "server %s answers again (version %s)",
                self.config().server.url,
                data.get("message"),
            )
            self.probe_failures = 0
            self._set_server(ServerState.ONLINE, "")
            self.wake()
        elif outcome == UploadOutcome.UNAUTHORIZED:
            self._enter_probing(ServerState.UNAUTHORIZED, data.get("message", ""))
        elif outcome == UploadOutcome.NOT_WATS:
            self._enter_probing(ServerState.NOT_WATS, data.get("message", ""))
        else:
            self._enter_probing(ServerState.OFFLINE, data.get("message", ""))

    def _enter_probing(self, state: ServerState, detail: str) -> None:
        self._release_claimed()
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
        log.log(level, "server %s: %s -> %s %s", self.config().server.url, old, state, detail)
        self.publish(
            EventTopic.SERVER_STATE, {"state": str(state), "from": str(old), "detail": detail}
        )
