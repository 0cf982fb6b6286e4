"""The durable report queue: every accepted report and watched source file, in one SQLite file.

The station's promise lives here: a report the queue has accepted is never lost and never
stored twice. Reports are keyed by their WSJF ``id`` (WATS overwrites by id, so a retried upload
is harmless); every write is one ``BEGIN IMMEDIATE`` transaction, committed with
``synchronous=FULL`` in WAL mode; and a file we cannot trust (not SQLite, damaged, from a newer
wats-station, unreadable) raises QueueError before SQLite has written a byte to it.

Report life: ``pending -> processing -> completed``; ``processing -> pending`` (retry later,
release, start-up recovery) or ``-> failed``; ``failed -> pending`` when a person retries.
``attempts`` counts uploads that were answered badly (``retry_later(count_attempt=True)`` and
``fail``); ``release`` and ``recover`` count none, as the report was not at fault.

Schema versions (``PRAGMA user_version``): 1 is the pyWATS client's ``reports`` table, migrated
on open; 2 is ours (``SCHEMA_V2``).
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import peewee

from wats_station.ipc.states import ReportState, SourceState
from wats_station.supervisor import trail

SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 5.0
PRAGMAS = (
    ("journal_mode", "wal"),
    ("synchronous", "full"),
    ("busy_timeout", int(BUSY_TIMEOUT_S * 1000)),
    ("foreign_keys", 1),
)
# claim_due first reads this many pending rows in FIFO order; only when most of them are
# backing off does it look the due ones up by due time instead.
FIFO_WINDOW = 256

LIVE_SOURCE = "state IN ('recorded', 'converted')"  # spelt as in the partial index, so it is used


def _in_list(values: Iterable[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


def _counted(table: str, counter: str, states: Iterable[str]) -> tuple[str, ...]:
    """A per-state counter table kept by triggers, so counting never scans the rows."""
    return (
        f"CREATE TABLE {counter} (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
        f"INSERT INTO {counter} VALUES " + ", ".join(f"('{state}', 0)" for state in states),
        f"""CREATE TRIGGER {table}_in AFTER INSERT ON {table} BEGIN
            UPDATE {counter} SET n = n + 1 WHERE state = NEW.state; END""",
        f"""CREATE TRIGGER {table}_out AFTER DELETE ON {table} BEGIN
            UPDATE {counter} SET n = n - 1 WHERE state = OLD.state; END""",
        f"""CREATE TRIGGER {table}_moved AFTER UPDATE OF state ON {table}
            WHEN OLD.state <> NEW.state BEGIN
            UPDATE {counter} SET n = n - 1 WHERE state = OLD.state;
            UPDATE {counter} SET n = n + 1 WHERE state = NEW.state; END""",
    )


SCHEMA_V2 = (
    f"""CREATE TABLE source_file (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        converter TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ({_in_list(SourceState)})),
        crashes INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        final_path TEXT,
        report_count INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL)""",
    # One live record per file: a file is converted once, even if we crash before its post action.
    "CREATE UNIQUE INDEX source_file_live ON source_file (path, sha256, size, mtime_ns) "
    f"WHERE {LIVE_SOURCE}",
    "CREATE INDEX source_file_fingerprint ON source_file (path, sha256)",
    "CREATE INDEX source_file_state ON source_file (state)",
    # seq is the rowid: the FIFO order, never reused (AUTOINCREMENT).
    # payload is the report JSON compressed with zlib: a production WSJF report shrinks about
    # sixfold, and with it the bytes each enqueue writes and fsyncs (scripts/bench/queue_bench.py).
    # waiting_payload holds an overwrite that arrived while the old payload was being uploaded.
    f"""CREATE TABLE report (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        payload BLOB NOT NULL,
        waiting_payload BLOB,
        state TEXT NOT NULL CHECK (state IN ({_in_list(ReportState)})),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error TEXT,
        last_http_status INTEGER,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        source_id INTEGER REFERENCES source_file (id))""",
    "CREATE INDEX report_state ON report (state)",  # holds (state, seq): FIFO within a state
    "CREATE INDEX report_due ON report (state, next_attempt_at)",
    *_counted("report", "report_count", ReportState),
    *_counted("source_file", "source_count", SourceState),
)
V2_TABLES = frozenset({"report", "source_file", "report_count", "source_count"})
V1_COLUMNS = frozenset(
    {"id", "report_data", "status", "created_at", "updated_at", "attempts", "error"}
)

REPORT_COLUMNS = (
    "id, payload, state, attempts, next_attempt_at, last_error, last_http_status, "
    "created_at, updated_at, source_id"
)
SOURCE_COLUMNS = (
    "id, path, size, mtime_ns, sha256, converter, state, crashes, last_error, final_path"
)

# A new id is inserted. A known id is overwritten and due now, unless its upload is in flight:
# then the new payload waits beside the old one until the upload's answer is recorded.
UPSERT_REPORT = """INSERT INTO report
    (id, payload, state, attempts, next_attempt_at, created_at, updated_at, source_id)
    VALUES (?, ?, 'pending', 0, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET
        waiting_payload = IIF(state = 'processing', excluded.payload, NULL),
        payload = IIF(state = 'processing', payload, excluded.payload),
        state = IIF(state = 'processing', state, 'pending'),
        attempts = IIF(state = 'processing', attempts, 0),
        next_attempt_at = IIF(state = 'processing', next_attempt_at, excluded.next_attempt_at),
        last_error = IIF(state = 'processing', last_error, NULL),
        last_http_status = IIF(state = 'processing', last_http_status, NULL),
        updated_at = excluded.updated_at,
        source_id = COALESCE(excluded.source_id, source_id)"""

# Every edge out of processing ends with this: a waiting overwrite becomes the payload, pending,
# with fresh attempts. It changes nothing when no overwrite waited.
PROMOTE_WAITING = """UPDATE report SET state = 'pending', payload = waiting_payload,
    waiting_payload = NULL, attempts = 0, next_attempt_at = MAX(next_attempt_at, ?), updated_at = ?
    WHERE id = ? AND waiting_payload IS NOT NULL AND state <> 'processing'"""


class QueueError(Exception):
    """The queue file is unusable, or a transition is not allowed; the message says why."""


@dataclass(frozen=True)
class QueuedReport:
    id: str
    payload: bytes  # the uncompressed JSON to POST (empty in list(), for speed)
    state: ReportState
    attempts: int
    next_attempt_at: float
    last_error: str | None
    last_http_status: int | None
    created_at: float
    updated_at: float
    source_id: int | None


@dataclass(frozen=True)
class SourceRecord:
    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str
    converter: str
    state: SourceState
    crashes: int
    last_error: str | None
    final_path: str | None


def _report(row: Sequence[Any]) -> QueuedReport:
    payload = zlib.decompress(row[1]) if row[1] else b""
    return QueuedReport(row[0], payload, ReportState(row[2]), *row[3:])


def _source(row: Sequence[Any]) -> SourceRecord:
    return SourceRecord(*row[:6], SourceState(row[6]), *row[7:])


class ReportQueue:
    SCHEMA_VERSION = 2

    def __init__(self, path: Path, *, now: Callable[[], float] = time.time) -> None:
        """Open the queue file, creating it or migrating a v1 file; QueueError if it is unusable."""
        self.path = Path(path)
        self._now = now
        layout = _inspect(self.path)
        self._db = peewee.SqliteDatabase(str(self.path), pragmas=PRAGMAS, timeout=BUSY_TIMEOUT_S)
        try:
            self._db.connect()
            mode = self._sql("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                raise QueueError(
                    f"queue database {self.path}: SQLite refused WAL mode (got {mode!r}); "
                    "keep the queue on a local disk, not a network share"
                )
            if layout == "new":
                self._create()
            elif layout == "v1":
                self._migrate_v1()
            trail.ensure_schema(self)
        except (peewee.PeeweeException, sqlite3.Error) as error:
            self._db.close()
            raise QueueError(f"queue database {self.path}: {error}") from error
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def _sql(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        return self._db.execute_sql(sql, params)

    def _write(self) -> Any:
        # IMMEDIATE takes the write lock up front, so busy_timeout applies; a DEFERRED
        # transaction that reads and then writes can fail with SQLITE_BUSY at once.
        return self._db.atomic("IMMEDIATE")

    def _create(self) -> None:
        with self._write():
            for statement in SCHEMA_V2:
                self._sql(statement)
            self._sql(f"PRAGMA user_version = {self.SCHEMA_VERSION}")

    def _migrate_v1(self) -> None:
        """Move the pyWATS client's reports into our layout in one transaction."""
        now = self._now()
        insert = (
            "INSERT INTO report (id, payload, state, attempts, next_attempt_at, last_error, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        with self._write():
            for statement in SCHEMA_V2:
                self._sql(statement)
            old = self._sql(
                "SELECT id, report_data, status, created_at, updated_at, attempts, error "
                "FROM reports ORDER BY created_at, rowid"
            )
            while batch := old.fetchmany(500):
                rows = [_v1_report(row, now) for row in batch]
                self._db.connection().executemany(insert, rows)
            self._sql("DROP TABLE reports")
            self._sql(f"PRAGMA user_version = {self.SCHEMA_VERSION}")

    # -- reports -----------------------------------------------------------------------

    def enqueue(self, reports: Sequence[tuple[str, bytes]]) -> None:
        """Store (id, JSON bytes) reports as pending in one durable transaction (UPSERT_REPORT)."""
        rows = _report_rows(reports)
        with self._write():
            self._upsert(rows, None)

    def _upsert(self, rows: list[tuple[str, bytes]], source_id: int | None) -> None:
        now = self._now()
        values = [(id_, payload, now, now, now, source_id) for id_, payload in rows]
        self._db.connection().executemany(UPSERT_REPORT, values)

    def claim_due(self, limit: int) -> list[QueuedReport]:
        """Mark up to `limit` due pending reports processing, oldest first, and return them."""
        if limit <= 0:
            return []
        now = self._now()
        with self._write():
            seqs = self._due_seqs(now, limit)
            if not seqs:
                return []
            marks = ", ".join("?" * len(seqs))
            rows = self._sql(
                f"UPDATE report SET state = 'processing', updated_at = ? WHERE seq IN ({marks}) "
                f"RETURNING seq, {REPORT_COLUMNS}",
                (now, *seqs),
            ).fetchall()
        return [_report(row[1:]) for row in sorted(rows)]

    def _due_seqs(self, now: float, limit: int) -> list[int]:
        window = max(FIFO_WINDOW, 4 * limit)
        head = self._sql(
            "SELECT seq, next_attempt_at FROM report INDEXED BY report_state "
            "WHERE state = 'pending' ORDER BY seq LIMIT ?",
            (window,),
        ).fetchall()
        due = [seq for seq, due_at in head if due_at <= now][:limit]
        if len(due) == limit or len(head) < window:
            return due
        # The oldest reports are backing off (the server was away), so look the due ones up by
        # due time; that reads every due row, and they are few while most are backing off.
        rows = self._sql(
            "SELECT seq FROM report INDEXED BY report_due "
            "WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY seq LIMIT ?",
            (now, limit),
        ).fetchall()
        return [seq for (seq,) in rows]

    def next_due_at(self) -> float | None:
        """When the earliest pending report is due (it may be in the past), or None."""
        row = self._sql(
            "SELECT next_attempt_at FROM report INDEXED BY report_due WHERE state = 'pending' "
            "ORDER BY next_attempt_at LIMIT 1"
        ).fetchone()
        return row[0] if row else None

    def complete(self, report_id: str, http_status: int) -> None:
        self._leave_processing(
            report_id,
            "complete",
            "state = 'completed', last_error = NULL, last_http_status = :status",
            status=http_status,
        )

    def retry_later(
        self,
        report_id: str,
        *,
        delay_s: float,
        error: str,
        http_status: int | None,
        count_attempt: bool,
    ) -> None:
        self._leave_processing(
            report_id,
            "retry later",
            "state = 'pending', next_attempt_at = :due, attempts = attempts + :counted, "
            "last_error = :error, last_http_status = :status",
            due=self._now() + delay_s,
            counted=int(count_attempt),
            error=error,
            status=http_status,
        )

    def fail(self, report_id: str, *, error: str, http_status: int | None) -> None:
        self._leave_processing(
            report_id,
            "fail",
            "state = 'failed', attempts = attempts + 1, "
            "last_error = :error, last_http_status = :status",
            error=error,
            status=http_status,
        )

    def _leave_processing(self, report_id: str, action: str, changes: str, **params: Any) -> None:
        now = self._now()
        with self._write():
            changed = self._sql(
                f"UPDATE report SET {changes}, updated_at = :now "
                "WHERE id = :id AND state = 'processing'",
                {**params, "now": now, "id": report_id},
            ).rowcount
            if not changed:
                row = self._sql("SELECT state FROM report WHERE id = ?", (report_id,)).fetchone()
                if row is None:
                    raise QueueError(f"cannot {action} report {report_id}: not in {self.path}")
                raise QueueError(
                    f"cannot {action} report {report_id}: it is {row[0]}, not processing"
                )
            self._sql(PROMOTE_WAITING, (now, now, report_id))

    def release(self, report_ids: Iterable[str]) -> int:
        """Put processing reports back to pending, counting no attempt; skip any other state."""
        now = self._now()
        released = 0
        with self._write():
            for report_id in report_ids:
                released += self._sql(
                    "UPDATE report SET state = 'pending', updated_at = ? "
                    "WHERE id = ? AND state = 'processing'",
                    (now, report_id),
                ).rowcount
                self._sql(PROMOTE_WAITING, (now, now, report_id))
        return released

    def recover(self) -> int:
        """At start-up: every report a crash left processing goes back to pending, due at once."""
        now = self._now()
        with self._write():
            ids = self._sql(
                "UPDATE report SET state = 'pending', updated_at = ? "
                "WHERE state = 'processing' RETURNING id",
                (now,),
            ).fetchall()
            for (report_id,) in ids:
                self._sql(PROMOTE_WAITING, (now, now, report_id))
        return len(ids)

    def stats(self) -> dict[str, int]:
        counts = dict(self._sql("SELECT state, n FROM report_count").fetchall())
        return {str(state): counts.get(state, 0) for state in ReportState}

    def list(
        self, state: ReportState | None = None, limit: int = 100, offset: int = 0
    ) -> list[QueuedReport]:
        """Reports oldest first; `payload` is left empty for speed (get() has it)."""
        columns = REPORT_COLUMNS.replace("payload", "NULL")
        if state is None:
            sql, params = f"SELECT {columns} FROM report", (limit, offset)
        else:
            sql = f"SELECT {columns} FROM report INDEXED BY report_state WHERE state = ?"
            params = (ReportState(state), limit, offset)
        return [_report(row) for row in self._sql(sql + " ORDER BY seq LIMIT ? OFFSET ?", params)]

    def get(self, report_id: str) -> QueuedReport | None:
        """One report with its newest payload (an overwrite waiting for an upload, if any)."""
        columns = REPORT_COLUMNS.replace("payload", "COALESCE(waiting_payload, payload)")
        row = self._sql(f"SELECT {columns} FROM report WHERE id = ?", (report_id,)).fetchone()
        return _report(row) if row else None

    def retry(self, report_ids: Iterable[str] = (), *, failed: bool = False) -> int:
        """Make these failed or pending reports, and all failed ones if `failed`, due now."""
        now = self._now()
        reset = (
            "UPDATE report SET state = 'pending', attempts = 0, next_attempt_at = ?, "
            "updated_at = ? WHERE "
        )
        retried = 0
        with self._write():
            ids = list(report_ids)
            unknown = [i for i in ids if not self._exists(i)]
            if unknown:
                raise QueueError(f"cannot retry: no report {', '.join(unknown)} in {self.path}")
            for report_id in ids:
                retried += self._sql(
                    reset + "id = ? AND state IN ('failed', 'pending')", (now, now, report_id)
                ).rowcount
            if failed:
                retried += self._sql(reset + "state = 'failed'", (now, now)).rowcount
        return retried

    def _exists(self, report_id: str) -> bool:
        return bool(self._sql("SELECT 1 FROM report WHERE id = ?", (report_id,)).fetchone())

    def clean(
        self, *, completed: bool = True, failed: bool = False, older_than_s: float | None = None
    ) -> int:
        """Delete completed and/or failed reports, if given only those older than `older_than_s`."""
        chosen = {ReportState.COMPLETED: completed, ReportState.FAILED: failed}
        states = [state for state, wanted in chosen.items() if wanted]
        if not states:
            return 0
        sql = f"DELETE FROM report WHERE state IN ({_in_list(states)})"
        params: tuple[float, ...] = ()
        if older_than_s is not None:
            sql, params = sql + " AND updated_at < ?", (self._now() - older_than_s,)
        with self._write():
            return self._sql(sql, params).rowcount

    def purge_completed(self, retention_s: float) -> int:
        return self.clean(completed=True, older_than_s=retention_s)

    # -- source files ------------------------------------------------------------------

    def find_source(
        self, path: str, size: int, mtime_ns: int, sha256: str, *, finished: bool = False
    ) -> SourceRecord | None:
        """This exact file's live (recorded/converted) record; if `finished`, its last done one."""
        where = "state = 'done'" if finished else LIVE_SOURCE
        row = self._sql(
            f"SELECT {SOURCE_COLUMNS} FROM source_file WHERE path = ? AND sha256 = ? "
            f"AND size = ? AND mtime_ns = ? AND {where} ORDER BY id DESC LIMIT 1",
            (path, sha256, size, mtime_ns),
        ).fetchone()
        return _source(row) if row else None

    def record_source(
        self, path: str, size: int, mtime_ns: int, sha256: str, converter: str
    ) -> SourceRecord:
        """Durably note a file to convert; an identical file already recorded returns its record."""
        now = self._now()
        with self._write():
            existing = self.find_source(path, size, mtime_ns, sha256)
            if existing:
                return existing
            row = self._sql(
                "INSERT INTO source_file (path, size, mtime_ns, sha256, converter, state, "
                f"created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'recorded', ?, ?) "
                f"RETURNING {SOURCE_COLUMNS}",
                (path, size, mtime_ns, sha256, converter, now, now),
            ).fetchone()
        return _source(row)

    def commit_conversion(
        self, source_id: int, reports: Sequence[tuple[str, bytes]], converter_version: str = ""
    ) -> None:
        """Queue a file's reports and mark it converted in ONE transaction: both or neither."""
        rows = _report_rows(reports)
        with self._write():
            self._check_source(source_id, "commit the conversion of", SourceState.RECORDED)
            now = self._now()
            detail = f"{len(rows)} report(s); converter version {converter_version or 'unknown'}"
            self._sql(trail.INSERT, (now, source_id, None, "converted", None, detail))
            self._upsert(rows, source_id)
            self._sql(
                "UPDATE source_file SET state = 'converted', report_count = ?, last_error = NULL, "
                "updated_at = ? WHERE id = ?",
                (len(rows), now, source_id),
            )

    def record_crash(self, source_id: int, error: str) -> int:
        """Count a converter crash against the file; returns how many it has caused so far."""
        with self._write():
            self._check_source(source_id, "count a crash of", SourceState.RECORDED)
            return self._sql(
                "UPDATE source_file SET crashes = crashes + 1, last_error = ?, updated_at = ? "
                "WHERE id = ? RETURNING crashes",
                (error, self._now(), source_id),
            ).fetchone()[0]

    def finish_source(
        self,
        source_id: int,
        *,
        state: SourceState,
        final_path: str | None,
        error: str | None = None,
    ) -> None:
        """End a file's life: done (post action performed) or failed (in the error folder)."""
        if state not in (SourceState.DONE, SourceState.FAILED):
            raise QueueError(
                f"cannot finish source file {source_id} as {state}: use done or failed"
            )
        with self._write():
            self._check_source(source_id, "finish", SourceState.RECORDED, SourceState.CONVERTED)
            self._sql(
                "UPDATE source_file SET state = ?, final_path = ?, "
                "last_error = COALESCE(?, last_error), updated_at = ? WHERE id = ?",
                (state, final_path, error, self._now(), source_id),
            )

    def _check_source(self, source_id: int, action: str, *allowed: SourceState) -> None:
        row = self._sql("SELECT path, state FROM source_file WHERE id = ?", (source_id,)).fetchone()
        if row is None:
            raise QueueError(f"cannot {action} source file {source_id}: not in {self.path}")
        if row[1] not in allowed:
            raise QueueError(
                f"cannot {action} source file {source_id} ({row[0]}): "
                f"it is {row[1]}, not {' or '.join(allowed)}"
            )

    def unfinished_sources(self) -> list[SourceRecord]:
        """Recorded or converted files, oldest first: what a restart must finish."""
        rows = self._sql(
            f"SELECT {SOURCE_COLUMNS} FROM source_file WHERE {LIVE_SOURCE} ORDER BY id"
        )
        return [_source(row) for row in rows]

    def source_stats(self) -> dict[str, int]:
        counts = dict(self._sql("SELECT state, n FROM source_count").fetchall())
        return {str(state): counts.get(state, 0) for state in SourceState}


def _report_rows(reports: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Check every id and payload before anything is written; compress the payloads."""
    rows = []
    for index, (report_id, payload) in enumerate(reports):
        try:
            uuid.UUID(report_id)
        except (TypeError, ValueError, AttributeError):
            raise QueueError(f"report #{index}: id {report_id!r} is not a UUID") from None
        if not isinstance(payload, bytes) or not payload:
            raise QueueError(
                f"report #{index} ({report_id}): payload must be non-empty JSON bytes, "
                f"got {type(payload).__name__} {payload!r:.40}"
            )
        rows.append((report_id, zlib.compress(payload)))
    return rows


def _v1_report(row: Sequence[Any], now: float) -> tuple[Any, ...]:
    """A v1 row as v2 insert values; an upload a crash interrupted is pending again."""
    report_id, data, status, created, updated, attempts, error = row
    state = ReportState.PENDING if status == ReportState.PROCESSING else ReportState(status)
    payload = zlib.compress(data.encode() if isinstance(data, str) else bytes(data))
    created_at = _epoch(created, now)
    return (
        report_id,
        payload,
        state,
        attempts or 0,
        now,
        error,
        created_at,
        _epoch(updated, created_at),
    )


def _epoch(value: Any, default: float) -> float:
    """A v1 timestamp in epoch seconds (pyWATS stored datetime.now() as local ISO text)."""
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(value).timestamp()
    except (TypeError, ValueError):
        return default


# -- checking a file before SQLite may write to it ---------------------------------------


def _inspect(path: Path) -> str:
    """Say whether `path` holds a new, v1 or v2 queue; QueueError, file untouched, if none."""
    if path.is_dir():
        raise QueueError(f"queue database {path} is a directory, not a file")
    folder = path.parent
    if not folder.is_dir():
        raise QueueError(f"cannot open queue database {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise QueueError(
            f"cannot open queue database {path}: folder {folder} is not writable "
            "(SQLite keeps its -wal and -shm files beside the database)"
        )
    if not path.exists():
        return "new"
    try:
        with path.open("rb") as file:
            header = file.read(100)
    except OSError as error:
        raise QueueError(f"cannot read queue database {path}: {error.strerror}") from error
    if not os.access(path, os.W_OK):
        raise QueueError(f"cannot write queue database {path}: permission denied")
    if header and not header.startswith(SQLITE_HEADER):
        raise QueueError(
            f"{path} is not an SQLite database (it starts with {header[:16]!r}); "
            "it was left untouched"
        )
    if 0 < len(header) < 100:
        raise QueueError(
            f"queue database {path} is truncated to {len(header)} bytes; left untouched"
        )
    siblings = {Path(f"{path}{suffix}") for suffix in ("-wal", "-shm")}
    created = {p for p in siblings if not p.exists()}
    try:
        return _probe(path)
    except BaseException:
        for sibling in created:  # made by the read-only probe: leave the folder as we found it
            sibling.unlink(missing_ok=True)
        raise


def _probe(path: Path) -> str:
    # Read-only, so neither a rollback nor a checkpoint on close can write to a file we may
    # refuse. Only a hot rollback journal (a v1 client killed mid-write) needs a read-write
    # connection to be rolled back: that is the one repair we let SQLite make.
    mode = "rw" if Path(f"{path}-journal").exists() else "ro"
    damaged = "it was left untouched: restore a backup, or move it aside to start an empty queue"
    try:
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True)
    except sqlite3.Error as error:
        raise QueueError(f"cannot open queue database {path}: {error}") from error
    try:
        problems = [row[0] for row in probe.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise QueueError(f"queue database {path} is damaged ({'; '.join(problems)}); {damaged}")
        version = probe.execute("PRAGMA user_version").fetchone()[0]
        tables = {
            name
            for (name,) in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not name.startswith("sqlite_")
        }
        v1_columns = {row[1] for row in probe.execute("PRAGMA table_info(reports)")}
    except sqlite3.DatabaseError as error:
        raise QueueError(
            f"queue database {path} is damaged or not a database ({error}); {damaged}"
        ) from error
    finally:
        probe.close()
    return _layout(path, version, tables, v1_columns)


def _layout(path: Path, version: int, tables: set[str], v1_columns: set[str]) -> str:
    if version > ReportQueue.SCHEMA_VERSION:
        raise QueueError(
            f"queue database {path} has schema version {version}, newer than this wats-station "
            f"knows ({ReportQueue.SCHEMA_VERSION}); upgrade wats-station. It was left untouched"
        )
    if version == 0 and not tables:
        return "new"
    if version in (0, 1) and tables == {"reports"} and v1_columns >= V1_COLUMNS:
        return "v1"
    if version == ReportQueue.SCHEMA_VERSION and tables >= V2_TABLES:
        return "v2"
    raise QueueError(
        f"{path} is not a wats-station queue (schema version {version}, tables: "
        f"{', '.join(sorted(tables)) or 'none'}); it was left untouched"
    )
