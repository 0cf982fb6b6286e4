"""Logging for the station: one line per event, tagged with instance, process and pid.

Lines go to stderr (journald under systemd adds its own timestamp, so we leave ours out
there) and to a size-rotated file per instance. With ``logging.format: json`` every line is
one JSON object instead (for a log shipper): time, level, instance, process (``supervisor``
or the worker's name), pid, event (the message), and the report ids the message names.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import sys
from datetime import UTC, datetime

from wats_station.ipc.endpoints import InstancePaths
from wats_station.supervisor.config import LoggingSettings

LOGGER = "wats-station"
UUID = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record. A worker's output line (logged by the supervisor with
    ``extra={"worker": name, "line": text}``) is attributed to the worker."""

    def __init__(self, instance: str) -> None:
        super().__init__()
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        worker = getattr(record, "worker", None)
        event = getattr(record, "line", None) if worker else None
        if event is None:
            event = record.getMessage()
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "instance": self.instance,
            "process": worker or "supervisor",
            "pid": getattr(record, "worker_pid", None) or record.process,
            "event": event,
        }
        ids = sorted({match.lower() for match in UUID.findall(event)})
        if ids:
            entry["report_ids"] = ids
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(paths: InstancePaths, settings: LoggingSettings) -> logging.Logger:
    logger = logging.getLogger(LOGGER)
    logger.setLevel(settings.level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    tag = f"[{paths.instance}] supervisor[%(process)d]"
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    stderr_format = (
        f"%(levelname)s {tag}: %(message)s"
        if under_journald
        else (f"%(asctime)s %(levelname)s {tag}: %(message)s")
    )
    as_json = settings.format == "json"
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(
        JsonFormatter(paths.instance) if as_json else logging.Formatter(stderr_format)
    )
    logger.addHandler(stream)
    try:
        paths.log_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            paths.log_file,
            maxBytes=int(settings.file_max_mb * 1024 * 1024),
            backupCount=settings.file_backups,
            encoding="utf-8",
            errors="backslashreplace",  # file names need not be valid UTF-8
        )
    except OSError as error:
        logger.warning(
            "cannot write the log file %s: %s; logging to stderr only", paths.log_file, error
        )
    else:
        file_handler.setFormatter(
            JsonFormatter(paths.instance)
            if as_json
            else logging.Formatter(f"%(asctime)s %(levelname)s {tag}: %(message)s")
        )
        logger.addHandler(file_handler)
    return logger
