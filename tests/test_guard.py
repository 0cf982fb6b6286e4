"""Nothing is lost when the server or the disk lies (issue 10, items 1-7).

Real stations, the emulator over real HTTP, a real SQLite file. The full-disk and low-disk
cases put the queue's data folder on a small tmpfs of its own (mounting needs root, as in CI;
elsewhere they are skipped, saying why): a real file system that really answers ENOSPC.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from requests import Response

from wats_station.emulator import Emulator
from wats_station.ipc.client import CommandFailed, EventStream
from wats_station.ipc.endpoints import instance_paths
from wats_station.lab.harness import FAST_UPLOAD, Station, wait_until
from wats_station.samples import sample_report
from wats_station.supervisor.config import ConfigError, parse_config
from wats_station.supervisor.queue import ReportQueue
from wats_station.workers.uploader import answer_lost, receipt_problem

TOKEN = "c3RhdGlvbjpzZWNyZXQ="
NO_ADMISSION = {"stop_below_mb": 0, "resume_above_mb": 0}
MB = 1024 * 1024


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(token=TOKEN, seed=11) as server:
        yield server


def config(emulator: Emulator, upload: dict | None = None, **sections: object) -> dict:
    return {
        "server": {"url": emulator.url, "token": TOKEN},
        "upload": {**FAST_UPLOAD, "max_concurrency": 1, **(upload or {})},
        "admission": NO_ADMISSION,
        **sections,
    }


def submit(station: Station, count: int, start: int = 0) -> list[str]:
    return [
        station.call("submit_report", report=sample_report(unit))["id"]
        for unit in range(start, start + count)
    ]


def status(station: Station) -> dict:
    return station.call("get_status")


def alarms(station: Station) -> dict[str, str]:
    return {a["alarm"]: a["message"] for a in status(station)["alarms"]}


def refused(station: Station, report: dict) -> CommandFailed:
    with pytest.raises(CommandFailed) as error:
        station.call("submit_report", report=report)
    return error.value


# -- 1. verified delivery --------------------------------------------------------------------


def test_a_2xx_html_page_completes_nothing_and_the_link_says_not_wats(make_station, emulator):
    emulator.set_faults(not_wats_rate=1.0)  # a captive portal: 200 and a page, for every call
    station = make_station(config=config(emulator))
    ids = submit(station, 5)
    server = wait_until(
        lambda: (s := status(station)["server"])["state"] == "NotWATS" and s, 10, "NotWATS"
    )
    assert f"the server at {emulator.url} does not answer like WATS" in server["detail"]
    assert "text/html" in server["detail"]
    answered = wait_until(
        lambda: [r for r in station.call("list_reports") if r["last_error"]], 10, "an error"
    )
    assert "<!DOCTYPE html>" in answered[0]["last_error"] and answered[0]["attempts"] >= 1
    assert station.call("get_queue_stats")["completed"] == 0
    assert emulator.stats()["received"] == 0
    assert "NotWATS" in station.cli("status", check=True).stdout

    emulator.set_faults(not_wats_rate=0.0)  # the real server answers again
    wait_until(lambda: station.call("get_queue_stats")["completed"] == 5, 20, "all completed")
    assert sorted(emulator.received_ids()) == sorted(ids)
    assert status(station)["server"]["state"] == "Online"


# -- 2. an existing queue file is never replaced ---------------------------------------------


def run_service(station: Station) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wats_station.cli", "service"],
        env=station.env(),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_zero_byte_queue_file_is_refused_not_replaced_and_a_new_one_is_logged(
    make_station, emulator
):
    station = make_station(config=config(emulator), start=False)
    station.paths.data_dir.mkdir(parents=True, exist_ok=True)
    station.paths.queue_db.touch()  # what `truncate -s 0 queue.db` leaves
    result = run_service(station)
    assert result.returncode != 0
    assert f"queue database {station.paths.queue_db} is empty (0 bytes)" in result.stderr
    assert station.paths.queue_db.read_bytes() == b""

    station.paths.queue_db.unlink()  # no file at all: a new queue, and it is said
    station.start()
    assert "created an empty queue" in station.output()


# -- 3. the queue file deleted or replaced under a running station ---------------------------


@pytest.mark.timeout(90)
def test_a_queue_file_deleted_under_the_station_is_written_back_and_new_work_refused(
    make_station, emulator, home
):
    notify = home / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    statuses: list[str] = []
    # Read all the time: a datagram queue is short (10), and the station's sends would wait.
    reader = threading.Thread(target=read_datagrams, args=(listener, statuses), daemon=True)
    reader.start()
    emulator.set_faults(down=True)  # everything stays pending in the queue
    try:
        station = make_station(config=config(emulator), env={"NOTIFY_SOCKET": str(notify)})
        ids = submit(station, 20)
        queue_db = station.paths.queue_db
        with EventStream(paths=station.paths) as events:
            events.snapshot()
            queue_db.unlink()  # `rm queue.db` under the running station
            event = wait_until(lambda: alarm_event(events), 10, "an alarm event")
        assert event == {"alarm": "queue_lost", "active": True, "message": event["message"]}
        lost = alarms(station)["queue_lost"]
        assert lost == event["message"]
        assert f"the queue database {queue_db} was deleted" in lost
        assert f"written back to {queue_db}" in lost
        failure = refused(station, sample_report(99))
        assert failure.code == "unavailable" and "was deleted" in str(failure)
        wait_until(
            lambda: any(m.startswith("STATUS=ALARM:") for m in list(statuses)), 10, "STATUS=ALARM"
        )
    finally:
        listener.close()
    assert "ALARM queue_lost" in station.output()

    assert station.stop() == 0
    emulator.set_faults(down=False)
    station.start()  # on the file written back: all 20 are there and go out
    wait_until(lambda: emulator.stats()["unique"] == 20, 30, "all 20 delivered")
    assert sorted(emulator.received_ids()) == sorted(ids)


def alarm_event(events: EventStream) -> dict | None:
    event = events.next(0.2)
    return event.data if event is not None and event.topic == "alarm" else None


def read_datagrams(listener: socket.socket, into: list[str]) -> None:
    listener.settimeout(0.2)
    while True:
        try:
            into.extend(listener.recv(65536).decode().split("\n"))
        except TimeoutError:
            continue
        except OSError:  # closed at the end of the test
            return


def test_a_queue_file_replaced_under_the_station_is_saved_beside_it(make_station, emulator):
    emulator.set_faults(down=True)
    station = make_station(config=config(emulator))
    ids = submit(station, 10)
    queue_db = station.paths.queue_db
    other = queue_db.with_name("other.db")
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    os.replace(other, queue_db)  # someone restores "a backup" over the live queue
    lost = wait_until(lambda: alarms(station).get("queue_lost"), 10, "the queue_lost alarm")
    assert "was replaced by another file" in lost
    (rescued,) = queue_db.parent.glob("queue.db.rescued-*")
    assert f"saved to {rescued}" in lost
    assert station.stop() == 0
    saved = ReportQueue(rescued)
    try:
        assert sorted(r.id for r in saved.list()) == sorted(ids)
    finally:
        saved.close()


# -- 4. a server that stores, then drops the connection ---------------------------------------


def test_store_then_drop_backs_off_counting_attempts_instead_of_a_retry_storm(
    make_station, emulator
):
    emulator.set_faults(drop_after_store_rate=1.0)
    upload = {"retry_base_s": 0.4, "retry_cap_s": 1.6, "max_retry_attempts": 4}
    station = make_station(config=config(emulator, upload))
    ids = submit(station, 3)
    failed = wait_until(
        lambda: (r := station.call("list_reports", state="failed")) and len(r) == 3 and r,
        30,
        "the 3 reports to fail after 4 attempts each",
    )
    assert all(r["attempts"] == 4 for r in failed)
    assert "answer was lost" in failed[0]["last_error"]
    # Each report was sent once per attempt: 12 POSTs, where the storm sent dozens.
    assert emulator.stats()["received"] == 12
    assert sorted(set(emulator.received_ids())) == sorted(ids)


# -- 5. a damaged payload ------------------------------------------------------------------


def test_a_corrupted_payload_fails_its_report_with_the_reason_and_the_rest_flow(
    make_station, emulator
):
    station = make_station(config=config(emulator), start=False)
    station.paths.data_dir.mkdir(parents=True, exist_ok=True)
    reports = [sample_report(unit) for unit in range(6)]
    queue = ReportQueue(station.paths.queue_db)
    queue.enqueue([(r["id"], json.dumps(r).encode()) for r in reports])
    queue.close()
    victim = reports[2]["id"]
    with sqlite3.connect(station.paths.queue_db) as db:
        (blob,) = db.execute("SELECT payload FROM report WHERE id = ?", (victim,)).fetchone()
        damaged = blob[:40] + bytes(b ^ 0x5A for b in blob[40:70]) + blob[70:]
        db.execute("UPDATE report SET payload = ? WHERE id = ?", (damaged, victim))
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    station.start()
    wait_until(lambda: emulator.stats()["unique"] == 5, 20, "the 5 good reports delivered")
    (failed,) = station.call("list_reports", state="failed")
    assert failed["id"] == victim and "damaged (checksum mismatch" in failed["last_error"]
    first_pid = status(station)["pid"]
    station.stop()
    station.start()  # and no crash loop on restart either
    assert status(station)["pid"] != first_pid
    assert station.call("get_queue_stats") == {
        "pending": 0,
        "processing": 0,
        "completed": 5,
        "failed": 1,
    }


# -- 6 and 7: a disk of our own --------------------------------------------------------------


@pytest.fixture
def queue_disk(home: Path) -> Iterator[Callable[[Station, int], Path]]:
    """Mount a tmpfs of `size_mb` on a station's data folder (root only)."""
    mounted: list[Path] = []

    def mount(station: Station, size_mb: int) -> Path:
        folder = station.paths.data_dir
        folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs (needs root): {result.stderr.strip()}")
        mounted.append(folder)
        return folder

    try:
        yield mount
    finally:
        for folder in mounted:  # lazy: a station that is still stopping keeps it busy
            subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave_bytes: int = 0) -> Path:
    """Write a filler file until the disk is full, or only `leave_bytes` remain free."""
    filler = folder / f"filler-{uuid.uuid4().hex[:6]}"
    chunk = os.urandom(64 * 1024)
    with open(filler, "wb") as handle:
        try:
            while free(folder) - len(chunk) >= leave_bytes:
                handle.write(chunk)
                handle.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def free(folder: Path) -> int:
    info = os.statvfs(folder)
    return info.f_bavail * info.f_frsize


