"""The WATS server emulator answers, counts and misbehaves exactly as a station's tests rely on."""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from wats_station.emulator import Emulator

REPO = Path(__file__).resolve().parents[1]
TOKEN = "c2VjcmV0OnRva2Vu"
AUTH = {"Authorization": f"Basic {TOKEN}"}


def make_report(**overrides: object) -> dict:
    report = {
        "type": "T",
        "id": str(uuid.uuid4()),
        "pn": "PN-1",
        "sn": "SN-0001",
        "rev": "A",
        "processCode": 10,
        "result": "P",
        "machineName": "station-1",
        "location": "Lab",
        "purpose": "Test",
        "start": "2026-01-30T22:01:41.4707353+01:00",
        "uut": {"user": "op"},
        "root": {"stepType": "SequenceCall", "name": "MainSequence", "status": "P", "steps": []},
    }
    report.update(overrides)
    return {key: value for key, value in report.items() if value is not None}


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    with Emulator(token=TOKEN, store_dir=tmp_path / "store", seed=7) as server:
        yield server


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as client:
        client.headers.update(AUTH)
        yield client


def post(session: requests.Session, emulator: Emulator, report: dict) -> requests.Response:
    return session.post(f"{emulator.url}/api/Report/WSJF", json=report, timeout=5)


def test_accepted_report_reads_back_and_lands_in_the_store(emulator, session, tmp_path):
    report = make_report()
    answer = post(session, emulator, report)
    assert answer.status_code == 200
    # The real server's InsertReportResult: the id we sent, its uuid and a legacy number.
    assert answer.json() == {"ID": report["id"], "uuid": report["id"], "Report_ID": 1}
    assert post(session, emulator, report).json()["Report_ID"] == 1  # an overwrite: same row
    read_back = session.get(f"{emulator.url}/api/Report/Wsjf/{report['id']}", timeout=5)
    assert read_back.json() == report
    assert json.loads((tmp_path / "store" / f"{report['id']}.json").read_text()) == report
    assert session.get(f"{emulator.url}/api/App/Version", timeout=5).json() == "24.1.0-emulator"
    unknown = session.get(f"{emulator.url}/api/Report/Wsjf/{uuid.uuid4()}", timeout=5)
    assert unknown.status_code == 404


def test_second_post_of_an_id_overwrites_and_counts_a_duplicate(emulator, session):
    first, other = make_report(sn="first"), make_report()
    second = dict(first, sn="second")
    for report in (first, other, second):
        assert post(session, emulator, report).status_code == 200
    read_back = session.get(f"{emulator.url}/api/Report/Wsjf/{first['id']}", timeout=5)
    assert read_back.json()["sn"] == "second"
    stats = requests.get(f"{emulator.admin_url}/_stats", timeout=5).json()
    assert stats["received"] == 3
    assert stats["unique"] == 2
    assert stats["duplicates"] == 1
    received = requests.get(f"{emulator.admin_url}/_received", timeout=5).json()
    assert received == [first["id"], other["id"], first["id"]]


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        (make_report(sn=None), "Report is missing required field: sn"),
        (make_report(root=None), "Report of type T is missing required field: root"),
        (make_report(type="R", uut=None, root=None), "missing required field: uur"),
        (make_report(id="run-42"), "Field 'id' must be a UUID string"),
        (make_report(processCode="10"), "Field 'processCode' must be an integer"),
        (make_report(result="X"), "Field 'result' must be one of P/F/D/E/T"),
        (make_report(start="2026-01-30T22:01:41"), "Field 'start' must be ISO-8601 with a UTC"),
        (make_report(pn="x" * 101), "Field 'pn' must be a string of at most 100 characters"),
    ],
)
def test_bad_report_is_rejected_naming_the_field(emulator, session, report, expected):
    answer = post(session, emulator, report)
    assert answer.status_code == 400
    assert expected in answer.json()["Message"]
    assert emulator.stats()["rejected"] == 1
    assert emulator.stats()["received"] == 0


def test_malformed_json_is_rejected_naming_the_parse_error(emulator, session):
    answer = session.post(f"{emulator.url}/api/Report/WSJF", data=b'{"type": "T",\n}', timeout=5)
    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["Message"]
    assert "line 2 column 1" in answer.json()["Message"]


def test_wrong_token_and_unauthorized_fault_answer_401(emulator, session):
    denied = {"Message": "Authorization has been denied for this request."}
    wrong = requests.post(
        f"{emulator.url}/api/Report/WSJF",
        json=make_report(),
        headers={"Authorization": "Basic bm9wZQ=="},
        timeout=5,
    )
    assert (wrong.status_code, wrong.json()) == (401, denied)
    assert requests.get(f"{emulator.url}/api/App/Version", timeout=5).status_code == 401

    emulator.set_faults(unauthorized=True)
    assert post(session, emulator, make_report()).status_code == 401
    assert session.get(f"{emulator.url}/api/App/Version", timeout=5).status_code == 401
    assert emulator.stats()["received"] == 0
    assert emulator.stats()["faults_injected"] == 2


def test_rate_limit_answers_429_with_retry_after(emulator, session):
    requests.post(f"{emulator.admin_url}/_faults", json={"rate_limit_rate": 1, "retry_after": 3})
    answer = post(session, emulator, make_report())
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "3"
    assert emulator.stats()["received"] == 0


def test_failure_rate_one_answers_500_and_stores_nothing(emulator, session):
    emulator.set_faults(failure_rate=1.0)
    reports = [make_report() for _ in range(5)]
    assert [post(session, emulator, report).status_code for report in reports] == [500] * 5
    assert emulator.stats()["received"] == 0
    assert emulator.stats()["faults_injected"] == 5
    emulator.set_faults(failure_status=503)
    assert post(session, emulator, reports[0]).status_code == 503
    emulator.set_faults(failure_rate=0)
    assert post(session, emulator, reports[0]).status_code == 200


