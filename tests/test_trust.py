"""Trusted workers only, secrets kept in, files private, honest logs, bad requests refused cleanly.

Issue 10, items 8-14. Each test runs a real station (real processes, real ZeroMQ sockets, a
real SQLite file) and plays the stranger, the careless converter or the careless caller.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import zmq

from wats_station.emulator import Emulator
from wats_station.ipc.client import CommandFailed, EventStream
from wats_station.ipc.handshake import peer_pid, read_secret
from wats_station.ipc.protocol import Message, MsgType, decode, encode
from wats_station.lab.harness import wait_until
from wats_station.samples import sample_report
from wats_station.supervisor.config import SupervisorSettings
from wats_station.supervisor.logs import REPEAT_BURST, escape
from wats_station.supervisor.process import WorkerProcess
from wats_station.supervisor.queue import QueueError, ReportQueue
from wats_station.supervisor.trust import hello_refusal, inside_folder

TOKEN = "dHJ1c3Q6c2VjcmV0LXRva2Vu"


@pytest.fixture
def emulator():
    with Emulator(token=TOKEN) as server:
        yield server


def stranger(station, context: zmq.Context) -> zmq.Socket:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 10_000)
    sock.connect(station.paths.workers_endpoint)
    return sock


def refusals(station) -> int:
    return station.output().count("refused hello from")


# -- 8. workers must prove who they are -------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_stranger_posing_as_the_uploader_or_the_watcher_gets_no_welcome(make_station, emulator):
    station = make_station(config={"server": {"url": emulator.url, "token": TOKEN}})
    uploader, watcher = station.worker("uploader"), station.worker("watcher")
    context = zmq.Context()
    try:
        sock = stranger(station, context)
        poses = [
            {"name": "uploader", "kind": "uploader", "pid": uploader["pid"]},
            {"name": "watcher", "kind": "watcher", "pid": watcher["pid"]},
            {"name": "uploader", "kind": "uploader", "pid": uploader["pid"], "proof": b"x" * 32},
        ]
        for body in poses:
            sock.send(encode(Message(MsgType.HELLO, body)))
        deadline = time.monotonic() + 20
        while refusals(station) < len(poses):
            assert time.monotonic() < deadline, "the supervisor neither refused nor welcomed"
            if sock.poll(50):
                answer = decode(sock.recv())
                pytest.fail(f"a stranger was answered: {answer.type} {str(answer.body)[:200]}")
        # Refusals are logged instead of a WELCOME, so nothing can still be on its way.
        assert not sock.poll(200)
        sock.close()
    finally:
        context.term()
    assert TOKEN not in station.output()
    assert "did not prove that the supervisor spawned it" in station.output()
    # The real workers were not disturbed.
    assert station.worker("uploader")["pid"] == uploader["pid"]
    assert station.worker("uploader")["state"] == "running"


def test_a_hello_with_the_right_secret_from_another_pid_is_refused(tmp_path):
    """The peer's credentials (SO_PEERCRED, via libzmq's Peer-Address) back the secret up."""
    worker = WorkerProcess("uploader", "uploader", SupervisorSettings(), lambda *_: None)
    show_secret = "import sys; sys.stdout.buffer.write(open(int(sys.argv[-1]), 'rb').read())"
    worker.spawn([sys.executable, "-c", show_secret], time.monotonic())
    try:
        secret = wait_until(lambda: worker.output_fd and _read_all(worker.output_fd), 10, "secret")
        assert secret == worker.secret and len(secret) == 32
        body = {"name": "uploader", "kind": "uploader", "pid": worker.pid, "proof": secret}
        assert hello_refusal(worker, body, f"localhost:0:0:{worker.pid}") is None
        assert "sent by pid 1," in hello_refusal(worker, body, "localhost:0:0:1")
        assert "did not prove" in hello_refusal(worker, {**body, "proof": b"\0" * 32}, None)
        assert "is not the running" in hello_refusal(worker, {**body, "pid": 1}, None)
    finally:
        worker.reap(time.monotonic())
    assert peer_pid("localhost:1000:1000:4242") == 4242
    assert peer_pid("127.0.0.1:5555") is None and peer_pid(None) is None


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_the_secret_pipe_is_read_once(tmp_path):
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"s" * 32)
    os.close(write_fd)
    assert read_secret(read_fd) == b"s" * 32
    with pytest.raises(OSError):
        os.fstat(read_fd)  # closed: nothing later in the worker can leak it


# A converter is third-party code inside an authenticated worker: it can reach that worker's
# own connection. It must still not be able to make the supervisor touch other files.
IMPOSTOR_MODULE = """
import gc, os
from wats_station.converters.base import ConversionError, Converter
from wats_station.ipc.protocol import Message, MsgType
from wats_station.workers.base import Worker

