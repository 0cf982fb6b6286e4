"""The instance configuration: every key, its type, default and check, defined once.

A config file is JSON (``config_<instance>.json``). Each section below is a frozen
dataclass; its fields are the keys. Loading rejects unknown keys and bad values with a
ConfigError that names the file and the key path (``upload.max_concurrency: must be
between 1 and 64, got 0``). Without a file the station runs on these embedded defaults.
The environment variables WATS_STATION_SERVER_URL and WATS_STATION_TOKEN override the
server settings.
"""

from __future__ import annotations

import json
import os
import socket
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from wats_station.ipc.endpoints import InstancePaths
from wats_station.supervisor.atomic import write_atomically

SERVER_URL_ENV = "WATS_STATION_SERVER_URL"
TOKEN_ENV = "WATS_STATION_TOKEN"
SECRET_KEYS = frozenset({"token"})
MASK = "********"

STANDARD_CONVERTERS = ("wsjf", "wsxf", "wstf", "csv", "atml", "teststand-xml", "openhtf")
CONVERTER_KINDS = ("python", "process", "native")
POST_ACTIONS = ("move", "delete", "archive", "keep")
PRIORITY_RANGE = (-1000, 1000)  # report priority: higher uploads first; 0 is the default


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key path."""


Check = Callable[[Any], str | None]  # returns what is wrong, or None


def between(low: float, high: float) -> Check:
    return lambda v: (
        None if low <= v <= high else f"must be between {low:g} and {high:g}, got {v!r}"
    )


def one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}, got {v!r}"


def http_url(value: str) -> str | None:
    if value.startswith(("http://", "https://")) and len(value) > len("https://"):
        return None
    return f"must be an http:// or https:// URL, got {value!r}"


def key(default: Any = MISSING, check: Check | None = None, help: str = "", **kw: Any) -> Any:
    metadata = {"check": check, "help": help}
    if callable(default) and not isinstance(default, (str, int, float, bool)):
        return field(default_factory=default, metadata=metadata, **kw)
    return field(default=default, metadata=metadata, **kw)


@dataclass(frozen=True)
class ServerSettings:
    url: str = key("http://127.0.0.1:8080", http_url, "WATS server base URL")
    token: str = key("", help="API token issued by the WATS admin (already base64); a secret")


@dataclass(frozen=True)
class StationSettings:
    name: str = key(socket.gethostname, help="machineName of reports that do not name a station")
    location: str = key("Unknown", help="location of reports that do not name one")
    purpose: str = key("Production", help="purpose of reports that do not name one")


@dataclass(frozen=True)
class UploadSettings:
    max_concurrency: int = key(5, between(1, 64), "reports uploaded at the same time")
    connect_timeout_s: float = key(5.0, between(0.1, 300), "TCP connect timeout")
    read_timeout_s: float = key(60.0, between(0.1, 3600), "time to wait for the server's answer")
    max_retry_attempts: int = key(10, between(1, 1000), "5xx answers before a report is failed")
    retry_base_s: float = key(5.0, between(0.01, 3600), "first retry delay after a 5xx")
    retry_cap_s: float = key(1800.0, between(0.01, 86400), "longest retry delay")
    probe_base_s: float = key(1.0, between(0.01, 3600), "first delay between offline probes")
    probe_cap_s: float = key(60.0, between(0.01, 3600), "longest delay between offline probes")
    completed_retention_days: float = key(7.0, between(0, 3650), "days completed reports are kept")


@dataclass(frozen=True)
class HealthSettings:
    unsent_degraded_s: float = key(
        900.0, between(1, 1e9), "age of the oldest undelivered report that makes it degraded"
    )
    unsent_failing_s: float = key(14400.0, between(1, 1e9), "... that makes it failing")
    waiting_files_degraded: int = key(200, between(1, 1e9), "files waiting that make it degraded")
    waiting_degraded_s: float = key(
        300.0, between(0.1, 1e9), "age of the oldest file waiting that makes it degraded"
    )
    waiting_failing_s: float = key(3600.0, between(0.1, 1e9), "... that makes it failing")
    failures_window_s: float = key(
        900.0, between(0.1, 1e9), "how far back quarantined files count as recent"
    )
    failures_degraded: int = key(1, between(1, 1e9), "recent quarantined files: degraded")
    failures_failing: int = key(20, between(1, 1e9), "recent quarantined files: failing")
    clock_skew_s: float = key(
        300.0, between(1, 1e9), "clock difference from the server that makes it degraded"
    )
    interval_s: float = key(1.0, between(0.05, 3600), "how often the verdict is computed")


def host_port(value: str) -> str | None:
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if host and port.isdigit() and 0 < int(port) < 65536:
        return None
    return f"must be empty (off) or host:port such as 127.0.0.1:9464, got {value!r}"


@dataclass(frozen=True)
class MetricsSettings:
    listen: str = key(
        "", host_port, "host:port of the metrics and health HTTP endpoint; off if empty"
    )
    interval_s: float = key(
        1.0, between(0.05, 3600), "how often the supervisor publishes its figures"
    )


@dataclass(frozen=True)
class SupervisorSettings:
    converter_workers: int = key(lambda: os.cpu_count() or 1, between(1, 50), "converter processes")
    heartbeat_interval_s: float = key(1.0, between(0.05, 60), "how often processes say they live")
    heartbeat_timeout_s: float = key(
        3.5, between(0.2, 600), "silence after which a worker is killed"
    )
    start_timeout_s: float = key(20.0, between(0.5, 600), "time a new worker has to say hello")
    restart_base_s: float = key(
        0.5, between(0, 600), "second restart delay; the first is immediate"
    )
    restart_cap_s: float = key(30.0, between(0.01, 3600), "longest restart delay")
    stable_uptime_s: float = key(10.0, between(0.1, 86400), "uptime that resets the restart delay")
    crash_loop_after: int = key(
        4, between(2, 1000), "failed starts in a row that mean crash-looping"
    )
    stop_timeout_s: float = key(10.0, between(0.1, 600), "time a worker has to exit when asked")
    kill_timeout_s: float = key(5.0, between(0.1, 600), "time between SIGTERM and SIGKILL")
    max_message_mb: float = key(128.0, between(0.001, 2048), "largest message accepted on a socket")


@dataclass(frozen=True)
class WatchSettings:
    debounce_s: float = key(1.0, between(0, 600), "a file must keep its size and mtime this long")
    rescan_interval_s: float = key(
        10.0, between(0.1, 86400), "full rescans that catch missed events"
    )
    polling: bool = key(False, help="poll instead of inotify (network shares)")
    max_file_mb: float = key(
        1024.0, between(0.001, 1 << 20), "a larger dropped file goes to the error folder unread"
    )


@dataclass(frozen=True)
class ConverterSettings:
    name: str = key(help="unique name of this converter")
    kind: str = key("python", one_of(*CONVERTER_KINDS), "python, process or native")
    module: str = key("", help="python: a standard name (see STANDARD_CONVERTERS) or module.Class")
    command: list[str] = key(list, help="process: argv; {input} and {output} are replaced")
    output: str = key("stdout", one_of("stdout", "file"), "process: where WSJF comes out")
    library: str = key("", help="native: path of the shared library")
    watch_folder: str = key("", help="folder to watch; default <data>/drop/<name>")
    done_folder: str = key("", help="where converted files go; default <watch>/Done")
    error_folder: str = key("", help="where failed files go; default <watch>/Error")
    file_patterns: list[str] = key(lambda: ["*"], help="file name patterns")
    recursive: bool = key(False, help="also take files in subfolders (never Done/Error)")
    max_depth: int | None = key(
        None, between(1, 1000), "recursive: subfolder levels taken (1 = one level); none = all"
    )
    priority: int = key(0, between(*PRIORITY_RANGE), "higher uploads first when a backlog builds")
    post_action: str = key("move", one_of(*POST_ACTIONS), "what happens to a converted file")
    enabled: bool = key(True, help="watch this converter's folder")
    arguments: dict[str, Any] = key(dict, help="passed to the converter")
    deadline_s: float = key(60.0, between(0.1, 86400), "a conversion that takes longer is killed")
    max_crashes: int = key(2, between(1, 100), "worker deaths on one file before it is quarantined")
    memory_limit_mb: int = key(2048, between(16, 1 << 20), "address-space limit of a converter")


@dataclass(frozen=True)
class LoggingSettings:
    level: str = key("INFO", one_of("DEBUG", "INFO", "WARNING", "ERROR"), "log level")
    file_max_mb: float = key(10.0, between(0.01, 10240), "log file size that triggers rotation")
    file_backups: int = key(5, between(0, 1000), "rotated log files kept")
    format: str = key("text", one_of("text", "json"), "text for people, json: one object a line")


@dataclass(frozen=True)
class AdmissionSettings:
    stop_below_mb: float = key(
        500.0,
        between(0, 1 << 30),
        "free space on the queue's disk below which no new files or submits are taken (0: never)",
    )
    resume_above_mb: float = key(
        1000.0, between(0, 1 << 30), "free space above which new work is taken again"
    )


@dataclass(frozen=True)
class Config:
    server: ServerSettings = key(ServerSettings)
    station: StationSettings = key(StationSettings)
    upload: UploadSettings = key(UploadSettings)
    supervisor: SupervisorSettings = key(SupervisorSettings)
    watch: WatchSettings = key(WatchSettings)
    converters: list[ConverterSettings] = key(list)
    converters_folder: str = key("", help="folder searched for python converter modules")
    logging: LoggingSettings = key(LoggingSettings)
    admission: AdmissionSettings = key(AdmissionSettings)
    health: HealthSettings = key(HealthSettings)
    metrics: MetricsSettings = key(MetricsSettings)

    def converter(self, name: str) -> ConverterSettings | None:
        return next((c for c in self.converters if c.name == name), None)


def default_converters() -> list[ConverterSettings]:
    return [
        # Both cases: testers on Windows write "REPORT.XML", and Linux matches case-sensitively.
        ConverterSettings(
            name=name, kind="python", module=name, file_patterns=[f"*.{ext}", f"*.{ext.upper()}"]
        )
        for name, ext in zip(
            STANDARD_CONVERTERS, ("json", "xml", "txt", "csv", "xml", "xml", "json"), strict=True
        )
    ]


def _type_name(tp: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        (inner,) = (option for option in options if option is not type(None))
        return _convert(value, inner, where)
    if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
        return _parse_section(tp, value, where)
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: must be a list, got {type(value).__name__}")
        return [_convert(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be an object, got {type(value).__name__}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, tp) or (tp is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where}: must be {_type_name(tp)}, got {json.dumps(value)}")
    return value


def _parse_section(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: must be an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        path = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"{path}: unknown key (known keys: {', '.join(known)})")
    values = {}
    for name, spec in known.items():
        path = f"{where}.{name}" if where else name
        if name not in data:
            if spec.default is MISSING and spec.default_factory is MISSING:
                raise ConfigError(f"{path}: required key is missing")
            continue
        value = _convert(data[name], hints[name], path)
        check = spec.metadata.get("check")
        problem = check(value) if check and value is not None else None
        if problem:
            raise ConfigError(f"{path}: {problem}")
        values[name] = value
    return cls(**values)


def parse_config(data: Any, paths: InstancePaths, env: Mapping[str, str] | None = None) -> Config:
    """Validate a decoded config document; fill defaults, folders and environment overrides."""
    env = os.environ if env is None else env
    has_converters = isinstance(data, dict) and "converters" in data
    config: Config = _parse_section(Config, data, "")
    converters = config.converters if has_converters else default_converters()
    seen: set[str] = set()
    resolved = []
    for index, conv in enumerate(converters):
        where = f"converters[{index}]"
        if not conv.name or conv.name in seen:
            raise ConfigError(f"{where}.name: must be a unique, non-empty name, got {conv.name!r}")
        seen.add(conv.name)
        _check_converter_kind(conv, where)
        if conv.max_depth is not None and not conv.recursive:
            raise ConfigError(f"{where}.max_depth: only applies with 'recursive': true")
        watch = Path(conv.watch_folder or paths.data_dir / "drop" / conv.name)
        resolved.append(
            replace(
                conv,
                watch_folder=str(watch),
                done_folder=conv.done_folder or str(watch / "Done"),
                error_folder=conv.error_folder or str(watch / "Error"),
            )
        )
    admission = config.admission
    if admission.resume_above_mb < admission.stop_below_mb:
        raise ConfigError(
            f"admission.resume_above_mb: must be at least stop_below_mb "
            f"({admission.stop_below_mb:g}), got {admission.resume_above_mb:g}"
        )
    server = config.server
    if env.get(SERVER_URL_ENV):
        if problem := http_url(env[SERVER_URL_ENV]):
            raise ConfigError(f"{SERVER_URL_ENV} (environment): {problem}")
        server = replace(server, url=env[SERVER_URL_ENV])
    if TOKEN_ENV in env:
        server = replace(server, token=env[TOKEN_ENV])
    return replace(config, converters=resolved, server=server)


def _check_converter_kind(conv: ConverterSettings, where: str) -> None:
    needs = {"python": ("module", conv.module), "process": ("command", conv.command)}
    needs["native"] = ("library", conv.library)
    key_name, value = needs[conv.kind]
    if not value:
        raise ConfigError(f"{where}.{key_name}: a {conv.kind} converter needs '{key_name}'")


def load_config(paths: InstancePaths, env: Mapping[str, str] | None = None) -> Config:
    """Read the instance's config file, or use embedded defaults when there is none."""
    file = paths.config_file
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return parse_config({}, paths, env)
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{file}: cannot read: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{file}: line {error.lineno} column {error.colno}: not valid JSON: {error.msg}"
        ) from None
    try:
        return parse_config(data, paths, env)
    except ConfigError as error:
        raise ConfigError(f"{file}: {error}") from None


