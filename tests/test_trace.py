"""The custody trail, files list/retry and machine-readable logs, with real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wats_station.converters.base import derived_report_id
from wats_station.emulator import Emulator
from wats_station.lab.harness import wait_until
from wats_station.workers.crashpoints import CRASH_ENV

TOKEN = "dHJhY2U6dHJhY2U="

# A converter of one-line "board" files (the line is the serial number), in two releases:
# 1.0 cannot read them yet (and says so on stderr), 2.0 can.
BOARD_V1 = """
import sys
from wats_station.converters.base import ConversionError, Converter


class Board(Converter):
    version = "1.0"

    def convert(self, path):
        print(f"board 1.0 reading {path.name}", file=sys.stderr, flush=True)
        raise ConversionError(f"{path.name}: board files are not supported before 2.0")
"""
BOARD_V2 = """
from wats_station.converters.base import Converter


class Board(Converter):
    version = "2.0"

    def convert(self, path):
        serial = path.read_text().strip()
        return [{
            "type": "T", "pn": "BOARD", "sn": serial, "rev": "A", "processCode": 10,
            "result": "P", "machineName": "st-1", "location": "here", "purpose": "test",
            "start": "2024-05-01T10:00:00+02:00", "uut": {},
            "root": {"stepType": "SequenceCall", "name": "Main", "status": "P"},
        }]
