"""The ``wats-station`` command line: run the station, and talk to a running one.

Errors are one line on stderr starting with ``error:``, never a traceback (unless
WATS_STATION_DEBUG is set); exit status 1 for a failure, 2 for bad usage or a bad config, 3
when no station answers.
"""

from __future__ import annotations

import argparse
import fnmatch
import getpass
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wats_station.converters.processes import PROCESSES_FILE_NAME
from wats_station.ipc.client import CommandFailed, EventStream, StationClient, StationUnavailable
from wats_station.ipc.endpoints import DEFAULT_INSTANCE, InstancePaths, instance_paths

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
DEBUG_ENV = "WATS_STATION_DEBUG"


class CliError(Exception):
    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


def _paths(args: argparse.Namespace) -> InstancePaths:
    try:
        return instance_paths(args.instance_id)
    except ValueError as error:
        raise CliError(str(error), EXIT_USAGE) from None


def _call(args: argparse.Namespace, command: str, **kwargs: Any) -> Any:
    with StationClient(paths=_paths(args), timeout_s=args.timeout) as client:
        return client.call(command, **kwargs)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


# -- service ------------------------------------------------------------------------------


def cmd_service(args: argparse.Namespace) -> int:
    from wats_station.supervisor.config import ConfigError, load_config
    from wats_station.supervisor.lock import InstanceLocked
    from wats_station.supervisor.logs import setup_logging
    from wats_station.supervisor.queue import QueueError
    from wats_station.supervisor.service import StartupError, run_service
    from wats_station.supervisor.trust import make_files_private

    paths = _paths(args)
    try:
        config = load_config(paths)
    except ConfigError as error:
        raise CliError(f"configuration error: {error}", EXIT_USAGE) from None
    make_files_private(paths)  # before the first file: the log
    setup_logging(paths, config.logging)
    try:
        return run_service(paths)
    except InstanceLocked as error:
        raise CliError(f"{error}; stop it first, or choose another --instance-id") from None
    except (StartupError, QueueError, PermissionError) as error:
        raise CliError(str(error)) from None


def cmd_unlock(args: argparse.Namespace) -> int:
    from wats_station.supervisor.lock import InstanceLocked, remove_stale_lock

    paths = _paths(args)
    try:
        holder = remove_stale_lock(paths.lock_file)
    except InstanceLocked as error:
        raise CliError(
            f"{error}; it is alive, so the lock stays (stop the station instead)"
        ) from None
    if holder is None:
        print(f"instance '{paths.instance}' is not locked")
    else:
        print(
            f"removed the stale lock of instance '{paths.instance}' "
            f"(was pid {holder.get('pid', '?')})"
        )
    return 0


# -- status and events --------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    status = _call(args, "get_status")
    if args.json:
        _print_json(status)
        return 0
    server = status["server"]
    queue = status["queue"]
    print(
        f"instance   {status['instance']}  ({status['state']}, pid {status['pid']}, "
        f"up {format_duration(status['uptime_s'])})"
    )
    print(
        f"server     {server['state']}  {server['url']}"
        + (f"  ({server['detail']})" if server["detail"] else "")
    )
    print(
        "queue      "
        + ", ".join(
            f"{queue.get(k, 0)} {k}" for k in ("pending", "processing", "completed", "failed")
        )
    )
    by_priority = status.get("pending_by_priority") or []
    if any(row["priority"] != 0 for row in by_priority):
        print(
            "           pending by priority: "
            + ", ".join(f"{row['pending']} at {row['priority']}" for row in by_priority)
        )
    files = status["files"]
    print(
        f"files      {files['converted']} converted, {files['failed']} failed, "
        f"{files['waiting']} waiting"
    )
    for alarm in status.get("alarms", []):
        print(f"ALARM      {alarm['alarm']}: {alarm['message']}")
    print_paused(status.get("paused") or {})
    health = status.get("health")
    if health:
        print(f"health     {health['verdict']}")
        for reason in health["reasons"]:
            print(f"           {reason['verdict']}: {reason['check']}: {reason['message']}")
    print()
    rows = [("WORKER", "KIND", "PID", "STATE", "RESTARTS", "UPTIME", "DOING")]
    for w in status["workers"]:
        doing = ", ".join(job["what"] for job in w["jobs"]) or (
            "" if w["state"] == "running" else w["last_exit"] or ""
        )
        uptime = format_duration(w["uptime_s"]) if w["uptime_s"] is not None else "-"
        rows.append(
            (
                w["name"],
                w["kind"],
                str(w["pid"] or "-"),
                w["state"],
                str(w["restarts"]),
                uptime,
                doing,
            )
        )
    print_table(rows)
    return 0