def config_to_dict(config: Config, *, mask_secrets: bool = True) -> dict[str, Any]:
    data = asdict(config)
    if mask_secrets:
        _mask(data)
    return data


def _mask(node: Any) -> None:
    if isinstance(node, dict):
        for name, value in node.items():
            if name in SECRET_KEYS and value:
                node[name] = MASK
            else:
                _mask(value)
    elif isinstance(node, list):
        for item in node:
            _mask(item)


def config_template(
    paths: InstancePaths, *, url: str = "", token: str = "", name: str = ""
) -> dict[str, Any]:
    """A full default config document, every key present, for ``config init``."""
    config = parse_config({}, paths, env={})
    data = config_to_dict(config, mask_secrets=False)
    data["server"].update({k: v for k, v in {"url": url, "token": token}.items() if v})
    if name:
        data["station"]["name"] = name
    return data


def write_config_file(path: Path, document: dict[str, Any]) -> None:
    """Write a config atomically and owner-only (0600): it may hold the server token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, (json.dumps(document, indent=2) + "\n").encode())


def merge_config_changes(document: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``document`` with ``changes`` (a partial config document) laid over it, section by
    section. A secret sent back masked means "unchanged", so a form that never shows the
    token can still save everything else."""
    merged = dict(document)
    for name, value in changes.items():
        if name in SECRET_KEYS and value == MASK:
            continue
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = merge_config_changes(merged[name], value)
        else:
            merged[name] = value
    return merged
