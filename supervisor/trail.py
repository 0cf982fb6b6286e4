"""The custody trail: every step of a file's and a report's life, kept in the queue file.

Triggers on the ``report`` and ``source_file`` tables write one ``trail`` row per change of
state, inside the transaction that makes the change: the trail costs no commit of its own
and cannot disagree with the queue. What a trigger cannot know (the converter's version, an
operator's retry with the reason it had failed) is written explicitly by the code that knows.
The same file holds the ``meta`` table (operator intent such as a pause).

``trace`` answers "where is the result of this board?" from the file alone, so it works on a
stopped station as well as a running one.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from wats_station.supervisor.pathnames import real_path, stored_path


class QueueFile(Protocol):
    """The queue's SQL door (queue.ReportQueue is one); the trail needs nothing else of it."""

    def _sql(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor: ...


# Created if missing each time the queue is opened; older wats-station versions ignore them.
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS trail (
        seq INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        source_id INTEGER,
        report_id TEXT,
        what TEXT NOT NULL,
        http_status INTEGER,
        detail TEXT)""",
    "CREATE INDEX IF NOT EXISTS trail_report ON trail (report_id) WHERE report_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS trail_source ON trail (source_id) WHERE source_id IS NOT NULL",
    # Quarantined files are looked up by where they lie (files list, files retry).
    "CREATE INDEX IF NOT EXISTS source_file_quarantined ON source_file (final_path) "
    "WHERE state = 'failed'",
    """CREATE TRIGGER IF NOT EXISTS trail_report_in AFTER INSERT ON report BEGIN
        INSERT INTO trail (at, source_id, report_id, what)
        VALUES (NEW.created_at, NEW.source_id, NEW.id, 'queued'); END""",
    # Each upload is two rows: 'upload' when claimed, then its answer. A report that goes back
    # with a new due time was answered (retry later); one that goes back without was not
    # (the uploader died, or the server could not be reached).
    """CREATE TRIGGER IF NOT EXISTS trail_report_state AFTER UPDATE OF state ON report
        WHEN OLD.state <> NEW.state BEGIN
        INSERT INTO trail (at, source_id, report_id, what, http_status, detail) VALUES (
            NEW.updated_at, NEW.source_id, NEW.id,
            CASE
                WHEN NEW.state = 'processing' THEN 'upload'
                WHEN NEW.state = 'completed' THEN 'accepted'
                WHEN NEW.state = 'failed' THEN 'failed'
                WHEN OLD.state = 'processing' AND NEW.next_attempt_at <> OLD.next_attempt_at
                    THEN 'retry later'
                WHEN OLD.state = 'processing' THEN 'returned'
                ELSE 'queued again' END,
            CASE WHEN OLD.state = 'processing' AND NEW.next_attempt_at <> OLD.next_attempt_at
                OR NEW.state IN ('completed', 'failed') THEN NEW.last_http_status END,
            CASE
                WHEN NEW.state = 'processing' THEN 'attempt ' || (NEW.attempts + 1)
                WHEN NEW.state = 'completed' THEN NULL
                WHEN NEW.state = 'failed' THEN NEW.last_error
                WHEN OLD.state = 'processing' AND NEW.next_attempt_at <> OLD.next_attempt_at
                    THEN NEW.last_error || ' (next try in '
                        || CAST(ROUND(NEW.next_attempt_at - NEW.updated_at, 1) AS TEXT) || ' s)'
                WHEN OLD.state = 'processing'
                    THEN 'no answer: the uploader stopped or the server was unreachable'
                END); END""",
    """CREATE TRIGGER IF NOT EXISTS trail_report_out AFTER DELETE ON report BEGIN
        DELETE FROM trail WHERE report_id = OLD.id; END""",
    """CREATE TRIGGER IF NOT EXISTS trail_source_in AFTER INSERT ON source_file BEGIN
        INSERT INTO trail (at, source_id, what, detail)
        VALUES (NEW.created_at, NEW.id, 'seen', 'converter ' || NEW.converter); END""",
    # 'converted' is written by commit_conversion, which knows the converter's version.
    """CREATE TRIGGER IF NOT EXISTS trail_source_state AFTER UPDATE OF state ON source_file
        WHEN OLD.state <> NEW.state AND NEW.state <> 'converted' BEGIN
        INSERT INTO trail (at, source_id, what, detail) VALUES (
            NEW.updated_at, NEW.id,
            CASE NEW.state WHEN 'done' THEN 'done' WHEN 'failed' THEN 'quarantined'
                ELSE NEW.state END,
            CASE NEW.state
                WHEN 'done' THEN COALESCE('now at ' || NEW.final_path, 'deleted')
                WHEN 'failed' THEN COALESCE(NEW.last_error, '')
                    || COALESCE(' -> ' || NEW.final_path, '') END); END""",
    """CREATE TRIGGER IF NOT EXISTS trail_source_crash AFTER UPDATE OF crashes ON source_file
        WHEN NEW.crashes > OLD.crashes BEGIN
        INSERT INTO trail (at, source_id, what, detail) VALUES (
            NEW.updated_at, NEW.id, 'converter crashed',
            'crash ' || NEW.crashes || ': ' || COALESCE(NEW.last_error, '')); END""",
)

INSERT = (
    "INSERT INTO trail (at, source_id, report_id, what, http_status, detail) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
SOURCE_FIELDS = "id, path, size, sha256, converter, state, last_error, final_path, created_at"


def ensure_schema(queue: QueueFile) -> None:
    with queue._write():
        for statement in SCHEMA:
            queue._sql(statement)


def note(
    queue: QueueFile,
    what: str,
    *,
    source_id: int | None = None,
    report_id: str | None = None,
    detail: str = "",
) -> None:
    """Write one trail row in a transaction of its own (operator actions: rare)."""
    with queue._write():
        queue._sql(INSERT, (time.time(), source_id, report_id, what, None, detail))


# -- the meta table ------------------------------------------------------------------------


def get_meta(queue: QueueFile, key: str) -> Any:
    row = queue._sql("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else None


def set_meta(queue: QueueFile, key: str, value: Any) -> None:
    """Store a JSON value durably; None deletes the key."""
    with queue._write():
        if value is None:
            queue._sql("DELETE FROM meta WHERE key = ?", (key,))
        else:
            queue._sql(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )


# -- what health needs ---------------------------------------------------------------------


def oldest_unsent(queue: QueueFile) -> float | None:
    """created_at of the oldest report not yet delivered (pending or processing), or None."""
    row = queue._sql(
        "SELECT MIN(created_at) FROM ("
        "SELECT * FROM (SELECT created_at FROM report INDEXED BY report_state "
        "WHERE state = 'pending' ORDER BY seq LIMIT 1) UNION ALL "
        "SELECT * FROM (SELECT created_at FROM report INDEXED BY report_state "
        "WHERE state = 'processing' ORDER BY seq LIMIT 1))"
    ).fetchone()
    return row[0] if row else None


def oldest_waiting_file(queue: QueueFile) -> float | None:
    """When the oldest file that is recorded but not yet converted was seen, or None."""
    row = queue._sql(
        "SELECT created_at FROM source_file INDEXED BY source_file_state "
        "WHERE state = 'recorded' ORDER BY id LIMIT 1"
    ).fetchone()
    return row[0] if row else None


# -- the trace -----------------------------------------------------------------------------


def _source_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = ("id", "path", "size", "sha256", "converter", "state", "error", "final_path", "seen_at")
    source = dict(zip(keys, row, strict=True))
    source["path"] = real_path(source["path"])
    source["name"] = source["path"].rsplit("/", 1)[-1]
    if source["final_path"]:
        source["final_path"] = real_path(source["final_path"])
    return source


def find_sources(queue: QueueFile, target: str) -> list[dict[str, Any]]:
    """Every record of a file given by content hash, path (where it was or is now) or name."""
    base = f"SELECT {SOURCE_FIELDS} FROM source_file WHERE "
    if len(target) == 64 and all(c in "0123456789abcdef" for c in target.lower()):
        rows = queue._sql(base + "sha256 = ? ORDER BY id", (target.lower(),)).fetchall()
    elif "/" in target:
        stored = stored_path(target)
        rows = queue._sql(
            base + "path = ? OR final_path = ? ORDER BY id", (stored, stored)
        ).fetchall()
    else:
        rows = queue._sql(
            base + "path = ? OR path LIKE ? ESCAPE '\\' ORDER BY id",
            (target, "%/" + target.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")),
        ).fetchall()
    # The same bytes seen again (a retried file) belong to the same story.
    hashes = {row[3] for row in rows}
    if hashes:
        marks = ", ".join("?" * len(hashes))
        rows = queue._sql(base + f"sha256 IN ({marks}) ORDER BY id", tuple(hashes)).fetchall()
    return [_source_dict(row) for row in rows]


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def trace(queue: QueueFile, target: str) -> dict[str, Any] | None:
    """The life of a file or a report; None if the queue knows nothing of `target`."""
    sources = find_sources(queue, target)
    report_ids: set[str] = set()
    if _is_uuid(target):
        report_ids.add(target)
        row = queue._sql("SELECT source_id FROM report WHERE id = ?", (target,)).fetchone()
        source_id = row[0] if row else None
        if source_id is None:
            row = queue._sql(
                "SELECT source_id FROM trail WHERE report_id = ? AND source_id IS NOT NULL LIMIT 1",
                (target,),
            ).fetchone()
            source_id = row[0] if row else None
        if source_id is not None:
            sha = queue._sql("SELECT sha256 FROM source_file WHERE id = ?", (source_id,))
            sources = find_sources(queue, sha.fetchone()[0])
    source_ids = [s["id"] for s in sources]
    if source_ids:
        marks = ", ".join("?" * len(source_ids))
        report_ids.update(
            rid
            for (rid,) in queue._sql(
                f"SELECT DISTINCT report_id FROM trail WHERE source_id IN ({marks}) "
                "AND report_id IS NOT NULL",
                tuple(source_ids),
            )
        )
    events = _events(queue, source_ids, sorted(report_ids))
    if not sources and not events:
        return None
    return {
        "target": target,
        "source": sources[-1] if sources else None,
        "sources": sources,
        "reports": [_report_now(queue, rid) for rid in sorted(report_ids)],
        "events": events,
    }


def _events(queue: QueueFile, source_ids: list[int], report_ids: list[str]) -> list[dict]:
    rows: dict[int, tuple[Any, ...]] = {}
    fields = "seq, at, source_id, report_id, what, http_status, detail"
    if source_ids:
        marks = ", ".join("?" * len(source_ids))
        for row in queue._sql(
            f"SELECT {fields} FROM trail WHERE source_id IN ({marks})", tuple(source_ids)
        ):
            rows[row[0]] = row
    for report_id in report_ids:
        for row in queue._sql(f"SELECT {fields} FROM trail WHERE report_id = ?", (report_id,)):
            rows[row[0]] = row
    keys = ("seq", "at", "source_id", "report_id", "what", "http_status", "detail")
    return [dict(zip(keys, rows[seq], strict=True)) for seq in sorted(rows)]


def _report_now(queue: QueueFile, report_id: str) -> dict[str, Any]:
    report = queue.get(report_id)
    if report is None:
        return {"id": report_id, "state": "removed"}
    return {
        "id": report.id,
        "state": str(report.state),
        "attempts": report.attempts,
        "last_http_status": report.last_http_status,
        "last_error": report.last_error,
    }
