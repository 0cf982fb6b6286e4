"""Logging for the station: one line per event, tagged with instance, process and pid.

Lines go to stderr (journald under systemd adds its own timestamp, so we leave ours out
there) and to a size-rotated file per instance.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

from wats_station.ipc.endpoints import InstancePaths
from wats_station.supervisor.config import LoggingSettings

LOGGER = "wats-station"


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
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter(stderr_format))
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
            logging.Formatter(f"%(asctime)s %(levelname)s {tag}: %(message)s")
        )
        logger.addHandler(file_handler)
    return logger
