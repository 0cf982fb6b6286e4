"""The supervisor's loop never stalls and judges fairly: bursts, a stopped supervisor, special
files, big submitted reports, filtered event streams, and the group commit underneath.

Real stations, real workers, the emulator over HTTP; the unit tests at the top need none.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from wats_station.emulator import Emulator
from wats_station.ipc.client import CommandFailed, EventStream
from wats_station.ipc.protocol import Message, MsgType, encode, peek_id
from wats_station.lab.harness import FAST_UPLOAD, wait_until
from wats_station.samples import sample_report, write_wsjf_files
from wats_station.supervisor.queue import QueueError, QueueWriteError, ReportQueue
from wats_station.supervisor.turn import Turn
from wats_station.workers.dropped import NotReadable, fingerprint, read_dropped

TOKEN = "bG9vcDpsb29w"


@pytest.fixture
def emulator():
    with Emulator(token=TOKEN) as server:
        yield server


def station_config(emulator: Emulator, home: Path, **supervisor: object) -> dict:
    watch = home / "in"
    return {
        "server": {"url": emulator.url, "token": TOKEN},
        "upload": FAST_UPLOAD,
        "watch": {"debounce_s": 0.2, "rescan_interval_s": 1.0},
        "supervisor": supervisor,
        "converters": [
            {
                "name": "wsjf",
                "module": "wsjf",
                "file_patterns": ["*.json"],
                "watch_folder": str(watch),
                "done_folder": str(watch / "Done"),
                "error_folder": str(watch / "Error"),
            }
        ],
    }


def source_crashes(station) -> list[int]:
    with sqlite3.connect(f"file:{station.paths.queue_db}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT crashes FROM source_file")]


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file()} if folder.exists() else set()


# -- reading dropped files ---------------------------------------------------------------


@pytest.mark.timeout(10)
def test_a_dropped_file_is_read_only_if_it_is_a_regular_file_within_the_limit(tmp_path):
    regular = tmp_path / "a.json"
    regular.write_bytes(b"{}")
    size, mtime_ns, sha = fingerprint(regular, 1024)
    assert (size, mtime_ns) == (2, regular.stat().st_mtime_ns) and len(sha) == 64
    assert read_dropped(regular, 1024) == b"{}"
    fifo = tmp_path / "b.json"
    os.mkfifo(fifo)  # no writer: a blocking open would hang for ever
    zero = tmp_path / "c.json"
    zero.symlink_to("/dev/zero")
    for path, why in ((fifo, "not a regular file"), (zero, "symlink"), (tmp_path, "regular")):
        with pytest.raises(NotReadable, match=why):
            fingerprint(path, 1024)
    with pytest.raises(NotReadable, match="larger than the limit"):
        read_dropped(regular, 1)


@pytest.mark.timeout(10)
def test_a_request_id_is_read_without_decoding_the_body():
    big = {"report": {"steps": [{"n": i} for i in range(100_000)]}}
    frame = encode(Message(MsgType.REQUEST, {"command": "submit_report", "args": big}, 42))
    assert peek_id(frame) == 42
    assert peek_id(b"\xc1 not msgpack") is None


# -- group commit --------------------------------------------------------------------------


def report(unit: int) -> tuple[str, bytes]:
    doc = sample_report(unit)
    return doc["id"], json.dumps(doc).encode()


@pytest.mark.timeout(10)
def test_a_write_group_commits_once_and_a_failed_write_inside_undoes_only_itself(tmp_path):
    queue = ReportQueue(tmp_path / "q.db")
    with queue.group():
        queue.enqueue([report(1)])
        with pytest.raises(QueueError):
            queue.record_crash(12345, "no such source")  # fails alone, inside the group
        queue.enqueue([report(2)])
        other = sqlite3.connect(tmp_path / "q.db")
        assert other.execute("SELECT COUNT(*) FROM report").fetchone()[0] == 0  # not yet
    assert other.execute("SELECT COUNT(*) FROM report").fetchone()[0] == 2
    with pytest.raises(RuntimeError), queue.group():
        queue.enqueue([report(3)])
        raise RuntimeError("the turn failed")
    assert queue.stats()["pending"] == 2  # the failed group left nothing behind
    other.close()
    queue.close()


@pytest.mark.timeout(10)
def test_a_write_sqlite_fails_spoils_its_group_which_raises_the_named_error(tmp_path):
    queue = ReportQueue(tmp_path / "q.db")
    with pytest.raises(QueueWriteError) as raised, queue.group():
        queue.enqueue([report(1)])
        with pytest.raises(QueueWriteError), queue._write():
            queue._sql("INSERT INTO no_such_table VALUES (1)")  # SQLite fails this write
        with pytest.raises(QueueWriteError):
            queue.enqueue([report(2)])  # refused: the transaction may be gone already
    assert "no_such_table" in str(raised.value) and raised.value.kind == "sqlite_error"
    assert queue.stats()["pending"] == 0  # rolled back, report 1 included
    queue.enqueue([report(3)])  # the next group (or write) works
    assert queue.stats()["pending"] == 1
    queue.close()


@pytest.mark.timeout(10)
def test_a_rolled_back_turn_sends_nothing_undoes_memory_and_holds_its_next_writes(tmp_path):
    queue = ReportQueue(tmp_path / "q.db")
    writable = [True]
    turn = Turn(queue, may_write=lambda: writable[0])
    done: list[str] = []
    with turn.run():
        turn.next_turn(lambda: done.append("marked done"))
    with pytest.raises(QueueWriteError), turn.run():
        assert done == ["marked done"]  # the next-turn write ran in this turn
        turn.after_commit(lambda: done.append("answered"), first=True)
        turn.on_rollback(lambda: done.append("undo 1"))
        turn.on_rollback(lambda: done.append("undo 2"))
        raise QueueWriteError("the disk holding the queue is full", "disk_full")
    assert done == ["marked done", "undo 2", "undo 1"]  # no answer; undone in reverse
    assert isinstance(turn.failure, QueueWriteError)
    writable[0] = False  # the guard's alarm: the write that was rolled back waits
    assert not turn.has_next
    with turn.run():
        pass
    assert done == ["marked done", "undo 2", "undo 1"]
    writable[0] = True
    assert turn.has_next
    with turn.run():
        pass
    assert done[-1] == "marked done"
    queue.close()


# -- the running station -------------------------------------------------------------------


class Pinger(threading.Thread):
    """Pings the station all the time and keeps every round trip."""

    def __init__(self, station) -> None:
        super().__init__(daemon=True)
        self.station = station
        self.times: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from wats_station.ipc.client import StationClient

        with StationClient(paths=self.station.paths, timeout_s=10) as client:
            while not self.stop.is_set():
                start = time.monotonic()
                client.call("ping")
                self.times.append(time.monotonic() - start)
                time.sleep(0.01)


@pytest.mark.timeout(180)
def test_a_burst_of_thousands_of_files_restarts_no_worker_and_charges_no_file(
    make_station, emulator, home
):
    count = 3000
    station = make_station(config=station_config(emulator, home, converter_workers=2))
    before = {w["name"]: w["pid"] for w in station.call("list_workers")}
    staged = write_wsjf_files(home / "staging", count)
    pinger = Pinger(station)
    pinger.start()
    watch = home / "in"
    for path in staged:  # renamed in at once, as a test cell's batch copy does
        path.rename(watch / path.name)
    wait_until(lambda: emulator.stats()["unique"] == count, 150, f"{count} reports on the server")
    wait_until(lambda: len(files_in(watch / "Done")) == count, 30, f"{count} files in Done")
    pinger.stop.set()
    pinger.join(15)
    workers = station.call("list_workers")
    assert {w["name"]: w["pid"] for w in workers} == before
    assert all(w["restarts"] == 0 for w in workers)
    assert set(source_crashes(station)) == {0}
    assert emulator.stats()["received"] == count  # every report delivered once
    assert "frozen" not in station.output()
    assert pinger.times and max(pinger.times) < 5.0  # answered all the way through


@pytest.mark.timeout(90)
def test_a_supervisor_stopped_for_several_heartbeat_timeouts_blames_no_worker_and_no_file(
    make_station, emulator, home
):
    custom = home / "custom"
    custom.mkdir()
    (custom / "slow_wsjf.py").write_text(
        "import time\nfrom converters.wsjf import WSJFConverter\n\n\n"
        "class Slow(WSJFConverter):\n"
        "    def convert(self, path):\n"
        "        time.sleep(1.0)\n"
        "        return super().convert(path)\n"
    )
    config = station_config(emulator, home)
    config["converters"][0]["module"] = "slow_wsjf.Slow"
    config["converters_folder"] = str(custom)
    station = make_station(config=config)
    before = {w["name"]: w["pid"] for w in station.call("list_workers")}
    (path,) = write_wsjf_files(home / "in", 1)

    def converting() -> bool:
        return any(w["jobs"] for w in station.call("list_workers"))

    wait_until(converting, 20, "the conversion to start")
    timeout = 1.5  # FAST_SUPERVISOR heartbeat_timeout_s
    station.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(3 * timeout)  # the point of the test: the supervisor is away this long
    finally:
        station.process.send_signal(signal.SIGCONT)
    wait_until(lambda: path.name in files_in(home / "in" / "Done"), 20, "the file in Done")
    wait_until(lambda: emulator.stats()["unique"] == 1, 20, "the report on the server")
    workers = station.call("list_workers")
    assert {w["name"]: w["pid"] for w in workers} == before
    assert all(w["restarts"] == 0 for w in workers)
    assert source_crashes(station) == [0]
    assert "frozen" not in station.output()


@pytest.mark.timeout(60)
def test_symlinks_fifos_directories_and_dev_zero_in_a_drop_folder_hang_nothing(
    make_station, emulator, home
):
    station = make_station(config=station_config(emulator, home))
    watch = home / "in"
    outside = home / "outside.json"
    outside.write_text(json.dumps(sample_report(1)))
    (watch / "zero.json").symlink_to("/dev/zero")
    (watch / "link.json").symlink_to(outside)
    os.mkfifo(watch / "pipe.json")
    (watch / "folder.json").mkdir()
    (good,) = write_wsjf_files(watch, 1)
    wait_until(lambda: good.name in files_in(watch / "Done"), 20, "the regular file in Done")
    rejected = {"zero.json", "link.json", "pipe.json"}

    def moved_aside() -> bool:
        error = watch / "Error"
        names = {p.name for p in error.iterdir()} if error.exists() else set()
        return rejected <= names

    wait_until(moved_aside, 20, "the symlinks and the FIFO in Error")
    sidecars = {
        p.name: json.loads(p.read_text())["error"] for p in (watch / "Error").glob("*.error.json")
    }
    assert "symlink" in sidecars["zero.json.error.json"]
    assert "FIFO" in sidecars["pipe.json.error.json"]
    assert (watch / "folder.json").is_dir()  # a directory is left where it is
    assert station.call("ping", timeout_s=2)["pong"]
    assert all(w["restarts"] == 0 for w in station.call("list_workers"))
    wait_until(lambda: emulator.stats()["unique"] == 1, 20, "the one report on the server")


@pytest.mark.timeout(60)
def test_a_big_submitted_report_is_checked_off_the_loop_and_answered_after_its_commit(
    make_station, emulator, home
):
    station = make_station(config=station_config(emulator, home))
    big = sample_report(7)
    steps = big["root"]["steps"]
    while len(json.dumps(big)) < 2_000_000:  # well over what the loop decodes itself
        big["root"]["steps"] = steps = steps + steps
    answer = station.call("submit_report", timeout_s=30, report=big)
    assert answer == {"id": big["id"], "state": "pending", "priority": 0}
    assert station.call("get_report", id=big["id"])["report"] == big
    broken = dict(big, result="maybe")
    with pytest.raises(CommandFailed) as failed:
        station.call("submit_report", timeout_s=30, report=broken)
    assert failed.value.code == "invalid_report" and "result" in str(failed.value)
    wait_until(lambda: emulator.stats()["unique"] == 1, 30, "the big report on the server")
    # What the control API promises of a submit holds for big ones too (issues 10 and 14).
    assert station.call("submit_report", timeout_s=30, report=big)["unchanged"] is True
    changed = dict(big, location="elsewhere")
    with pytest.raises(CommandFailed) as failed:
        station.call("submit_report", timeout_s=30, report=changed)
    assert failed.value.code == "conflict"
    with pytest.raises(CommandFailed) as failed:
        station.call("submit_report", timeout_s=30, report=changed, replace=True, priority=10**6)
    assert failed.value.code == "bad_arguments" and "priority" in str(failed.value)
    answer = station.call("submit_report", timeout_s=30, report=changed, replace=True, priority=3)
    assert answer == {"id": big["id"], "state": "pending", "priority": 3}
    with pytest.raises(CommandFailed) as failed:
        station.call("submit_report", timeout_s=30, report=big, unknown=1)
    assert failed.value.code == "bad_arguments"


@pytest.mark.timeout(60)
def test_a_stream_of_some_topics_does_not_resync_on_the_events_it_filtered_out(make_station, home):
    station = make_station()
    with EventStream(paths=station.paths, topics=("worker.watcher",)) as events:
        time.sleep(0.2)  # a SUB socket needs a moment to subscribe (the slow joiner)
        for name in ("uploader", "watcher", "uploader", "watcher"):
            pid = station.worker(name)["pid"]
            station.call("restart_worker", name=name)
            station.wait_worker(name, lambda w, p=pid: w["state"] == "running" and w["pid"] != p)
        seen = []
        while (event := events.next(timeout_s=1.0)) is not None:
            seen.append(event)
    topics = [e.topic for e in seen]
    assert "worker.watcher" in topics
    assert "resync" not in topics
