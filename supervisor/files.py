"""Input files as an operator sees them: waiting, converting, in error, done; and a retry.

Works the same on a running station and a stopped one: what the files are is read from
the folders and the queue file, and only "converting" needs the running station (it is
what the converter workers hold right now).

``retry`` puts a quarantined file back into its converter's drop folder, under its own
name. Its ``.error.json`` reason goes into the custody trail (and the sidecar is removed),
so the history keeps why it failed. The watcher then sees it as a new arrival; its report
ids derive from its bytes, so they are the ids it would have had the first time.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from pathlib import Path
from typing import Any

from wats_station.supervisor import trail
from wats_station.supervisor.config import Config, ConverterSettings
from wats_station.supervisor.conversions import (
    SIDECAR_SUFFIX,
    free_name,
    fsync_dir,
    real_path,
    stored_path,
)
from wats_station.supervisor.queue import ReportQueue

FILE_STATES = ("waiting", "converting", "error", "done")


class FilesError(Exception):
    """A request about files that cannot be done; the message says why."""


def _entries(
    folder: str, *, recursive: bool = False, skip: frozenset[str] = frozenset()
) -> list[os.DirEntry]:
    """The files in `folder`, and with `recursive` in its subfolders too (not hidden ones, not
    symlinked ones, not those in `skip`), by path."""
    found: list[os.DirEntry] = []
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if e.is_file(follow_symlinks=False):
                    found.append(e)
                elif (
                    recursive
                    and e.is_dir(follow_symlinks=False)
                    and not e.name.startswith(".")
                    and os.path.abspath(e.path) not in skip
                ):
                    found += _entries(e.path, recursive=True, skip=skip)
    except OSError:
        return found
    return sorted(found, key=lambda e: e.path)


def _matches(name: str, conv: ConverterSettings) -> bool:
    return any(fnmatch.fnmatch(name.lower(), p.lower()) for p in conv.file_patterns)


def _record(queue: ReportQueue, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
    row = queue._sql(
        f"SELECT id, sha256, created_at, last_error FROM source_file WHERE {sql} "
        "ORDER BY id DESC LIMIT 1",
        params,
    ).fetchone()
    if row is None:
        return None
    reports = [
        rid
        for (rid,) in queue._sql(
            "SELECT DISTINCT report_id FROM trail WHERE source_id = ? AND report_id IS NOT NULL",
            (row[0],),
        )
    ]
    return {"id": row[0], "sha256": row[1], "seen_at": row[2], "error": row[3], "reports": reports}


def _entry(
    path: str, conv: str, state: str, record: dict[str, Any] | None, reason: str | None = None
) -> dict[str, Any]:
    record = record or {}
    return {
        "path": path,
        "name": os.path.basename(path),
        "converter": conv,
        "state": state,
        "reason": reason if reason is not None else record.get("error"),
        "seen_at": record.get("seen_at"),
        "sha256": record.get("sha256"),
        "reports": record.get("reports", []),
    }


def read_sidecar(file: Path) -> dict[str, Any]:
    sidecar = file.with_name(file.name + SIDECAR_SUFFIX)
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def list_files(
    queue: ReportQueue,
    config: Config,
    *,
    state: str | None = None,
    converter: str | None = None,
    limit: int = 100,
    converting: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Files by state (all states if None); `converting` maps paths in conversion to converters."""
    if state is not None and state not in FILE_STATES:
        raise FilesError(f"no file state {state!r}; states: {', '.join(FILE_STATES)}")
    if converter is not None and config.converter(converter) is None:
        known = ", ".join(c.name for c in config.converters)
        raise FilesError(f"no converter named {converter!r} (configured: {known})")
    converting = converting or {}
    convs = [c for c in config.converters if converter in (None, c.name)]
    found: list[dict[str, Any]] = []
    if state in (None, "converting"):
        found += [
            _entry(path, conv, "converting", _record(queue, "path = ?", (stored_path(path),)))
            for path, conv in converting.items()
            if conv in {c.name for c in convs}
        ]
    for conv in convs:
        if state in (None, "waiting"):
            found += _waiting(queue, conv, converting)
        if state in (None, "error"):
            found += _quarantined(queue, conv)
    if state in (None, "done"):
        found += _done(queue, [c.name for c in convs], limit)
    return found[:limit]