def print_paused(paused: dict[str, Any]) -> None:
    for kind, stamp in paused.items():
        if stamp:
            print(f"paused     {kind} (by {stamp['by']} at {stamp['at']})")


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def cmd_events(args: argparse.Namespace) -> int:
    paths = _paths(args)
    with EventStream(paths=paths, topics=tuple(args.topic or ("",))) as stream:
        # The snapshot first: where things stand, and the point the live events follow on from.
        print_event(stream.snapshot(), args.json)
        deadline = time.monotonic() + args.duration if args.duration else None
        while deadline is None or time.monotonic() < deadline:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            event = stream.next(remaining)
            # The figures for the metrics worker come every second: shown only when asked for.
            if event is not None and (event.topic != "metrics" or args.topic):
                print_event(event, args.json)
    return 0


def print_event(event: Any, as_json: bool) -> None:
    if as_json:
        record = {"seq": event.seq, "topic": event.topic, "time": event.time, "data": event.data}
        print(json.dumps(record, default=str), flush=True)
        return
    stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
    if event.topic == "resync":
        status = event.data
        workers = status["workers"]
        running = sum(w["state"] == "running" for w in workers)
        detail = (
            f"station {status['state']}, {running}/{len(workers)} workers running, "
            f"server {status['server']['state']}, queue {status['queue']}"
        )
    else:
        detail = " ".join(f"{k}={v}" for k, v in event.data.items())
    print(f"{stamp} #{event.seq} {event.topic} {detail}", flush=True)


# -- workers ------------------------------------------------------------------------------


def cmd_workers(args: argparse.Namespace) -> int:
    if args.action == "list":
        workers = _call(args, "list_workers")
        if args.json:
            _print_json(workers)
        else:
            rows = [("WORKER", "KIND", "PID", "STATE", "RESTARTS")]
            rows += [
                (w["name"], w["kind"], str(w["pid"] or "-"), w["state"], str(w["restarts"]))
                for w in workers
            ]
            print_table(rows)
        return 0
    if not args.name:
        raise CliError(f"workers {args.action} needs a worker name", EXIT_USAGE)
    result = _call(args, f"{args.action}_worker", name=args.name)
    print(f"{result['name']}: {result['state']}")
    return 0


