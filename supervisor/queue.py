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

Claim order: higher ``priority`` first, oldest (``seq``) first within a priority. One claim
holds one priority, and nothing is claimed while a report of a higher priority is being
uploaded, so a lower priority never overtakes a higher one on the wire (the cost: at most one
round trip of lost concurrency per priority step of a backlog). A report backing off does not
hold lower priorities back.

Schema versions (``PRAGMA user_version``): 1 is the pyWATS client's ``reports`` table, migrated
on open; 2 is ours (``SCHEMA_V2``); 3 adds a CRC-32 of every stored payload (``SCHEMA_V3``), so a
damaged payload is detected and its report failed with the reason, never guessed at; 4 adds
report priority (``SCHEMA_V4``). Each older version is migrated in place, one step at a time.

The queue guards its own file: a fresh queue is created only where there was no file (built
beside it and linked into place, so a crash never leaves a half-made one), an existing file is
never replaced, and every write first checks that the path still names the file we hold open.
If it does not (deleted or replaced under us), the open file's contents are written back out
with SQLite's backup API and every later write raises QueueLost: nothing the queue answered
"committed" is lost. Write errors are named for what they are (QueueWriteError: disk full,
I/O error, read-only...), never a bare OperationalError.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import peewee

from wats_station.ipc.states import ReportState, SourceState
from wats_station.supervisor import trail
from wats_station.supervisor.atomic import fsync_dir, fsync_file

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
# v3: the CRC-32 of the stored (compressed) bytes of payload and waiting_payload.
SCHEMA_V3 = (
    "ALTER TABLE report ADD COLUMN payload_crc32 INTEGER",
    "ALTER TABLE report ADD COLUMN waiting_crc32 INTEGER",
)
# Version 4: report priority. ADD COLUMN with a constant default rewrites no row; the claim
# index serves the claim order, and a counter table kept by triggers says how many reports wait
# at each priority without scanning them.
SCHEMA_V4 = (
    "ALTER TABLE report ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
    # Covering (next_attempt_at too): the claim reads its window from the index alone, even
    # when the reports of one priority are scattered over the whole table.
    "CREATE INDEX report_claim ON report (state, priority DESC, seq, next_attempt_at)",
    "CREATE TABLE pending_by_priority (priority INTEGER PRIMARY KEY, n INTEGER NOT NULL) "
    "WITHOUT ROWID",
    """INSERT INTO pending_by_priority SELECT priority, COUNT(*) FROM report
        WHERE state = 'pending' GROUP BY priority""",
    """CREATE TRIGGER report_priority_in AFTER INSERT ON report WHEN NEW.state = 'pending' BEGIN
        INSERT INTO pending_by_priority VALUES (NEW.priority, 1)
        ON CONFLICT (priority) DO UPDATE SET n = n + 1; END""",
    """CREATE TRIGGER report_priority_out AFTER DELETE ON report WHEN OLD.state = 'pending' BEGIN
        UPDATE pending_by_priority SET n = n - 1 WHERE priority = OLD.priority; END""",
    """CREATE TRIGGER report_priority_moved AFTER UPDATE OF state, priority ON report
        WHEN (OLD.state = 'pending') <> (NEW.state = 'pending')
            OR (NEW.state = 'pending' AND OLD.priority <> NEW.priority) BEGIN
        UPDATE pending_by_priority SET n = n - 1
            WHERE OLD.state = 'pending' AND priority = OLD.priority;
        INSERT INTO pending_by_priority SELECT NEW.priority, 1 WHERE NEW.state = 'pending'
            ON CONFLICT (priority) DO UPDATE SET n = n + 1; END""",
)
V2_TABLES = frozenset({"report", "source_file", "report_count", "source_count"})
V4_TABLES = V2_TABLES | {"pending_by_priority"}
V1_COLUMNS = frozenset(
    {"id", "report_data", "status", "created_at", "updated_at", "attempts", "error"}
)

