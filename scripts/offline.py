"""Queue commands on a stopped station: the same control handlers, run on the database directly.

The instance lock is taken first, so a station cannot start while we edit its queue, and
we never touch a queue that a running station owns.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from wats_station.ipc.endpoints import InstancePaths, prepare_runtime_dir
from wats_station.supervisor import control
from wats_station.supervisor.lock import InstanceLock, is_locked
from wats_station.supervisor.queue import ReportQueue


def station_stopped(paths: InstancePaths) -> bool:
    return not is_locked(paths.lock_file)


def run_queue_command(paths: InstancePaths, command: str, args: dict[str, Any]) -> Any:
    prepare_runtime_dir(paths.runtime_dir)
    lock = InstanceLock.acquire(paths.lock_file, paths.instance)
    try:
        if not paths.queue_db.exists():
            raise control.CommandError(
                control.ErrorCode.NOT_FOUND, f"no queue database at {paths.queue_db} yet"
            )
        queue = ReportQueue(paths.queue_db)
        try:
            return control.run(SimpleNamespace(queue=queue), command, args)
        finally:
            queue.close()
    finally:
        lock.release()
