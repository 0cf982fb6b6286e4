"""What the benchmarks share beyond the harness: process CPU and memory, and the tables.

Stations and emulators come from :mod:`wats_station.lab.harness`; leaving their ``with``
blocks kills every process they started, even on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import os
import platform
import re
import signal
import statistics
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from wats_station.lab import processes
from wats_station.lab.harness import HarnessError

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the ``with`` blocks clean up as they do on Ctrl-C."""

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)


# -- processes ------------------------------------------------------------------------------


def session_pids(session: int) -> list[int]:
    """Every live process of a session (the session id is its leader's pid)."""
    return processes.session_pids({session})


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = processes.stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise HarnessError(f"/proc/{pid}/status has no VmRSS line")


# -- numbers and output ---------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks (p99 of 50 values is near the maximum)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def verdict(value: float, goal: float, *, at_most: bool) -> str:
    met = value <= goal if at_most else value >= goal
    return "met" if met else "NOT met"


def machine_line() -> str:
    """When and where: the figures mean little without the machine and the load on it."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{when}; {os.cpu_count()} CPUs ({model.group(1) if model else platform.machine()}); "
        f"Python {platform.python_version()}; Linux {platform.release()}; load average {load}"
    )


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    width = max(len(row[0]) for row in rows)
    print(f"\n{title}")
    print(f"{'measure':<{width}}  {'median':>14}  goal / note")
    for what, value, note in rows:
        print(f"{what:<{width}}  {value:>14}  {note}")
    sys.stdout.flush()
