"""Measure what trust costs the supervisor's loop per message and per log line.

Run from the project root: ``python -m wats_station.bench.trust_bench [--runs N]``.

* Reading a worker message with ``copy=False`` (needed for libzmq's ``Peer-Address``, the
  SO_PEERCRED pid of a HELLO) against the plain ``recv_multipart()`` it replaced; both over
  a real ipc:// ROUTER socket, 120-byte messages (a heartbeat or a JOB_DONE is that size).
* Formatting one log record with ``OneLineFormatter`` (control characters escaped) against
  ``logging.Formatter``.

Both run in one process, alternately, so the machine's noise hits both alike: compare the
ratio, not the absolute figures.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import zmq

from wats_station.bench.common import machine_line, median
from wats_station.supervisor.logs import OneLineFormatter

BATCH = 500  # below the default high-water marks, so no send ever blocks
BATCHES = 40
RECORDS = 50_000
LINE = "%(asctime)s %(levelname)s [default] supervisor[%(process)d]: %(message)s"


def receive_us(copy: bool, endpoint: str) -> float:
    context = zmq.Context()
    router, dealer = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
    router.bind(endpoint)
    dealer.connect(endpoint)
    message, spent = b"x" * 120, 0.0
    try:
        for _ in range(BATCHES):
            for _ in range(BATCH):
                dealer.send(message)
            router.poll(1000)
            time.sleep(0.01)  # let the batch arrive whole
            started = time.perf_counter()
            for _ in range(BATCH):
                if copy:
                    frames = router.recv_multipart()
                    _identity, _payload = frames[0], frames[-1]
                else:
                    parts = router.recv_multipart(copy=False)
                    _identity, _payload = parts[0].bytes, parts[-1].bytes
                    parts[-1].get("Peer-Address")
            spent += time.perf_counter() - started
    finally:
        router.close(0)
        dealer.close(0)
        context.term()
    return spent / (BATCH * BATCHES) * 1e6


def format_us(formatter: logging.Formatter) -> float:
    record = logging.LogRecord(
        "wats-station",
        logging.WARNING,
        __file__,
        1,
        "%s: %s -> %s (%s)",
        ("converter-1", "running", "backoff", "killed by SIGKILL; restart in 0.20 s"),
        None,
    )
    started = time.perf_counter()
    for _ in range(RECORDS):
        formatter.format(record)
    return (time.perf_counter() - started) / RECORDS * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="alternating runs of each (5)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trust-bench-") as folder:
        endpoint = f"ipc://{Path(folder) / 'socket'}"
        measures: dict[str, Callable[[], float]] = {
            "receive, recv_multipart()": lambda: receive_us(True, endpoint),
            "receive, copy=False + Peer-Address": lambda: receive_us(False, endpoint),
            "format, logging.Formatter": lambda: format_us(logging.Formatter(LINE)),
            "format, OneLineFormatter": lambda: format_us(OneLineFormatter(LINE)),
        }
        results: dict[str, list[float]] = {name: [] for name in measures}
        for _ in range(args.runs):
            for name, measure in measures.items():
                results[name].append(measure())
    print(machine_line())
    print(f"{'measure':<40}{'median':>12}  runs")
    for name, values in results.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:<40}{median(values):>9.2f} us  {runs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
