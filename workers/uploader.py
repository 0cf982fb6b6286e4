"""The uploader worker: POSTs reports to the WATS server and classifies each answer.

It keeps no state about reports: the supervisor sends one job per report and decides what
an answer means for the queue. A 2xx counts as accepted only when its body is what WATS
answers for a stored report (JSON naming the report's id, FORMATS.md: ``{"ID", "uuid",
"Report_ID"}``, or a list of one); anything else is ``not_wats``. A request that was sent and
then lost its answer (reset, read timeout) is ``answer_lost``, not ``offline``: the server may
have stored it, so it is retried with backoff like any failure. Each pool thread has its own
``requests.Session`` (Sessions are not documented as thread-safe), so connections are reused
per thread.

While the server answers, it also refreshes the station's cached list of the server's processes
(operation types), which converters read to turn an operation type name into its code.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import requests
import urllib3

from wats_station.converters.processes import (
    PROCESSES_PATH,
    REFRESH_S,
    cache_age_s,
    compact_processes,
    store_processes,
)
from wats_station.ipc.contract import WorkerKind
from wats_station.ipc.protocol import JobKind, UploadOutcome
from wats_station.workers.base import JobError, Worker, run_worker
from wats_station.workers.crashpoints import crash_point

REPORT_PATH = "/api/Report/WSJF"
VERSION_PATH = "/api/App/Version"
MAX_MESSAGE_CHARS = 2000
SHOWN_BODY_CHARS = 200
RECEIPT_ID_KEYS = ("ID", "id", "uuid")  # as the pyWATS client reads InsertReportResult

log = logging.getLogger(__name__)
RETRY_S = 60.0  # how soon to try again for a process list the server did not give


def classify(status: int) -> UploadOutcome:
    if 200 <= status < 300:
        return UploadOutcome.ACCEPTED
    if status in (400, 409, 413, 422):
        return UploadOutcome.REJECTED
    if status in (401, 403):
        return UploadOutcome.UNAUTHORIZED
    if status == 429:
        return UploadOutcome.RATE_LIMITED
    return UploadOutcome.SERVER_ERROR


def server_message(response: requests.Response) -> str:
    """The server's own words: WATS puts them in ``Message``; otherwise the body text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("Message", "message", "error", "ExceptionMessage"):
            if isinstance(body.get(key), str):
                return body[key][:MAX_MESSAGE_CHARS]
    if isinstance(body, str):
        return body[:MAX_MESSAGE_CHARS]
    return response.text[:MAX_MESSAGE_CHARS] or response.reason or ""


def same_id(value: object, report_id: str) -> bool:
    try:
        return isinstance(value, str) and uuid.UUID(value) == uuid.UUID(report_id)
    except ValueError:
        return False


def receipt_problem(response: requests.Response, report_id: str) -> str | None:
    """None if a 2xx answer is WATS's receipt for this report; else what came back instead."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, list) and body:
        body = body[0]
    if isinstance(body, dict):
        if any(same_id(body.get(key), report_id) for key in RECEIPT_ID_KEYS):
            return None
        return f"JSON that does not name report {report_id}: {shown_body(response)}"
    return shown_body(response)


def version_problem(response: requests.Response) -> str | None:
    """None if a 2xx answer to the version call is what WATS answers (a JSON string)."""
    try:
        body = response.json()
    except ValueError:
        return shown_body(response)
    return None if isinstance(body, (str, dict)) and body else shown_body(response)


def shown_body(response: requests.Response) -> str:
    kind = response.headers.get("Content-Type") or "no Content-Type"
    text = response.text.strip()
    if not text:
        return f"{kind}, empty body"
    cut = text[:SHOWN_BODY_CHARS] + ("..." if len(text) > SHOWN_BODY_CHARS else "")
    return f"{kind}: {cut!r}"


def not_wats(response: requests.Response, url: str, problem: str) -> dict[str, Any]:
    return {
        "outcome": str(UploadOutcome.NOT_WATS),
        "http_status": response.status_code,
        "message": (
            f"the server at {url} does not answer like WATS: HTTP {response.status_code} "
            f"with {problem}"
        )[:MAX_MESSAGE_CHARS],
    }


def answer_lost(error: requests.RequestException) -> bool:
    """Whether the request may have reached the server before the answer was lost."""
    if isinstance(error, requests.ConnectTimeout):
        return False
    if isinstance(error, requests.ReadTimeout):
        return True
    if isinstance(error, requests.ConnectionError):
        # urllib3 wraps failures to connect in MaxRetryError; a connection that broke after
        # the request went out comes as a bare ProtocolError ("Connection aborted.").
        reason = error.args[0] if error.args else None
        return isinstance(reason, urllib3.exceptions.ProtocolError)
    return isinstance(
        error, (requests.exceptions.ChunkedEncodingError, requests.ContentDecodingError)
    )


def clock_skew(response: requests.Response) -> float | None:
    """Our clock minus the server's, from its ``Date`` header (whole seconds), or None."""
    try:
        server_time = parsedate_to_datetime(response.headers["Date"]).timestamp()
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return round(time.time() - server_time, 1)


def retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date; the supervisor falls back to its own delay


class UploaderWorker(Worker):
    kind = WorkerKind.UPLOADER

    def configure(self, settings: dict[str, Any]) -> None:
        self.server = settings["server"]
        self.upload = settings["upload"]
        self.capacity = int(self.upload["max_concurrency"])
        self.base_url = self.server["url"].rstrip("/")
        self.timeout = (self.upload["connect_timeout_s"], self.upload["read_timeout_s"])
        self._local = threading.local()
        processes_file = settings.get("processes_file")
        self.processes_file = Path(processes_file) if processes_file else None
        if self.processes_file is not None and not getattr(self, "_refresher", None):
            self._refresher = threading.Thread(
                target=self.keep_processes_fresh, name="processes", daemon=True
            )
            self._refresher.start()

    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["Authorization"] = f"Basic {self.server['token']}"
            session.headers["User-Agent"] = "wats-station"
            self._local.session = session
        return session

    def run_job(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        if kind == JobKind.UPLOAD:
            self.set_title(f"uploading {data['report_id']}")
            return self.upload_report(data["report_id"], data["payload"])
        if kind == JobKind.PROBE:
            return self.probe()
        raise JobError(f"uploader cannot run {kind!r} jobs")

    def upload_report(self, report_id: str, payload: bytes) -> dict[str, Any]:
        crash_point("before-post")
        try:
            response = self.session().post(
                self.base_url + REPORT_PATH,
                data=payload,
                headers={"Content-Type": "application/json"},
                timeout=self.timeout,
            )
        except requests.RequestException as error:
            lost = answer_lost(error)
            outcome = UploadOutcome.ANSWER_LOST if lost else UploadOutcome.OFFLINE
            message = describe(error)
            if lost:
                message = f"the report was sent but its answer was lost ({message})"
            return {
                "outcome": str(outcome),
                "http_status": None,
                "message": message[:MAX_MESSAGE_CHARS],
            }
        crash_point("after-post-answered")
        if 200 <= response.status_code < 300:
            problem = receipt_problem(response, report_id)
            if problem is not None:
                return not_wats(response, self.base_url, problem)
        return {
            "outcome": str(classify(response.status_code)),
            "http_status": response.status_code,
            "message": server_message(response),
            "retry_after_s": retry_after(response) if response.status_code == 429 else None,
            "clock_skew_s": clock_skew(response),
        }

    def probe(self) -> dict[str, Any]:
        try:
            response = self.session().get(self.base_url + VERSION_PATH, timeout=self.timeout)
        except requests.RequestException as error:
            return {
                "outcome": str(UploadOutcome.OFFLINE),
                "http_status": None,
                "message": describe(error),
            }
        outcome = classify(response.status_code)
        if outcome is UploadOutcome.REJECTED:
            outcome = UploadOutcome.SERVER_ERROR
        if outcome is UploadOutcome.ACCEPTED and (problem := version_problem(response)):
            return not_wats(response, self.base_url, problem)
        return {
            "outcome": str(outcome),
            "http_status": response.status_code,
            "message": server_message(response),
            "clock_skew_s": clock_skew(response),
        }

    def keep_processes_fresh(self) -> None:
        """Keep the cached process list fresh: at start, then hourly; every minute without one.

        Never fatal: a station without the list still converts every file that gives its
        operation type as a code.
        """
        while True:
            fetched = self.refresh_processes()
            time.sleep(REFRESH_S if fetched else RETRY_S)

    def refresh_processes(self) -> bool:
        """Fetch the list into the cache file when it is missing or old; True when it is fresh."""
        assert self.processes_file is not None
        age = cache_age_s(self.processes_file)
        if age is not None and age < REFRESH_S:
            return True
        try:
            response = requests.get(
                self.base_url + PROCESSES_PATH,
                headers={"Authorization": f"Basic {self.server['token']}"},
                timeout=self.timeout,
            )
            response.raise_for_status()
            processes = compact_processes(response.json())
            if not processes:
                raise ValueError("the server's process list is empty")
            store_processes(self.processes_file, processes)
        except (requests.RequestException, ValueError, OSError) as error:
            log.info("could not refresh the server's process list: %s", error)
            return False
        return True


def describe(error: requests.RequestException) -> str:
    kind = {
        requests.ConnectTimeout: "connect timeout",
        requests.ReadTimeout: "no answer within the read timeout",
        requests.ConnectionError: "connection failed",
    }
    for cls, words in kind.items():
        if isinstance(error, cls):
            return f"{words}: {error}"[:MAX_MESSAGE_CHARS]
    return f"{type(error).__name__}: {error}"[:MAX_MESSAGE_CHARS]


if __name__ == "__main__":
    run_worker(UploaderWorker)
