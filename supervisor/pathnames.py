"""How file paths are kept in the queue database: as text, reversibly, whatever their bytes."""

from __future__ import annotations

import os


def stored_path(path: str) -> str:
    """A path as the queue database keeps it. SQLite text must be valid UTF-8, so a name
    that is not (Linux allows any bytes) is kept as ``hex:`` and its bytes, reversibly."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "hex:" + os.fsencode(path).hex()
    return path


def real_path(stored: str) -> str:
    return os.fsdecode(bytes.fromhex(stored[4:])) if stored.startswith("hex:") else stored