def cmd_control(command: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        result = _call(args, command)
        _print_json(result) if getattr(args, "json", False) else print(
            f"{command}: {json.dumps(result)}"
        )
        return 0

    return run


# -- operations: pause, health, files, trace ----------------------------------------------


def operator() -> str:
    """Who asks, for the pause record: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _what(args: argparse.Namespace) -> str:
    if args.uploads and args.conversions:
        return "all"
    return "uploads" if args.uploads else "conversions" if args.conversions else "all"


def cmd_pause(args: argparse.Namespace) -> int:
    if args.command == "pause":
        result = _call_anywhere(args, "pause", what=_what(args), by=operator())
    else:
        result = _call_anywhere(args, "resume", what=_what(args))
    paused = result["paused"]
    if not any(paused.values()):
        print("nothing is paused")
    print_paused(paused)
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    health = _call(args, "get_health")
    if args.json:
        _print_json(health)
    else:
        print(health["verdict"])
        for reason in health["reasons"]:
            print(f"  {reason['verdict']}: {reason['check']}: {reason['message']}")
    return 0 if health["verdict"] == "ok" else EXIT_FAILED


def cmd_trace(args: argparse.Namespace) -> int:
    target = args.target
    if "/" in target:
        target = str(Path(target).absolute())
    found = _call_anywhere(args, "trace", target=target)
    if args.json:
        _print_json(found)
        return 0
    for source in found["sources"]:
        print(
            f"file     {source['path']}  ({source['size']} bytes, sha256 {source['sha256']}, "
            f"converter {source['converter']}, {source['state']})"
        )
    for report in found["reports"]:
        print(f"report   {report['id']}  {report['state']}")
    print()
    for event in found["events"]:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["at"]))
        subject = event["report_id"] or f"file #{event['source_id']}"
        status = f" HTTP {event['http_status']}" if event["http_status"] else ""
        detail = f"  {event['detail']}" if event["detail"] else ""
        print(f"{stamp}  {subject:<36}  {event['what']}{status}{detail}")
    return 0


def cmd_files(args: argparse.Namespace) -> int:
    if args.action == "retry":
        if not args.names and not args.all_errors:
            raise CliError("files retry needs file names or --all-errors", EXIT_USAGE)
        result = _call_anywhere(
            args,
            "retry_files",
            names=args.names or None,
            all_errors=args.all_errors,
            converter=args.converter,
        )
        for path in result["files"]:
            print(f"back in the drop folder: {path}")
        return 0
    found = _call_anywhere(
        args, "list_files", state=args.state, converter=args.converter, limit=args.limit
    )
    if args.json:
        _print_json(found)
        return 0
    rows = [("STATE", "CONVERTER", "NAME", "REPORTS", "REASON")]
    for f in found:
        reason = (f["reason"] or "").splitlines()[0][:70] if f["reason"] else ""
        rows.append((f["state"], f["converter"], f["name"], str(len(f["reports"])), reason))
    print_table(rows)
    return 0


# -- queue --------------------------------------------------------------------------------


def _call_anywhere(args: argparse.Namespace, command: str, **arguments: Any) -> Any:
    """Ask the running station, or run the command on the queue file of a stopped one."""
    from wats_station import offline

    paths = _paths(args)
    if offline.station_stopped(paths):
        try:
            return offline.run_queue_command(paths, command, arguments)
        except offline.control.CommandError as error:
            raise CliError(str(error)) from None
    return _call(args, command, **arguments)


def cmd_queue(args: argparse.Namespace) -> int:
    command, arguments = _queue_request(args)
    return _print_queue(args, _call_anywhere(args, command, **arguments))


def _queue_request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The control command (and its arguments) that a ``queue`` action stands for."""
    action = args.action
    if action == "stats":
        return "get_queue_stats", {}
    if action == "list":
        return "list_reports", {"state": args.state, "limit": args.limit}
    if action == "show":
        return "get_report", {"id": _need_id(args)}
    if action == "retry":
        if not args.id and not args.failed:
            raise CliError("queue retry needs a report ID or --failed", EXIT_USAGE)
        return "retry_reports", {"ids": [args.id] if args.id else None, "failed": args.failed}
    older = parse_duration(args.older_than) if args.older_than else None
    return "clean_reports", {"completed": True, "failed": args.failed, "older_than_s": older}


def _need_id(args: argparse.Namespace) -> str:
    if not args.id:
        raise CliError(f"queue {args.action} needs a report ID", EXIT_USAGE)
    return args.id


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text) * 86400
    except (ValueError, IndexError):
        raise CliError(
            f"--older-than {text!r}: use a number of days, or e.g. 12h, 30m, 2w", EXIT_USAGE
        ) from None


