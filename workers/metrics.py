"""The metrics worker: serves the station's figures and health over HTTP, for Prometheus and probes.

Started only when ``metrics.listen`` is set, and supervised like every worker (heartbeats,
restarts, crash-loop backoff), so a scraper that hangs or floods the port costs this
process, never the supervisor's loop. It runs no jobs: it subscribes to the station's
``metrics`` events (one every ``metrics.interval_s``) and answers from the latest.

* ``GET /metrics``: the Prometheus text format, written by ``prometheus_client``.
* ``GET /health/live``: 200 while the supervisor's loop publishes, else 503.
* ``GET /health/ready``: 200 when live, running and not ``failing``, else 503.
* ``GET /health``: the health object as JSON with the ready status code.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import zmq
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from wats_station.ipc.endpoints import instance_paths
from wats_station.ipc.protocol import ProtocolError, decode
from wats_station.ipc.sockets import new_socket
from wats_station.ipc.states import HealthVerdict
from wats_station.workers.base import Worker, run_worker

log = logging.getLogger("wats-station")

VERDICT_VALUE = {HealthVerdict.OK: 0, HealthVerdict.DEGRADED: 1, HealthVerdict.FAILING: 2}
# The supervisor is taken for dead after this many missed snapshots (and at least 5 s).
MISSED_SNAPSHOTS = 3
PREFIX = "wats_station"


def by_label(family: Any, values: dict[str, float]) -> Any:
    """``family`` with one sample per (label value, number) of ``values``, in label order."""
    for label, n in sorted(values.items()):
        family.add_metric([label], n)
    return family


def families(snap: dict[str, Any]) -> Iterator[Metric]:
    """One snapshot from the supervisor as Prometheus metric families."""
    files = CounterMetricFamily(
        f"{PREFIX}_files",
        "Input files handled, by converter and outcome",
        labels=["converter", "outcome"],
    )
    for entry in snap["files"]:
        files.add_metric([entry["converter"], entry["outcome"]], entry["n"])
    yield files
    yield GaugeMetricFamily(
        f"{PREFIX}_files_waiting", "Files recorded, not yet converted", value=snap["files_waiting"]
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_oldest_waiting_file_seconds",
        "Age of the oldest file waiting to be converted (0 when none)",
        value=snap["oldest_waiting_s"] or 0.0,
    )
    yield by_label(
        GaugeMetricFamily(f"{PREFIX}_reports", "Reports in the queue, by state", labels=["state"]),
        snap["reports"],
    )
    yield CounterMetricFamily(
        f"{PREFIX}_reports_queued",
        "Reports queued since the station started",
        value=snap["reports_queued"],
    )
    yield by_label(
        CounterMetricFamily(
            f"{PREFIX}_uploads",
            "Uploads since the station started, by outcome class (lost: the uploader died)",
            labels=["outcome"],
        ),
        snap["uploads"],
    )
    latency = snap["upload_seconds"]
    buckets = [(repr(float(le)), n) for le, n in latency["buckets"]]
    buckets.append(("+Inf", latency["count"]))
    yield HistogramMetricFamily(
        f"{PREFIX}_upload_seconds",
        "Upload round trips, from hand-over to the uploader to the server's answer",
        buckets=buckets,
        sum_value=latency["sum"],
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_oldest_unsent_seconds",
        "Age of the oldest report not yet delivered (0 when none)",
        value=snap["oldest_unsent_s"] or 0.0,
    )
    yield by_label(
        CounterMetricFamily(f"{PREFIX}_worker_restarts", "Worker restarts", labels=["worker"]),
        snap["worker_restarts"],
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_loop_lag_seconds",
        "How late the supervisor's loop woke for its last timer",
        value=snap["loop_lag_s"],
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_queue_bytes",
        "Size of the queue database on disk, with its WAL",
        value=snap["queue_bytes"],
    )
    health = snap["health"]
    yield GaugeMetricFamily(
        f"{PREFIX}_health",
        "Health verdict: 0 ok, 1 degraded, 2 failing",
        value=VERDICT_VALUE[HealthVerdict(health["verdict"])],
    )
    checks = GaugeMetricFamily(
        f"{PREFIX}_health_check", "Checks that are not ok: 1 degraded, 2 failing", labels=["check"]
    )
    for reason in health["reasons"]:
        checks.add_metric([reason["check"]], VERDICT_VALUE[HealthVerdict(reason["verdict"])])
    yield checks
    paused = GaugeMetricFamily(f"{PREFIX}_paused", "1 while paused by an operator", labels=["what"])
    for what, stamp in sorted(snap["paused"].items()):
        paused.add_metric([what], 1 if stamp else 0)
    yield paused


class Snapshot:
    """The latest snapshot and when it came, shared by the subscriber and the HTTP threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, Any] | None = None
        self.received = 0.0  # monotonic

    def set(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.data, self.received = data, time.monotonic()

    def get(self) -> tuple[dict[str, Any] | None, float]:
        with self.lock:
            return self.data, self.received

    def collect(self) -> Iterator[Metric]:  # the prometheus_client collector protocol
        data, _ = self.get()
        if data is not None:
            yield from families(data)


class MetricsWorker(Worker):
    kind = "metrics"

    def configure(self, settings: dict[str, Any]) -> None:
        self.capacity = 1  # runs no jobs; the pool needs one thread
        metrics = settings["metrics"]
        host, _, port = metrics["listen"].rpartition(":")
        self.address = (host.strip("[]"), int(port))
        self.stale_after_s = max(5.0, MISSED_SNAPSHOTS * metrics["interval_s"])
        self.snapshot = Snapshot()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.snapshot)  # type: ignore[arg-type]
        self._stop = threading.Event()

    def start(self) -> None:
        # Binding here, before serving: a port in use fails the start, and the supervisor
        # shows the reason and retries with backoff.
        self.server = ThreadingHTTPServer(self.address, self._handler_class())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="http", daemon=True).start()
        threading.Thread(target=self._subscribe, name="events", daemon=True).start()
        self.set_title(f"serving http://{self.address[0]}:{self.address[1]}")

    def stop(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        server = getattr(self, "server", None)
        if server is not None:
            server.shutdown()
            server.server_close()

    def _subscribe(self) -> None:
        endpoint = instance_paths(self.args.instance).events_endpoint
        context = zmq.Context()
        sub = new_socket(context, zmq.SUB, self.args.max_message_bytes)
        sub.setsockopt(zmq.SUBSCRIBE, b"metrics")
        sub.connect(endpoint)
        try:
            while not self._stop.is_set():
                if not sub.poll(200):
                    continue
                frames = sub.recv_multipart()
                try:
                    message = decode(frames[-1], self.args.max_message_bytes)
                except ProtocolError as error:
                    log.warning("metrics: dropped a bad event: %s", error)
                    continue
                if message.body.get("topic") == "metrics":
                    self.snapshot.set(message.body["data"])
        finally:
            sub.close(linger=0)
            context.term()

    # -- HTTP -------------------------------------------------------------------------

    def health(self) -> tuple[bool, bool, dict[str, Any]]:
        """(live, ready, body) from the latest snapshot."""
        data, received = self.snapshot.get()
        live = data is not None and time.monotonic() - received <= self.stale_after_s
        if not live or data is None:
            return False, False, {"live": False, "verdict": None, "reasons": []}
        health = data["health"]
        ready = data["state"] == "running" and health["verdict"] != HealthVerdict.FAILING
        return live, ready, {"live": True, "state": data["state"], **health}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        worker = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "wats-station-metrics"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/")
                if path == "/metrics":
                    self._send(200, generate_latest(worker.registry), CONTENT_TYPE_LATEST)
                    return
                live, ready, body = worker.health()
                routes = {"/health/live": live, "/health/ready": ready, "/health": ready}
                if path not in routes:
                    self._send(404, b"not found; try /metrics, /health/live, /health/ready\n")
                    return
                status = 200 if routes[path] else 503
                self._send(status, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a scraper every few seconds would drown the station's log

        return Handler


if __name__ == "__main__":
    run_worker(MetricsWorker)
