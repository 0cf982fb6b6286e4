"""Pause and resume: nothing is lost, nothing is sent while paused, the pause outlives a restart."""

from __future__ import annotations

import json

import pytest

from wats_station.emulator import Emulator
from wats_station.lab.harness import minimal_report, wait_until
from wats_station.samples import write_csv_files

TOKEN = "cGF1c2U6cGF1c2U="


def station_config(emulator: Emulator) -> dict:
    return {
        "server": {"url": emulator.url, "token": TOKEN},
        "watch": {"debounce_s": 0.1, "rescan_interval_s": 0.5},
        "upload": {"probe_base_s": 0.1, "probe_cap_s": 0.3},
    }


@pytest.mark.timeout(90)
def test_pause_during_a_stream_loses_nothing_and_delivers_everything_once_after_resume(
    make_station, home
):
    with Emulator(token=TOKEN) as emulator:
        station = make_station(config=station_config(emulator))
        drop = next(
            c["watch_folder"] for c in station.call("list_converters") if c["name"] == "csv"
        )
        staging = home / "staging"
        files = write_csv_files(staging, 12)
        # A stream: files and submitted reports arrive before and after the pause.
        for path in files[:4]:
            path.rename(f"{drop}/{path.name}")
        for n in range(5):
            station.call("submit_report", report=minimal_report(n))
        result = station.cli("pause", check=True)
        assert "uploads (by " in result.stdout and "conversions (by " in result.stdout
        status = station.call("get_status")
        assert status["paused"]["uploads"]["by"].count("@") == 1
        received_at_pause = emulator.stats()["received"]
        for path in files[4:8]:
            path.rename(f"{drop}/{path.name}")
        for n in range(5, 10):
            station.call("submit_report", report=minimal_report(n))

        # Paused: the new files stay in the drop folder, the new reports stay queued.
        wait_until(
            lambda: len(station.call("list_files", state="waiting")) >= 4,
            10,
            "the paused files to be listed as waiting",
        )
        assert emulator.stats()["received"] - received_at_pause <= 5  # only uploads in flight
        wait_until(
            lambda: station.call("get_queue_stats")["processing"] == 0, 10, "uploads in flight"
        )
        sent_while_paused = emulator.stats()["received"]

        # A restart keeps the pause (and the files and reports).
        assert station.stop() == 0
        for path in files[8:]:
            path.rename(f"{drop}/{path.name}")
        station.start()
        status = station.call("get_status")
        assert status["paused"]["uploads"] and status["paused"]["conversions"]
        assert "paused" in {r["check"] for r in status["health"]["reasons"]}
        wait_until(
            lambda: len(station.call("list_files", state="waiting")) >= 8,
            10,
            "every file that arrived while paused to be waiting",
        )
        assert emulator.stats()["received"] == sent_while_paused
        waiting = station.call("list_files", state="waiting")
        assert {f["name"] for f in waiting} >= {p.name for p in files[4:]}

        station.cli("resume", check=True)
        assert station.call("get_status")["paused"] == {"uploads": None, "conversions": None}

        expected = 12 + 10  # one report per CSV file here, and the ten submitted

        def delivered() -> bool:
            stats = station.call("get_queue_stats")
            return stats["completed"] == expected and not stats["pending"]

        wait_until(delivered, 40, "every report delivered after resume")
        stats = emulator.stats()
        assert stats["unique"] == expected
        assert stats["duplicates"] == 0
        assert not list(station.paths.data_dir.joinpath("drop", "csv").glob("*.csv"))


def test_pause_one_kind_at_a_time_and_on_a_stopped_station(make_station):
    station = make_station(start=False)
    result = station.cli("pause", "--uploads", check=True)  # stopped: kept in the queue file
    assert "uploads (by" in result.stdout and "conversions" not in result.stdout
    station.start()
    status = station.call("get_status")
    assert status["paused"]["uploads"] and status["paused"]["conversions"] is None
    station.call("pause", what="conversions", by="ann@line-3")
    paused = station.call("get_status")["paused"]
    assert paused["conversions"]["by"] == "ann@line-3"
    assert paused["uploads"]["by"] != "ann@line-3"  # the first pause keeps who paused it
    text = station.cli("status", check=True).stdout
    assert "paused     conversions (by ann@line-3 at " in text
    assert "health     degraded" in text and "paused: uploads paused by " in text
    station.call("resume", what="uploads")
    paused = station.call("get_status")["paused"]
    assert paused["uploads"] is None and paused["conversions"]["by"] == "ann@line-3"
    with pytest.raises(Exception, match="'what' must be one of"):
        station.call("pause", what="everything")
    station.stop()
    result = station.cli("resume", "--conversions", check=True)
    assert "nothing is paused" in result.stdout
    assert json.loads(station.cli("queue", "stats", "--json", check=True).stdout)["pending"] == 0