class Impostor(Converter):
    def convert(self, path):
        target = os.fsencode(self.arguments["target"])
        worker = next(o for o in gc.get_objects() if isinstance(o, Worker))
        for name in ("wsjf", "impostor"):
            worker.post(Message(MsgType.FILE_REJECTED, {"converter": name, "path": target,
                                                        "reason": "gotcha"}))
            worker.post(Message(MsgType.FILE_READY, {"converter": name, "path": target,
                                                     "size": 1, "mtime_ns": 1,
                                                     "sha256": "0" * 64}))
        raise ConversionError("the impostor did its worst")
"""


@pytest.mark.timeout(60)
def test_a_converter_cannot_make_the_supervisor_move_a_file_outside_the_watch_folders(
    make_station, home
):
    outside = home / "precious" / "results.json"
    outside.parent.mkdir()
    outside.write_text(json.dumps(sample_report(1)))
    custom = home / "custom"
    custom.mkdir()
    (custom / "impostor.py").write_text(IMPOSTOR_MODULE)
    station = make_station(
        config={
            "converters_folder": str(custom),
            "watch": {"debounce_s": 0.1, "rescan_interval_s": 1.0},
            "converters": [
                {
                    "name": "impostor",
                    "module": "impostor.Impostor",
                    "file_patterns": ["*.bad"],
                    "watch_folder": str(home / "in"),
                    "arguments": {"target": str(outside)},
                },
                {
                    "name": "wsjf",
                    "module": "wsjf",
                    "file_patterns": ["*.json"],
                    "watch_folder": str(home / "wsjf"),
                },
            ],
        }
    )
    (home / "in" / "trigger.bad").write_text("x")
    wait_until(lambda: (home / "in" / "Error" / "trigger.bad").exists(), 20, "trigger in Error")
    wait_until(lambda: station.output().count("not a converter message") >= 4, 10, "drops")
    assert outside.exists()
    assert not (home / "wsjf" / "Error").exists()
    assert station.call("get_queue_stats")["pending"] == 0


def test_only_paths_inside_the_watch_folder_are_acted_on(tmp_path):
    watch = tmp_path / "in"
    (watch / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (watch / "link").symlink_to(tmp_path / "elsewhere")
    assert inside_folder(str(watch / "a.json"), str(watch))
    assert inside_folder(str(watch / "sub" / "a.json"), str(watch))
    assert inside_folder(str(watch / "symlink-to-anywhere"), str(watch))  # the entry itself
    assert not inside_folder(str(watch / ".." / "elsewhere" / "a.json"), str(watch))
    assert not inside_folder(str(watch / "link" / "a.json"), str(watch))
    assert not inside_folder(str(tmp_path / "in2" / "a.json"), str(watch))
    assert not inside_folder("/etc/passwd", str(watch))
    assert not inside_folder(str(watch), str(watch))
    assert not inside_folder(str(watch / ".."), str(watch))


# -- 9. the token reaches the uploader only ---------------------------------------------------


@pytest.mark.timeout(60)
def test_converters_and_workers_never_see_the_token(make_station, emulator, home):
    dump = home / "converter.env"
    command = ["sh", "-c", f'env > "{dump}"; cat "$1"', "sh", "{input}"]
    station = make_station(
        config={
            "server": {"url": emulator.url},
            "upload": {"probe_base_s": 0.1, "probe_cap_s": 0.3},
            "watch": {"debounce_s": 0.1, "rescan_interval_s": 1.0},
            "converters": [
                {
                    "name": "shell",
                    "kind": "process",
                    "command": command,
                    "file_patterns": ["*.json"],
                    "watch_folder": str(home / "in"),
                },
            ],
        },
        env={"WATS_STATION_TOKEN": TOKEN, "WATS_STATION_OTHER_SECRET": "hush"},
    )
    (home / "in" / "one.json").write_text(json.dumps(sample_report(1)))
    wait_until(lambda: emulator.stats()["unique"] == 1, 20, "the report on the server")
    converter_env = dump.read_text()
    assert "WATS_STATION_" not in converter_env
    assert TOKEN not in converter_env
    for worker in station.call("list_workers"):
        environ = Path(f"/proc/{worker['pid']}/environ").read_bytes()
        assert TOKEN.encode() not in environ, f"{worker['name']} has the token in its environment"


# -- 10. owner-only files ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_queue_logs_and_runtime_files_are_owner_only_whatever_the_umask(make_station, home):
    station = make_station(start=False)
    station.paths.log_dir.mkdir(parents=True)
    station.paths.log_file.write_text("an old, readable log\n")
    station.paths.log_file.chmod(0o644)
    old = os.umask(0o022)
    try:
        station.start()
    finally:
        os.umask(old)
    station.call("submit_report", report=sample_report(1))  # the WAL has content
    paths = station.paths
    files = [paths.queue_db, Path(f"{paths.queue_db}-wal"), Path(f"{paths.queue_db}-shm")]
    files += [paths.log_file, paths.lock_file]
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
    for folder in (paths.data_dir, paths.log_dir, paths.runtime_dir):
        mode = stat.S_IMODE(folder.stat().st_mode)
        assert mode & 0o077 == 0, f"{folder} is {oct(mode)}"


# -- 11. honest logs --------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_file_name_cannot_forge_log_lines(make_station, home):
    station = make_station(
        config={
            "watch": {"debounce_s": 0.1, "rescan_interval_s": 1.0},
            "converters": [
                {
                    "name": "wsjf",
                    "module": "wsjf",
                    "file_patterns": ["*.json"],
                    "watch_folder": str(home / "in"),
                }
            ],
        }
    )
    forged = "x\nERROR [default] supervisor[1]: FORGED the queue is lost\r\n.json"
    (home / "in" / forged).write_text("not json")
    wait_until(lambda: (home / "in" / "Error" / forged).exists(), 20, "the file in Error")
    station_log = wait_until(
        lambda: (text := make_station_log(home)) and "FORGED" in text and text, 10, "the log"
    )
    for line in [*station_log.splitlines(), *station.output().splitlines()]:
        if "FORGED" in line:
            assert "x\\nERROR" in line, f"a forged line: {line!r}"
    assert escape("a\nb\x1b[31m\u2028") == "a\\nb\\x1b[31m\\u2028"


def make_station_log(home: Path) -> str:
    logs = list(home.glob("*/logs/*.log"))
    return logs[0].read_text(errors="replace") if logs else ""


@pytest.mark.timeout(120)
def test_a_flood_of_bad_frames_is_summarised_with_a_count(make_station):
    station = make_station()
    frames = 20_000
    context = zmq.Context()
    try:
        sock = stranger(station, context)
        for index in range(frames):
            sock.send(b"\xc1 not msgpack %d" % index)
        wait_until(
            lambda: station.call("get_status")["dropped_messages"] >= frames, 60, "every drop"
        )
        sock.close()
    finally:
        context.term()
    station.stop()
    output = station.output().splitlines()
    summaries = [line for line in output if "were not logged" in line]
    lines = [line for line in output if "dropped a bad message" in line and line not in summaries]
    # REPEAT_BURST lines per window of REPEAT_WINDOW_S; a slow machine may need a few windows.
    assert len(lines) <= 4 * REPEAT_BURST, f"{len(lines)} lines for one flood"
    assert sum(int(line.split(" more message")[0].rsplit(" ", 1)[-1]) for line in summaries) == (
        frames - len(lines)
    )


# -- 12. NaN and Infinity ---------------------------------------------------------------------


def with_value(value: object) -> dict:
    report = sample_report(5)
    report["root"]["steps"][0]["steps"][0]["numericMeas"][0]["value"] = value
    return report


FIELD = "root.steps[0].steps[0].numericMeas[0].value"


@pytest.mark.timeout(60)
def test_submit_refuses_nan_and_infinity_naming_the_field(make_station):
    station = make_station()
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(CommandFailed) as refused:
            station.call("submit_report", report=with_value(value))
        assert refused.value.code == "invalid_report"
        assert FIELD in str(refused.value)
    text = json.dumps(with_value(123456.789)).replace("123456.789", "-Infinity")
    assert "-Infinity" in text
    with pytest.raises(CommandFailed, match=re.escape(f"{FIELD}: -Infinity is not valid JSON")):
        station.call("submit_report", report=text)
    report = with_value(1.0)
    report["miscInfos"] = [{"description": "ratio", "numeric": math.nan}]
    with pytest.raises(CommandFailed, match=r"miscInfos\[0\]\.numeric: NaN"):
        station.call("submit_report", report=report)
    assert station.call("get_queue_stats")["pending"] == 0


# -- 13. one report, one id -------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_one_uuid_written_six_ways_is_one_report_and_a_different_one_is_refused(make_station):
    station = make_station()
    report_id = uuid.uuid4()
    spellings = [
        str(report_id),
        str(report_id).upper(),
        "{" + str(report_id) + "}",
        f"urn:uuid:{report_id}",
        report_id.hex,
        report_id.hex.upper(),
    ]
    answers = []
    for spelling in spellings:
        report = sample_report(7)
        report["id"] = spelling
        answers.append(station.call("submit_report", report=report))
    assert {a["id"] for a in answers} == {str(report_id)}
    assert [a.get("unchanged", False) for a in answers] == [False] + [True] * 5
    (row,) = station.call("list_reports")
    assert row["id"] == str(report_id)
    stored = station.call("get_report", id=str(report_id).upper())
    assert stored["report"]["id"] == str(report_id)

    different = sample_report(8)
    different["id"] = str(report_id).upper()
    with pytest.raises(CommandFailed) as refused:
        station.call("submit_report", report=different)
    assert refused.value.code == "conflict"
    assert str(report_id) in str(refused.value)
    assert station.call("get_report", id=str(report_id))["report"] == stored["report"]

    with EventStream(paths=station.paths, topics=("report.replaced",)) as events:
        events.snapshot()
        station.call("submit_report", report=different, replace=True)
        event = events.next(10)
    assert event is not None and event.data["id"] == str(report_id)
    assert station.call("get_report", id=str(report_id))["report"]["uut"] == different["uut"]
    assert "is replaced by a different report" in station.output()
    assert len(station.call("list_reports")) == 1


# -- 14. bad requests get a clear code --------------------------------------------------------


@pytest.mark.timeout(60)
def test_bad_requests_get_a_clear_code_and_never_internal(make_station):
    station = make_station()
    unknown = str(uuid.uuid4())
    deep = "[" * 10_000 + "]" * 10_000
    surrogate = json.dumps(sample_report(3)).replace('"PCBA-100', '"\\ud800PCBA-100', 1)
    cases = [
        ("list_reports", {"limit": 2**64 - 1}, "bad_arguments", "limit must be between"),
        ("list_reports", {"limit": -1}, "bad_arguments", "limit must be between"),
        ("list_reports", {"offset": 2**64 - 1}, "bad_arguments", "offset must be between"),
        ("retry_reports", {"ids": [unknown]}, "not_found", unknown),
        ("retry_reports", {"ids": ["no-such-thing"]}, "bad_arguments", "not a report id"),
        ("get_report", {"id": "no-such-thing"}, "bad_arguments", "not a report id"),
        ("submit_report", {"report": deep}, "invalid_report", "nested too deeply"),
        ("submit_report", {"report": surrogate}, "invalid_report", "pn: text that is not valid"),
        # On the wire as the bytes of no UTF-8 character at all (msgpack carries them).
        (
            "submit_report",
            {"report": {**sample_report(4), "sn": "SN\udcff"}},
            "invalid_report",
            "sn: text that is not valid Unicode",
        ),
        ("restart_worker", {"name": "\udcff"}, "not_found", "no worker named"),
    ]
    for command, args, code, words in cases:
        with pytest.raises(CommandFailed) as failed:
            station.call(command, **args)
        assert (failed.value.code, words in str(failed.value)) == (code, True), (
            command,
            str(failed.value),
        )
    assert station.call("ping")["pong"]
    assert "Traceback" not in station.output()


@pytest.mark.timeout(60)
def test_the_cli_prints_no_traceback(make_station, home):
    station = make_station(start=False)
    deep = home / "deep.json"
    deep.write_text("[" * 10_000 + "]" * 10_000)
    result = station.cli("submit", str(deep))
    assert result.returncode == 1
    assert "nested too deeply" in result.stderr and "Traceback" not in result.stderr

    # A home nobody may write to, not even root: /sys refuses new entries.
    unwritable = {**station.env(), "WATS_STATION_HOME": "/sys/wats-station-test"}
    for args in (["config", "init"], ["queue", "stats"], ["service"], ["status"]):
        result = subprocess.run(
            [sys.executable, "-m", "wats_station.cli", *args],
            env=unwritable,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode != 0, args
        assert result.stderr.splitlines()[-1].startswith("error: "), (args, result.stderr)
        assert "Traceback" not in result.stderr, (args, result.stderr)


@pytest.mark.timeout(60)
def test_a_killed_station_is_reported_as_not_running_at_once(make_station):
    station = make_station()
    station.kill()  # SIGKILL: the socket files stay behind
    assert Path(station.paths.control_endpoint.removeprefix("ipc://")).exists()
    started = time.monotonic()
    result = station.cli("status", "--timeout", "20")
    assert result.returncode == 3, result.stderr
    assert "no station is running" in result.stderr
    assert time.monotonic() - started < 10
    assert "did not answer" not in result.stderr


def test_the_queue_refuses_an_id_that_is_not_in_canonical_form(tmp_path):
    queue = ReportQueue(tmp_path / "queue.db")
    try:
        loud = str(uuid.uuid4()).upper()
        with pytest.raises(QueueError, match="not in canonical form"):
            queue.enqueue([(loud, b"{}")])
        queue.enqueue([(loud.lower(), b"{}")])
        assert queue.stats()["pending"] == 1
    finally:
        queue.close()


NAN_MODULE = """
from wats_station.converters.base import Converter
from wats_station.samples import sample_report

