"""The systemd unit: what it contains, where it is installed, and what systemd thinks of it."""

from __future__ import annotations

import configparser
import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from wats_station.ipc.endpoints import instance_paths
from wats_station.unit import UnitInstallError, install_unit, next_steps, render_unit

# systemd < 254 does not know these yet and says so; anything else it says is a defect.
NEWER_SYSTEMD_KEYS = ("RestartSteps", "RestartMaxDelaySec")


def parse(text: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment, method-assign]  # systemd keys are case-sensitive
    unit.read_string(text)
    return unit


def current_user() -> tuple[str, str]:
    entry = pwd.getpwuid(os.getuid())
    return entry.pw_name, grp.getgrgid(entry.pw_gid).gr_name


def test_unit_has_every_setting_the_station_relies_on() -> None:
    unit = parse(render_unit(python="/opt/wats/.venv/bin/python"))
    expected = {
        "Unit": {"StartLimitIntervalSec": "0"},
        "Service": {
            "Type": "notify",
            "NotifyAccess": "main",
            "ExecStart": "/opt/wats/.venv/bin/python -m wats_station.cli service --instance-id %i",
            "ExecReload": "/bin/kill -HUP $MAINPID",
            "Environment": "PYTHONUNBUFFERED=1",
            "WatchdogSec": "30",
            "Restart": "on-failure",
            "RestartSec": "2",
            "RestartSteps": "5",
            "RestartMaxDelaySec": "60",
            "TimeoutStopSec": "90",
            "KillMode": "control-group",
            "RuntimeDirectory": "wats-station/%i",
            "RuntimeDirectoryMode": "0700",
            "StateDirectory": "wats-station/%i",
            "LogsDirectory": "wats-station/%i",
            "ConfigurationDirectory": "wats-station",
            "UMask": "0077",
            "NoNewPrivileges": "yes",
            "PrivateTmp": "yes",
            "ProtectSystem": "full",
            "ProtectKernelTunables": "yes",
            "ProtectControlGroups": "yes",
            "RestrictSUIDSGID": "yes",
            "LockPersonality": "yes",
        },
        "Install": {"WantedBy": "multi-user.target"},
    }
    actual = {section: dict(unit[section]) for section in expected}
    for section, keys in expected.items():
        for key, value in keys.items():
            assert actual[section].get(key) == value, f"[{section}] {key}"
    # Watch folders may be anywhere on disk: nothing may make the rest of it read-only.
    assert "ProtectHome" not in unit["Service"]


def test_unit_runs_as_root_unless_a_user_is_given() -> None:
    assert {"User", "Group"}.isdisjoint(parse(render_unit())["Service"])

    name, group = current_user()
    service = parse(render_unit(user=name))["Service"]
    assert (service["User"], service["Group"]) == (name, group)


def test_unit_refuses_a_user_that_does_not_exist_or_cannot_be_named() -> None:
    with pytest.raises(ValueError, match="'no-such-station-user' does not exist"):
        render_unit(user="no-such-station-user")
    with pytest.raises(ValueError, match="not valid"):
        render_unit(user="root\nExecStartPre=/bin/sh")


def test_unit_escapes_a_python_path_systemd_would_misread() -> None:
    unit = parse(render_unit(python="/opt/wats 100%/bin/python"))
    exec_start = unit["Service"]["ExecStart"]
    assert exec_start.startswith('"/opt/wats 100%%/bin/python" -m wats_station.cli')
    with pytest.raises(ValueError, match="absolute path"):
        render_unit(python="python3")


def test_root_shell_finds_the_sockets_of_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """The directories systemd creates from the unit are the ones root computes without it."""
    service = parse(render_unit())["Service"]
    instance = "ict"
    systemd_env = {
        "RUNTIME_DIRECTORY": f"/run/{service['RuntimeDirectory']}".replace("%i", instance),
        "STATE_DIRECTORY": f"/var/lib/{service['StateDirectory']}".replace("%i", instance),
        "LOGS_DIRECTORY": f"/var/log/{service['LogsDirectory']}".replace("%i", instance),
        "CONFIGURATION_DIRECTORY": f"/etc/{service['ConfigurationDirectory']}",
    }
    under_systemd = instance_paths(instance, env=systemd_env)
    monkeypatch.setattr("wats_station.ipc.endpoints.os.geteuid", lambda: 0)
    root_shell = instance_paths(instance, env={})
    assert under_systemd == root_shell
    assert root_shell.control_endpoint == "ipc:///run/wats-station/ict/control"


def test_install_writes_a_world_readable_unit_and_replaces_an_old_one(tmp_path: Path) -> None:
    (tmp_path / "wats-station@.service").write_text("old unit\n")
    path = install_unit(tmp_path, python=sys.executable)
    assert path == tmp_path / "wats-station@.service"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == render_unit(python=sys.executable)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wats-station@.service"]


def test_install_refuses_a_directory_it_cannot_write(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    with pytest.raises(UnitInstallError, match=f"{not_a_dir / 'system'} is not a directory"):
        install_unit(not_a_dir / "system")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_install_explains_a_permission_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(UnitInstallError, match="Permission denied; run as root"):
            install_unit(tmp_path)
    finally:
        tmp_path.chmod(0o700)


def test_install_refuses_a_python_that_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(UnitInstallError, match="/nowhere/python does not exist"):
        install_unit(tmp_path, python="/nowhere/python")


def test_next_steps_load_and_start_the_instance() -> None:
    assert next_steps("ict") == [
        "systemctl daemon-reload",
        "systemctl enable --now wats-station@ict",
    ]


def systemd_verify(unit_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=unit_file.parent,
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    probe = tmp_path / "probe.service"
    probe.write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")
    baseline = systemd_verify(probe)
    if baseline.returncode != 0 or baseline.stderr.strip():
        pytest.skip(f"systemd-analyze verify cannot run here: {baseline.stderr.strip()[:300]}")

    unit_file = tmp_path / "wats-station@ict.service"
    unit_file.write_text(render_unit(python=sys.executable, user=current_user()[0]))
    result = systemd_verify(unit_file)
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and not any(f"Unknown key '{key}'" in line for key in NEWER_SYSTEMD_KEYS)
    ]
    assert result.returncode == 0, result.stderr
    assert complaints == []
