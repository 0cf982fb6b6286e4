"""The supervisor keeps its workers alive, honours operators, and never leaves orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from wats_station.lab.harness import wait_until
from wats_station.lab.processes import pid_alive, session_pids

RUNNING = "running"


def test_kill9_of_a_worker_is_replaced_within_two_seconds(make_station):
    station = make_station()
    before = station.worker("uploader")
    os.kill(before["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    after = station.wait_worker(
        "uploader",
        lambda w: w["state"] == RUNNING and w["pid"] != before["pid"],
        timeout=5,
        what="a new uploader",
    )
    assert time.monotonic() - killed_at < 2.0
    assert after["restarts"] == before["restarts"] + 1
    assert "SIGKILL" in after["last_exit"]


def test_a_frozen_worker_is_detected_and_replaced(make_station):
    station = make_station()
    frozen = station.worker("converter-1")
    os.kill(frozen["pid"], signal.SIGSTOP)
    stopped_at = time.monotonic()
    replaced = station.wait_worker(
        "converter-1",
        lambda w: w["state"] == RUNNING and w["pid"] != frozen["pid"],
        timeout=8,
        what="replacement",
    )
    # heartbeat_timeout_s is 1.5 in the test config: detection takes that plus a beat or two.
    assert time.monotonic() - stopped_at < 4.0
    assert "no heartbeat" in replaced["last_exit"]
    assert not pid_alive(frozen["pid"])


def test_a_worker_that_always_crashes_backs_off_to_the_cap_while_ping_stays_fast(make_station):
    station = make_station(
        env={"WATS_STATION_CRASH_AT": "worker-start:uploader"},
        config={"supervisor": {"restart_base_s": 0.1, "restart_cap_s": 0.8, "crash_loop_after": 3}},
        start=False,
    )
    station.start(wait=False)
    slowest_ping = 0.0

    def looping_at_cap():
        nonlocal slowest_ping
        started = time.perf_counter()
        station.call("ping")
        slowest_ping = max(slowest_ping, time.perf_counter() - started)
        uploader = station.worker("uploader")
        return uploader["state"] == "crash-looping" and uploader["backoff_s"] == 0.8 and uploader

    uploader = wait_until(looping_at_cap, 15, "uploader crash-looping at the capped backoff")
    assert uploader["failures_in_a_row"] >= 3
    # It keeps being retried at the cap, and the other workers are unaffected.
    restarts = uploader["restarts"]
    station.wait_worker(
        "uploader", lambda w: w["restarts"] > restarts, timeout=5, what="another retry"
    )
    assert station.worker("converter-1")["state"] == RUNNING
    assert slowest_ping < 0.25, f"ping took {slowest_ping:.3f} s during the crash loop"


def test_a_worker_stopped_by_command_stays_stopped_until_started(make_station):
    station = make_station()
    pid = station.worker("converter-1")["pid"]
    result = station.cli("workers", "stop", "converter-1", check=True)
    assert "converter-1" in result.stdout
    station.wait_worker(
        "converter-1", lambda w: w["state"] == "stopped", what="converter-1 stopped"
    )
    wait_until(lambda: not pid_alive(pid), 5, "the old converter to exit")
    time.sleep(1.0)  # several restart periods: it must not come back by itself
    assert station.worker("converter-1")["state"] == "stopped"
    station.cli("workers", "start", "converter-1", check=True)
    station.wait_worker(
        "converter-1", lambda w: w["state"] == RUNNING, what="converter-1 running again"
    )


def test_restart_worker_replaces_it_gracefully(make_station):
    station = make_station()
    old = station.worker("watcher")
    station.cli("workers", "restart", "watcher", check=True)
    new = station.wait_worker("watcher", lambda w: w["state"] == RUNNING and w["pid"] != old["pid"])
    assert "exited with status 0" in new["last_exit"]


def test_kill9_of_the_supervisor_takes_every_worker_with_it(make_station):
    station = make_station()
    worker_pids = [w["pid"] for w in station.call("list_workers")]
    assert len(worker_pids) == 3
    station.kill()
    wait_until(lambda: not any(pid_alive(p) for p in worker_pids), 5, "all workers to exit")
    # A new supervisor starts cleanly over the stale lock file left behind.
    assert station.paths.lock_file.exists()
    station.start()
    assert station.call("ping")["pong"]


def test_a_second_supervisor_for_the_same_instance_refuses_and_names_the_pid(make_station):
    station = make_station()
    second = subprocess.run(
        [sys.executable, "-m", "wats_station.cli", "service", "--instance-id", "default"],
        env=station.env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode != 0
    assert f"pid {station.process.pid}" in second.stderr
    assert station.call("ping")["pong"]


def test_two_instances_run_side_by_side_without_sharing_anything(make_station):
    ict = make_station("ict")
    fct = make_station("fct")
    assert ict.call("ping")["instance"] == "ict"
    assert fct.call("ping")["instance"] == "fct"
    ict_files = {p for p in ict.home.joinpath("ict").rglob("*")}
    fct_files = {p for p in fct.home.joinpath("fct").rglob("*")}
    assert ict_files and fct_files and not ict_files & fct_files
    assert ict.paths.control_endpoint != fct.paths.control_endpoint
    assert ict.paths.queue_db != fct.paths.queue_db
    ict_pids = {w["pid"] for w in ict.call("list_workers")}
    fct_pids = {w["pid"] for w in fct.call("list_workers")}
    assert not ict_pids & fct_pids


def test_sigterm_stops_gracefully_and_in_order(make_station):
    station = make_station()
    worker_pids = [w["pid"] for w in station.call("list_workers")]
    assert station.stop() == 0
    assert not any(pid_alive(p) for p in worker_pids)
    assert not station.paths.lock_file.exists()
    log = station.output()
    assert log.index("watcher: running -> stopping") < log.index("converter-1: running -> stopping")
    assert log.index("converter-1: running -> stopping") < log.index(
        "uploader: running -> stopping"
    )


def test_stop_command_and_unlock(make_station):
    station = make_station()
    station.cli("stop", check=True)
    assert station.process.wait(20) == 0
    # Nothing is locked after a clean stop; unlock says so.
    result = station.cli("unlock", check=True)
    assert "not locked" in result.stdout


def test_unlock_refuses_while_the_station_lives(make_station):
    station = make_station()
    result = station.cli("unlock")
    assert result.returncode == 1
    assert f"pid {station.process.pid}" in result.stderr


def test_status_json_lists_every_worker(make_station):
    station = make_station()
    status = json.loads(station.cli("status", "--json", check=True).stdout)
    assert status["state"] == RUNNING
    names = {w["name"]: w for w in status["workers"]}
    assert set(names) == {"watcher", "converter-1", "uploader"}
    for worker in names.values():
        assert {"name", "kind", "pid", "state", "restarts"} <= set(worker)
        assert worker["state"] == RUNNING and pid_alive(worker["pid"])
    human = station.cli("status", check=True).stdout
    assert "converter-1" in human and "Unknown" in human


def test_status_without_a_station_says_so(home):
    result = subprocess.run(
        [sys.executable, "-m", "wats_station.cli", "status", "--instance-id", "nobody"],
        env={**os.environ, "WATS_STATION_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3
    assert "no station is running for instance 'nobody'" in result.stderr


def test_workers_carry_descriptive_process_titles(make_station):
    station = make_station()
    pid = station.worker("converter-1")["pid"]
    cmdline = Path(f"/proc/{pid}/cmdline")
    title = wait_until(lambda: "idle" in (t := cmdline.read_text()) and t, 5, "the title")
    assert title.startswith("wats-station[default]: converter-1 idle")
    sup_title = Path(f"/proc/{station.process.pid}/cmdline").read_text()
    assert sup_title.startswith("wats-station[default]: supervisor")


def test_a_stop_during_startup_preempts_it_and_is_idempotent(make_station):
    station = make_station(start=False)
    station.start(wait=False)
    wait_until(lambda: station.call("ping", timeout_s=0.5), 20, "the control socket")
    station.process.send_signal(signal.SIGTERM)
    station.process.send_signal(signal.SIGTERM)  # a second stop changes nothing
    assert station.process.wait(15) == 0
    assert not [p for p in session_pids(station.sessions) if pid_alive(p)]


def test_events_command_prints_one_line_per_event(make_station):
    station = make_station()
    events = subprocess.Popen(
        [sys.executable, "-m", "wats_station.cli", "events", "--json", "--duration", "20"],
        env=station.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = json.loads(events.stdout.readline())
        assert first["topic"] == "resync" and first["data"]["state"] == "running"
        station.call("restart_worker", name="uploader")
        lines = []
        while not any(line["topic"] == "worker.uploader" and line["data"]["state"] == "running"
                      for line in lines):  # fmt: skip
            lines.append(json.loads(events.stdout.readline()))
    finally:
        events.kill()
        events.wait()
    assert all({"seq", "topic", "time", "data"} <= set(line) for line in lines)
    seqs = [first["seq"]] + [line["seq"] for line in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    states = [line["data"]["state"] for line in lines if line["topic"] == "worker.uploader"]
    assert states[0] == "stopping" and states[-1] == "running"
