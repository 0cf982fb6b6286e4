"""Logging for the station: one line per event, tagged with instance, process and pid.

Lines go to stderr (journald under systemd adds its own timestamp, so we leave ours out
there) and to a size-rotated file per instance.

Log lines quote outside text (file names, worker output, what a stranger sent), so every
control character in a message is escaped: a file named ``x\nERROR forged`` stays on its own
line. A traceback follows its line on lines that all start with ``  | ``. And a flood of the
same message (20,000 bad frames) is cut after a burst, then summarised with a count.

With ``logging.format: json`` every line is one JSON object instead (for a log shipper): time,
level, instance, process (``supervisor`` or the worker's name), pid, event (the message), and
the report ids the message names.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from wats_station.ipc.endpoints import InstancePaths
from wats_station.supervisor.config import LoggingSettings

LOGGER = "wats-station"
# Per message template (and ``extra={"repeat_key": ...}``): this many lines in a window, then
# only a count, logged when the window ends.
REPEAT_WINDOW_S = 10.0
REPEAT_BURST = 50

_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"})
del _ESCAPES[ord("\t")]


def escape(text: str) -> str:
    """Outside text made safe for one log line: control characters as visible escapes."""
    return text.translate(_ESCAPES)


class OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.message = escape(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        blocks = []
        if record.exc_info:
            blocks.append(self.formatException(record.exc_info))
        if record.stack_info:
            blocks.append(self.formatStack(record.stack_info))
        for block in blocks:
            line += "".join(f"\n  | {escape(part)}" for part in block.splitlines())
        return line


@dataclass
class _Run:
    since: float
    count: int = 0
    suppressed: int = 0
    last: str = ""


class RepeatSummariser(logging.Filter):
    """Lets the first REPEAT_BURST records of a kind through per window, then counts them."""

    def __init__(
        self,
        logger: logging.Logger,
        window_s: float = REPEAT_WINDOW_S,
        burst: int = REPEAT_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window_s, self.burst, self.clock = window_s, burst, clock
        self._runs: dict[tuple[int, str, object], _Run] = {}
        self._logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "repeat_summary", False):
            return True
        now = self.clock()
        self.flush(now)
        key = (record.levelno, str(record.msg), getattr(record, "repeat_key", None))
        run = self._runs.setdefault(key, _Run(now))
        run.count += 1
        if run.count <= self.burst:
            return True
        run.suppressed += 1
        run.last = record.getMessage()
        return False

    def flush(self, now: float | None = None, *, everything: bool = False) -> None:
        """Log the count of every run whose window has ended (all of them, if ``everything``)."""
        now = self.clock() if now is None else now
        ended = [
            k for k, run in self._runs.items() if everything or now - run.since >= self.window_s
        ]
        for key in ended:
            run = self._runs.pop(key)
            if run.suppressed:
                self._logger.log(
                    key[0],
                    "%d more message(s) like this in %.0f s were not logged; the last: %s",
                    run.suppressed,
                    now - run.since,
                    run.last,
                    extra={"repeat_summary": True},
                )


def flush_repeats(*, everything: bool = False) -> None:
    """Log the counts of ended floods; the station's loop calls this now and then."""
    for log_filter in logging.getLogger(LOGGER).filters:
        if isinstance(log_filter, RepeatSummariser):
            log_filter.flush(everything=everything)


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
    for old_filter in list(logger.filters):
        logger.removeFilter(old_filter)
    logger.addFilter(RepeatSummariser(logger))
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
        JsonFormatter(paths.instance) if as_json else OneLineFormatter(stderr_format)
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
            else OneLineFormatter(f"%(asctime)s %(levelname)s {tag}: %(message)s")
        )
        logger.addHandler(file_handler)
    return logger