def noisy_report(unit: int) -> dict:
    report = sample_report(unit)
    report["miscInfos"] = [{"description": "noise", "text": secrets.token_urlsafe(40_000)}]
    return report


def drop_files(folder: Path, units: range) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for unit in units:
        temp = folder / f".unit-{unit}.tmp"
        temp.write_text(json.dumps(sample_report(unit)))
        paths.append(temp.rename(folder / f"unit-{unit}.json"))
    return paths


def watched(home: Path, **admission: float) -> dict:
    return {
        "watch": {"debounce_s": 0.1, "rescan_interval_s": 0.5},
        "converters": [
            {
                "name": "wsjf",
                "module": "wsjf",
                "file_patterns": ["*.json"],
                "watch_folder": str(home / "drop"),
            }
        ],
        "admission": admission or NO_ADMISSION,
    }


@pytest.mark.timeout(120)
def test_after_a_full_disk_submits_say_so_files_never_stall_and_work_resumes_by_itself(
    make_station, emulator, queue_disk, home
):
    emulator.set_faults(down=True)
    station = make_station(config=config(emulator, **watched(home)), start=False)
    data = queue_disk(station, 6)
    station.start()
    filler = fill(data)
    accepted = 0
    for unit in range(200):  # until the WAL must grow and cannot
        try:
            station.call("submit_report", report=noisy_report(unit))
        except CommandFailed as error:
            failure = error
            break
        accepted += 1
    else:
        pytest.fail("200 submits of 40 kB fitted on a full 6 MB disk")
    assert failure.code == "unavailable"
    assert "the disk holding the queue is full" in str(failure)
    assert "OperationalError" not in str(failure) and "rollback" not in str(failure)
    assert "cannot write to the queue" in alarms(station)["queue_write"]
    # While full: new files stay where they are.
    files = drop_files(home / "drop", range(1000, 1003))
    wait_until(lambda: status(station)["files"]["deferred"] == 3, 10, "3 files waiting")
    assert all(path.exists() for path in files)

    filler.unlink()  # space returns: no restart, no command
    wait_until(lambda: not alarms(station), 10, "the alarm to clear")
    wait_until(lambda: not any(p.exists() for p in files), 20, "the 3 files converted")
    later = submit(station, 1, start=500)
    emulator.set_faults(down=False)
    total = accepted + 3 + 1
    wait_until(lambda: emulator.stats()["unique"] == total, 60, f"{total} reports delivered")
    assert later[0] in emulator.received_ids()
    files_status = status(station)["files"]
    assert files_status["in_flight"] == 0 and files_status["deferred"] == 0