def _waiting(
    queue: ReportQueue, conv: ConverterSettings, converting: dict[str, str]
) -> list[dict[str, Any]]:
    """Files in the drop folder that no converter holds right now (recorded or not yet)."""
    waiting = []
    skip = frozenset(os.path.abspath(f) for f in (conv.done_folder, conv.error_folder))
    for e in _entries(conv.watch_folder, recursive=conv.recursive, skip=skip):
        if _matches(e.name, conv) and e.path not in converting:
            record = _record(queue, "path = ? AND state = 'recorded'", (stored_path(e.path),))
            waiting.append(_entry(e.path, conv.name, "waiting", record))
    return waiting


def _quarantined(queue: ReportQueue, conv: ConverterSettings) -> list[dict[str, Any]]:
    """Files in the error folder, with the reason from their sidecar."""
    quarantined = []
    for e in _entries(conv.error_folder, recursive=True):
        if e.name.endswith(SIDECAR_SUFFIX) or e.name.startswith("."):
            continue
        record = _record(queue, "final_path = ? AND state = 'failed'", (stored_path(e.path),))
        reason = read_sidecar(Path(e.path)).get("error")
        quarantined.append(_entry(e.path, conv.name, "error", record, reason))
    return quarantined


def _done(queue: ReportQueue, converters: list[str], limit: int) -> list[dict[str, Any]]:
    if not converters:
        return []
    marks = ", ".join("?" * len(converters))
    rows = queue._sql(
        "SELECT id, path, final_path, converter FROM source_file INDEXED BY source_file_state "
        f"WHERE state = 'done' AND converter IN ({marks}) ORDER BY id DESC LIMIT ?",
        (*converters, limit),
    ).fetchall()
    done = []
    for source_id, path, final_path, conv in rows:
        record = _record(queue, "id = ?", (source_id,))
        entry = _entry(real_path(path), conv, "done", record)
        entry["final_path"] = real_path(final_path) if final_path else None
        done.append(entry)
    return done


def retry(
    queue: ReportQueue,
    config: Config,
    *,
    names: list[str],
    all_errors: bool = False,
    converter: str | None = None,
) -> dict[str, Any]:
    """Move quarantined files back to their drop folders; returns how many and where to."""
    if not names and not all_errors:
        raise FilesError("retry_files: give 'names' or all_errors=true")
    errors = list_files(queue, config, state="error", converter=converter, limit=1 << 30)
    chosen = [f for f in errors if all_errors or f["name"] in names or f["path"] in names]
    missing = sorted(set(names) - {f["name"] for f in chosen} - {f["path"] for f in chosen})
    if missing:
        raise FilesError(
            f"no quarantined file named {', '.join(missing)}"
            + (f" for converter {converter!r}" if converter else "")
            + " (see: wats-station files list --state error)"
        )
    moved = []
    for file in chosen:
        conv = config.converter(file["converter"])
        assert conv is not None  # list_files only lists configured converters
        moved.append(_put_back(queue, Path(file["path"]), conv))
    return {"retried": len(moved), "files": moved}


def _put_back(queue: ReportQueue, file: Path, conv: ConverterSettings) -> str:
    reason = read_sidecar(file)
    # A file from a subfolder (a recursive converter) goes back where it came from.
    relative = os.path.relpath(file.parent, conv.error_folder)
    watch = Path(conv.watch_folder)
    if relative != os.curdir and not relative.startswith(os.pardir):
        watch = watch / relative
    watch.mkdir(parents=True, exist_ok=True)
    target = free_name(watch, Path(str(reason.get("file") or file.name)).name)
    record = _record(queue, "final_path = ? AND state = 'failed'", (stored_path(str(file)),))
    if record is not None:
        detail = f"moved back to {target} for converter {conv.name}"
        if reason:
            detail += "; it had failed with: " + json.dumps(reason, default=str)
        trail.note(queue, "retried", source_id=record["id"], detail=detail)
    try:
        os.rename(file, target)
    except OSError:
        shutil.move(file, target)  # another file system
    fsync_dir(watch)
    if record is not None:  # its reason is in the trail now; else the sidecar stays as the record
        file.with_name(file.name + SIDECAR_SUFFIX).unlink(missing_ok=True)
    return str(target)
