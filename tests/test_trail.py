"""The custody trail and the pause, on a real queue file (no processes)."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from wats_station.ipc.states import SourceState
from wats_station.supervisor import trail
from wats_station.supervisor.pause import Pause
from wats_station.supervisor.queue import ReportQueue

PAYLOAD = b'{"type":"T"}'


@pytest.fixture
def queue(tmp_path: Path):
    queue = ReportQueue(tmp_path / "queue.db")
    try:
        yield queue
    finally:
        queue.close()


def whats(found: dict) -> list[str]:
    return [e["what"] for e in found["events"]]


def test_a_submitted_report_has_a_trail_from_the_other_end(queue):
    report_id = str(uuid.uuid4())
    queue.enqueue([(report_id, PAYLOAD)])
    assert len(queue.claim_due(1)) == 1
    queue.fail(report_id, error="HTTP 400: missing pn", http_status=400)
    queue.retry([report_id])
    found = trail.trace(queue, report_id)
    assert found["source"] is None and found["sources"] == []
    assert whats(found) == ["queued", "upload", "failed", "queued again"]
    assert found["events"][2]["http_status"] == 400
    assert found["events"][2]["detail"] == "HTTP 400: missing pn"
    assert found["reports"] == [
        {
            "id": report_id,
            "state": "pending",
            "attempts": 0,
            "last_http_status": 400,
            "last_error": "HTTP 400: missing pn",
        }
    ]


def test_a_file_is_found_by_path_name_and_hash_and_its_retry_joins_the_story(queue):
    sha = "ab" * 32
    first = queue.record_source("/drop/csv/50%_off_[1].csv", 10, 1, sha, "csv")
    queue.record_crash(first.id, "killed by SIGKILL")
    queue.finish_source(
        first.id,
        state=SourceState.FAILED,
        final_path="/drop/csv/Error/50%_off_[1].csv",
        error="bad",
    )
    trail.note(queue, "retried", source_id=first.id, detail="moved back")
    second = queue.record_source("/drop/csv/50%_off_[1].csv", 10, 1, sha, "csv")
    report_id = str(uuid.uuid4())
    queue.commit_conversion(second.id, [(report_id, PAYLOAD)], "2.0")
    expected = [
        "seen",
        "converter crashed",
        "quarantined",
        "retried",
        "seen",
        "converted",
        "queued",
    ]
    for target in ("50%_off_[1].csv", "/drop/csv/50%_off_[1].csv", sha, report_id):
        found = trail.trace(queue, target)
        assert whats(found) == expected, target
    assert trail.trace(queue, "/drop/csv/Error/50%_off_[1].csv")["sources"][0]["id"] == first.id
    assert trail.trace(queue, "50%_off_x1].csv") is None  # LIKE wildcards are taken literally
    assert trail.trace(queue, str(uuid.uuid4())) is None


def test_cleaning_a_report_removes_its_rows_but_not_the_files_story(queue):
    source = queue.record_source("/drop/a.csv", 1, 1, "cd" * 32, "csv")
    report_id = str(uuid.uuid4())
    queue.commit_conversion(source.id, [(report_id, PAYLOAD)])
    assert len(queue.claim_due(1)) == 1
    queue.complete(report_id, 200)
    assert queue.clean(completed=True) == 1
    found = trail.trace(queue, "a.csv")
    assert whats(found) == ["seen", "converted"]
    assert "converter version unknown" in found["events"][1]["detail"]


def test_a_queue_file_from_before_the_trail_gains_it_when_opened(tmp_path):
    path = tmp_path / "queue.db"
    ReportQueue(path).close()
    with sqlite3.connect(path) as db:  # back to the schema as it was before issue 12
        for kind, name in db.execute(
            "SELECT type, name FROM sqlite_master WHERE name LIKE 'trail%' "
            "OR name IN ('meta', 'source_file_quarantined') ORDER BY type = 'table'"
        ).fetchall():
            db.execute(f"DROP {kind.upper()} {name}")
    db.close()
    queue = ReportQueue(path)
    try:
        queue.enqueue([(str(uuid.uuid4()), PAYLOAD)])
        assert queue._sql("SELECT what FROM trail").fetchall() == [("queued",)]
        assert queue._sql("PRAGMA user_version").fetchone()[0] == ReportQueue.SCHEMA_VERSION
    finally:
        queue.close()


def test_a_pause_is_kept_in_the_queue_file_until_resumed(tmp_path):
    path = tmp_path / "queue.db"
    queue = ReportQueue(path)
    pause = Pause(queue)
    assert pause.as_dict() == {"uploads": None, "conversions": None}
    pause.pause("uploads", "ann@line-1")
    pause.pause("all", "bob@line-1")
    queue.close()
    queue = ReportQueue(path)
    try:
        again = Pause(queue)
        assert again.uploads and again.conversions
        assert again.state["uploads"]["by"] == "ann@line-1"  # the first pause is kept
        assert again.state["conversions"]["by"] == "bob@line-1"
        assert "uploads paused by ann@line-1 since " in again.describe()
        again.resume("conversions")
        assert Pause(queue).as_dict()["conversions"] is None
        with pytest.raises(ValueError):
            again.pause("everything", "x")
    finally:
        queue.close()
