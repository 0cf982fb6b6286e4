"""The health verdict: each input turns it degraded or failing, and it comes back to ok."""

from __future__ import annotations

import signal
import socket
import threading
from dataclasses import replace

import pytest

from wats_station.emulator import Emulator
from wats_station.ipc.client import EventStream
from wats_station.lab.harness import minimal_report, wait_until
from wats_station.supervisor.config import AdmissionSettings, HealthSettings
from wats_station.supervisor.health import judge
from wats_station.workers.crashpoints import CRASH_ENV

TOKEN = "aGVhbHRoOmhlYWx0aA=="
SETTINGS = HealthSettings()
ADMISSION = AdmissionSettings()
CALM = {
    "unsent": 0,
    "oldest_unsent_s": None,
    "files_waiting": 0,
    "oldest_waiting_s": None,
    "conversion_failures": 0,
    "crash_looping": set(),
    "workers_by_kind": {"watcher": {"watcher"}, "converter": {"converter-1", "converter-2"}},
    "server_state": "Online",
    "server_detail": "",
    "rate_limited_s": 0.0,
    "free_mb": 50_000.0,
    "clock_skew_s": 0.4,
    "paused": "",
    "queue_alarms": {},
}


def verdict_of(**changes) -> tuple[str, set[str]]:
    result = judge({**CALM, **changes}, SETTINGS, ADMISSION)
    return result["verdict"], {r["check"] for r in result["reasons"]}


@pytest.mark.parametrize(
    ("changes", "verdict", "check"),
    [
        ({}, "ok", None),
        ({"oldest_unsent_s": 899.0, "unsent": 3}, "ok", None),
        ({"oldest_unsent_s": 900.0, "unsent": 3}, "degraded", "unsent"),
        ({"oldest_unsent_s": 14400.0, "unsent": 3}, "failing", "unsent"),
        ({"files_waiting": 200}, "degraded", "files"),
        ({"files_waiting": 1, "oldest_waiting_s": 300.0}, "degraded", "files"),
        ({"files_waiting": 1, "oldest_waiting_s": 3600.0}, "failing", "files"),
        ({"conversion_failures": 1}, "degraded", "conversions"),
        ({"conversion_failures": 20}, "failing", "conversions"),
        ({"crash_looping": {"converter-1"}}, "degraded", "workers"),
        ({"crash_looping": {"converter-1", "converter-2"}}, "failing", "workers"),
        ({"crash_looping": {"watcher"}}, "failing", "workers"),
        ({"server_state": "Offline", "server_detail": "refused"}, "degraded", "server"),
        ({"server_state": "Unauthorized"}, "failing", "server"),
        ({"server_state": "NotWATS"}, "failing", "server"),
        ({"rate_limited_s": 30.0}, "degraded", "server"),
        ({"free_mb": 999.0}, "degraded", "disk"),
        ({"free_mb": 499.0}, "failing", "disk"),
        ({"clock_skew_s": -301.0}, "degraded", "clock"),
        ({"clock_skew_s": None}, "ok", None),
        (
            {"paused": "uploads paused by ann@x since 2026-01-01T00:00:00+00:00"},
            "degraded",
            "paused",
        ),
        ({"queue_alarms": {"queue_lost": "the queue file was deleted"}}, "failing", "queue"),
        ({"queue_alarms": {"queue_write": "the disk is full"}}, "failing", "queue"),
    ],
)
def test_each_input_has_its_verdict(changes, verdict, check):
    got, checks = verdict_of(**changes)
    assert got == verdict
    assert checks == ({check} if check else set())


def test_the_worst_check_decides_and_every_reason_is_given():
    result = judge(
        {**CALM, "server_state": "Offline", "free_mb": 100.0, "conversion_failures": 2},
        SETTINGS,
        ADMISSION,
    )
    assert result["verdict"] == "failing"
    messages = {r["check"]: r["message"] for r in result["reasons"]}
    assert set(messages) == {"server", "disk", "conversions"}
    assert messages["disk"].startswith("100 MB free")


def test_thresholds_come_from_the_config():
    strict = replace(SETTINGS, unsent_degraded_s=10.0)
    result = judge({**CALM, "oldest_unsent_s": 11.0, "unsent": 1}, strict, ADMISSION)
    assert result["verdict"] == "degraded"
    assert "11 s old (1 undelivered)" in result["reasons"][0]["message"]


def health_config(url: str) -> dict:
    return {
        "server": {"url": url, "token": TOKEN},
        "watch": {"debounce_s": 0.1, "rescan_interval_s": 0.5},
        "upload": {
            "retry_base_s": 0.2,
            "retry_cap_s": 0.4,
            "probe_base_s": 0.1,
            "probe_cap_s": 0.3,
            "max_retry_attempts": 1000,
        },
        "health": {
            "unsent_degraded_s": 1.5,
            "unsent_failing_s": 4.0,
            "waiting_degraded_s": 1.0,
            "waiting_failing_s": 3.0,
            "failures_window_s": 3.0,
            "clock_skew_s": 60.0,
            "interval_s": 0.1,
        },
    }


class Watch:
    def __init__(self, station) -> None:
        self.station = station

    def becomes(self, verdict: str, check: str | None = None, timeout: float = 15) -> dict:
        def probe() -> dict | None:
            health = self.station.call("get_health")
            checks = {r["check"]: r["verdict"] for r in health["reasons"]}
            if health["verdict"] != verdict:
                return None
            if check is not None and checks.get(check) != verdict:
                return None
            return health

        return wait_until(probe, timeout, f"health {verdict} ({check or 'all clear'})")


