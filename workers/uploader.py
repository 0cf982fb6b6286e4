"""The uploader worker: POSTs reports to the WATS server and classifies each answer.

It keeps no state about reports: the supervisor sends one job per report and decides what
an answer means for the queue. Each pool thread has its own ``requests.Session``
(Sessions are not documented as thread-safe), so connections are reused per thread.
"""

from __future__ import annotations

import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from wats_station.ipc.protocol import JobKind, UploadOutcome
from wats_station.workers.base import JobError, Worker, run_worker
from wats_station.workers.crashpoints import crash_point

REPORT_PATH = "/api/Report/WSJF"
VERSION_PATH = "/api/App/Version"
MAX_MESSAGE_CHARS = 2000


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
    kind = "uploader"

    def configure(self, settings: dict[str, Any]) -> None:
        self.server = settings["server"]
        self.upload = settings["upload"]
        self.capacity = int(self.upload["max_concurrency"])
        self.base_url = self.server["url"].rstrip("/")
        self.timeout = (self.upload["connect_timeout_s"], self.upload["read_timeout_s"])
        self._local = threading.local()

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
            return {
                "outcome": str(UploadOutcome.OFFLINE),
                "http_status": None,
                "message": describe(error),
            }
        crash_point("after-post-answered")
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
        return {
            "outcome": str(outcome),
            "http_status": response.status_code,
            "message": server_message(response),
            "clock_skew_s": clock_skew(response),
        }


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
