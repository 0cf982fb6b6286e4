"""Compare the report queue of a git revision with this one, interleaved in one process.

Run from the project root: ``python -m wats_station.bench.queue_compare [--rev f1dfeee]
[--rows N]``. It loads ``supervisor/queue.py`` of the revision beside the installed one, fills a
queue of N rows with the old module, copies the file and opens the copy with the new one (which
migrates it, timed), then alternates runs of claims and of durable enqueues on the two. On a
shared, noisy machine the ratios are the figures to trust.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from wats_station.bench.queue_bench import enqueue_rate, fill, timed
from wats_station.supervisor.queue import ReportQueue

REPO = Path(__file__).resolve().parents[2]
RUNS = 7


def module_at(rev: str, folder: Path) -> ModuleType:
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:supervisor/queue.py"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    path = folder / "queue_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("queue_at_rev", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["queue_at_rev"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="f1dfeee", help="the revision to compare with")
    parser.add_argument("--rows", type=int, default=1_000_000, help="backlog size (1,000,000)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="queue-compare-") as tmp:
        folder = Path(tmp)
        old_module = module_at(args.rev, folder)
        old_path, new_path = folder / "old.db", folder / "new.db"
        queue = old_module.ReportQueue(old_path)
        fill(queue, args.rows)
        queue.close()
        shutil.copy(old_path, new_path)
        start = time.perf_counter()
        ReportQueue(new_path).close()
        migrate = time.perf_counter() - start
        old, new = old_module.ReportQueue(old_path), ReportQueue(new_path)
        old.claim_due(1)
        new.claim_due(1)
        claims: dict[str, list[float]] = {"old": [], "new": []}
        rates: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(RUNS):
            for name, queue in (("old", old), ("new", new)):
                claims[name].append(timed(lambda queue=queue: queue.claim_due(1), 20))
                rates[name].append(enqueue_rate(queue, 1, 100))
        old.close()
        new.close()
    claim_old, claim_new = (statistics.median(claims[k]) * 1e3 for k in ("old", "new"))
    rate_old, rate_new = (statistics.median(rates[k]) for k in ("old", "new"))
    print(f"{args.rows:,} rows; {args.rev} against the working tree; medians of {RUNS} runs")
    print(f"open of the {args.rev} file by this version (migration)  {migrate:8.2f} s")
    print(
        f"claim_due(1)            {claim_old:8.3f} ms  ->  {claim_new:8.3f} ms"
        f"   ratio {claim_new / claim_old:.2f}"
    )
    print(
        f"enqueue, 1 per commit   {rate_old:8,.0f} /s  ->  {rate_new:8,.0f} /s"
        f"   ratio {rate_new / rate_old:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