@pytest.mark.timeout(120)
def test_a_disk_that_fills_while_files_flow_rolls_back_turns_and_loses_nothing_without_restart(
    make_station, emulator, queue_disk, home
):
    station = make_station(config=config(emulator, **watched(home)), start=False)
    data = queue_disk(station, 8)
    station.start()
    pid = status(station)["pid"]
    drop = home / "drop"
    drop.mkdir(parents=True, exist_ok=True)
    units = range(2000, 2060)
    for unit in units:  # 40 kB of noise each: a few of them fill what the disk has left
        temp = drop / f".unit-{unit}.tmp"
        temp.write_text(json.dumps(noisy_report(unit)))
        temp.rename(drop / f"unit-{unit}.json")
    filler = fill(data)  # while they are recorded, converted and uploaded
    wait_until(lambda: "queue_write" in alarms(station), 30, "the queue write alarm")
    filler.unlink()
    wait_until(lambda: not alarms(station), 20, "the alarm to clear")
    wait_until(
        lambda: set(emulator.received_ids()) >= {noisy_report(unit)["id"] for unit in units},
        60,
        "every file's report delivered",
    )
    wait_until(lambda: not list(drop.glob("unit-*.json")), 20, "every file moved to Done")
    assert not (drop / "Error").exists()

    def settled() -> bool:
        now = status(station)
        files, queue = now["files"], now["queue"]
        return files["in_flight"] == files["deferred"] == 0 and queue.get("pending", 0) == 0

    wait_until(settled, 20, "nothing left in flight or pending")
    assert status(station)["pid"] == pid  # no restart: the turns that failed were rolled back
    assert "queue writes were rolled back" in station.output()


