"""Metrics and health over HTTP, served by a supervised worker process of their own."""

from __future__ import annotations

import os
import signal
import socket

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from wats_station.emulator import Emulator
from wats_station.lab.harness import minimal_report, wait_until
from wats_station.samples import write_csv_files

TOKEN = "bWV0cmljczptZXRyaWNz"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}, parsed by prometheus_client's parser."""
    response = requests.get(f"{base}/metrics", timeout=5)
    response.raise_for_status()
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.mark.timeout(90)
def test_metrics_parse_and_agree_with_the_queue_and_the_server(make_station, home):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with Emulator(token=TOKEN) as emulator:
        station = make_station(
            config={
                "server": {"url": emulator.url, "token": TOKEN},
                "watch": {"debounce_s": 0.1, "rescan_interval_s": 0.5},
                "metrics": {"listen": f"127.0.0.1:{port}", "interval_s": 0.2},
                "upload": {"retry_base_s": 0.2, "retry_cap_s": 0.5, "probe_cap_s": 0.3},
            }
        )
        assert station.worker("metrics")["state"] == "running"
        drop = station.paths.data_dir / "drop" / "csv"
        for path in write_csv_files(home / "staging", 15):
            path.rename(drop / path.name)
        (drop / "broken.csv").write_text("not,a\nresult file\n")
        emulator.set_faults(failure_rate=0.3)  # some answers are 500s: retried, counted

        def settled() -> bool:
            stats = station.call("get_queue_stats")
            return stats["completed"] == 15 and not stats["pending"] and not stats["processing"]

        wait_until(settled, 60, "every report delivered")
        completed = station.call("get_queue_stats")["completed"]

        def caught_up() -> dict:
            samples = scrape(base)
            done = samples[("wats_station_reports", (("state", "completed"),))] == completed
            failed = ("wats_station_files_total", (("converter", "csv"), ("outcome", "failed")))
            return samples if done and samples.get(failed) == 1 else {}

        samples = wait_until(caught_up, 10, "a snapshot taken after the run")
        accepted = samples[("wats_station_uploads_total", (("outcome", "accepted"),))]
        assert accepted == completed == emulator.stats()["received"] == 15
        errors = samples.get(("wats_station_uploads_total", (("outcome", "server_error"),)), 0)
        assert errors == emulator.stats()["faults_injected"]
        assert samples[("wats_station_upload_seconds_count", ())] == accepted + errors
        assert (
            samples[("wats_station_files_total", (("converter", "csv"), ("outcome", "converted")))]
            == 15
        )
        assert (
            samples[("wats_station_files_total", (("converter", "csv"), ("outcome", "failed")))]
            == 1
        )
        assert samples[("wats_station_reports_queued_total", ())] == 15
        assert samples[("wats_station_oldest_unsent_seconds", ())] == 0
        assert samples[("wats_station_queue_bytes", ())] > 0
        assert samples[("wats_station_health", ())] == 1  # degraded: a file was quarantined
        assert samples[("wats_station_health_check", (("check", "conversions"),))] == 1
        assert requests.get(f"{base}/health/live", timeout=5).status_code == 200
        ready = requests.get(f"{base}/health/ready", timeout=5)
        assert ready.status_code == 200 and ready.json()["verdict"] == "degraded"

        # The worker is supervised like the others: killed, it comes back with the same figures.
        pid = station.worker("metrics")["pid"]
        os.kill(pid, signal.SIGKILL)
        station.wait_worker(
            "metrics", lambda w: w["pid"] not in (None, pid) and w["state"] == "running"
        )
        again = wait_until(lambda: scrape(base), 10, "metrics served again")
        assert again[("wats_station_uploads_total", (("outcome", "accepted"),))] == 15
        assert again[("wats_station_worker_restarts_total", (("worker", "metrics"),))] == 1

        # Unauthorized: failing, so not ready (but alive).
        emulator.set_faults(unauthorized=True)
        station.call("submit_report", report=minimal_report(0xAA))
        wait_until(
            lambda: requests.get(f"{base}/health/ready", timeout=5).status_code == 503,
            15,
            "ready to turn 503 while the server refuses the token",
        )
        assert requests.get(f"{base}/health/live", timeout=5).status_code == 200
        assert requests.get(f"{base}/nope", timeout=5).status_code == 404

    assert station.stop() == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/health/live", timeout=2)


def test_metrics_are_off_by_default_and_a_bad_address_is_refused(make_station):
    station = make_station()
    assert "metrics" not in {w["name"] for w in station.call("list_workers")}
    bad = make_station("bad", config={"metrics": {"listen": "9464"}}, start=False)
    result = bad.cli("config", "validate")
    assert result.returncode == 2
    assert "metrics.listen: must be empty (off) or host:port" in result.stderr


@pytest.mark.timeout(60)
def test_metrics_enabled_by_reload_on_a_busy_port_crash_loop_until_the_port_is_free(make_station):
    config = {"supervisor": {"crash_loop_after": 2}, "health": {"interval_s": 0.1}}
    station = make_station(config=config)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    try:
        station.write_config({**config, "metrics": {"listen": f"127.0.0.1:{port}"}})
        assert "metrics" in station.call("reload")["restarted"]
        station.wait_worker("metrics", lambda w: w["state"] == "crash-looping", 20)
        health = station.call("get_health")
        assert health["verdict"] == "degraded"  # metrics are not the pipeline: not failing
        assert health["reasons"][0]["message"] == "crash-looping: metrics"
        assert "Address already in use" in station.output()
    finally:
        squatter.close()
    station.wait_worker("metrics", lambda w: w["state"] == "running", 20)
    live = wait_until(
        lambda: requests.get(f"http://127.0.0.1:{port}/health/live", timeout=2).status_code == 200,
        10,
        "the metrics worker to serve once the port is free",
    )
    assert live
    wait_until(lambda: station.call("get_health")["verdict"] == "ok", 10, "health ok again")