def _print_queue(args: argparse.Namespace, result: Any) -> int:
    if args.json or args.action == "show":
        _print_json(result)
    elif args.action == "stats":
        for state in ("pending", "processing", "completed", "failed"):
            print(f"{state:<11} {result.get(state, 0)}")
    elif args.action == "list":
        rows = [("ID", "STATE", "PRIORITY", "ATTEMPTS", "HTTP", "LAST ERROR")]
        for r in result:
            error = (r["last_error"] or "").splitlines()[0][:60] if r["last_error"] else ""
            rows.append((
                r["id"], r["state"], str(r.get("priority", 0)), str(r["attempts"]),
                str(r["last_http_status"] or ""), error,
            ))  # fmt: skip
        print_table(rows)
    else:
        print(json.dumps(result))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise CliError(f"cannot read {path}: {error}") from None
    try:
        report = json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(
            f"{path}: line {error.lineno} column {error.colno}: not valid JSON: {error.msg}"
        ) from None
    except RecursionError:
        raise CliError(f"{path}: JSON nested too deeply to be a report") from None
    reports = report if isinstance(report, list) else [report]
    for item in reports:
        result = _call(args, "submit_report", report=item, priority=args.priority)
        print(f"queued {result['id']}" + (f" at priority {args.priority}" if args.priority else ""))
    return 0


# -- converters and configuration ---------------------------------------------------------


def _load_config(paths: InstancePaths) -> Any:
    from wats_station.supervisor.config import ConfigError, load_config

    try:
        return load_config(paths)
    except ConfigError as error:
        raise CliError(f"configuration error: {error}", EXIT_USAGE) from None


def _pick_converter(config: Any, path: Path, name: str | None) -> Any:
    """The configured converter for ``path``: the one named, else the one its content calls for.

    Content decides first (a TestStand XML file is not WSXF whatever its extension); a file no
    standard converter recognises goes to the first CSV or custom converter whose patterns
    match; failing that, the error says what the file looks like.
    """
    from wats_station.converters.recognise import RECOGNISED, recognise

    if name:
        conv = config.converter(name)
        if conv is None:
            known = ", ".join(c.name for c in config.converters)
            raise CliError(f"no converter named {name!r} (configured: {known})", EXIT_USAGE)
        return conv
    try:
        standard, looks_like = recognise(path)
    except OSError as error:
        raise CliError(f"{path}: cannot read it: {error.strerror or error}") from None
    if standard is not None:
        for conv in config.converters:
            if conv.kind == "python" and conv.module == standard:
                print(f"{path}: {looks_like}: converting with {conv.name!r}", file=sys.stderr)
                return conv
    for conv in config.converters:
        if conv.kind == "python" and conv.module in RECOGNISED:
            continue  # its format is recognised by content, and this file is not it
        if any(fnmatch.fnmatch(path.name.lower(), p.lower()) for p in conv.file_patterns):
            print(f"{path}: converting with {conv.name!r} (its patterns match)", file=sys.stderr)
            return conv
    missing = f"; no converter with module {standard!r} is configured" if standard else ""
    raise CliError(
        f"{path}: no configured converter recognises this file: it looks like {looks_like}"
        f"{missing}; name one with --converter"
    )


