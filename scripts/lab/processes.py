"""Finding and ending every process a station started, for tests, benchmarks and chaos runs.

Workers change process group but keep their supervisor's session, and their titles hide
their command lines, so the session is how all of them are found.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and ')')."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def pid_alive(pid: int) -> bool:
    try:
        return stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def session_pids(sessions: set[int]) -> list[int]:
    """Live processes in these sessions (a session id is its leader's pid)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = stat_fields(int(entry.name))
        except (OSError, IndexError):
            continue
        if int(fields[3]) in sessions and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def kill_sessions(sessions: set[int]) -> None:
    for pid in session_pids(sessions):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
