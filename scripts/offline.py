"""Commands on a stopped station: the same control handlers, run on the database directly.

The instance lock is taken first, so a station cannot start while we edit its queue, and
we never touch a queue that a running station owns. Besides the queue, the handlers get the
config (files list/retry) and the pause (kept in the queue file); events go nowhere.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from wats_station.ipc.endpoints import InstancePaths, prepare_runtime_dir
from wats_station.supervisor import control
from wats_station.supervisor.config import ConfigError, load_config
from wats_station.supervisor.lock import InstanceLock, is_locked
from wats_station.supervisor.pause import Pause
from wats_station.supervisor.queue import ReportQueue

# Commands that make sense without a running station.
OFFLINE_COMMANDS = frozenset(
    {
        "get_queue_stats",
        "list_reports",
        "get_report",
        "retry_reports",
        "clean_reports",
        "pause",
        "resume",
        "list_files",
        "retry_files",
        "trace",
    }
)


def station_stopped(paths: InstancePaths) -> bool:
    return not is_locked(paths.lock_file)


def run_queue_command(paths: InstancePaths, command: str, args: dict[str, Any]) -> Any:
    prepare_runtime_dir(paths.runtime_dir)
    lock = InstanceLock.acquire(paths.lock_file, paths.instance)
    try:
        if command == "pause":
            paths.data_dir.mkdir(parents=True, exist_ok=True)  # a pause may precede the first start
        elif not paths.queue_db.exists():
            raise control.CommandError(
                control.ErrorCode.NOT_FOUND, f"no queue database at {paths.queue_db} yet"
            )
        try:
            config = load_config(paths)
        except ConfigError as error:
            raise control.CommandError(
                control.ErrorCode.BAD_ARGUMENTS, f"configuration error: {error}"
            ) from None
        queue = ReportQueue(paths.queue_db)
        try:
            station = SimpleNamespace(
                queue=queue, config=config, pause=Pause(queue), publish=lambda *_: None
            )
            return control.run(station, command, args)
        finally:
            queue.close()
    finally:
        lock.release()
