"""Where an instance lives: its config, data, log and runtime directories, and its socket endpoints.

Everything is per instance id, so ``ict``, ``fct`` and ``eol`` share nothing. The rules,
first match wins:

* ``WATS_STATION_HOME=DIR``: all under DIR (``DIR/config_<id>.json``, ``DIR/<id>/data`` ...).
* Under systemd: the unit's ``CONFIGURATION_DIRECTORY``, ``STATE_DIRECTORY``,
  ``LOGS_DIRECTORY`` and ``RUNTIME_DIRECTORY``.
* root: ``/etc/wats-station``, ``/var/lib/wats-station/<id>``, ``/var/log/wats-station/<id>``,
  ``/run/wats-station/<id>`` (what the shipped unit asks systemd for).
* anyone else: the XDG base directories.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "WATS_STATION_HOME"
APP = "wats-station"
DEFAULT_INSTANCE = "default"

_INSTANCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
# sun_path holds 108 bytes on Linux (104 on macOS); libzmq needs the terminating NUL.
_MAX_SOCKET_PATH = 100


def check_instance_id(instance: str) -> str:
    if not _INSTANCE_ID.match(instance):
        raise ValueError(
            f"instance id {instance!r} is not valid: use 1-32 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return instance


@dataclass(frozen=True)
class InstancePaths:
    instance: str
    config_file: Path
    data_dir: Path
    log_dir: Path
    runtime_dir: Path

    @property
    def queue_db(self) -> Path:
        return self.data_dir / "queue.db"

    @property
    def lock_file(self) -> Path:
        return self.runtime_dir / "station.lock"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"wats-station-{self.instance}.log"

    def endpoint(self, socket_name: str) -> str:
        path = self.runtime_dir / socket_name
        if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
            raise ValueError(
                f"socket path {path} is {len(os.fsencode(path))} bytes long; Unix sockets allow "
                f"{_MAX_SOCKET_PATH}: set {HOME_ENV} to a shorter directory"
            )
        return f"ipc://{path}"

    @property
    def control_endpoint(self) -> str:
        return self.endpoint("control")

    @property
    def events_endpoint(self) -> str:
        return self.endpoint("events")

    @property
    def workers_endpoint(self) -> str:
        return self.endpoint("workers")


def instance_paths(
    instance: str = DEFAULT_INSTANCE, env: Mapping[str, str] | None = None
) -> InstancePaths:
    env = os.environ if env is None else env
    check_instance_id(instance)
    home = env.get(HOME_ENV)
    if home:
        base = Path(home).expanduser().absolute()
        inst = base / instance
        return InstancePaths(
            instance, base / f"config_{instance}.json", inst / "data", inst / "logs", inst / "run"
        )
    if env.get("RUNTIME_DIRECTORY") and env.get("STATE_DIRECTORY"):
        # systemd may pass several colon-separated directories; the unit asks for one each.
        def first(key: str, fallback: Path) -> Path:
            value = env.get(key)
            return Path(value.split(":")[0]) if value else fallback

        state = first("STATE_DIRECTORY", Path())
        return InstancePaths(
            instance,
            first("CONFIGURATION_DIRECTORY", Path("/etc") / APP) / f"config_{instance}.json",
            state,
            first("LOGS_DIRECTORY", state / "logs"),
            first("RUNTIME_DIRECTORY", Path()),
        )
    if os.geteuid() == 0:
        return InstancePaths(
            instance,
            Path("/etc") / APP / f"config_{instance}.json",
            Path("/var/lib") / APP / instance,
            Path("/var/log") / APP / instance,
            Path("/run") / APP / instance,
        )
    user_home = Path(env.get("HOME", str(Path.home())))
    config = Path(env.get("XDG_CONFIG_HOME") or user_home / ".config") / APP
    data = Path(env.get("XDG_DATA_HOME") or user_home / ".local/share") / APP / instance
    state = Path(env.get("XDG_STATE_HOME") or user_home / ".local/state") / APP / instance
    runtime_base = env.get("XDG_RUNTIME_DIR")
    runtime = (
        Path(runtime_base) / APP / instance
        if runtime_base
        else Path("/tmp") / f"{APP}-{os.getuid()}" / instance
    )
    return InstancePaths(
        instance, config / f"config_{instance}.json", data, state / "logs", runtime
    )


def prepare_runtime_dir(path: Path) -> None:
    """Create the runtime directory so that only its owner can open the sockets inside it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.stat()
    if info.st_uid != os.geteuid():
        raise PermissionError(f"runtime directory {path} belongs to uid {info.st_uid}, not to us")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