def cmd_convert(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from wats_station.supervisor.process import describe_exit
    from wats_station.supervisor.trust import worker_environment

    config = _load_config(_paths(args))
    path = Path(args.file).absolute()
    conv = _pick_converter(config, path, args.converter)
    job = {
        "path": str(path),
        "converter": asdict(conv),
        "converters_folder": config.converters_folder,
        "station": asdict(config.station),
        "processes_file": str(_paths(args).data_dir / PROCESSES_FILE_NAME),
    }
    try:
        result = subprocess.run(
            [sys.executable, "-m", "wats_station.workers.converter", "--once"],
            input=json.dumps(job), capture_output=True, text=True, timeout=conv.deadline_s,
            env=worker_environment(os.environ),
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise CliError(
            f"{path}: converter {conv.name!r} passed its deadline of {conv.deadline_s:g} s"
        ) from None
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.returncode < 0:
        raise CliError(f"{path}: the converter process was {describe_exit(result.returncode)}")
    return 0 if result.returncode == 0 else EXIT_FAILED


def cmd_converters(args: argparse.Namespace) -> int:
    paths = _paths(args)
    try:
        converters = _call(args, "list_converters")
    except StationUnavailable:
        from wats_station.supervisor.conversions import describe_converters

        converters = describe_converters(_load_config(paths).converters)
    if args.json:
        _print_json(converters)
        return 0
    rows = [("NAME", "KIND", "ENABLED", "PATTERNS", "WATCH FOLDER", "ERRORS")]
    for c in converters:
        rows.append((
            c["name"], c["kind"], "yes" if c["enabled"] else "no", " ".join(c["file_patterns"]),
            c["watch_folder"], str(c["errors"]),
        ))  # fmt: skip
    print_table(rows)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from wats_station.supervisor.config import config_template, config_to_dict, write_config_file

    paths = _paths(args)
    if args.action == "init":
        if paths.config_file.exists() and not args.force:
            raise CliError(f"{paths.config_file} exists; use --force to replace it")
        document = config_template(
            paths, url=args.server_url or "", token=args.token or "", name=args.station_name or ""
        )
        write_config_file(paths.config_file, document)
        print(f"wrote {paths.config_file}")
        return 0
    config = _load_config(paths)
    source = paths.config_file if paths.config_file.exists() else "embedded defaults"
    if args.action == "validate":
        print(f"{source}: valid ({len(config.converters)} converters)")
        return 0
    _print_json(config_to_dict(config))
    return 0


def cmd_install_service(args: argparse.Namespace) -> int:
    from wats_station.unit import UnitInstallError, install_unit, next_steps, render_unit

    _paths(args)  # checks the instance id
    python = args.python or sys.executable
    try:
        if args.print:
            print(render_unit(python=python, user=args.user), end="")
            return 0
        path = install_unit(Path(args.target_dir), python=python, user=args.user)
    except (UnitInstallError, ValueError) as error:
        raise CliError(str(error)) from None
    print(f"wrote {path}; now run:")
    for step in next_steps(args.instance_id):
        print(f"  {step}")
    return 0


def cmd_gui(args: argparse.Namespace) -> int:
    paths = _paths(args)
    try:
        from wats_station.gui.app import run
    except ImportError as error:
        if "PySide6" not in str(error):
            raise
        raise CliError(
            "the station window needs PySide6, an optional extra: pip install 'wats-station[gui]'"
        ) from None
    return run(paths.instance)


def run_demo(argv: list[str]) -> int:
    from wats_station.demo import main as demo_main

    return demo_main(argv)


def run_emulator(argv: list[str]) -> int:
    from wats_station.emulator import main as emulator_main

    return emulator_main(argv)


# Commands that parse their own options: argparse cannot hand an option-led remainder on.
PASSTHROUGH = {"demo": run_demo, "emulator": run_emulator}


# -- the parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wats-station",
        description="Converts test result files to WATS reports, queues and uploads them.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--instance-id", default=DEFAULT_INSTANCE, help="station instance (default: %(default)s)"
    )
    common.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the station's answer"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    add("service", cmd_service, "run the station in the foreground (what systemd runs)")
    p = add("status", cmd_status, "show the station's state, server link, queue and workers")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p = add("events", cmd_events, "print live events, one line each")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--topic", action="append", help="only topics starting with this (repeatable)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p = add("workers", cmd_workers, "list, restart, stop or start workers")
    p.add_argument("action", choices=("list", "restart", "stop", "start"))
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true")
    for name, words in (("pause", "pause"), ("resume", "resume")):
        p = add(name, cmd_pause, f"{words} uploads and conversions (both unless one is named)")
        p.add_argument("--uploads", action="store_true", help=f"{words} uploads")
        p.add_argument("--conversions", action="store_true", help=f"{words} conversions")
    p = add("health", cmd_health, "the health verdict; exit 0 when ok, 1 otherwise")
    p.add_argument("--json", action="store_true", help="verdict, reasons and inputs as JSON")
    p = add("trace", cmd_trace, "the custody trail of a file (path, name, sha256) or report id")
    p.add_argument("target", metavar="FILE-OR-REPORT-ID")
    p.add_argument("--json", action="store_true")
    p = add("files", cmd_files, "list input files, or put quarantined ones back (retry)")
    p.add_argument("action", choices=("list", "retry"))
    p.add_argument("names", nargs="*", help="retry: names of quarantined files")
    p.add_argument("--state", choices=("waiting", "converting", "error", "done"))
    p.add_argument("--converter", help="only this converter's files")
    p.add_argument("--all-errors", action="store_true", help="retry: every quarantined file")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    add("stop", cmd_control("stop"), "stop the running station gracefully")
    add("restart", cmd_control("restart"), "restart every worker of the running station")
    add("reload", cmd_control("reload"), "re-read the config file (like SIGHUP)")
    add("unlock", cmd_unlock, "remove a stale instance lock left by a dead station")
    p = add("queue", cmd_queue, "inspect and manage the report queue")
    p.add_argument("action", choices=("stats", "list", "show", "retry", "clean"))
    p.add_argument("id", nargs="?", help="report id (show, retry)")
    p.add_argument("--state", choices=("pending", "processing", "completed", "failed"))
    p.add_argument("--limit", type=int, default=100)
    p.add_argument(
        "--failed", action="store_true", help="retry: every failed report; clean: failed ones too"
    )
    p.add_argument(
        "--completed", action="store_true", help="clean: completed reports (the default)"
    )
    p.add_argument(
        "--older-than", help="clean: only reports older than this (days, or 12h, 30m, 2w)"
    )
    p.add_argument("--json", action="store_true")
    p = add("submit", cmd_submit, "queue a WSJF report file through the running station")
    p.add_argument("file")
    p.add_argument(
        "--priority", type=int, default=0, help="higher uploads first in a backlog (default 0)"
    )
    p = add("convert", cmd_convert, "convert one file in a worker process and print the WSJF")
    p.add_argument("file")
    p.add_argument("--converter", help="converter name (default: picked by the file's content)")
    p = add("converters", cmd_converters, "list the configured converters and their folders")
    p.add_argument("action", choices=("list",))
    p.add_argument("--json", action="store_true")
    p = add("config", cmd_config, "write, show or check the instance's config file")
    p.add_argument("action", choices=("init", "show", "validate"))
    p.add_argument("--server-url", help="init: the WATS server URL")
    p.add_argument("--token", help="init: the API token (stored owner-only)")
    p.add_argument("--station-name", help="init: the station name")
    p.add_argument("--force", action="store_true", help="init: replace an existing file")
    p = add("install-service", cmd_install_service, "write the systemd unit wats-station@.service")
    p.add_argument("--print", action="store_true", help="print the unit instead of writing it")
    p.add_argument("--user", help="run the service as this user")
    p.add_argument("--python", help="interpreter of the station's venv (default: this one)")
    p.add_argument("--target-dir", default="/etc/systemd/system", help="where to write the unit")
    add("gui", cmd_gui, "open the station window (needs: pip install 'wats-station[gui]')")
    sub.add_parser("demo", help="watch a station convert and upload sample files (see demo -h)")
    sub.add_parser("emulator", help="run the local WATS server emulator (see emulator -h)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PASSTHROUGH:
        return PASSTHROUGH[argv[0]](argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.status
    except StationUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except CommandFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as error:  # a read-only home, a full disk, a missing folder
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as error:
        # A person gets one line; a developer who wants the traceback sets the variable.
        if os.environ.get(DEBUG_ENV):
            raise
        print(
            f"error: unexpected {type(error).__name__}: {error} (set {DEBUG_ENV}=1 to see where)",
            file=sys.stderr,
        )
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