def test_drop_closes_the_connection_before_storing(emulator, session):
    emulator.set_faults(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        post(session, emulator, make_report())
    assert emulator.stats()["received"] == 0
    assert emulator.received_ids() == []


def test_drop_after_store_keeps_the_report_so_a_resend_is_a_duplicate(emulator, session):
    report = make_report()
    emulator.set_faults(drop_after_store_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        post(session, emulator, report)
    assert emulator.received_ids() == [report["id"]]
    emulator.set_faults(drop_after_store_rate=0)
    assert post(session, emulator, report).status_code == 200
    assert emulator.stats() | {"requests": 0} == {
        "received": 2,
        "unique": 1,
        "duplicates": 1,
        "rejected": 0,
        "faults_injected": 1,
        "requests": 0,
    }


def test_not_wats_answers_every_api_call_with_an_html_page_and_stores_nothing(emulator, session):
    emulator.set_faults(not_wats_rate=1.0)
    answer = post(session, emulator, make_report())
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    assert answer.text.startswith("<!DOCTYPE html>")
    version = session.get(f"{emulator.url}/api/App/Version", timeout=5)
    assert version.status_code == 200 and version.text.startswith("<!DOCTYPE html>")
    assert emulator.stats()["received"] == 0 and emulator.stats()["faults_injected"] == 2
    emulator.set_faults(not_wats_rate=0.0)
    assert post(session, emulator, make_report()).json()["Report_ID"] == 1


def test_down_refuses_connections_then_listens_again_on_the_same_port(emulator, session):
    version_url = f"{emulator.url}/api/App/Version"
    assert session.get(version_url, timeout=5).status_code == 200  # a kept-alive connection
    port = int(emulator.url.rsplit(":", 1)[1])
    # Asked on the API port itself: the answer still arrives, then the port closes.
    assert requests.post(f"{emulator.url}/_faults", json={"down": True}, timeout=5).ok

    with pytest.raises(requests.ConnectionError):
        session.get(version_url, timeout=5)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert requests.get(f"{emulator.admin_url}/_faults", timeout=5).json()["down"] is True

    assert requests.post(f"{emulator.admin_url}/_faults", json={"down": False}, timeout=5).ok
    assert emulator.url.endswith(f":{port}")
    assert post(session, emulator, make_report()).status_code == 200


def test_latency_delays_api_answers(emulator, session):
    emulator.set_faults(latency_ms=300)
    started = time.monotonic()
    assert session.get(f"{emulator.url}/api/App/Version", timeout=5).status_code == 200
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        ({"failure_rat": 0.5}, "Unknown fault 'failure_rat'"),
        ({"drop_rate": 1.5}, "Fault 'drop_rate' must be a number between 0 and 1, got 1.5"),
        ({"down": "yes"}, "Fault 'down' must be true or false"),
        ({"failure_status": 200}, "Fault 'failure_status' must be an HTTP error status"),
    ],
)
def test_bad_fault_is_rejected_naming_the_key_and_nothing_changes(emulator, faults, expected):
    before = emulator.faults()
    answer = requests.post(
        f"{emulator.admin_url}/_faults", json={"latency_ms": 5, **faults}, timeout=5
    )
    assert answer.status_code == 400
    assert expected in answer.json()["Message"]
    assert emulator.faults() == before
    with pytest.raises(ValueError, match=expected.split(" must")[0]):
        emulator.set_faults(**faults)


def test_same_seed_injects_the_same_faults():
    def statuses(seed: int) -> list[int]:
        with Emulator(seed=seed) as server, requests.Session() as client:
            server.set_faults(failure_rate=0.5)
            return [post(client, server, make_report()).status_code for _ in range(30)]

    first = statuses(3)
    assert first == statuses(3)
    assert {200, 500} == set(first)


def test_counts_stay_exact_under_concurrent_uploads_and_reset_clears_them(emulator, tmp_path):
    ids = [str(uuid.uuid4()) for _ in range(20)]

    def upload_all() -> None:
        with requests.Session() as client:
            client.headers.update(AUTH)
            for report_id in ids:
                assert post(client, emulator, make_report(id=report_id)).status_code == 200

    threads = [threading.Thread(target=upload_all) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    stats = emulator.stats()
    assert (stats["received"], stats["unique"], stats["duplicates"]) == (120, 20, 100)
    assert len(emulator.received_ids()) == 120

    assert requests.post(f"{emulator.admin_url}/_reset", timeout=5).json()["received"] == 0
    assert emulator.received_ids() == []
    assert list((tmp_path / "store").iterdir()) == []


def read_first_line(process: subprocess.Popen, deadline_s: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], deadline_s)
    assert ready, f"emulator printed nothing within {deadline_s} s"
    return process.stdout.readline().decode().strip()


def test_command_line_emulator_serves_and_exits_0_on_sigterm(tmp_path):
    command = [sys.executable, "-m", "wats_station.emulator", "--token", TOKEN, "--store", tmp_path]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = read_first_line(process, deadline_s=10)
        prefix = "WATS emulator listening on "
        assert line.startswith(prefix), line
        url, admin = line.removeprefix(prefix).removesuffix(")").split(" (admin ")
        report = make_report()
        answer = requests.post(f"{url}/api/Report/WSJF", json=report, headers=AUTH, timeout=5)
        assert answer.status_code == 200
        assert requests.get(f"{admin}/_received", timeout=5).json() == [report["id"]]
        assert (tmp_path / f"{report['id']}.json").exists()

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        assert process.stderr.read() == b""  # quiet without --verbose
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