@pytest.mark.timeout(90)
def test_below_the_free_space_watermark_no_new_work_is_taken_until_above_the_higher_one(
    make_station, emulator, queue_disk, home
):
    station = make_station(
        config=config(emulator, **watched(home, stop_below_mb=8, resume_above_mb=12)),
        start=False,
    )
    data = queue_disk(station, 20)
    station.start()
    submit(station, 2)
    low = fill(data, leave_bytes=6 * MB)  # 6 MB free: below the 8 MB mark
    message = wait_until(lambda: alarms(station).get("disk_low"), 10, "the disk_low alarm")
    assert "below admission.stop_below_mb (8 MB)" in message
    assert "ALARM      disk_low: only" in station.cli("status", check=True).stdout
    failure = refused(station, sample_report(50))
    assert failure.code == "unavailable" and "admission.stop_below_mb" in str(failure)
    files = drop_files(home / "drop", range(2000, 2002))
    wait_until(lambda: status(station)["files"]["deferred"] == 2, 10, "2 files left waiting")
    assert all(path.exists() for path in files)  # they stay where the test program put them
    wait_until(lambda: emulator.stats()["unique"] == 2, 20, "uploads going on meanwhile")

    # 10 MB, in one step: above the stop mark, below the resume mark.
    os.truncate(low, low.stat().st_size - (10 * MB - free(data)))
    wait_until(lambda: "only 10 MB free" in alarms(station).get("disk_low", ""), 10, "10 MB seen")
    assert refused(station, sample_report(51)).code == "unavailable"
    assert all(path.exists() for path in files)

    for filler in data.glob("filler-*"):
        filler.unlink()
    wait_until(lambda: not alarms(station), 10, "the alarm to clear")
    wait_until(lambda: not any(p.exists() for p in files), 20, "the waiting files converted")
    submit(station, 1, start=52)
    wait_until(lambda: emulator.stats()["unique"] == 5, 20, "all 5 reports delivered")


