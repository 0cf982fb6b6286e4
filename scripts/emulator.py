"""A WATS server on loopback for tests, demos, benchmarks and chaos runs, with switchable faults.

The API port answers what a station uses (``POST /api/Report/WSJF``, ``GET /api/Report/Wsjf/{id}``,
``GET /api/App/Version``, ``GET /api/App/Processes``). The admin port never goes down and serves
the counters and the fault switches (``/_stats``, ``/_received``, ``/_faults``, ``/_reset``);
the API port serves them too while it is up::

    with Emulator(token="secret", seed=1) as server:
        server.set_faults(failure_rate=0.2, latency_ms=50)
        ...  # point the uploader at server.url, then check server.stats()

    python -m wats_station.emulator --port 8080 --token secret --verbose

Report ids are compared as UUIDs, so they are stored and listed in canonical lower-case form.
A stored report is answered as the real server does (``InsertReportResult``: ``{"ID": <the
report's id>, "uuid": <id>, "Report_ID": <a number>}``, FORMATS.md and the pyWATS notes).
Faults other than ``unauthorized``, ``latency_ms``, ``not_wats_rate``, ``down`` and
``clock_offset_s`` (which shifts the ``Date`` header of every answer, as a server with a wrong
clock would) apply to report POSTs only, so the connectivity check keeps answering while
uploads fail. ``not_wats_rate`` answers any API call with ``200`` and an HTML page and stores
nothing, as a captive portal, a proxy or a wrong URL would; ``drop_after_store_rate`` stores the
report and then closes the connection without an answer.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from wats_station.supervisor.atomic import write_atomically

VERSION = "24.1.0-emulator"
# The process list a fresh WATS server has (operation types by code), as GET /api/App/Processes
# answers it; Emulator(processes=...) serves another.
DEFAULT_PROCESSES: tuple[dict[str, Any], ...] = tuple(
    {"code": code, "name": name, "description": name, "processIndex": index, "state": 1,
     "isTestOperation": kind == "test", "isRepairOperation": kind == "repair",
     "isWipOperation": kind == "wip"}
    for index, (code, name, kind) in enumerate(
        [(10, "SW Debug", "test"), (15, "PCBA Test", "test"), (20, "Final Function Test", "test"),
         (90, "Burn In test", "test"), (100, "End of line test", "test"),
         (500, "Repair", "repair"), (600, "Assembly", "wip")]
    )
)  # fmt: skip
_log = logging.getLogger("wats.emulator")


def _number(low: float, high: float, whole: bool, wording: str) -> Callable[[object], Any]:
    kinds = int if whole else int | float

    def convert(value: object) -> Any:
        if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
            raise ValueError(f"must be {wording}, got {json.dumps(value)}")
        return value if whole else float(value)

    return convert


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {json.dumps(value)}")
    return value


_rate = _number(0, 1, False, "a number between 0 and 1")
# One table holds each fault's name, default and converter.
FAULTS: dict[str, tuple[Any, Callable[[object], Any]]] = {
    "failure_rate": (0.0, _rate),
    "failure_status": (500, _number(400, 599, True, "an HTTP error status 400..599")),
    "rate_limit_rate": (0.0, _rate),
    "retry_after": (1, _number(0, math.inf, True, "a whole number of seconds >= 0")),
    "unauthorized": (False, _flag),
    "latency_ms": (0.0, _number(0, math.inf, False, "a number of milliseconds >= 0")),
    "drop_rate": (0.0, _rate),
    "drop_after_store_rate": (0.0, _rate),
    "not_wats_rate": (0.0, _rate),
    "down": (False, _flag),
    "clock_offset_s": (0.0, _number(-math.inf, math.inf, False, "a number of seconds")),
}


def _checked_faults(updates: dict[str, object]) -> dict[str, Any]:
    """Convert every update or raise ValueError naming the first bad key; applies nothing."""
    checked = {}
    for key, value in updates.items():
        if key not in FAULTS:
            raise ValueError(f"Unknown fault {key!r}; known faults: {', '.join(FAULTS)}")
        try:
            checked[key] = FAULTS[key][1](value)
        except ValueError as error:
            raise ValueError(f"Fault {key!r} {error}") from None
    return checked


_REQUIRED = ("type", "id", "pn", "sn", "rev", "processCode", "result", "machineName", "location")
_REQUIRED += ("purpose", "start")
_REQUIRED_BY_TYPE = {"T": ("root", "uut"), "R": ("uur",)}
_TEXT_FIELDS = ("pn", "sn", "rev", "machineName", "location", "purpose")


def canonical_id(value: object) -> str | None:
    """The UUID in canonical lower-case form, or None if value is not a UUID string."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def report_problem(report: object) -> str | None:
    """What is wrong with a WSJF report, in the words a 400 answer uses, or None if it is valid."""
    if not isinstance(report, dict):
        return f"Report must be a JSON object, got {type(report).__name__}"
    for field in _REQUIRED:
        if report.get(field) is None:
            return f"Report is missing required field: {field}"
    for field, is_valid, wording in _FIELD_CHECKS:
        if not is_valid(report[field]):
            return f"Field '{field}' must be {wording}, got {json.dumps(report[field])[:120]}"
    for field in _REQUIRED_BY_TYPE[report["type"]]:
        if report.get(field) is None:
            return f"Report of type {report['type']} is missing required field: {field}"
        if not isinstance(report[field], dict):
            return f"Field '{field}' must be an object, got {json.dumps(report[field])[:120]}"
    return None