class Careless(Converter):
    def convert(self, path):
        report = sample_report(9)
        report["id"] = report["id"].upper()
        report["root"]["steps"][0]["steps"][0]["numericMeas"][0]["value"] = float("nan")
        return [report]
"""


@pytest.mark.timeout(60)
def test_a_converter_that_returns_nan_is_refused_naming_the_field(make_station, home):
    custom = home / "custom"
    custom.mkdir()
    (custom / "careless.py").write_text(NAN_MODULE)
    station = make_station(
        config={
            "converters_folder": str(custom),
            "converters": [{"name": "careless", "module": "careless.Careless"}],
        },
        start=False,
    )
    source = home / "run.txt"
    source.write_text("x")
    result = station.cli("convert", str(source), "--converter", "careless")
    assert result.returncode == 1
    assert f"{FIELD}: NaN is not valid JSON" in result.stderr


@pytest.mark.timeout(60)
def test_a_dropped_file_with_a_different_report_under_a_known_id_replaces_it_loudly(
    make_station, home
):
    station = make_station(
        config={
            "watch": {"debounce_s": 0.1, "rescan_interval_s": 1.0},
            "converters": [
                {
                    "name": "wsjf",
                    "module": "wsjf",
                    "file_patterns": ["*.json"],
                    "watch_folder": str(home / "in"),
                }
            ],
        }
    )
    first, second = sample_report(1), sample_report(2)
    second["id"] = "{" + first["id"].upper() + "}"
    (home / "in" / "first.json").write_text(json.dumps(first))
    wait_until(lambda: station.call("get_queue_stats")["pending"] == 1, 20, "the first report")
    with EventStream(paths=station.paths, topics=("report.replaced",)) as events:
        events.snapshot()
        (home / "in" / "second.json").write_text(json.dumps(second))
        event = events.next(20)
    assert event is not None and event.data["id"] == first["id"]
    assert event.data["source"].endswith("second.json")
    assert "is replaced by a different report" in station.output()
    (row,) = station.call("list_reports")
    assert station.call("get_report", id=row["id"])["report"]["sn"] == second["sn"]