# payload_crc32 comes last: _report() checks the payload against it and drops it.
REPORT_COLUMNS = (
    "id, payload, state, attempts, next_attempt_at, last_error, last_http_status, "
    "created_at, updated_at, source_id, priority, payload_crc32"
)
SOURCE_COLUMNS = (
    "id, path, size, mtime_ns, sha256, converter, state, crashes, last_error, final_path"
)

# A new id is inserted. A known id is overwritten and due now, unless its upload is in flight:
# then the new payload waits beside the old one until the upload's answer is recorded.
UPSERT_REPORT = """INSERT INTO report
    (id, payload, payload_crc32, state, attempts, next_attempt_at, created_at, updated_at,
     source_id, priority)
    VALUES (?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET
        priority = excluded.priority,
        waiting_payload = IIF(state = 'processing', excluded.payload, NULL),
        waiting_crc32 = IIF(state = 'processing', excluded.payload_crc32, NULL),
        payload = IIF(state = 'processing', payload, excluded.payload),
        payload_crc32 = IIF(state = 'processing', payload_crc32, excluded.payload_crc32),
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
    payload_crc32 = waiting_crc32, waiting_payload = NULL, waiting_crc32 = NULL, attempts = 0,
    next_attempt_at = MAX(next_attempt_at, ?), updated_at = ?
    WHERE id = ? AND waiting_payload IS NOT NULL AND state <> 'processing'"""


class QueueError(Exception):
    """The queue file is unusable, or a transition is not allowed; the message says why."""


class QueueWriteError(QueueError):
    """A write failed; ``kind`` names why (WRITE_ERRORS), the message says it in words."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class QueueLost(QueueWriteError):
    """The queue file was deleted or replaced under the running station; nothing more is
    written to it. The message says where its contents were saved."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "lost")


class DamagedPayload(QueueError):
    """A stored payload whose bytes no longer match their checksum or cannot be read."""


DISK_FULL = "disk_full"
# SQLite's primary result codes, as what they mean for the station (and the words it says).
WRITE_ERRORS = {
    sqlite3.SQLITE_FULL: (DISK_FULL, "the disk holding the queue is full"),
    sqlite3.SQLITE_IOERR: ("io_error", "an I/O error occurred writing the queue"),
    sqlite3.SQLITE_READONLY: ("read_only", "the queue database has become read-only"),
    sqlite3.SQLITE_BUSY: ("busy", "another process holds the queue database's write lock"),
    sqlite3.SQLITE_LOCKED: ("busy", "the queue database is locked"),
    sqlite3.SQLITE_CORRUPT: ("corrupt", "the queue database is damaged"),
    sqlite3.SQLITE_CANTOPEN: ("cannot_open", "a file of the queue database cannot be opened"),
    sqlite3.SQLITE_NOMEM: ("no_memory", "SQLite ran out of memory"),
}


def write_error(path: Path, error: BaseException) -> QueueWriteError | None:
    """What a failed write means, or None if it is not SQLite's (a bug: let it through).

    The error that counts may hide behind peewee's wrapper or behind a failed ROLLBACK
    ("no transaction is active": SQLite already rolled back after, say, SQLITE_FULL).
    """
    seen: BaseException | None = error
    found: sqlite3.Error | None = None
    while seen is not None:
        inner = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        for candidate in (seen, inner):
            if isinstance(candidate, sqlite3.Error) and "cannot rollback" not in str(candidate):
                found = found or candidate
        seen = seen.__context__
    if found is None:
        if not isinstance(error, (sqlite3.Error, peewee.PeeweeException)):
            return None
        found_text, code = str(error), None
    else:
        found_text, code = str(found), getattr(found, "sqlite_errorcode", None)
    kind, words = WRITE_ERRORS.get((code or 0) & 0xFF, ("sqlite_error", "SQLite refused a write"))
    if kind == "sqlite_error" and "disk is full" in found_text:
        kind, words = WRITE_ERRORS[sqlite3.SQLITE_FULL]
    return QueueWriteError(f"{words} ({path}: {found_text})", kind)


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
    priority: int = 0


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
    """A report from a REPORT_COLUMNS row; DamagedPayload if its payload cannot be trusted."""
    payload = _payload(row[0], row[1], row[-1]) if row[1] is not None else b""
    return QueuedReport(row[0], payload, ReportState(row[2]), *row[3:-1])