@pytest.mark.timeout(120)
def test_health_follows_each_cause_and_comes_back_to_ok(make_station, home):
    with Emulator(token=TOKEN) as emulator:
        station = make_station(config=health_config(emulator.url))
        health = Watch(station)
        health.becomes("ok")
        assert station.cli("health").returncode == 0
        events = EventStream(paths=station.paths, topics=("health",))
        try:
            # The oldest undelivered report grows old while the server answers 500.
            emulator.set_faults(failure_rate=1.0)
            station.call("submit_report", report=minimal_report(1))
            health.becomes("degraded", "unsent")
            found = health.becomes("failing", "unsent")
            assert found["inputs"]["unsent"] == 1
            result = station.cli("health")
            assert result.returncode == 1 and result.stdout.startswith("failing")
            emulator.set_faults(failure_rate=0.0)
            health.becomes("ok")
            event = wait_until(lambda: events.next(1.0), 5, "a health event")
            assert event.topic == "health" and "verdict" in event.data
        finally:
            events.close()

        # The server link: offline, refusing our token, limiting our rate.
        emulator.set_faults(down=True)
        station.call("submit_report", report=minimal_report(2))
        health.becomes("degraded", "server")
        emulator.set_faults(down=False)
        health.becomes("ok")
        emulator.set_faults(unauthorized=True)
        station.call("submit_report", report=minimal_report(3))
        health.becomes("failing", "server")
        emulator.set_faults(unauthorized=False)
        health.becomes("ok")
        emulator.set_faults(rate_limit_rate=1.0, retry_after=3)
        station.call("submit_report", report=minimal_report(4))
        health.becomes("degraded", "server")
        emulator.set_faults(rate_limit_rate=0.0)
        health.becomes("ok")

        # The clock: the server's Date says we are ten minutes off.
        emulator.set_faults(clock_offset_s=-600.0)
        station.call("submit_report", report=minimal_report(5))
        found = health.becomes("degraded", "clock")
        assert 590 < found["inputs"]["clock_skew_s"] < 610
        emulator.set_faults(clock_offset_s=0.0)
        station.call("submit_report", report=minimal_report(6))
        health.becomes("ok")

        # Files wait while no converter works, and a quarantined file counts for a while.
        drop = station.paths.data_dir / "drop" / "csv"
        station.call("stop_worker", name="converter-1")
        (drop / "bad.csv").write_text("no,result\nhere\n")
        health.becomes("degraded", "files")
        health.becomes("failing", "files")
        station.call("start_worker", name="converter-1")
        health.becomes("degraded", "conversions")
        health.becomes("ok")

        # Free space below the admission watermarks (set absurdly high here), then a reload.
        config = health_config(emulator.url)
        station.write_config(
            {**config, "admission": {"stop_below_mb": 1e9, "resume_above_mb": 1.05e9}}
        )
        station.call("reload")
        health.becomes("failing", "disk")
        station.write_config(
            {**config, "admission": {"stop_below_mb": 0.0, "resume_above_mb": 1.05e9}}
        )
        station.call("reload")
        health.becomes("degraded", "disk")
        station.write_config(config)
        station.call("reload")
        health.becomes("ok")
        assert emulator.stats()["unique"] == 6

    station.stop()
    assert station.cli("health").returncode == 3


@pytest.mark.timeout(60)
def test_a_crash_looping_converter_fails_health_until_it_starts_again(make_station, home):
    flag = home / "converter-crashed"
    station = make_station(
        config={
            "supervisor": {"restart_base_s": 0.05, "restart_cap_s": 0.2, "crash_loop_after": 2},
            "health": {"interval_s": 0.1},
        },
        env={CRASH_ENV: f"worker-start:converter@{flag}"},
        start=False,
    )
    station.start(wait=False)
    # The crash point fires whenever the flag file is missing: keep removing it.
    keep_crashing = threading.Event()
    keep_crashing.set()

    def remove_flag() -> None:
        while keep_crashing.is_set():
            flag.unlink(missing_ok=True)
            keep_crashing.wait(0.01)

    remover = threading.Thread(target=remove_flag, daemon=True)
    remover.start()
    try:
        health = Watch(station)
        found = health.becomes("failing", "workers", timeout=30)
        assert "converter-1" in found["inputs"]["crash_looping"]
    finally:
        keep_crashing.clear()
        remover.join()
    station.wait_worker("converter-1", lambda w: w["state"] == "running", 15)
    health.becomes("ok")


@pytest.mark.timeout(60)
def test_reload_tells_systemd_reloading_then_ready_and_status_carries_the_verdict(
    make_station, home
):
    address = str(home / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(0.2)
    datagrams: list[str] = []

    def collect() -> None:
        try:
            while True:
                datagrams.append(listener.recv(4096).decode())
        except TimeoutError:
            pass

    try:
        station = make_station(env={"NOTIFY_SOCKET": address})
        wait_until(lambda: collect() or any("READY=1" in d for d in datagrams), 10, "READY=1")
        ready_before = sum("READY=1" in d for d in datagrams)
        station.process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: collect() or sum("READY=1" in d for d in datagrams) > ready_before,
            10,
            "READY=1 after the reload",
        )
    finally:
        listener.close()
    reloading = next(i for i, d in enumerate(datagrams) if "RELOADING=1" in d)
    fields = dict(line.split("=", 1) for line in datagrams[reloading].split("\n"))
    assert int(fields["MONOTONIC_USEC"]) > 0
    ready_after = [i for i, d in enumerate(datagrams) if "READY=1" in d][-1]
    assert ready_after > reloading
    status = next(d for d in datagrams if d.startswith("READY=1"))
    assert "STATUS=ok; " in status
