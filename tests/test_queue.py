"""The report queue keeps every accepted report exactly once, across crashes, restarts, upgrades."""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from wats_station.ipc.states import ReportState, SourceState
from wats_station.supervisor.queue import (
    FIFO_WINDOW,
    SCHEMA_V2,
    QueueError,
    QueueLost,
    QueueWriteError,
    ReportQueue,
)

REPO = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000.0


class Clock:
    """An injectable `now` that only moves when the test says so."""

    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def report(n: int = 0) -> tuple[str, bytes]:
    report_id = str(uuid.uuid4())
    return report_id, json.dumps({"id": report_id, "type": "T", "sn": f"SN{n:05}"}).encode()


def count_rows_total(path: Path) -> int:
    with sqlite3.connect(path) as db:
        total = db.execute("SELECT COUNT(*) FROM report").fetchone()[0]
    db.close()
    return total


def count_pending_by_priority(path: Path) -> dict[int, int]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT priority, COUNT(*) FROM report WHERE state = 'pending' "
            "GROUP BY priority ORDER BY priority DESC"
        ).fetchall()
    db.close()
    return dict(rows)


def count_rows(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT state, COUNT(*) FROM report GROUP BY state").fetchall()
    db.close()
    return {str(state): dict(rows).get(state, 0) for state in ReportState}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
def queue(db_path: Path, clock: Clock) -> Iterator[ReportQueue]:
    q = ReportQueue(db_path, now=clock)
    try:
        yield q
    finally:
        q.close()


# -- reports ----------------------------------------------------------------------------


def test_claims_oldest_first_and_marks_them_processing(queue: ReportQueue) -> None:
    reports = [report(n) for n in range(5)]
    queue.enqueue(reports[:3])
    queue.enqueue(reports[3:])

    first = queue.claim_due(2)
    rest = queue.claim_due(10)

    assert [r.id for r in first + rest] == [r[0] for r in reports]
    assert [r.payload for r in first] == [r[1] for r in reports[:2]]
    assert {r.state for r in first + rest} == {ReportState.PROCESSING}
    assert queue.claim_due(10) == []
    assert queue.stats() == {"pending": 0, "processing": 5, "completed": 0, "failed": 0}


def test_a_report_backing_off_is_not_claimed_before_it_is_due(
    queue: ReportQueue, clock: Clock
) -> None:
    late, early = report(1), report(2)
    queue.enqueue([late, early])
    queue.claim_due(1)
    queue.retry_later(late[0], delay_s=30, error="HTTP 503", http_status=503, count_attempt=True)

    assert [r.id for r in queue.claim_due(10)] == [early[0]]
    assert queue.next_due_at() == T0 + 30
    clock.t += 29.9
    assert queue.claim_due(10) == []
    clock.t += 0.1
    claimed = queue.claim_due(10)
    assert [(r.id, r.attempts, r.last_error, r.last_http_status) for r in claimed] == [
        (late[0], 1, "HTTP 503", 503)
    ]
    assert queue.next_due_at() is None


def test_due_reports_behind_many_backing_off_ones_are_found_in_fifo_order(
    queue: ReportQueue, clock: Clock
) -> None:
    backing_off = [report(n) for n in range(FIFO_WINDOW + 10)]
    queue.enqueue(backing_off)
    for r in queue.claim_due(len(backing_off)):
        queue.retry_later(r.id, delay_s=600, error="offline", http_status=None, count_attempt=False)
    due = [report(n) for n in range(3)]
    queue.enqueue(due)

    assert [r.id for r in queue.claim_due(2)] == [due[0][0], due[1][0]]
    assert [r.id for r in queue.claim_due(5)] == [due[2][0]]
    clock.t += 600
    assert [r.id for r in queue.claim_due(3)] == [r[0] for r in backing_off[:3]]


# -- priority ---------------------------------------------------------------------------


def test_claims_higher_priority_first_and_oldest_first_within_a_priority(
    queue: ReportQueue,
) -> None:
    low = [report(n) for n in range(3)]
    high = [report(n) for n in range(3, 5)]
    top = report(9)
    queue.enqueue(low[:2])
    queue.enqueue(high[:1], priority=5)
    queue.enqueue(low[2:])
    queue.enqueue([top], priority=9)
    queue.enqueue(high[1:], priority=5)

    claimed = []
    while batch := queue.claim_due(1):
        claimed += batch
        queue.complete(batch[0].id, 200)

    assert [r.id for r in claimed] == [top[0], *(r[0] for r in high), *(r[0] for r in low)]
    assert [r.priority for r in claimed] == [9, 5, 5, 0, 0, 0]


def test_nothing_lower_is_claimed_while_a_higher_priority_upload_is_in_flight(
    queue: ReportQueue,
) -> None:
    high = [report(n) for n in range(2)]
    low = [report(n) for n in range(2, 5)]
    queue.enqueue(high, priority=1)
    queue.enqueue(low)

    assert [r.id for r in queue.claim_due(5)] == [r[0] for r in high]
    assert queue.claim_due(5) == []  # free slots, but a low report could overtake a high one
    queue.complete(high[0][0], 200)
    assert queue.claim_due(5) == []
    queue.release([high[1][0]])
    assert [r.id for r in queue.claim_due(1)] == [high[1][0]]
    queue.fail(high[1][0], error="bad", http_status=400)
    assert [r.id for r in queue.claim_due(5)] == [r[0] for r in low]


def test_a_high_priority_report_backing_off_does_not_hold_the_others_back(
    queue: ReportQueue, clock: Clock
) -> None:
    high, low = report(1), report(2)
    queue.enqueue([high], priority=3)
    queue.enqueue([low])
    queue.claim_due(1)
    queue.retry_later(high[0], delay_s=60, error="HTTP 503", http_status=503, count_attempt=True)

    assert [r.id for r in queue.claim_due(5)] == [low[0]]
    clock.t += 60
    assert [r.id for r in queue.claim_due(5)] == [high[0]]


def test_due_reports_of_every_priority_behind_a_window_of_backing_off_ones_keep_the_order(
    queue: ReportQueue, clock: Clock
) -> None:
    backing_off = [report(n) for n in range(FIFO_WINDOW + 10)]
    queue.enqueue(backing_off, priority=7)
    for r in queue.claim_due(len(backing_off)):
        queue.retry_later(r.id, delay_s=600, error="offline", http_status=None, count_attempt=False)
    low, mid = report(1), report(2)
    queue.enqueue([low])
    queue.enqueue([mid], priority=2)

    assert [r.id for r in queue.claim_due(5)] == [mid[0]]
    queue.complete(mid[0], 200)
    assert [r.id for r in queue.claim_due(5)] == [low[0]]


def test_an_overwrite_takes_the_new_priority_and_the_counts_follow(queue: ReportQueue) -> None:
    first, second = report(1), report(2)
    queue.enqueue([first, second])
    assert queue.pending_by_priority() == {0: 2}
    queue.enqueue([(second[0], b'{"again": 1}')], priority=4)

    assert queue.pending_by_priority() == {4: 1, 0: 1}
    assert [(r.id, r.priority) for r in queue.list()] == [(first[0], 0), (second[0], 4)]
    assert [r.id for r in queue.claim_due(1)] == [second[0]]
    assert queue.pending_by_priority() == {0: 1}


def test_a_version_2_queue_is_migrated_with_every_report_at_priority_0(
    db_path: Path, clock: Clock
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    with sqlite3.connect(db_path) as old:
        for statement in SCHEMA_V2:
            old.execute(statement)
        old.executemany(
            "INSERT INTO report (id, payload, state, next_attempt_at, created_at, updated_at) "
            "VALUES (?, ?, ?, 0, 0, 0)",
            [(i, b"x\x9c\xab\xae\x05\x00\x01u\x00\xf9", s) for i, s in
             zip(ids, ("pending", "failed", "pending"), strict=True)],
        )  # fmt: skip
        old.execute("PRAGMA user_version = 2")
    old.close()

    q = ReportQueue(db_path, now=clock)
    try:
        assert q.pending_by_priority() == {0: 2}
        q.enqueue([report(1)], priority=1)
        claimed = q.claim_due(5)
        assert [(r.priority, r.payload) for r in claimed] == [(1, claimed[0].payload)]
        q.complete(claimed[0].id, 200)
        assert [(r.id, r.priority, r.payload) for r in q.claim_due(5)] == [
            (ids[0], 0, b"{}"),
            (ids[2], 0, b"{}"),
        ]
    finally:
        q.close()
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == ReportQueue.SCHEMA_VERSION
    db.close()


def test_complete_fail_and_release_record_the_outcome(queue: ReportQueue) -> None:
    done, rejected, released = report(1), report(2), report(3)
    queue.enqueue([done, rejected, released])
    queue.claim_due(3)

    queue.complete(done[0], 200)
    queue.fail(rejected[0], error="bad pn", http_status=400)
    assert queue.release([released[0], done[0], "no-such-id"]) == 1

    assert queue.get(done[0]).state == ReportState.COMPLETED
    assert queue.get(done[0]).last_http_status == 200
    failed = queue.get(rejected[0])
    outcome = (failed.state, failed.attempts, failed.last_error, failed.last_http_status)
    assert outcome == (ReportState.FAILED, 1, "bad pn", 400)
    back = queue.get(released[0])
    assert (back.state, back.attempts) == (ReportState.PENDING, 0)
    assert [r.id for r in queue.claim_due(5)] == [released[0]]


def test_retry_later_without_counting_keeps_attempts(queue: ReportQueue, clock: Clock) -> None:
    r = report()
    queue.enqueue([r])
    queue.claim_due(1)
    queue.retry_later(r[0], delay_s=5, error="HTTP 429", http_status=429, count_attempt=False)
    assert queue.get(r[0]).attempts == 0
    assert queue.get(r[0]).next_attempt_at == T0 + 5


@pytest.mark.parametrize("action", ["complete", "fail", "retry_later"])
def test_a_transition_from_the_wrong_state_names_the_report_and_its_state(
    queue: ReportQueue, action: str
) -> None:
    r = report()
    queue.enqueue([r])
    calls = {
        "complete": lambda i: queue.complete(i, 200),
        "fail": lambda i: queue.fail(i, error="x", http_status=400),
        "retry_later": lambda i: queue.retry_later(
            i, delay_s=1, error="x", http_status=None, count_attempt=True
        ),
    }
    with pytest.raises(QueueError, match=rf"{r[0]}: it is pending, not processing"):
        calls[action](r[0])
    with pytest.raises(QueueError, match=r"report 1234: not in .*queue\.db"):
        calls[action]("1234")
    assert queue.get(r[0]).state == ReportState.PENDING


def test_bad_report_ids_and_payloads_are_refused_before_anything_is_stored(
    queue: ReportQueue,
) -> None:
    good = report()
    with pytest.raises(QueueError, match=r"report #1: id 'run-42' is not a UUID"):
        queue.enqueue([good, ("run-42", b"{}")])
    with pytest.raises(QueueError, match=r"report #0 .*payload must be non-empty JSON bytes"):
        queue.enqueue([(good[0], "{}")])  # type: ignore[list-item]
    assert queue.stats()["pending"] == 0


def kill_9_after(code: str, lines: int) -> list[str]:
    """Run `code` in a child Python, read `lines` lines it prints, then SIGKILL it mid-flight."""
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while len(seen) < lines:
            readable, _, _ = select.select([child.stdout], [], [], deadline - time.monotonic())
            assert readable, f"the child printed {len(seen)} of {lines} lines in 20 s: {seen}"
            line = child.stdout.readline()
            assert line, f"the child exited with {child.wait()} after {seen}"
            seen.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()
    return seen


def test_recover_after_kill_9_puts_in_flight_reports_back_with_nothing_lost(
    db_path: Path,
) -> None:
    reports = [report(n) for n in range(3)]
    kill_9_after(
        f"""
import time
from pathlib import Path
from wats_station.supervisor.queue import ReportQueue
q = ReportQueue(Path({str(db_path)!r}))
q.enqueue({reports!r})
print(len(q.claim_due(2)), flush=True)
time.sleep(60)  # holding the connection open, uploads in flight, until killed
""",
        lines=1,
    )

    q = ReportQueue(db_path)
    try:
        assert q.stats() == {"pending": 1, "processing": 2, "completed": 0, "failed": 0}
        assert q.recover() == 2
        claimed = q.claim_due(10)
        assert [(r.id, r.payload, r.attempts) for r in claimed] == [(i, p, 0) for i, p in reports]
    finally:
        q.close()


def test_every_report_acknowledged_before_a_kill_9_is_there_once(db_path: Path) -> None:
    acknowledged = kill_9_after(
        f"""
import uuid
from pathlib import Path
from wats_station.supervisor.queue import ReportQueue
q = ReportQueue(Path({str(db_path)!r}))
for n in range(100_000):
    ids = [str(uuid.uuid4()) for _ in range(n % 3 + 1)]
    q.enqueue([(i, b'{{"n": %d}}' % n) for i in ids])
    if n % 4 == 0:
        q.claim_due(2)
    print(*ids, flush=True)  # only after the commit returned
""",
        lines=60,
    )

    q = ReportQueue(db_path)
    try:
        q.recover()
        stored = {r.id for r in q.list(limit=1_000_000)}
        assert {i for line in acknowledged for i in line.split()} <= stored
        assert sum(q.stats().values()) == len(stored) == count_rows_total(db_path)
        assert q.stats() == count_rows(db_path)
    finally:
        q.close()


def test_an_id_already_queued_is_overwritten_and_due_again(
    queue: ReportQueue, clock: Clock
) -> None:
    pending, completed, failed = report(1), report(2), report(3)
    queue.enqueue([pending, completed, failed])
    queue.claim_due(3)
    queue.retry_later(pending[0], delay_s=60, error="x", http_status=500, count_attempt=True)
    queue.complete(completed[0], 200)
    queue.fail(failed[0], error="bad", http_status=400)

    queue.enqueue([(i, b'{"v": 2}') for i in (pending[0], completed[0], failed[0])])

    for report_id in (pending[0], completed[0], failed[0]):
        row = queue.get(report_id)
        fields = (row.state, row.attempts, row.payload, row.last_error)
        assert fields == (ReportState.PENDING, 0, b'{"v": 2}', None)
    assert len(queue.list()) == 3
    assert [r.id for r in queue.claim_due(3)] == [pending[0], completed[0], failed[0]]


def test_an_overwrite_during_upload_waits_for_the_upload_then_goes_out(queue: ReportQueue) -> None:
    r = report()
    queue.enqueue([r])
    in_flight = queue.claim_due(1)[0]

    queue.enqueue([(r[0], b'{"v": 2}')])
    assert queue.get(r[0]).state == ReportState.PROCESSING
    assert queue.get(r[0]).payload == b'{"v": 2}'  # get() shows the newest content
    assert queue.claim_due(1) == []

    queue.complete(in_flight.id, 200)
    again = queue.claim_due(1)
    assert [(x.id, x.payload, x.attempts) for x in again] == [(r[0], b'{"v": 2}', 0)]
    queue.complete(r[0], 200)
    assert queue.stats() == {"pending": 0, "processing": 0, "completed": 1, "failed": 0}


def test_an_overwrite_waiting_on_a_crashed_upload_survives_recovery(db_path: Path) -> None:
    r = report()
    first = ReportQueue(db_path)
    first.enqueue([r])
    first.claim_due(1)
    first.enqueue([(r[0], b'{"v": 2}')])
    first.close()

    second = ReportQueue(db_path)
    try:
        assert second.recover() == 1
        assert [x.payload for x in second.claim_due(1)] == [b'{"v": 2}']
    finally:
        second.close()


def test_stats_agree_with_counting_the_rows_after_random_operations(
    queue: ReportQueue, db_path: Path, clock: Clock
) -> None:
    rng = random.Random(20240611)
    ids: list[str] = []
    seen: set[str] = set()
    for step in range(400):
        clock.t += rng.uniform(0, 5)
        op = rng.randrange(8)
        processing = [r.id for r in queue.list(ReportState.PROCESSING, limit=1000)]
        if op == 0 or not ids:
            batch = [report() for _ in range(rng.randint(1, 5))]
            ids += [i for i, _ in batch]
            queue.enqueue(batch, priority=rng.choice((0, 0, 5, -1)))
        elif op == 1:
            queue.enqueue([(rng.choice(ids), b'{"again": true}')], priority=rng.choice((0, 5)))
        elif op == 2:
            queue.claim_due(rng.randint(1, 4))
        elif op == 3 and processing:
            queue.complete(rng.choice(processing), 200)
        elif op == 4 and processing:
            delay, counted = rng.uniform(0, 20), rng.random() < 0.5
            queue.retry_later(
                rng.choice(processing),
                delay_s=delay,
                error="e",
                http_status=503,
                count_attempt=counted,
            )
        elif op == 5 and processing:
            queue.fail(rng.choice(processing), error="bad", http_status=400)
        elif op == 6:
            queue.release(rng.sample(processing, k=len(processing) // 2))
        elif op == 7:
            rng.choice([queue.recover, lambda: queue.retry(failed=True), lambda: queue.clean()])()
        if step % 25 == 0:
            assert queue.stats() == count_rows(db_path), f"after step {step}"
            assert queue.pending_by_priority() == count_pending_by_priority(db_path)
            seen |= {state for state, n in queue.stats().items() if n}
    assert queue.stats() == count_rows(db_path)
    assert queue.pending_by_priority() == count_pending_by_priority(db_path)
    assert seen == set(ReportState), "the walk should visit every state"


def test_list_is_oldest_first_filterable_and_pages(queue: ReportQueue) -> None:
    reports = [report(n) for n in range(6)]
    queue.enqueue(reports)
    queue.claim_due(2)

    assert [r.id for r in queue.list()] == [r[0] for r in reports]
    page = queue.list(ReportState.PENDING, limit=2, offset=1)
    assert [r.id for r in page] == [reports[3][0], reports[4][0]]
    assert [r.id for r in queue.list(ReportState.PROCESSING)] == [reports[0][0], reports[1][0]]
    assert {r.payload for r in queue.list()} == {b""}
    assert queue.get(reports[5][0]).payload == reports[5][1]
    assert queue.get("no-such-report") is None


def test_retry_makes_failed_and_backing_off_reports_due_now(
    queue: ReportQueue, clock: Clock
) -> None:
    failed_a, failed_b, backing_off, done = report(1), report(2), report(3), report(4)
    queue.enqueue([failed_a, failed_b, backing_off, done])
    queue.claim_due(4)
    queue.fail(failed_a[0], error="bad", http_status=400)
    queue.fail(failed_b[0], error="bad", http_status=400)
    queue.retry_later(backing_off[0], delay_s=999, error="x", http_status=503, count_attempt=True)
    queue.complete(done[0], 200)

    assert queue.retry([backing_off[0], done[0]]) == 1
    assert queue.get(backing_off[0]).next_attempt_at == T0
    assert queue.get(backing_off[0]).attempts == 0
    assert queue.retry(failed=True) == 2
    assert [r.id for r in queue.claim_due(5)] == [failed_a[0], failed_b[0], backing_off[0]]
    with pytest.raises(QueueError, match="cannot retry: no report nope"):
        queue.retry(["nope"])


def test_clean_and_purge_delete_only_finished_reports_of_the_age_asked(
    queue: ReportQueue, clock: Clock
) -> None:
    old_done, old_failed, new_done, waiting = report(1), report(2), report(3), report(4)
    queue.enqueue([old_done, old_failed, new_done, waiting])
    queue.claim_due(3)
    queue.complete(old_done[0], 200)
    queue.fail(old_failed[0], error="bad", http_status=400)
    clock.t += 3600
    queue.complete(new_done[0], 200)
    clock.t += 60

    assert queue.purge_completed(retention_s=600) == 1
    assert queue.clean(completed=True, failed=True, older_than_s=600) == 1
    assert queue.clean(completed=False) == 0
    assert queue.clean() == 1
    assert [r.id for r in queue.list()] == [waiting[0]]
    assert queue.stats() == {"pending": 1, "processing": 0, "completed": 0, "failed": 0}


def test_reports_survive_closing_and_reopening(db_path: Path) -> None:
    reports = [report(n) for n in range(3)]
    q = ReportQueue(db_path)
    q.enqueue(reports)
    q.close()
    q = ReportQueue(db_path)
    try:
        assert [(r.id, r.payload) for r in q.claim_due(3)] == reports
    finally:
        q.close()


# -- source files -----------------------------------------------------------------------


def test_a_source_file_goes_recorded_converted_done_with_its_reports(queue: ReportQueue) -> None:
    record = queue.record_source("/in/run1.csv", 120, 55, "ab" * 32, "csv")
    assert (record.state, record.crashes, record.converter) == (SourceState.RECORDED, 0, "csv")
    assert queue.record_source("/in/run1.csv", 120, 55, "ab" * 32, "csv") == record
    reports = [report(1), report(2)]

    queue.commit_conversion(record.id, reports)

    assert queue.find_source("/in/run1.csv", 120, 55, "ab" * 32).state == SourceState.CONVERTED
    assert [(r.id, r.source_id) for r in queue.claim_due(5)] == [(i, record.id) for i, _ in reports]
    assert queue.unfinished_sources() == [queue.find_source("/in/run1.csv", 120, 55, "ab" * 32)]

    queue.finish_source(record.id, state=SourceState.DONE, final_path="/done/run1.csv")

    assert queue.find_source("/in/run1.csv", 120, 55, "ab" * 32) is None
    done = queue.find_source("/in/run1.csv", 120, 55, "ab" * 32, finished=True)
    assert (done.state, done.final_path) == (SourceState.DONE, "/done/run1.csv")
    assert queue.unfinished_sources() == []
    assert queue.source_stats() == {"recorded": 0, "converted": 0, "done": 1, "failed": 0}
    again = queue.record_source("/in/run1.csv", 120, 55, "ab" * 32, "csv")
    assert again.id != record.id and again.state == SourceState.RECORDED


def test_a_source_is_found_only_by_its_whole_fingerprint(queue: ReportQueue) -> None:
    record = queue.record_source("/in/a.csv", 10, 1000, "11" * 32, "csv")
    assert queue.find_source("/in/a.csv", 10, 1000, "11" * 32) == record
    assert queue.find_source("/in/b.csv", 10, 1000, "11" * 32) is None
    assert queue.find_source("/in/a.csv", 11, 1000, "11" * 32) is None
    assert queue.find_source("/in/a.csv", 10, 1001, "11" * 32) is None
    assert queue.find_source("/in/a.csv", 10, 1000, "22" * 32) is None
    other = queue.record_source("/in/a.csv", 10, 1000, "22" * 32, "csv")
    assert other.id != record.id
    assert [s.id for s in queue.unfinished_sources()] == [record.id, other.id]


def test_converter_crashes_are_counted_until_the_file_fails(queue: ReportQueue) -> None:
    record = queue.record_source("/in/poison.csv", 1, 1, "cc" * 32, "csv")
    assert queue.record_crash(record.id, "killed by SIGSEGV") == 1
    assert queue.record_crash(record.id, "killed by SIGKILL") == 2
    queue.finish_source(
        record.id, state=SourceState.FAILED, final_path="/error/poison.csv", error="crashed twice"
    )
    failed = queue.find_source("/in/poison.csv", 1, 1, "cc" * 32)
    assert failed is None
    assert queue.source_stats()["failed"] == 1
    with pytest.raises(QueueError, match=r"cannot count a crash of source file \d+ \(/in/poison"):
        queue.record_crash(record.id, "again")
    with pytest.raises(QueueError, match="it is failed, not recorded or converted"):
        queue.finish_source(record.id, state=SourceState.DONE, final_path=None)
    with pytest.raises(QueueError, match="source file 999: not in"):
        queue.record_crash(999, "x")


def test_a_failed_conversion_commit_stores_no_report_and_keeps_the_file_recorded(
    queue: ReportQueue,
) -> None:
    record = queue.record_source("/in/x.csv", 1, 1, "dd" * 32, "csv")
    with pytest.raises(QueueError, match="is not a UUID"):
        queue.commit_conversion(record.id, [report(), ("not-a-uuid", b"{}")])
    queue.finish_source(record.id, state=SourceState.DONE, final_path=None)
    with pytest.raises(QueueError, match="it is done, not recorded"):
        queue.commit_conversion(record.id, [report()])
    assert queue.stats()["pending"] == 0
    with pytest.raises(QueueError, match="use done or failed"):
        queue.finish_source(record.id, state=SourceState.CONVERTED, final_path=None)


# -- files: upgrade and refusal ---------------------------------------------------------

V1_SCHEMA = """
CREATE TABLE reports (
    id TEXT PRIMARY KEY,
    report_data TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TIMESTAMP,
    updated_at TIMESTAMP,
    attempts INTEGER DEFAULT 0,
    error TEXT,
    CHECK(status IN ('pending', 'processing', 'completed', 'failed'))
);
CREATE INDEX idx_status ON reports(status);
CREATE INDEX idx_created_at ON reports(created_at);
"""


@pytest.mark.parametrize("user_version", [0, 1])
def test_a_pywats_v1_queue_is_migrated_keeping_its_reports(
    db_path: Path, clock: Clock, user_version: int
) -> None:
    rows = [  # as the pyWATS client wrote them: datetime.now() through sqlite3's default adapter
        (str(uuid.uuid4()), '{"sn": "B"}', "processing", "2024-03-01 10:00:02.000000", 1, None),
        (str(uuid.uuid4()), '{"sn": "A"}', "pending", "2024-03-01 10:00:01.500000", 0, None),
        (str(uuid.uuid4()), '{"sn": "C"}', "failed", "2024-03-01 10:00:03.000000", 3, "HTTP 400"),
        (str(uuid.uuid4()), '{"sn": "D"}', "completed", "2024-03-01 10:00:04.000000", 0, None),
    ]
    with sqlite3.connect(db_path) as old:
        old.executescript(V1_SCHEMA + f"PRAGMA user_version = {user_version};")
        old.executemany(
            "INSERT INTO reports (id, report_data, status, created_at, updated_at, attempts, error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(i, d, s, t, t, a, e) for i, d, s, t, a, e in rows],
        )
    old.close()

    q = ReportQueue(db_path, now=clock)
    try:
        assert q.stats() == {"pending": 2, "processing": 0, "completed": 1, "failed": 1}
        listed = q.list()
        assert [r.id for r in listed] == [rows[1][0], rows[0][0], rows[2][0], rows[3][0]]
        failed = q.get(rows[2][0])
        assert (failed.attempts, failed.last_error, failed.payload) == (
            3,
            "HTTP 400",
            b'{"sn": "C"}',
        )
        expected = time.mktime(time.strptime("2024-03-01 10:00:03", "%Y-%m-%d %H:%M:%S"))
        assert failed.created_at == expected
        assert [r.payload for r in q.claim_due(5)] == [b'{"sn": "A"}', b'{"sn": "B"}']
    finally:
        q.close()
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == ReportQueue.SCHEMA_VERSION
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'reports'").fetchall() == []
    db.close()


def make_queue_file(path: Path) -> None:
    q = ReportQueue(path)
    q.enqueue([report(n) for n in range(50)])
    q.close()


def assert_refused_untouched(path: Path, match: str) -> None:
    before = path.read_bytes()
    with pytest.raises(QueueError, match=match) as refused:
        ReportQueue(path)
    assert str(path) in str(refused.value)
    assert path.read_bytes() == before
    assert not Path(f"{path}-wal").exists() and not Path(f"{path}-shm").exists()


def test_a_queue_from_a_newer_wats_station_is_refused_untouched(db_path: Path) -> None:
    make_queue_file(db_path)
    with sqlite3.connect(db_path) as db:
        db.execute(f"PRAGMA user_version = {ReportQueue.SCHEMA_VERSION + 1}")
    db.close()
    newer, known = ReportQueue.SCHEMA_VERSION + 1, ReportQueue.SCHEMA_VERSION
    assert_refused_untouched(
        db_path, rf"schema version {newer}, newer than this wats-station knows \({known}\)"
    )


def test_a_file_that_is_not_sqlite_is_refused_untouched(db_path: Path) -> None:
    db_path.write_bytes(b"PK\x03\x04 this is a zip file, not a queue" * 20)
    assert_refused_untouched(db_path, r"is not an SQLite database \(it starts with b'PK")


def test_a_truncated_queue_file_is_refused_untouched(db_path: Path) -> None:
    make_queue_file(db_path)
    data = db_path.read_bytes()
    db_path.write_bytes(data[: len(data) // 2])
    assert_refused_untouched(db_path, r"is damaged")


def test_a_database_of_another_program_is_refused_untouched(db_path: Path) -> None:
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    db.close()
    assert_refused_untouched(
        db_path, r"is not a wats-station queue \(schema version 0, tables: invoices\)"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a file whatever its mode")
def test_an_unreadable_queue_file_is_refused(db_path: Path) -> None:
    make_queue_file(db_path)
    db_path.chmod(0)
    try:
        with pytest.raises(QueueError, match=rf"cannot read queue database {db_path}"):
            ReportQueue(db_path)
    finally:
        db_path.chmod(0o600)


def test_a_directory_where_the_queue_file_should_be_is_refused(db_path: Path) -> None:
    db_path.mkdir()
    with pytest.raises(QueueError, match=rf"queue database {db_path} is a directory"):
        ReportQueue(db_path)


def test_a_missing_folder_is_refused_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "queue.db"
    with pytest.raises(QueueError, match=rf"folder {path.parent} does not exist"):
        ReportQueue(path)
    assert not path.parent.exists()


def test_an_empty_file_is_refused_never_taken_for_an_empty_queue(db_path: Path) -> None:
    db_path.touch()
    with pytest.raises(QueueError, match=rf"queue database {db_path} is empty \(0 bytes\)"):
        ReportQueue(db_path)
    assert db_path.read_bytes() == b""


def test_an_empty_sqlite_file_is_refused_too(db_path: Path) -> None:
    db = sqlite3.connect(db_path, isolation_level=None)
    db.executescript("CREATE TABLE t (x); DROP TABLE t")  # a valid SQLite file, no tables
    db.close()
    assert_refused_untouched(db_path, r"is not a wats-station queue \(schema version 0")


def test_a_new_queue_is_made_only_where_there_was_no_file(db_path: Path) -> None:
    q = ReportQueue(db_path)
    try:
        assert q.created
        q.enqueue([report()])
    finally:
        q.close()
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["queue.db"]  # no leftovers
    again = ReportQueue(db_path)
    try:
        assert not again.created and again.stats()["pending"] == 1
    finally:
        again.close()


# -- guarding itself: checksums, named write errors, a file that leaves us -------------------


def test_a_v2_queue_gets_payload_checksums_and_a_damaged_payload_fails_its_report(
    db_path: Path,
) -> None:
    items = [report(n) for n in range(4)]
    with sqlite3.connect(db_path) as db:  # the v2 layout, as an older station left it
        for statement in SCHEMA_V2:
            db.execute(statement)
        db.executemany(
            "INSERT INTO report (id, payload, state, next_attempt_at, created_at, updated_at) "
            "VALUES (?, ?, 'pending', 0, ?, ?)",
            [(id_, zlib.compress(body), n, n) for n, (id_, body) in enumerate(items)],
        )
        db.execute("UPDATE report SET payload = X'789c0badbeef' WHERE id = ?", (items[1][0],))
        db.execute("PRAGMA user_version = 2")
    db.close()
    q = ReportQueue(db_path)
    try:
        with sqlite3.connect(db_path) as db:
            assert db.execute("PRAGMA user_version").fetchone() == (ReportQueue.SCHEMA_VERSION,)
            assert db.execute("SELECT COUNT(*) FROM report WHERE payload_crc32 IS NULL").fetchone()
        told: list[tuple[str, str]] = []
        claimed = q.claim_due(10, on_damaged=lambda *damage: told.append(damage))
        assert [r.id for r in claimed] == [items[0][0], items[2][0], items[3][0]]
        assert [r.payload for r in claimed] == [items[0][1], items[2][1], items[3][1]]
        (failed,) = q.list(ReportState.FAILED)
        assert failed.id == items[1][0] and "cannot be read" in failed.last_error
        assert told == [(failed.id, failed.last_error)]
    finally:
        q.close()


def test_changed_payload_bytes_are_caught_by_the_checksum(db_path: Path) -> None:
    q = ReportQueue(db_path)
    items = [report(n) for n in range(3)]
    q.enqueue(items)
    with sqlite3.connect(db_path) as db:
        (blob,) = db.execute("SELECT payload FROM report WHERE id = ?", (items[0][0],)).fetchone()
        db.execute(
            "UPDATE report SET payload = ? WHERE id = ?", (blob[:-6] + b"\0" * 6, items[0][0])
        )
    db.close()
    try:
        assert [r.id for r in q.claim_due(10)] == [items[1][0], items[2][0]]
        (failed,) = q.list(ReportState.FAILED)
        assert "damaged (checksum mismatch" in failed.last_error
        with pytest.raises(QueueError, match="damaged"):
            q.get(items[0][0])
    finally:
        q.close()


def test_a_full_disk_is_named_as_such_and_writes_work_again_when_space_returns(
    db_path: Path,
) -> None:
    q = ReportQueue(db_path)
    try:
        pages = q._sql("PRAGMA page_count").fetchone()[0]
        q._sql(f"PRAGMA max_page_count = {pages + 2}")  # SQLite's own SQLITE_FULL
        accepted = 0
        with pytest.raises(QueueWriteError) as full:
            for _ in range(200):
                q.enqueue([(str(uuid.uuid4()), os.urandom(3000).hex().encode())])
                accepted += 1
        assert full.value.kind == "disk_full"
        assert str(full.value).startswith(f"the disk holding the queue is full ({db_path}")
        assert "rollback" not in str(full.value)
        q._sql("PRAGMA max_page_count = 1000000")
        q.enqueue([report()])
        assert q.stats()["pending"] == accepted + 1
    finally:
        q.close()


def test_a_queue_file_deleted_under_us_is_written_back_and_refuses_writes(db_path: Path) -> None:
    q = ReportQueue(db_path)
    items = [report(n) for n in range(5)]
    q.enqueue(items)
    db_path.unlink()
    try:
        with pytest.raises(QueueLost, match=f"written back to {db_path}"):
            q.enqueue([report(9)])
        with pytest.raises(QueueLost):  # and every later write, without looking again
            q.claim_due(1)
        assert q.stats()["pending"] == 5  # still readable
    finally:
        q.close()
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["queue.db"]  # no stale WAL
    again = ReportQueue(db_path)
    try:
        assert sorted(r.id for r in again.list()) == sorted(i for i, _ in items)
    finally:
        again.close()


def test_a_queue_folder_removed_with_its_file_is_recreated_to_hold_the_rescue(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    q = ReportQueue(folder / "queue.db")
    items = [report(n) for n in range(3)]
    q.enqueue(items)
    shutil.rmtree(folder)
    try:
        with pytest.raises(QueueLost, match="written back"):
            q.check_file()
    finally:
        q.close()
    again = ReportQueue(folder / "queue.db")
    try:
        assert again.stats()["pending"] == 3
    finally:
        again.close()