def _payload(report_id: str, stored: bytes, crc32: int | None) -> bytes:
    if crc32 is not None and zlib.crc32(stored) != crc32:
        raise DamagedPayload(
            f"report {report_id}: its stored payload is damaged (checksum mismatch: "
            f"crc32 {zlib.crc32(stored):08x}, stored {crc32:08x})"
        )
    try:
        return zlib.decompress(stored)
    except zlib.error as error:
        raise DamagedPayload(
            f"report {report_id}: its stored payload cannot be read ({error})"
        ) from None


def _source(row: Sequence[Any]) -> SourceRecord:
    return SourceRecord(*row[:6], SourceState(row[6]), *row[7:])


class ReportQueue:
    SCHEMA_VERSION = 4

    def __init__(self, path: Path, *, now: Callable[[], float] = time.time) -> None:
        """Open the queue file, creating it where there is none or migrating an older one;
        QueueError if it is unusable. ``created`` says whether it was made just now."""
        self.path = Path(path)
        self._now = now
        self._grouping = False
        self._group_open = False
        self._group_error: QueueWriteError | None = None  # what spoilt the open group
        self.lost: str | None = None  # why writes are refused since the file left us
        self._fd: int | None = None
        layout = _inspect(self.path)
        self.created = layout == "new"
        if self.created:
            _create_file(self.path)
        self._db = peewee.SqliteDatabase(str(self.path), pragmas=PRAGMAS, timeout=BUSY_TIMEOUT_S)
        try:
            self._db.connect()
            self._hold_file()
            mode = self._sql("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                raise QueueError(
                    f"queue database {self.path}: SQLite refused WAL mode (got {mode!r}); "
                    "keep the queue on a local disk, not a network share"
                )
            if layout == "v1":
                self._migrate_v1()
            elif layout == "v2":
                self._migrate_v2()
                self._migrate_v3()
            elif layout == "v3":
                self._migrate_v3()
            trail.ensure_schema(self)
        except (peewee.PeeweeException, sqlite3.Error) as error:
            self.close()
            raise QueueError(f"queue database {self.path}: {error}") from error
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._db.close()
        if self._fd is not None:  # only after SQLite: closing any descriptor of the file
            os.close(self._fd)  # drops the process's POSIX locks on it, SQLite's included
            self._fd = None

    # -- the file under us -------------------------------------------------------------

    def _hold_file(self) -> None:
        """Keep a descriptor on the file SQLite opened, to notice when the path leaves it."""
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        if self.replaced():
            raise QueueError(f"queue database {self.path} changed while it was being opened")

    def replaced(self) -> str | None:
        """Why the path no longer names the file we write to (deleted, replaced), or None."""
        if self._fd is None:
            return None
        held = os.fstat(self._fd)
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            return f"the queue database {self.path} was deleted while the station was running"
        if held.st_nlink == 0 or (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino):
            return (
                f"the queue database {self.path} was replaced by another file while the station "
                "was running"
            )
        return None

    def check_file(self) -> None:
        """QueueLost if the file left us (saving its contents the first time we notice)."""
        if self.lost is None and (reason := self.replaced()):
            self.lost = f"{reason}; {self._rescue()}"
        if self.lost is not None:
            raise QueueLost(self.lost)

    def _rescue(self) -> str:
        """Write the open file's contents back out: to the path if it is free, else beside it."""
        free = not os.path.lexists(self.path)
        target = self.path if free else _beside(self.path, "rescued")
        temp = _beside(self.path, f"rescue-{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # `rm -rf` took the folder too
            copy = sqlite3.connect(temp)
            try:
                self._db.connection().backup(copy)
            finally:
                copy.close()
            fsync_file(temp)
            try:
                _link_into_place(temp, target)
            except FileExistsError:
                target = _beside(self.path, "rescued")
                _link_into_place(temp, target)
            temp.unlink(missing_ok=True)
            _unlink_our_journal(self.path)
            _fsync_dir(self.path.parent)
        except (OSError, sqlite3.Error) as error:
            return (
                f"its contents could NOT be saved ({error}); they are still readable by this "
                "process only: do not stop the station before freeing the problem"
            )
        if target == self.path:
            return (
                f"its contents were written back to {target}; new work is refused until the "
                "station is restarted"
            )
        return (
            f"its contents were saved to {target}; new work is refused: put the right queue in "
            "place and restart the station"
        )

    def _sql(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        # Straight to sqlite3 (peewee's connection is in autocommit mode): the supervisor runs
        # about twenty statements per file, and peewee's bookkeeping cost as much as SQLite.
        return self._db.connection().execute(sql, params)

    def _write(self) -> Any:
        if self._grouping:
            return self._grouped_write()
        return self._single_write()

    @contextmanager
    def _single_write(self) -> Iterator[None]:
        """One write transaction, on the file that is still ours; errors named (QueueWriteError)."""
        self.check_file()
        try:
            # IMMEDIATE takes the write lock up front, so busy_timeout applies; a DEFERRED
            # transaction that reads and then writes can fail with SQLITE_BUSY at once.
            with self._db.atomic("IMMEDIATE"):
                yield
        except QueueError:
            raise
        except Exception as error:
            raise self._named(error) from error

    def _named(self, error: Exception) -> Exception:
        """A failed write as QueueWriteError saying why; not SQLite's (a bug) as itself."""
        return write_error(self.path, error) or error

    @contextmanager
    def _grouped_write(self) -> Iterator[None]:
        """One write inside a group. No savepoint (they doubled the statements per file): a
        write that raises QueueError has changed nothing, as every check comes before its first
        statement, and a write that SQLite fails spoils the whole group, which is then rolled
        back instead of committed. Once spoilt, later writes of the group are refused with the
        same error: SQLite may have ended the transaction already (SQLITE_FULL does), and a
        statement then would be committed on its own."""
        if self._group_error is not None:
            raise self._group_error
        connection = self._db.connection()
        if not self._group_open:
            self.check_file()
            try:
                connection.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise self._named(error) from error
            self._group_open = True
        try:
            yield
        except sqlite3.Error as error:
            named = self._named(error)
            if isinstance(named, QueueWriteError):
                self._group_error = named
            else:
                self._group_error = QueueWriteError(f"{self.path}: {error}", "sqlite_error")
            raise named from error

    @contextmanager
    def group(self) -> Iterator[None]:
        """Make every write inside one transaction, committed (one fsync) when the block ends.

        The transaction begins at the first write, so a group that writes nothing costs
        nothing. A durable answer for any write inside may only be given after the block.
        If SQLite failed any write inside, or the commit fails, nothing is committed and the
        failure is raised as QueueWriteError (a full disk: kind ``disk_full``)."""
        if self._grouping:
            raise QueueError("queue write groups do not nest")
        self._grouping, self._group_error = True, None
        try:
            yield
            if self._group_error is not None:
                raise self._group_error
        except BaseException:
            if self._group_open:
                with suppress(sqlite3.Error):  # SQLite may have rolled back already
                    self._db.connection().execute("ROLLBACK")
            raise
        else:
            if self._group_open:
                try:
                    self._db.connection().execute("COMMIT")
                except Exception as error:
                    with suppress(sqlite3.Error):
                        self._db.connection().execute("ROLLBACK")
                    raise self._named(error) from error
        finally:
            self._grouping = self._group_open = False
            self._group_error = None

    def _migrate_v2(self) -> None:
        """Add the payload checksums, computed over the bytes as they are stored now."""
        self._db.connection().create_function("crc32", 1, _crc32, deterministic=True)
        with self._write():
            for statement in SCHEMA_V3:
                self._sql(statement)
            self._sql(
                "UPDATE report SET payload_crc32 = crc32(payload), "
                "waiting_crc32 = crc32(waiting_payload)"
            )
            self._sql("PRAGMA user_version = 3")

    def _migrate_v3(self) -> None:
        """Add report priority; every report the queue holds gets priority 0."""
        with self._write():
            for statement in SCHEMA_V4:
                self._sql(statement)
            self._sql(f"PRAGMA user_version = {self.SCHEMA_VERSION}")

    def _migrate_v1(self) -> None:
        """Move the pyWATS client's reports into our layout in one transaction."""
        now = self._now()
        insert = (
            "INSERT INTO report (id, payload, payload_crc32, state, attempts, next_attempt_at, "
            "last_error, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        with self._write():
            for statement in (*SCHEMA_V2, *SCHEMA_V3, *SCHEMA_V4):
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

    def enqueue(self, reports: Sequence[tuple[str, bytes]], *, priority: int = 0) -> None:
        """Store (id, JSON bytes) reports as pending in one durable transaction (UPSERT_REPORT)."""
        rows = _report_rows(reports)
        with self._write():
            self._upsert(rows, None, priority)

    def _upsert(self, rows: list[tuple[str, bytes]], source_id: int | None, priority: int) -> None:
        now = self._now()
        values = [
            (id_, blob, zlib.crc32(blob), now, now, now, source_id, priority) for id_, blob in rows
        ]
        self._db.connection().executemany(UPSERT_REPORT, values)

    def claim_due(
        self, limit: int, on_damaged: Callable[[str, str], None] | None = None
    ) -> list[QueuedReport]:
        """Mark up to `limit` due pending reports processing, in claim order, and return them.

        A report whose payload is damaged is failed in the same transaction, with the reason,
        and told to `on_damaged(id, reason)` after the commit; the others go on.
        """
        if limit <= 0:
            return []
        now = self._now()
        claimed, damaged = [], []
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
            order = {seq: index for index, seq in enumerate(seqs)}
            for row in sorted(rows, key=lambda row: order[row[0]]):
                try:
                    claimed.append(_report(row[1:]))
                except DamagedPayload as error:
                    damaged.append((row[1], str(error)))
                    self._sql(
                        "UPDATE report SET state = 'failed', last_error = ?, "
                        "last_http_status = NULL, updated_at = ? WHERE seq = ?",
                        (str(error), now, row[0]),
                    )
                    self._sql(PROMOTE_WAITING, (now, now, row[1]))
        for report_id, reason in damaged:
            if on_damaged is not None:
                on_damaged(report_id, reason)
        return claimed

    def _due_seqs(self, now: float, limit: int) -> list[int]:
        floor = self._in_flight_priority()
        # The due rows among the first `window` in claim order, filtered inside SQLite.
        window = max(FIFO_WINDOW, 4 * limit)
        due = self._sql(
            "SELECT seq, priority FROM (SELECT seq, priority, next_attempt_at "
            "FROM report INDEXED BY report_claim WHERE state = 'pending' AND priority >= ? "
            "ORDER BY priority DESC, seq LIMIT ?) "
            "WHERE next_attempt_at <= ? ORDER BY priority DESC, seq LIMIT ?",
            (floor, window, now, limit),
        ).fetchall()
        if due:
            return _one_priority(due, limit)
        # The first reports in claim order are backing off (the server was away), or none is
        # due: look the due ones up by due time; that reads every due row, and they are few
        # while most are backing off.
        rows = self._sql(
            "SELECT seq, priority FROM report INDEXED BY report_due "
            "WHERE state = 'pending' AND next_attempt_at <= ? AND priority >= ? "
            "ORDER BY priority DESC, seq LIMIT ?",
            (now, floor, limit),
        ).fetchall()
        return _one_priority(rows, limit)

    def _in_flight_priority(self) -> int:
        """The highest priority being uploaded: nothing below it may be claimed meanwhile."""
        row = self._sql(
            "SELECT priority FROM report INDEXED BY report_claim WHERE state = 'processing' "
            "ORDER BY priority DESC LIMIT 1"
        ).fetchone()
        return row[0] if row else -(2**63)

    def pending_by_priority(self) -> dict[int, int]:
        """How many reports wait at each priority, highest first (kept by triggers: O(1))."""
        rows = self._sql(
            "SELECT priority, n FROM pending_by_priority WHERE n > 0 ORDER BY priority DESC"
        )
        return dict(rows.fetchall())

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
        columns = REPORT_COLUMNS.replace("payload, ", "NULL, ")
        if state is None:
            sql, params = f"SELECT {columns} FROM report", (limit, offset)
        else:
            sql = f"SELECT {columns} FROM report INDEXED BY report_state WHERE state = ?"
            params = (ReportState(state), limit, offset)
        return [_report(row) for row in self._sql(sql + " ORDER BY seq LIMIT ? OFFSET ?", params)]

    def get(self, report_id: str) -> QueuedReport | None:
        """One report with its newest payload (an overwrite waiting for an upload, if any)."""
        columns = REPORT_COLUMNS.replace(
            "payload, ", "COALESCE(waiting_payload, payload), "
        ).replace("payload_crc32", "IIF(waiting_payload IS NULL, payload_crc32, waiting_crc32)")
        row = self._sql(f"SELECT {columns} FROM report WHERE id = ?", (report_id,)).fetchone()
        return _report(row) if row else None

    def stored_payloads(self, report_ids: Sequence[str]) -> dict[str, tuple[ReportState, bytes]]:
        """State and newest payload of each of these ids the queue holds (to spot a different
        report under a known id before it replaces the stored one)."""
        found: dict[str, tuple[ReportState, bytes]] = {}
        for start in range(0, len(report_ids), 500):
            chunk = report_ids[start : start + 500]
            rows = self._sql(
                "SELECT id, state, COALESCE(waiting_payload, payload) FROM report "
                f"WHERE id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for report_id, state, payload in rows:
                found[report_id] = (ReportState(state), zlib.decompress(payload))
        return found

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
        self,
        source_id: int,
        reports: Sequence[tuple[str, bytes]],
        converter_version: str = "",
        *,
        priority: int = 0,
    ) -> None:
        """Queue a file's reports and mark it converted in ONE transaction: both or neither."""
        rows = _report_rows(reports)
        with self._write():
            self._check_source(source_id, "commit the conversion of", SourceState.RECORDED)
            now = self._now()
            detail = f"{len(rows)} report(s); converter version {converter_version or 'unknown'}"
            self._sql(trail.INSERT, (now, source_id, None, "converted", None, detail))
            self._upsert(rows, source_id, priority)
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


def _one_priority(due: Sequence[tuple[int, int]], limit: int) -> list[int]:
    """The first `limit` (seq, priority) rows that share the first row's priority: one claim is
    uploaded concurrently, so mixing priorities in it would let a lower one arrive first."""
    if not due:
        return []
    top = due[0][1]
    return [seq for seq, priority in due[:limit] if priority == top]


def _report_rows(reports: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Check every id and payload before anything is written; compress the payloads."""
    rows = []
    for index, (report_id, payload) in enumerate(reports):
        try:
            canonical = str(uuid.UUID(report_id))
        except (TypeError, ValueError, AttributeError):
            raise QueueError(f"report #{index}: id {report_id!r} is not a UUID") from None
        if report_id != canonical:  # one report, one row: never 'ABC...' beside 'abc...'
            raise QueueError(f"report #{index}: id {report_id!r} is not in canonical form")
        if not isinstance(payload, bytes) or not payload:
            raise QueueError(
                f"report #{index} ({report_id}): payload must be non-empty JSON bytes, "
                f"got {type(payload).__name__} {payload!r:.40}"
            )
        rows.append((report_id, zlib.compress(payload)))
    return rows


def _v1_report(row: Sequence[Any], now: float) -> tuple[Any, ...]:
    """A v1 row as insert values; an upload a crash interrupted is pending again."""
    report_id, data, status, created, updated, attempts, error = row
    state = ReportState.PENDING if status == ReportState.PROCESSING else ReportState(status)
    payload = zlib.compress(data.encode() if isinstance(data, str) else bytes(data))
    created_at = _epoch(created, now)
    return (
        report_id,
        payload,
        zlib.crc32(payload),
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
    if not os.path.lexists(path):
        return "new"
    try:
        with path.open("rb") as file:
            header = file.read(100)
    except OSError as error:
        raise QueueError(f"cannot read queue database {path}: {error.strerror}") from error
    if not os.access(path, os.W_OK):
        raise QueueError(f"cannot write queue database {path}: permission denied")
    if not header:
        # A queue file that lost its contents (truncated, a failed copy) must never pass
        # for an empty queue: the reports it held would vanish without a word.
        raise QueueError(
            f"queue database {path} is empty (0 bytes); it was left untouched: restore a "
            "backup, or delete it to start an empty queue"
        )
    if not header.startswith(SQLITE_HEADER):
        raise QueueError(
            f"{path} is not an SQLite database (it starts with {header[:16]!r}); "
            "it was left untouched"
        )
    if len(header) < 100:
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
    if version in (0, 1) and tables == {"reports"} and v1_columns >= V1_COLUMNS:
        return "v1"
    if version in (2, 3) and tables >= V2_TABLES:
        return f"v{version}"
    if version == ReportQueue.SCHEMA_VERSION and tables >= V4_TABLES:
        return f"v{version}"
    raise QueueError(
        f"{path} is not a wats-station queue (schema version {version}, tables: "
        f"{', '.join(sorted(tables)) or 'none'}); it was left untouched"
    )


# -- making and saving queue files --------------------------------------------------------


def _create_file(path: Path) -> None:
    """Build an empty queue beside `path` and link it into place: never over an existing
    file, and never a half-made queue at `path` if we die meanwhile."""
    temp = _beside(path, f"new-{os.getpid()}")
    for leftover in (temp, Path(f"{temp}-wal"), Path(f"{temp}-shm")):
        leftover.unlink(missing_ok=True)
    try:
        db = sqlite3.connect(temp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = wal")
            db.execute("BEGIN IMMEDIATE")
            for statement in (*SCHEMA_V2, *SCHEMA_V3, *SCHEMA_V4):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {ReportQueue.SCHEMA_VERSION}")
            db.execute("COMMIT")
        finally:
            db.close()
        fsync_file(temp)
        _link_into_place(temp, path)
        _fsync_dir(path.parent)
    except FileExistsError:
        raise QueueError(
            f"queue database {path} appeared while a new one was being created; "
            "it was left untouched"
        ) from None
    except (OSError, sqlite3.Error) as error:
        named = write_error(path, error) if isinstance(error, sqlite3.Error) else None
        reason = str(named) if named else f"{error}"
        raise QueueError(f"cannot create queue database {path}: {reason}") from error
    finally:
        temp.unlink(missing_ok=True)


def _link_into_place(temp: Path, target: Path) -> None:
    """Give `temp` the name `target`, never over an existing file (FileExistsError)."""
    try:
        os.link(temp, target)
    except FileExistsError:
        raise
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        # A file system without hard links: look, then rename (a tiny window, not none).
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "file exists", str(target)) from None
        os.rename(temp, target)


def _unlink_our_journal(path: Path) -> None:
    """Remove the -wal and -shm of a queue file that left us, if they are the ones we hold open.

    SQLite keeps them (the database "has moved"), and whatever file is opened at the path next
    would take them for its own: our WAL replayed onto another database. Our connection keeps
    its descriptors, and the backup already holds every committed page.
    """
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            info = os.stat(f"/proc/self/fd/{fd}")
            ours.add((info.st_dev, info.st_ino))
    for suffix in ("-wal", "-shm"):
        journal = Path(f"{path}{suffix}")
        with contextlib.suppress(OSError):
            info = os.stat(journal)
            if (info.st_dev, info.st_ino) in ours:
                journal.unlink()


def _beside(path: Path, what: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    return path.with_name(f"{path.name}.{what}-{stamp}-{uuid.uuid4().hex[:6]}")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot sync a directory
        fsync_dir(folder)


def _crc32(blob: bytes | None) -> int | None:
    return None if blob is None else zlib.crc32(blob)
