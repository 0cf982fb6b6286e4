"""What the custody trail costs: a file's whole life in the queue with and without its triggers.

Run in a development install: ``python -m wats_station.bench.trail_bench [--files N] [--runs R]``.
Each run takes N files through record -> commit_conversion -> done -> claim -> complete (five
durable transactions per file, as the station does them) on two queue files side by side: one
as shipped, one with the trail triggers dropped. Runs alternate between the two, so the
ratio holds on a busy machine; medians over R runs. Also prints the trail's disk use, and
how long the queries behind each health verdict and metrics snapshot take with a backlog of
``--backlog`` queued reports (they run once a second in the supervisor's loop).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from wats_station.bench.queue_bench import SMALL_REPORT, fill, timed, with_new_id
from wats_station.ipc.states import SourceState
from wats_station.supervisor import trail
from wats_station.supervisor.queue import ReportQueue

TRIGGERS = (
    "trail_report_in",
    "trail_report_state",
    "trail_report_out",
    "trail_source_in",
    "trail_source_state",
    "trail_source_crash",
)


def without_trail(path: Path) -> ReportQueue:
    queue = ReportQueue(path)
    with queue._write():
        for name in TRIGGERS:
            queue._sql(f"DROP TRIGGER {name}")
        # commit_conversion's explicit row has nowhere to go without the table's triggers;
        # keep the table so the statement still runs, as the station would run it.
    return queue


def file_lives(queue: ReportQueue, files: int) -> tuple[float, float]:
    """Wall and CPU seconds per file for the whole life of `files` files, one report each."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(files):
        source = queue.record_source(
            f"/drop/{uuid.uuid4()}.csv", 100, 1, uuid.uuid4().hex * 2, "csv"
        )
        queue.commit_conversion(source.id, [with_new_id(SMALL_REPORT)], "1.0")
        queue.finish_source(source.id, state=SourceState.DONE, final_path="/drop/Done/x.csv")
        for report in queue.claim_due(1):
            queue.complete(report.id, 200)
    return (time.perf_counter() - start) / files, (time.process_time() - cpu) / files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backlog", type=int, default=200_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="trail-bench-") as tmp:
        shipped = ReportQueue(Path(tmp) / "shipped.db")
        bare = without_trail(Path(tmp) / "bare.db")
        with_trail, without = [], []
        for _ in range(args.runs):
            with_trail.append(file_lives(shipped, args.files))
            without.append(file_lives(bare, args.files))
        rows = shipped._sql("SELECT COUNT(*) FROM trail").fetchone()[0]
        pages = shipped._sql("SELECT SUM(pgsize) FROM dbstat WHERE name LIKE 'trail%'").fetchone()[
            0
        ]
        shipped.close()
        bare.close()
        backlog = ReportQueue(Path(tmp) / "backlog.db")
        fill(backlog, args.backlog)
        for _ in range(1000):  # files recorded, waiting to be converted
            backlog.record_source(f"/drop/{uuid.uuid4()}", 1, 1, uuid.uuid4().hex * 2, "csv")

        def health_queries() -> None:
            trail.oldest_unsent(backlog)
            trail.oldest_waiting_file(backlog)
            backlog.stats()
            backlog.source_stats()

        queries = statistics.median(timed(health_queries, 50) for _ in range(args.runs))
        backlog.close()
    total = args.files * args.runs
    print(f"median of {args.runs} runs of {args.files} files each")
    for index, what in ((0, "wall"), (1, "CPU")):
        a = statistics.median(run[index] for run in with_trail)
        b = statistics.median(run[index] for run in without)
        print(f"file life, {what:<4}, with trail     {a * 1e3:8.3f} ms/file")
        print(f"file life, {what:<4}, without trail  {b * 1e3:8.3f} ms/file")
        print(f"ratio, {what:<4}                      {a / b:8.3f}")
    print(f"trail rows per file        {rows / total:8.1f}")
    if pages:
        print(f"trail disk per file        {pages / total:8.0f} B  (table and indexes)")
    print(f"health/metrics queries, {args.backlog:,} queued  {queries * 1e3:8.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