# -- the uploader's reading of an answer (unit level) -----------------------------------------


def answer(body: bytes, content_type: str = "application/json; charset=utf-8") -> Response:
    response = Response()
    response.status_code = 200
    response._content = body
    response.headers["Content-Type"] = content_type
    response.encoding = "utf-8"
    return response


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        (b'{"ID": "%s", "uuid": "%s", "Report_ID": 7}', True),
        (b'[{"ID": "%s", "uuid": "%s", "Report_ID": 7}]', True),  # a list of one is unwrapped
        (b'{"id": "%s", "uuid": "%s"}', True),
        (b'{"ID": "%s", "uuid": "%s"}', True),
        (b'{"ID": "00000000-0000-0000-0000-000000000001"}', False),  # another report's receipt
        (b'{"status": "ok"}', False),
        (b'"24.1.0"', False),
        (b"", False),
        (b"<html><body>Welcome</body></html>", False),
    ],
)
def test_only_a_wats_receipt_naming_the_report_counts_as_delivered(body, accepted):
    report_id = str(uuid.uuid4())
    text = body.replace(b"%s", report_id.upper().encode())  # ids compare as UUIDs
    problem = receipt_problem(answer(text), report_id)
    assert (problem is None) == accepted, problem


def test_a_refused_connection_is_offline_but_a_cut_answer_is_lost():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(requests.ConnectionError) as refused_error:
        requests.post(f"http://127.0.0.1:{port}/", timeout=2)
    assert not answer_lost(refused_error.value)
    with Emulator(token=TOKEN) as server:
        server.set_faults(drop_after_store_rate=1.0)
        with pytest.raises(requests.ConnectionError) as cut:
            requests.post(
                f"{server.url}/api/Report/WSJF",
                json=sample_report(1),
                headers={"Authorization": f"Basic {TOKEN}"},
                timeout=5,
            )
    assert answer_lost(cut.value)


def test_admission_watermarks_have_defaults_and_the_resume_mark_may_not_be_below_the_stop_one(
    home,
):
    paths = instance_paths("default", env={"WATS_STATION_HOME": str(home)})
    defaults = parse_config({}, paths, env={}).admission
    assert (defaults.stop_below_mb, defaults.resume_above_mb) == (500.0, 1000.0)
    with pytest.raises(ConfigError, match=r"admission.resume_above_mb: must be at least"):
        parse_config({"admission": {"stop_below_mb": 100, "resume_above_mb": 50}}, paths, env={})
    with pytest.raises(ConfigError, match=r"admission.stop_below_mb: must be between"):
        parse_config({"admission": {"stop_below_mb": -1}}, paths, env={})
