"""Configuration a person writes, checks and reloads; logs a person reads."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys

from wats_station.ipc.endpoints import instance_paths
from wats_station.lab.harness import wait_until
from wats_station.supervisor.config import ConfigError, load_config

SECRET = "c2VjcmV0OnRva2Vu"


def cli(home, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wats_station.cli", *args],
        env={**os.environ, "WATS_STATION_HOME": str(home), **(env or {})},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_config_init_writes_an_owner_only_file_that_show_masks(home):
    result = cli(
        home, "config", "init", "--instance-id", "ict", "--server-url", "https://wats.example",
        "--token", SECRET, "--station-name", "ICT-07",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    path = home / "config_ict.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = json.loads(path.read_text())
    assert written["server"] == {"url": "https://wats.example", "token": SECRET}
    assert written["station"]["name"] == "ICT-07"
    assert [c["name"] for c in written["converters"]] == [
        "wsjf", "wsxf", "wstf", "csv", "atml", "teststand-xml", "openhtf"
    ]  # fmt: skip
    shown = cli(home, "config", "show", "--instance-id", "ict")
    assert SECRET not in shown.stdout and "********" in shown.stdout
    assert "valid" in cli(home, "config", "validate", "--instance-id", "ict").stdout
    again = cli(home, "config", "init", "--instance-id", "ict")
    assert again.returncode == 1 and "--force" in again.stderr


def test_a_fresh_station_converts_every_standard_format_from_its_own_folder(home):
    config = load_config(instance_paths("eol", env={"WATS_STATION_HOME": str(home)}), env={})
    folders = {c.name: c.watch_folder for c in config.converters}
    assert set(folders) == {"wsjf", "wsxf", "wstf", "csv", "atml", "teststand-xml", "openhtf"}
    assert all(c.enabled and c.kind == "python" for c in config.converters)
    assert len(set(folders.values())) == len(folders)
    assert all(folder.startswith(str(home / "eol")) for folder in folders.values())


def test_validation_names_the_key_path_and_what_is_wrong(home):
    path = home / "config_default.json"
    cases = {
        '{"upload": {"max_concurrency": 0}}':
            "upload.max_concurrency: must be between 1 and 64, got 0",
        '{"uplaod": {}}': "uplaod: unknown key",
        '{"converters": [{"name": "a", "module": "wsjf", "post_action": "shred"}]}':
            "converters[0].post_action: must be one of move, delete, archive, keep",
        '{"server": {"url": "ftp://x"}}': "server.url: must be an http:// or https:// URL",
        '{"watch": {"debounce_s": "fast"}}': "watch.debounce_s: must be a number",
        '{"server": {"url": "http://x",}}': "line 1 column 31: not valid JSON",
    }  # fmt: skip
    for text, expected in cases.items():
        path.write_text(text)
        result = cli(home, "config", "validate")
        assert result.returncode == 2, text
        assert expected in result.stderr, (text, result.stderr)
        assert str(path) in result.stderr


def test_environment_overrides_server_url_and_token(home):
    paths = instance_paths("default", env={"WATS_STATION_HOME": str(home)})
    (home / "config_default.json").write_text('{"server": {"url": "http://file:1", "token": "x"}}')
    env = {"WATS_STATION_SERVER_URL": "https://env.example", "WATS_STATION_TOKEN": SECRET}
    config = load_config(paths, env=env)
    assert (config.server.url, config.server.token) == ("https://env.example", SECRET)
    try:
        load_config(paths, env={"WATS_STATION_SERVER_URL": "nonsense"})
    except ConfigError as error:
        assert "WATS_STATION_SERVER_URL" in str(error)
    else:
        raise AssertionError("a bad URL in the environment was accepted")


def test_a_reload_with_a_bad_config_is_refused_and_the_running_one_stays(make_station):
    station = make_station(config={"upload": {"max_concurrency": 2}})
    pids = {w["name"]: w["pid"] for w in station.call("list_workers")}
    station.paths.config_file.write_text('{"upload": {"max_concurrency": "many"}}')
    result = station.cli("reload")
    assert result.returncode == 1
    assert "upload.max_concurrency" in result.stderr and "running one stays" in result.stderr
    os.kill(station.process.pid, signal.SIGHUP)  # the same through the signal
    wait_until(lambda: "reload refused" in station.output(), 10, "the refusal in the log")
    assert station.call("get_config")["upload"]["max_concurrency"] == 2
    assert {w["name"]: w["pid"] for w in station.call("list_workers")} == pids


def test_a_reload_restarts_only_the_workers_it_affects(make_station):
    station = make_station(config={"watch": {"debounce_s": 0.5}})
    pids = {w["name"]: w["pid"] for w in station.call("list_workers")}
    station.write_config({"watch": {"debounce_s": 0.25}})
    assert station.call("reload")["restarted"] == ["watcher"]
    watcher = station.wait_worker(
        "watcher", lambda w: w["pid"] != pids["watcher"] and w["state"] == "running"
    )
    assert watcher["restarts"] == 1
    assert station.worker("uploader")["pid"] == pids["uploader"]
    assert station.worker("converter-1")["pid"] == pids["converter-1"]


def test_the_token_never_reaches_a_log_line_or_a_status_reply(make_station):
    station = make_station(config={"server": {"token": SECRET}}, env={"WATS_STATION_TOKEN": SECRET})
    replies = [
        station.call(c) for c in ("get_status", "get_config", "list_workers", "get_snapshot")
    ]
    assert SECRET not in json.dumps(replies)
    assert station.call("get_config")["server"]["token"] == "********"
    station.stop()
    assert SECRET not in station.output()
    assert SECRET not in station.paths.log_file.read_text()


LINE_THEN_CRASH = """
import os, signal, sys
from wats_station.converters.base import Converter


class Dies(Converter):
    def convert(self, path):
        sys.stdout.write("first line\\nhalf a line with no end")
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_worker_output_reaches_the_log_line_by_line_even_when_it_dies_mid_line(make_station, home):
    custom = home / "custom"
    custom.mkdir()
    (custom / "dies.py").write_text(LINE_THEN_CRASH)
    watch = home / "in"
    converter = {
        "name": "dies", "module": "dies.Dies", "file_patterns": ["*.x"],
        "watch_folder": str(watch), "max_crashes": 1,
    }  # fmt: skip
    station = make_station(
        config={
            "converters": [converter],
            "converters_folder": str(custom),
            "watch": {"debounce_s": 0.1},
        }
    )
    (watch / "one.x").write_text("x")
    wait_until(lambda: (watch / "Error" / "one.x").exists(), 20, "the file in Error")
    log = station.paths.log_file.read_text()
    lines = [line for line in log.splitlines() if "converter-1[" in line]
    assert any(line.endswith("]: first line") for line in lines), lines
    assert any(line.endswith("]: half a line with no end") for line in lines), lines
    for line in log.splitlines():
        assert "[default] supervisor[" in line  # every line names the instance, process and pid
    sidecar = json.loads((watch / "Error" / "one.x.error.json").read_text())
    assert "half a line with no end" in sidecar["output_tail"]