"""


REJECTED = {
    "type": "T", "id": "00000000-0000-4000-8000-00000000abcd", "pn": "X", "sn": "1", "rev": "A",
    "processCode": 10, "result": "P", "machineName": "st-1", "location": "here",
    "purpose": "test", "start": "2024-05-01T10:00:00+02:00", "uut": {},
    "root": {"stepType": "SequenceCall", "name": "Main", "status": "P"},
}  # fmt: skip


def board_station(make_station, home: Path, url: str, module: str, **kwargs):
    custom = home / "custom"
    custom.mkdir(exist_ok=True)
    (custom / "board.py").write_text(module)
    config = {
        "server": {"url": url, "token": TOKEN},
        "converters_folder": str(custom),
        "converters": [
            {
                "name": "board",
                "module": "board.Board",
                "file_patterns": ["*.board"],
                "max_crashes": 3,
            }
        ],
        "watch": {"debounce_s": 0.1, "rescan_interval_s": 0.5},
        "upload": {
            "retry_base_s": 0.2,
            "retry_cap_s": 0.3,
            "probe_base_s": 0.1,
            "probe_cap_s": 0.3,
        },
        **kwargs.pop("config", {}),
    }
    return make_station(config=config, **kwargs)


def whats(trace: dict) -> list[str]:
    return [event["what"] for event in trace["events"]]


def in_order(items: list[str], expected: list[str]) -> bool:
    remaining = iter(items)
    return all(any(item == wanted for item in remaining) for wanted in expected)


@pytest.mark.timeout(90)
def test_trace_shows_the_whole_life_of_a_file_through_a_crash_and_server_errors(make_station, home):
    crash_1, crash_2 = home / "crash-1", home / "crash-2"
    with Emulator(token=TOKEN) as emulator:
        emulator.set_faults(failure_rate=1.0)
        station = board_station(
            make_station,
            home,
            emulator.url,
            BOARD_V2,
            env={CRASH_ENV: f"before-convert:board@{crash_1},before-post@{crash_2}"},
        )
        drop = station.paths.data_dir / "drop" / "board"
        drop.mkdir(parents=True, exist_ok=True)  # the watcher makes it too, a moment after "ready"
        (drop / "sn-1.board").write_text("SN-0001\n")
        report_id = derived_report_id(b"SN-0001\n", 0)

        def retried_twice() -> bool:
            report = station.call("get_report", id=report_id)
            return report["attempts"] >= 2

        wait_until(retried_twice, 30, "two answered attempts (HTTP 500)")
        emulator.set_faults(failure_rate=0.0)
        wait_until(
            lambda: station.call("get_report", id=report_id)["state"] == "completed", 20, "delivery"
        )
        by_name = station.call("trace", target="sn-1.board")
        steps = whats(by_name)
        # The file's way to Done and its report's uploads run side by side after the commit
        # (group commit: the file is marked done in the next loop turn), so each is in order.
        assert in_order(steps, ["seen", "converter crashed", "converted", "queued", "done"]), steps
        assert in_order(
            steps,
            ["seen", "converter crashed", "converted", "queued", "upload", "returned",
             "upload", "retry later", "upload", "retry later", "upload", "accepted"],
        ), steps  # fmt: skip
        events = {e["what"]: e for e in by_name["events"]}
        assert "converter version 2.0" in events["converted"]["detail"]
        assert "SIGKILL" in events["converter crashed"]["detail"]
        assert events["retry later"]["http_status"] == 500
        assert events["accepted"]["http_status"] == 200
        assert [r["id"] for r in by_name["reports"]] == [report_id]
        assert by_name["source"]["sha256"] and by_name["source"]["state"] == "done"
        assert emulator.stats()["unique"] == 1

        # The same story from the other end, by content hash, and as text.
        assert station.call("trace", target=report_id)["events"] == by_name["events"]
        assert (
            station.call("trace", target=by_name["source"]["sha256"])["events"] == by_name["events"]
        )
        text = station.cli("trace", "sn-1.board", check=True).stdout
        assert "retry later HTTP 500" in text and "accepted HTTP 200" in text
        missing = station.cli("trace", "never-seen.board")
        assert missing.returncode == 1 and "knows no file or report" in missing.stderr

    # From the queue file alone when the station is stopped.
    assert station.stop() == 0
    offline = json.loads(station.cli("trace", report_id, "--json", check=True).stdout)
    assert offline["events"] == by_name["events"]


@pytest.mark.timeout(90)
def test_files_retry_delivers_a_quarantined_file_once_after_its_converter_is_fixed(
    make_station, home
):
    with Emulator(token=TOKEN) as emulator:
        station = board_station(
            make_station, home, emulator.url, BOARD_V1, config={"logging": {"format": "json"}}
        )
        emulator.set_faults(failure_rate=1.0, failure_status=400)  # a log line naming a report
        station.call("submit_report", report=REJECTED)
        wait_until(lambda: station.call("get_queue_stats")["failed"] == 1, 10, "the rejection")
        emulator.set_faults(failure_rate=0.0)
        drop = station.paths.data_dir / "drop" / "board"
        drop.mkdir(parents=True, exist_ok=True)  # the watcher makes it too, a moment after "ready"
        (drop / "sn-2.board").write_text("SN-0002\n")
        (drop / "sn-3.board").write_text("SN-0003\n")
        errors = wait_until(
            lambda: (
                len(station.call("list_files", state="error")) == 2
                and station.call("list_files", state="error")
            ),
            20,
            "both files quarantined",
        )
        assert {f["name"] for f in errors} == {"sn-2.board", "sn-3.board"}
        assert all("not supported before 2.0" in f["reason"] for f in errors)
        listed = station.cli("files", "list", "--state", "error", check=True).stdout
        assert "sn-2.board" in listed and "not supported before 2.0" in listed

        # The converter is fixed (a new release, its worker restarted); one file is retried.
        (home / "custom" / "board.py").write_text(BOARD_V2)
        station.call("restart_worker", name="converter-1")
        station.wait_worker("converter-1", lambda w: w["state"] == "running" and w["uptime_s"])
        station.cli("files", "retry", "sn-2.board", check=True)
        expected = derived_report_id(b"SN-0002\n", 0)
        wait_until(lambda: emulator.stats()["unique"] == 1, 20, "the retried file's report")
        assert emulator.received_ids() == [expected]  # the id it would have had the first time
        assert not list((drop / "Error").glob("sn-2.board*"))  # file and sidecar are gone
        assert [f["name"] for f in station.call("list_files", state="error")] == ["sn-3.board"]
        done = station.call("list_files", state="done")
        assert [(f["name"], f["reports"]) for f in done] == [("sn-2.board", [expected])]
        steps = whats(station.call("trace", target="sn-2.board"))
        assert in_order(steps, ["seen", "quarantined", "retried", "seen", "converted", "accepted"])
        retried = next(
            e
            for e in station.call("trace", target="sn-2.board")["events"]
            if e["what"] == "retried"
        )
        assert "not supported before 2.0" in retried["detail"]  # the sidecar's reason, kept
        with pytest.raises(Exception, match=r"no quarantined file named nope\.board"):
            station.call("retry_files", names=["nope.board"])

        # Stopped: the files are still listed and retried; the next start delivers.
        assert station.stop() == 0
        stopped = json.loads(station.cli("files", "list", "--json", check=True).stdout)
        assert {(f["name"], f["state"]) for f in stopped} >= {
            ("sn-3.board", "error"),
            ("sn-2.board", "done"),
        }
        station.cli("files", "retry", "--all-errors", check=True)
        assert (drop / "sn-3.board").exists()
        station.start()
        wait_until(lambda: emulator.stats()["unique"] == 2, 20, "the second file delivered")
        assert emulator.stats()["duplicates"] == 0
        station.stop()

    # logging.format json: one object per line, the worker's own lines attributed to it.
    entries = [json.loads(line) for line in station.paths.log_file.read_text().splitlines()]
    assert all({"time", "level", "instance", "process", "pid", "event"} <= set(e) for e in entries)
    assert {e["instance"] for e in entries} == {"default"}
    worker_lines = [e for e in entries if e["event"].startswith("board 1.0 reading")]
    assert worker_lines and {e["process"] for e in worker_lines} == {"converter-1"}
    assert all(e["pid"] != entries[0]["pid"] for e in worker_lines)
    rejected = [e for e in entries if "rejected by the server" in e["event"]]
    assert rejected and rejected[0]["report_ids"] == [REJECTED["id"]]


@pytest.mark.timeout(60)
def test_a_file_retried_the_moment_it_is_quarantined_is_taken_again_at_once(make_station, home):
    """An operator clicks "reprocess" as soon as a file shows in Error: its bytes and mtime are
    what the watcher saw before, yet it must be converted again now, not minutes later."""
    with Emulator(token=TOKEN) as emulator:
        station = board_station(make_station, home, emulator.url, BOARD_V1)
        drop = station.paths.data_dir / "drop" / "board"
        drop.mkdir(parents=True, exist_ok=True)  # the watcher makes it too, a moment after "ready"
        (drop / "sn-4.board").write_text("SN-0004\n")
        wait_until(lambda: station.call("list_files", state="error"), 20, "the file in Error")
        station.call("retry_files", names=["sn-4.board"])
        wait_until(
            lambda: in_order(
                whats(station.call("trace", target="sn-4.board")),
                ["quarantined", "retried", "seen", "quarantined"],
            ),
            15,
            "the retried file converted again (and quarantined again: the converter is unfixed)",
        )
