"""Every accepted report reaches the server exactly once by id, whatever the server does meanwhile.

The station runs as real processes; the WATS server is the emulator, over real HTTP.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest

from wats_station.emulator import Emulator
from wats_station.lab.harness import FAST_UPLOAD, wait_until
from wats_station.samples import sample_report
from wats_station.supervisor.queue import ReportQueue

TOKEN = "c3RhdGlvbjpzZWNyZXQ="


@pytest.fixture
def emulator():
    with Emulator(token=TOKEN, seed=7) as server:
        yield server


def station_config(emulator: Emulator, token: str = TOKEN, **upload: object) -> dict:
    return {
        "server": {"url": emulator.url, "token": token},
        "upload": {**FAST_UPLOAD, "max_concurrency": 1, **upload},
    }


def reports(count: int, start: int = 0) -> list[dict]:
    return [sample_report(unit) for unit in range(start, start + count)]


def submit_all(station, items: list[dict]) -> list[str]:
    return [station.call("submit_report", report=item)["id"] for item in items]


def wait_received(emulator: Emulator, count: int, timeout: float = 30.0) -> dict:
    return wait_until(
        lambda: (s := emulator.stats())["unique"] >= count and s,
        timeout,
        f"{count} reports on the server",
    )


def test_queued_while_offline_then_all_arrive_oldest_first_once(make_station, emulator):
    emulator.set_faults(down=True)
    station = make_station(config=station_config(emulator))
    ids = submit_all(station, reports(20))
    wait_until(lambda: station.call("get_status")["server"]["state"] == "Offline", 10, "Offline")
    time.sleep(0.5)  # several probe periods pass while offline
    stats = station.call("get_queue_stats")
    assert stats["pending"] + stats["processing"] == 20
    assert all(r["attempts"] == 0 for r in station.call("list_reports")), (
        "offline must burn no attempts"
    )
    assert "Offline" in station.cli("status", check=True).stdout

    emulator.set_faults(down=False)
    wait_received(emulator, 20)
    assert emulator.received_ids() == ids  # oldest first, each once
    assert emulator.stats()["duplicates"] == 0
    wait_until(lambda: station.call("get_queue_stats")["completed"] == 20, 10, "all completed")
    assert station.call("get_status")["server"]["state"] == "Online"


def test_a_rejected_report_fails_with_the_server_message_and_the_rest_flow(make_station, emulator):
    station = make_station(config=station_config(emulator), start=False)
    # A report our station accepted but the server refuses (here: it lacks sn).
    bad = sample_report(0)
    del bad["sn"]
    good = reports(5, start=1)
    station.paths.data_dir.mkdir(parents=True, exist_ok=True)
    queue = ReportQueue(station.paths.queue_db)
    queue.enqueue([(r["id"], json.dumps(r).encode()) for r in [bad, *good]])
    queue.close()
    station.start()
    wait_received(emulator, 5)
    failed = wait_until(
        lambda: station.call("list_reports", state="failed"), 10, "the failed report"
    )
    assert [r["id"] for r in failed] == [bad["id"]]
    assert failed[0]["last_http_status"] == 400
    assert "sn" in failed[0]["last_error"]
    assert sorted(emulator.received_ids()) == sorted(r["id"] for r in good)


def test_unauthorized_pauses_without_burning_attempts_until_the_token_is_fixed(
    make_station, emulator
):
    config = station_config(emulator, token="d3Jvbmc=")
    station = make_station(config=config)
    ids = submit_all(station, reports(5))
    wait_until(
        lambda: station.call("get_status")["server"]["state"] == "Unauthorized", 10, "Unauthorized"
    )
    listed = station.call("list_reports")
    assert len(listed) == 5 and all(r["attempts"] == 0 for r in listed)
    assert emulator.stats()["received"] == 0
    events_before = emulator.stats()["requests"]
    time.sleep(0.5)  # paused: the slow probe is the only traffic
    assert emulator.stats()["requests"] - events_before <= 2

    station.write_config(station_config(emulator))
    assert station.call("reload")["restarted"] == ["uploader"]
    wait_received(emulator, 5)
    assert emulator.received_ids() == ids
    assert TOKEN not in json.dumps(station.call("get_config"))
    assert TOKEN not in station.output()


def test_server_errors_are_retried_with_backoff_then_failed(make_station, emulator):
    emulator.set_faults(failure_rate=1.0, failure_status=503)
    station = make_station(config=station_config(emulator, max_retry_attempts=3))
    (report_id,) = submit_all(station, reports(1))
    failed = wait_until(
        lambda: station.call("list_reports", state="failed"), 15, "the report to fail"
    )
    assert failed[0]["id"] == report_id
    assert failed[0]["attempts"] == 3
    assert failed[0]["last_http_status"] == 503
    assert emulator.stats()["faults_injected"] == 3  # three POSTs (not counting the GET of
    # the process list the uploader makes when it starts)
    # A person retries it once the server is healthy again.
    emulator.set_faults(failure_rate=0.0)
    result = station.cli("queue", "retry", "--failed", check=True)
    assert '"retried": 1' in result.stdout
    wait_received(emulator, 1)


def test_rate_limit_slows_the_whole_queue_for_retry_after(make_station, emulator):
    emulator.set_faults(rate_limit_rate=1.0, retry_after=1)
    station = make_station(config=station_config(emulator))
    submit_all(station, reports(3))
    wait_until(lambda: emulator.stats()["faults_injected"] >= 1, 10, "a first 429")
    first = time.monotonic()
    wait_until(lambda: emulator.stats()["faults_injected"] >= 2, 10, "a second 429")
    assert time.monotonic() - first >= 0.9
    emulator.set_faults(rate_limit_rate=0.0)
    wait_received(emulator, 3)
    assert all(r["attempts"] == 0 for r in station.call("list_reports"))


def test_resends_after_lost_answers_carry_the_same_id(make_station, emulator):
    emulator.set_faults(drop_after_store_rate=0.5)
    station = make_station(config=station_config(emulator, max_concurrency=3))
    ids = submit_all(station, reports(30))
    wait_until(lambda: station.call("get_queue_stats")["completed"] == 30, 30, "all completed")
    stats = emulator.stats()
    assert stats["unique"] == 30 and set(emulator.received_ids()) == set(ids)
    assert stats["duplicates"] > 0  # answers were lost, so some were sent twice: same ids


def test_kill9_of_uploader_and_supervisor_during_uploads_loses_nothing(make_station, emulator):
    emulator.set_faults(latency_ms=15, drop_after_store_rate=0.05)
    station = make_station(config=station_config(emulator, max_concurrency=3))
    ids = submit_all(station, reports(150))
    rng = random.Random(3)
    for round_ in range(6):
        time.sleep(rng.uniform(0.05, 0.3))
        if round_ % 2 == 0:
            os.kill(station.worker("uploader")["pid"], signal.SIGKILL)
        else:
            station.kill()
            station.start()
    wait_until(lambda: station.call("get_queue_stats")["completed"] == 150, 60, "all completed")
    stats = emulator.stats()
    assert stats["unique"] == 150
    assert set(emulator.received_ids()) == set(ids)  # every resend carried an id we accepted


def test_a_queue_from_the_previous_schema_is_migrated_and_delivered(make_station, emulator):
    station = make_station(config=station_config(emulator), start=False)
    station.paths.data_dir.mkdir(parents=True, exist_ok=True)
    old = sqlite3.connect(station.paths.queue_db)
    old.executescript(
        """
        CREATE TABLE reports (
            id TEXT PRIMARY KEY, report_data TEXT NOT NULL, status TEXT NOT NULL,
            created_at TIMESTAMP, updated_at TIMESTAMP, attempts INTEGER DEFAULT 0, error TEXT,
            CHECK(status IN ('pending', 'processing', 'completed', 'failed')));
        CREATE INDEX idx_status ON reports(status);
        CREATE INDEX idx_created_at ON reports(created_at);
        """
    )
    legacy = reports(3)
    for index, report in enumerate(legacy):
        old.execute(
            "INSERT INTO reports VALUES (?, ?, ?, ?, ?, 0, NULL)",
            (report["id"], json.dumps(report), "processing" if index else "pending",
             f"2026-01-2{index}T10:00:00", f"2026-01-2{index}T10:00:00"),
        )  # fmt: skip
    old.commit()
    old.close()
    station.start()
    wait_received(emulator, 3)
    assert emulator.received_ids() == [r["id"] for r in legacy]


@pytest.mark.parametrize(
    "content", [b"this is not a database" * 100, b"SQLite format 3\x00" + b"\xff" * 5000]
)
def test_a_corrupt_queue_database_is_refused_and_left_untouched(make_station, emulator, content):
    station = make_station(config=station_config(emulator), start=False)
    station.paths.data_dir.mkdir(parents=True, exist_ok=True)
    station.paths.queue_db.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "wats_station.cli", "service"],
        env=station.env(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode != 0
    assert str(station.paths.queue_db) in result.stderr
    assert station.paths.queue_db.read_bytes() == content


def test_submit_refuses_an_invalid_report_naming_the_field(make_station, emulator, tmp_path):
    station = make_station(config=station_config(emulator))
    report = sample_report(1)
    report["root"]["steps"][0]["status"] = "maybe"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(report))
    result = station.cli("submit", str(path))
    assert result.returncode == 1
    assert "root.steps[0].status" in result.stderr
    assert station.call("get_queue_stats")["pending"] == 0
    path.write_text(json.dumps(sample_report(2)))
    assert "queued" in station.cli("submit", str(path), check=True).stdout
    wait_received(emulator, 1)


def test_queue_commands_work_on_a_running_and_on_a_stopped_station(make_station, emulator):
    emulator.set_faults(down=True)
    station = make_station(config=station_config(emulator))
    ids = submit_all(station, reports(4))
    online = json.loads(station.cli("queue", "stats", "--json", check=True).stdout)
    assert online["pending"] + online["processing"] == 4
    shown = json.loads(station.cli("queue", "show", ids[0], check=True).stdout)
    assert shown["report"]["id"] == ids[0]
    assert station.stop() == 0

    offline = json.loads(station.cli("queue", "stats", "--json", check=True).stdout)
    assert offline == {"pending": 4, "processing": 0, "completed": 0, "failed": 0}
    listed = json.loads(station.cli("queue", "list", "--json", check=True).stdout)
    assert [r["id"] for r in listed] == ids
    missing = station.cli("queue", "show", str(uuid.uuid4()))
    assert missing.returncode == 1 and "no report with id" in missing.stderr
    assert "pending" in station.cli("queue", "stats", check=True).stdout