def _is_time_with_offset(value: object) -> bool:
    try:
        return isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _is_text(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 100


_FIELD_CHECKS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("type", lambda value: value in ("T", "R"), "'T' or 'R'"),
    ("id", lambda value: canonical_id(value) is not None, "a UUID string"),
    ("processCode", lambda value: type(value) is int, "an integer"),
    ("result", lambda value: value in ("P", "F", "D", "E", "T"), "one of P/F/D/E/T"),
    ("start", _is_time_with_offset, "ISO-8601 with a UTC offset"),
    *((field, _is_text, "a string of at most 100 characters") for field in _TEXT_FIELDS),
)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json; charset=utf-8"


NOT_WATS_PAGE = Reply(
    200,
    b"<!DOCTYPE html><html><head><title>Sign in to the guest network</title></head>"
    b"<body><h1>Welcome</h1><p>Accept the terms of use to continue.</p></body></html>",
    content_type="text/html; charset=utf-8",
)


def _json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, json.dumps(payload).encode(), headers)


def _message(status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return _json_reply(status, {"Message": text}, headers)


_DENIED = _message(401, "Authorization has been denied for this request.")
_ADMIN_ROUTES = ("GET /_stats", "GET /_received", "GET /_faults", "POST /_faults", "POST /_reset")


class _Server(ThreadingHTTPServer):
    """One listening port; remembers its open connections so going down can cut them."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], emulator: Emulator, serves_api: bool) -> None:
        self.emulator = emulator
        self.serves_api = serves_api
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name, which can stall for seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self, spare: socket.socket | None = None) -> None:
        with self._connections_lock:
            victims = [conn for conn in self._connections if conn is not spare]
        for conn in victims:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            _log.debug("connection from %s broke", client_address)
        else:
            _log.exception("request from %s failed", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every reply carries Content-Length
    disable_nagle_algorithm = True  # else requests.Session waits ~40 ms on delayed ACKs
    server_version = f"WATS-emulator/{VERSION}"
    server: _Server

    def do_GET(self) -> None:
        self._handle("GET")

    def date_time_string(self, timestamp: float | None = None) -> str:
        offset = self.server.emulator.faults()["clock_offset_s"]
        return super().date_time_string((time.time() if timestamp is None else timestamp) + offset)

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        started = time.perf_counter()
        body = self._read_body()
        if body is None:
            return
        path = urlsplit(self.path).path
        emulator = self.server.emulator
        if self.server.serves_api and path.lower().startswith("/api/"):
            reply = emulator._answer_api(method, path, self.headers.get("Authorization"), body)
        else:
            reply = emulator._answer_admin(method, path, body, self.connection)
        if reply is None:
            self.close_connection = True  # finish() then closes the socket without a response
        else:
            self._send(reply)
        outcome = "dropped" if reply is None else reply.status
        elapsed_ms = (time.perf_counter() - started) * 1000
        port = "api" if self.server.serves_api else "admin"
        _log.info("%s %s %s -> %s (%.1f ms)", port, method, self.path, outcome, elapsed_ms)

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit() or "chunked" in self.headers.get("Transfer-Encoding", ""):
            self.close_connection = True  # we cannot tell where this body ends
            self._send(_message(411, "Send the body with a valid Content-Length, not chunked"))
            return None
        body = self.rfile.read(int(length))
        if len(body) < int(length):
            self.close_connection = True  # the client went away mid-body: nothing to answer
            return None
        return body

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _handle logs one line per request, including dropped ones

    def log_message(self, format: str, *args: Any) -> None:
        _log.info("%s: %s", self.address_string(), format % args)


class Emulator:
    """A WATS server on (host, port) plus an admin port, both served from daemon threads."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_port: int = 0,
        token: str | None = None,
        store_dir: Path | None = None,
        seed: int | None = None,
        processes: list[dict[str, Any]] | None = None,
    ) -> None:
        self.host = host
        self.processes = list(DEFAULT_PROCESSES if processes is None else processes)
        self._api_port = port
        self._admin_port = admin_port
        self._token = token
        self._store_dir = Path(store_dir) if store_dir is not None else None
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # guards the store, the counters, the faults and the rng
        self._listening_lock = threading.Lock()  # serialises start, stop, down and up
        self._faults = {name: default for name, (default, _) in FAULTS.items()}
        self._api_server: _Server | None = None
        self._admin_server: _Server | None = None
        self._clear()

    def _clear(self) -> None:
        self._stored: set[str] = set()
        self._in_memory: dict[str, bytes] = {}
        self._received: list[str] = []
        self._counts = dict.fromkeys(("received", "duplicates", "rejected"), 0)
        self._counts |= {"faults_injected": 0, "requests": 0}
        self._report_numbers: dict[str, int] = {}  # the legacy Report_ID of each stored id

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._api_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self._admin_port}"

    def start(self) -> None:
        if self._store_dir is not None:
            self._store_dir.mkdir(parents=True, exist_ok=True)
        with self._listening_lock:
            self._admin_server = self._serve(self._admin_port, serves_api=False)
            self._admin_port = self._admin_server.server_port
            try:
                self._api_server = self._serve(self._api_port, serves_api=True)
            except OSError:
                self._close(self._admin_server)
                self._admin_server = None
                raise
            self._api_port = self._api_server.server_port

    def stop(self) -> None:
        with self._listening_lock:
            for server in (self._api_server, self._admin_server):
                if server is not None:
                    self._close(server)
            self._api_server = self._admin_server = None

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self, port: int, serves_api: bool) -> _Server:
        server = _Server((self.host, port), self, serves_api)
        name = f"emulator-{'api' if serves_api else 'admin'}-{server.server_port}"
        # A short poll interval makes shutdown(), and so "down", take effect within ~50 ms.
        serve = threading.Thread(target=server.serve_forever, args=(0.05,), name=name, daemon=True)
        serve.start()
        return server

    @staticmethod
    def _close(server: _Server, spare: socket.socket | None = None) -> None:
        server.shutdown()
        server.server_close()
        server.cut_connections(spare)

    def set_faults(self, **faults: object) -> None:
        """Switch faults (see FAULTS); raises ValueError naming a bad key and applies nothing."""
        self._apply_faults(faults)

    def _apply_faults(self, updates: dict[str, object], spare: socket.socket | None = None) -> None:
        checked = _checked_faults(updates)
        with self._listening_lock:
            running = self._admin_server is not None
            if running and checked.get("down") is True and self._api_server is not None:
                self._close(self._api_server, spare)
                self._api_server = None
            elif running and checked.get("down") is False and self._api_server is None:
                self._api_server = self._serve(self._api_port, serves_api=True)
            with self._lock:
                self._faults.update(checked)

    def faults(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._faults)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "received": self._counts["received"],
                "unique": len(self._stored),
            } | self._counts

    def received_ids(self) -> list[str]:
        with self._lock:
            return list(self._received)

    def reset(self) -> None:
        """Forget every report (deleting the files this emulator wrote) and zero the counters."""
        with self._lock:
            if self._store_dir is not None:
                for report_id in self._stored:
                    (self._store_dir / f"{report_id}.json").unlink(missing_ok=True)
            self._clear()

    def _answer_api(
        self, method: str, path: str, authorization: str | None, body: bytes
    ) -> Reply | None:
        """The reply to one API call, or None to close the connection without a response."""
        with self._lock:
            self._counts["requests"] += 1
            faults = dict(self._faults)
        if faults["latency_ms"]:
            time.sleep(faults["latency_ms"] / 1000)
        if faults["unauthorized"]:
            self._count("faults_injected")
            return _DENIED
        if self._injects(faults["not_wats_rate"]):
            return NOT_WATS_PAGE
        if self._token is not None and authorization != f"Basic {self._token}":
            return _DENIED
        route = path.lower().rstrip("/")
        if method == "POST" and route == "/api/report/wsjf":
            return self._submit(body, faults)
        if method == "GET" and route.startswith("/api/report/wsjf/"):
            return self._read_back(unquote(path.rstrip("/").rsplit("/", 1)[1]))
        if method == "GET" and route == "/api/app/version":
            return _json_reply(200, VERSION)
        if method == "GET" and route == "/api/app/processes":
            return _json_reply(200, self.processes)
        return _message(404, f"No HTTP resource was found that matches the request URI '{path}'.")

    def _submit(self, body: bytes, faults: dict[str, Any]) -> Reply | None:
        if self._injects(faults["drop_rate"]):
            return None
        if self._injects(faults["rate_limit_rate"]):
            retry_after = str(faults["retry_after"])
            return _message(429, "Rate limit exceeded", (("Retry-After", retry_after),))
        if self._injects(faults["failure_rate"]):
            return _message(faults["failure_status"], "Injected failure")
        try:
            report = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            self._count("rejected")
            return _message(400, f"Report is not valid JSON: {error}")
        problem = report_problem(report)
        if problem is not None:
            self._count("rejected")
            return _message(400, problem)
        report_id = canonical_id(report["id"])
        assert report_id is not None  # report_problem checked it
        number = self._store(report_id, body)
        if self._injects(faults["drop_after_store_rate"]):
            return None
        return _json_reply(200, {"ID": report_id, "uuid": report_id, "Report_ID": number})

    def _store(self, report_id: str, body: bytes) -> int:
        """Keep the report; returns its Report_ID (the same for every overwrite of an id)."""
        if self._store_dir is not None:
            write_atomically(self._store_dir / f"{report_id}.json", body)
        with self._lock:
            if report_id in self._stored:
                self._counts["duplicates"] += 1
            self._stored.add(report_id)
            self._counts["received"] += 1
            self._received.append(report_id)
            if self._store_dir is None:
                self._in_memory[report_id] = body
            return self._report_numbers.setdefault(report_id, len(self._report_numbers) + 1)

    def _read_back(self, raw_id: str) -> Reply:
        report_id = canonical_id(raw_id)
        with self._lock:
            known = report_id is not None and report_id in self._stored
            body = self._in_memory.get(report_id or "")
        if known and body is None and self._store_dir is not None:
            with suppress(FileNotFoundError):  # a reset may have deleted it meanwhile
                body = (self._store_dir / f"{report_id}.json").read_bytes()
        if body is None:
            return _message(404, f"Report {raw_id!r} was not found")
        return Reply(200, body)

    def _answer_admin(
        self, method: str, path: str, body: bytes, connection: socket.socket
    ) -> Reply:
        route = f"{method} {path.rstrip('/')}"
        if route == "GET /_stats":
            return _json_reply(200, self.stats())
        if route == "GET /_received":
            return _json_reply(200, self.received_ids())
        if route == "GET /_faults":
            return _json_reply(200, self.faults())
        if route == "POST /_faults":
            return self._switch_faults(body, connection)
        if route == "POST /_reset":
            self.reset()
            return _json_reply(200, self.stats())
        return _message(
            404, f"Unknown endpoint {route}; admin endpoints: {', '.join(_ADMIN_ROUTES)}"
        )

    def _switch_faults(self, body: bytes, connection: socket.socket) -> Reply:
        try:
            updates = json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return _message(400, f"Faults are not valid JSON: {error}")
        if not isinstance(updates, dict):
            return _message(400, f"Faults must be a JSON object, got {type(updates).__name__}")
        try:
            # Spare this connection: "down" asked on the API port still gets its answer.
            self._apply_faults(updates, spare=connection)
        except ValueError as error:
            return _message(400, str(error))
        except OSError as error:
            return _message(500, f"Could not listen again on {self.url}: {error}")
        return _json_reply(200, self.faults())

    def _injects(self, rate: float) -> bool:
        """Roll for one fault; a hit counts as injected."""
        if rate <= 0:
            return False
        with self._lock:
            hit = rate >= 1 or self._rng.random() < rate
            if hit:
                self._counts["faults_injected"] += 1
        return hit

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        "python -m wats_station.emulator", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="API port (default: any free)")
    parser.add_argument("--admin-port", type=int, default=0, help="admin port (default: any free)")
    parser.add_argument("--token", help="accept only 'Authorization: Basic TOKEN' (default: any)")
    parser.add_argument("--store", type=Path, metavar="DIR", help="write reports to DIR/<id>.json")
    parser.add_argument("--seed", type=int, help="seed the fault dice, to reproduce a run")
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
    emulator = Emulator(args.host, args.port, args.admin_port, args.token, args.store, args.seed)
    # Block the stop signals before any server thread exists, so that only sigwait sees them.
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        try:
            emulator.start()
        except OSError as error:
            print(f"Error: cannot start the emulator on {args.host}: {error}", file=sys.stderr)
            return 1
        print(f"WATS emulator listening on {emulator.url} (admin {emulator.admin_url})", flush=True)
        signal.sigwait(_STOP_SIGNALS)
        emulator.stop()
        return 0
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)


if __name__ == "__main__":
    raise SystemExit(main())
