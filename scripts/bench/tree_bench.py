"""Measure recursive watching: a rescan of a big tree, and files found deep in it at start.

Run in a development install: ``python -m wats_station.bench.tree_bench [--folders N]``. Builds a
tree of dated per-line folders (with a Done tree of the same shape beside it, which must cost
nothing) in a temporary folder, runs the real FolderWatcher on it and prints medians of 5 runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from wats_station.workers.folder_watch import FolderWatcher, WatchSpec

RUNS = 5


def build_tree(root: Path, folders: int, files_per_folder: int) -> list[Path]:
    """`folders` leaf folders three levels down (line/day/cell), and as many under Done."""
    leaves = []
    for index in range(folders):
        relative = Path(f"line{index % 10}", f"2026-{index // 300 % 12 + 1:02}-{index % 28 + 1:02}")
        relative /= f"cell{index}"
        for top in (root, root / "Done"):
            (top / relative).mkdir(parents=True, exist_ok=True)
        leaves.append(root / relative)
        for n in range(files_per_folder):
            (root / "Done" / relative / f"old{n}.json").write_bytes(b"{}")
            (root / relative / f"run{n}.json").write_bytes(b"{}")
    return leaves


def first_report(root: Path, expected: int) -> tuple[float, FolderWatcher]:
    """Seconds from start() until every file of the tree was reported (debounce 0)."""
    seen: list[object] = []
    watcher = FolderWatcher(
        [WatchSpec("wsjf", root, ("*.json",), recursive=True)],
        seen.append,
        excluded=[root / "Done", root / "Error"],
        debounce_s=0.0,
        rescan_interval_s=3600,
    )
    start = time.perf_counter()
    watcher.start()
    while len(seen) < expected:
        time.sleep(0.001)
    return time.perf_counter() - start, watcher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, default=2_000, help="leaf folders (2,000)")
    parser.add_argument("--files", type=int, default=2, help="files per leaf folder (2)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tree-bench-") as tmp:
        root = Path(tmp) / "drop"
        build_tree(root, args.folders, args.files)
        expected = args.folders * args.files
        starts, rescans = [], []
        listed = 0
        for _ in range(RUNS):
            elapsed, watcher = first_report(root, expected)
            starts.append(elapsed)
            begin = time.perf_counter()
            with watcher._lock:
                listed = sum(
                    watcher._scan_tree(folder, time.monotonic(), set(), set())
                    for folder in watcher._folders
                )
            rescans.append(time.perf_counter() - begin)
            watcher.stop()
    print(f"tree: {listed:,} folders listed per rescan, {expected:,} files; Done tree as big")
    print(f"start -> every file reported   {statistics.median(starts) * 1e3:8.1f} ms")
    print(f"one rescan of the tree         {statistics.median(rescans) * 1e3:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
