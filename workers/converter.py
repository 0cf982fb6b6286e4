"""The converter worker: runs one converter on one file at a time, in a process of its own.

Third-party converters (Python classes, external programs, native libraries) run only
here, so a segfault, a hang or a memory leak costs this process and one file, never the
queue. Every report is validated as WSJF and serialised here, before it leaves, so the
supervisor commits bytes it can trust without parsing them again.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

from wats_station.converters.base import ConversionError, Report, ensure_report_ids
from wats_station.converters.registry import load_converter_class
from wats_station.converters.wsjf import (
    InvalidReport,
    report_json,
    serialise_submitted,
    validate_report,
)
from wats_station.ipc.contract import WorkerKind
from wats_station.ipc.protocol import (
    ErrorCode,
    JobKind,
    MsgType,
    ProtocolError,
    check_fields,
    decode,
)
from wats_station.workers.base import JobError, Worker, run_worker
from wats_station.workers.crashpoints import crash_point
from wats_station.workers.dropped import NotReadable, read_dropped

MB = 1024 * 1024
# submit_report's arguments as the control API declares them (supervisor.control); the
# supervisor checks the priority's range when it queues the report.
SUBMIT_ARGS = {
    "report": ((dict, str, bytes), True),
    "replace": ((bool,), False),
    "priority": ((int,), False),
}


class ConverterWorker(Worker):
    kind = WorkerKind.CONVERTER

    def configure(self, settings: dict[str, Any]) -> None:
        self.capacity = 1
        self.settings_by_name = {c["name"]: c for c in settings["converters"]}
        folder = settings.get("converters_folder")
        self.search_paths = [Path(folder)] if folder else []
        self.station = settings.get("station", {})
        self.max_file_bytes = settings["max_file_bytes"]
        self.processes_file = settings.get("processes_file")
        self._instances: dict[str, Any] = {}
        self._limit_memory()

    def _limit_memory(self) -> None:
        limits = [c["memory_limit_mb"] for c in self.settings_by_name.values()]
        if not limits:
            return
        # One limit per process: the most generous converter's. A converter that needs less
        # is still stopped long before it can starve the station.
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = max(limits) * MB
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

    def converter(self, name: str) -> Any:
        if name not in self._instances:
            self._instances[name] = build_converter(
                self.settings_by_name[name], self.search_paths, self.station, self.processes_file
            )
        return self._instances[name]

    def run_job(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        if kind == JobKind.VALIDATE:
            return self.validate_request(data["frame"])
        path = Path(os.fsdecode(data["path"]))
        name = data["converter"]
        if name not in self.settings_by_name:
            raise JobError(f"no converter named {name!r} is configured")
        self.set_title(f"converting {path.name}")
        crash_point("before-convert", name)
        try:
            converter = self.converter(name)
            content = read_dropped(path, self.max_file_bytes)
            reports = ensure_report_ids(list(converter.convert(path)), content)
        except ConversionError as error:
            raise JobError(str(error), converter=name) from None
        except FileNotFoundError:
            raise JobError(f"{path} vanished before it could be read", converter=name) from None
        except NotReadable as error:
            raise JobError(f"{path.name}: {error}", converter=name) from None
        except MemoryError:
            # The heap may be in any state now: report, then let the supervisor restart us.
            self.exit_after_job = True
            limit = self.settings_by_name[name]["memory_limit_mb"]
            raise JobError(
                f"the converter exceeded the memory limit of {limit} MB", converter=name
            ) from None
        if not reports:
            raise JobError(
                f"converter {name!r} produced no report from {path.name}", converter=name
            )
        return {
            "reports": [serialise(report, index, path) for index, report in enumerate(reports)],
            "converter_version": str(getattr(converter, "version", "") or ""),
        }

    def validate_request(self, frame: bytes) -> dict[str, Any]:
        """A big ``submit_report`` request, decoded and validated here instead of in the
        supervisor's loop; errors carry the code and request id for the client's reply."""
        request_id = None
        try:
            message = decode(frame, self.args.max_message_bytes)
            request_id = message.id
            body = message.body
            if message.type is not MsgType.REQUEST or body["command"] != "submit_report":
                raise JobError(
                    "only submit_report requests may be this large",
                    code=str(ErrorCode.BAD_ARGUMENTS),
                    request_id=request_id,
                )
            args = body.get("args") or {}
            try:
                check_fields("submit_report", SUBMIT_ARGS, args, request_id)
            except ProtocolError as error:
                code = str(ErrorCode.BAD_ARGUMENTS)
                raise JobError(str(error), code=code, request_id=request_id) from None
            report_id, payload = serialise_submitted(args["report"])
        except ProtocolError as error:
            raise JobError(str(error), code=str(error.code), request_id=error.request_id) from None
        except InvalidReport as error:
            code = str(ErrorCode.INVALID_REPORT)
            raise JobError(f"invalid report: {error}", code=code, request_id=request_id) from None
        return {
            "request_id": request_id,
            "reports": [{"id": report_id, "json": payload}],
            "priority": args.get("priority") or 0,
            "replace": bool(args.get("replace")),
        }


def serialise(report: Report, index: int, path: Path) -> dict[str, Any]:
    try:
        validate_report(report)
        payload = report_json(report)
    except InvalidReport as error:
        raise JobError(f"report {index + 1} of {path.name} is not valid WSJF: {error}") from None
    return {"id": report["id"], "json": payload}


def build_converter(
    settings: dict[str, Any],
    search_paths: list[Path],
    station: dict[str, Any],
    processes_file: str | None = None,
) -> Any:
    arguments = {
        "station_name": station.get("name"),
        "location": station.get("location"),
        "purpose": station.get("purpose"),
        **settings["arguments"],
    }
    kind = settings["kind"]
    if kind == "python":
        cls = load_converter_class(settings["module"], search_paths)
        converter = cls(**arguments)
        # Not an argument: user converters need not know it; those that look names up read it.
        converter.processes_file = Path(processes_file) if processes_file else None
        return converter
    if kind == "process":
        from wats_station.converters.external import ProcessConverter

        # Time out a little before the supervisor's deadline, so the error keeps the
        # command's stderr instead of being a bare kill of this worker.
        return ProcessConverter(
            command=settings["command"],
            output=settings["output"],
            timeout_s=0.9 * settings["deadline_s"],
            env=settings["arguments"].get("env") or {},
        )
    from wats_station.converters.native import NativeConverter

    return NativeConverter(library=Path(settings["library"]))


def convert_once() -> int:
    """``python -m wats_station.workers.converter --once``: convert the file named in the JSON
    job on stdin and print its reports as WSJF JSON; the tool behind ``wats-station convert``."""
    job = json.load(sys.stdin)
    path = Path(job["path"])
    settings = job["converter"]
    folder = job.get("converters_folder")
    try:
        converter = build_converter(
            settings, [Path(folder)] if folder else [], job["station"], job.get("processes_file")
        )
        reports = ensure_report_ids(list(converter.convert(path)), path.read_bytes())
        if not reports:
            raise JobError(f"converter {settings['name']!r} produced no report from {path.name}")
        serialised = [serialise(report, index, path) for index, report in enumerate(reports)]
    except (ConversionError, JobError, OSError, ValueError) as error:
        message = str(error)
        # Converters name the file in their messages already; say it once.
        print(message if message.startswith(str(path)) else f"{path}: {message}", file=sys.stderr)
        return 1
    documents = [json.loads(item["json"]) for item in serialised]
    json.dump(documents[0] if len(documents) == 1 else documents, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--once"]:
        raise SystemExit(convert_once())
    run_worker(ConverterWorker)
