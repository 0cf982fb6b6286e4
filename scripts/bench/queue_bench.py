"""Measure the report queue: durable enqueue rates, claim and stats under a big backlog, disk use.

Run in a development install: ``python -m wats_station.bench.queue_bench [--rows N] [--dir DIR]``.
Timings are medians of 5 runs; a run of claims, next_due_at or stats averages 20 calls. Put
the queue on the disk you care about with ``--dir``: every durable commit waits for an fsync.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path

from wats_station.supervisor.queue import ReportQueue

SAMPLE = Path(__file__).resolve().parents[1] / "sample_files" / "new_report_example.json"
RUNS = 5
MEASUREMENT = {
    "value": 3.3,
    "unit": "V",
    "compOp": "GELE",
    "lowLimit": 3.2,
    "highLimit": 3.4,
    "status": "P",
}
VOLTAGE_STEP = {"stepType": "ET_NLT", "group": "M", "status": "P", "numericMeas": [MEASUREMENT]}
SMALL_REPORT = {
    "type": "T",
    "pn": "PCBA-100",
    "sn": "SN000001",
    "rev": "A",
    "processCode": 10,
    "result": "P",
    "machineName": "station-1",
    "location": "line 1",
    "purpose": "production",
    "start": "2024-05-01T10:00:00+02:00",
    "uut": {"user": "op", "execTime": 1.5},
    "root": {
        "stepType": "SequenceCall",
        "name": "Main",
        "group": "M",
        "status": "P",
        "steps": [{**VOLTAGE_STEP, "name": f"V{n}"} for n in range(3)],
    },
}


def with_new_id(report: dict) -> tuple[str, bytes]:
    report_id = str(uuid.uuid4())
    return report_id, json.dumps({**report, "id": report_id}, separators=(",", ":")).encode()


def median_of_runs(run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(RUNS))


def timed(action: Callable[[], object], repeat: int = 1) -> float:
    """Seconds per call, averaged over `repeat` calls (one fsync alone is a noisy sample)."""
    start = time.perf_counter()
    for _ in range(repeat):
        action()
    return (time.perf_counter() - start) / repeat


def enqueue_rate(queue: ReportQueue, per_txn: int, txns: int) -> float:
    batches = [[with_new_id(SMALL_REPORT) for _ in range(per_txn)] for _ in range(txns)]
    elapsed = timed(lambda: [queue.enqueue(batch) for batch in batches])
    return per_txn * txns / elapsed


def fill(queue: ReportQueue, rows: int) -> float:
    """Queue `rows` small reports in big transactions; returns the rate."""
    payload = with_new_id({"sn": "x"})[1]
    start = time.perf_counter()
    for first in range(0, rows, 20_000):
        batch = [(str(uuid.uuid4()), payload) for _ in range(min(20_000, rows - first))]
        queue.enqueue(batch)
    return rows / (time.perf_counter() - start)


def back_off_all_but_newest(path: Path, keep_due: int) -> int:
    """Make every pending report but the newest few wait an hour, as after a long outage."""
    with sqlite3.connect(path) as db:
        changed = db.execute(
            "UPDATE report SET next_attempt_at = ? WHERE state = 'pending' AND seq < "
            "(SELECT MAX(seq) FROM report) - ?",
            (time.time() + 3600, keep_due),
        ).rowcount
    db.close()
    return changed


def mix_priorities(path: Path, every: int) -> int:
    """Raise every `every`-th pending report to priority 1, spread over the whole backlog."""
    with sqlite3.connect(path) as db:
        changed = db.execute(
            "UPDATE report SET priority = 1 WHERE state = 'pending' AND seq % ? = 0", (every,)
        ).rowcount
    db.close()
    return changed


def bytes_per_report(folder: Path, report: dict, count: int) -> tuple[int, int, float]:
    """Raw JSON bytes, zlib bytes and file bytes per queued report (checkpointed, closed)."""
    path = folder / f"size-{uuid.uuid4().hex}.db"
    ReportQueue(path).close()
    empty = path.stat().st_size
    queue = ReportQueue(path)
    reports = [with_new_id(report) for _ in range(count)]
    for first in range(0, count, 500):
        queue.enqueue(reports[first : first + 500])
    queue.close()
    raw = len(reports[0][1])
    return raw, len(zlib.compress(reports[0][1])), (path.stat().st_size - empty) / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="backlog size (1,000,000)")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the queue files")
    args = parser.parse_args(argv)
    results: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="queue-bench-") as tmp:
        folder = Path(tmp)
        queue = ReportQueue(folder / "rates.db")
        one = median_of_runs(lambda: enqueue_rate(queue, 1, 200))
        batched = median_of_runs(lambda: enqueue_rate(queue, 100, 20))
        queue.close()
        results += [
            ("durable enqueue, 1 report per transaction", f"{one:,.0f} /s", ""),
            ("durable enqueue, 100 reports per transaction", f"{batched:,.0f} /s", ">= 2,000 /s"),
        ]

        big_path = folder / "backlog.db"
        queue = ReportQueue(big_path)
        build = fill(queue, args.rows)
        queue.close()  # checkpoints, so the write-back of the build does not slow the fsyncs below
        reopen = median_of_runs(lambda: timed(lambda: ReportQueue(big_path).close()))
        queue = ReportQueue(big_path)
        first_claim = timed(lambda: queue.claim_due(1))  # also creates the WAL file
        claim = median_of_runs(lambda: timed(lambda: queue.claim_due(1), 20))
        due = median_of_runs(lambda: timed(queue.next_due_at, 20))
        stats = median_of_runs(lambda: timed(queue.stats, 20))
        counts = queue.stats()
        queue.close()
        stuck = back_off_all_but_newest(big_path, keep_due=12)
        queue = ReportQueue(big_path)
        queue.claim_due(1)
        claim_behind = median_of_runs(lambda: timed(lambda: queue.claim_due(1), 2))
        queue.close()
        with sqlite3.connect(big_path) as db:  # everything due again, for the priority runs
            db.execute("UPDATE report SET next_attempt_at = 0 WHERE state = 'pending'")
        db.close()
        raised = mix_priorities(big_path, every=10)
        queue = ReportQueue(big_path)
        queue.claim_due(1)
        claim_mixed = median_of_runs(lambda: timed(lambda: queue.claim_due(1), 20))
        queue.close()
        backlog = f"{args.rows:,} queued"
        results += [
            (f"build the backlog (20,000 per transaction, {backlog})", f"{build:,.0f} /s", ""),
            (f"first claim_due(1) after open, {backlog}", f"{first_claim * 1e3:.3f} ms", ""),
            (f"claim_due(1), {backlog}", f"{claim * 1e3:.3f} ms", "<= 1 ms"),
            (
                f"claim_due(1), the oldest {stuck:,} backing off",
                f"{claim_behind * 1e3:.3f} ms",
                "",
            ),
            (
                f"claim_due(1), {backlog}, {raised:,} of them at a higher priority",
                f"{claim_mixed * 1e3:.3f} ms",
                "<= 1 ms",
            ),
            (f"next_due_at(), {backlog}", f"{due * 1e3:.3f} ms", ""),
            (f"stats(), {backlog}", f"{stats * 1e3:.3f} ms", "<= 50 ms"),
            (f"open (quick_check), {backlog}", f"{reopen * 1e3:.0f} ms", ""),
            (f"file size, {backlog}", f"{big_path.stat().st_size / 2**20:,.0f} MiB", ""),
        ]
        assert counts["pending"] + counts["processing"] == args.rows, counts

        for name, report, count in (
            (SAMPLE.name, json.loads(SAMPLE.read_bytes()), 1_000),
            ("small report (3 numeric steps)", SMALL_REPORT, 10_000),
        ):
            raw, packed, on_disk = bytes_per_report(folder, report, count)
            results.append(
                (
                    f"disk per report: {name}",
                    f"{on_disk:,.0f} B",
                    f"JSON {raw:,} B, zlib {packed:,} B",
                )
            )

    width = max(len(row[0]) for row in results)
    print(f"{'measure':<{width}}  {'median':>14}  goal / note")
    for what, value, note in results:
        print(f"{what:<{width}}  {value:>14}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
