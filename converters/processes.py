"""The server's operation types (processes), cached on disk so conversion works offline.

A converter that meets an operation type by name (WSTF ``OperationTypeName``, an
``operationTypeCode`` argument that is not a number, ATML or OpenHTF arguments) needs its code.
Converter workers hold no token, so the uploader worker, which talks to the server anyway,
fetches ``GET /api/App/Processes`` now and then and writes the short list (code, name, kinds)
to one JSON file in the station's data folder; converters only read that file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

PROCESSES_PATH = "/api/App/Processes"
PROCESSES_FILE_NAME = "processes.json"
REFRESH_S = 3600.0  # the list changes when an admin edits it: hourly is plenty


class UnknownOperationType(ValueError):
    """A name that is not in the server's process list; the message says what is."""


def compact_processes(payload: object) -> list[dict[str, Any]]:
    """The fields a converter needs from the server's answer; ValueError when it is no list."""
    if not isinstance(payload, list):
        raise ValueError(f"expected a JSON array of processes, got {type(payload).__name__}")
    processes = []
    for item in payload:
        if not isinstance(item, dict):
            continue
        code = item.get("code", item.get("Code"))
        name = item.get("name", item.get("Name"))
        if isinstance(code, bool) or not isinstance(code, int) or not isinstance(name, str):
            continue
        processes.append(
            {
                "code": code,
                "name": name,
                "test": bool(item.get("isTestOperation", item.get("IsTestOperation", False))),
                "repair": bool(item.get("isRepairOperation", item.get("IsRepairOperation", False))),
            }
        )
    return processes


def store_processes(path: Path, processes: list[dict[str, Any]]) -> None:
    """Replace the cache file atomically: a reader sees the old list or the new, never half."""
    document = {"fetched_at": time.time(), "processes": processes}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as file:
        json.dump(document, file, ensure_ascii=False)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def cache_age_s(path: Path) -> float | None:
    """Seconds since the cached list was fetched, or None when there is none."""
    try:
        return time.time() - float(json.loads(path.read_text("utf-8"))["fetched_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_processes(path: Path | None) -> list[dict[str, Any]]:
    """The cached list; empty when the station has not fetched one yet."""
    if path is None:
        return []
    try:
        document = json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as error:
        raise UnknownOperationType(
            f"the cached process list {path} cannot be read ({error})"
        ) from None
    stored = document.get("processes", []) if isinstance(document, dict) else []
    return [
        p for p in stored
        if isinstance(p, dict) and type(p.get("code")) is int and isinstance(p.get("name"), str)
    ]  # fmt: skip


def operation_code(value: object, processes_file: str | Path | None) -> int:
    """The operation code for a code (10, "10") or a name looked up in the cached list."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lstrip("+-").isdigit():
        return int(text)
    path = Path(processes_file) if processes_file else None
    processes = load_processes(path)
    if not processes:
        raise UnknownOperationType(
            f"operation type {text!r} is a name, and this station has no list of the server's "
            "processes yet (the uploader fetches GET /api/App/Processes once the server "
            "answers); give the operation type as a code instead, or wait until it is online"
        )
    for match in (lambda p: p["name"] == text, lambda p: p["name"].casefold() == text.casefold()):
        found = [p["code"] for p in processes if match(p)]
        if found:
            return found[0]
    known = ", ".join(f"{p['code']} {p['name']}" for p in processes[:20])
    raise UnknownOperationType(
        f"operation type {text!r} is not in the server's process list ({known}"
        f"{', ...' if len(processes) > 20 else ''})"
    )
