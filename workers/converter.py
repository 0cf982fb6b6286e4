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
from wats_station.converters.wsjf import InvalidReport, validate_report
from wats_station.workers.base import JobError, Worker, run_worker
from wats_station.workers.crashpoints import crash_point

MB = 1024 * 1024


class ConverterWorker(Worker):
    kind = "converter"

    def configure(self, settings: dict[str, Any]) -> None:
        self.capacity = 1
        self.settings_by_name = {c["name"]: c for c in settings["converters"]}
        folder = settings.get("converters_folder")
        self.search_paths = [Path(folder)] if folder else []
        self.station = settings.get("station", {})
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
                self.settings_by_name[name], self.search_paths, self.station
            )
        return self._instances[name]

    def run_job(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        path = Path(os.fsdecode(data["path"]))
        name = data["converter"]
        if name not in self.settings_by_name:
            raise JobError(f"no converter named {name!r} is configured")
        self.set_title(f"converting {path.name}")
        crash_point("before-convert", name)
        try:
            converter = self.converter(name)
            content = path.read_bytes()
            reports = ensure_report_ids(list(converter.convert(path)), content)
        except ConversionError as error:
            raise JobError(str(error), converter=name) from None
        except FileNotFoundError:
            raise JobError(f"{path} vanished before it could be read", converter=name) from None
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


def serialise(report: Report, index: int, path: Path) -> dict[str, Any]:
    try:
        validate_report(report)
    except InvalidReport as error:
        raise JobError(f"report {index + 1} of {path.name} is not valid WSJF: {error}") from None
    return {
        "id": report["id"],
        "json": json.dumps(report, ensure_ascii=False, separators=(",", ":")).encode(),
    }


def build_converter(
    settings: dict[str, Any], search_paths: list[Path], station: dict[str, Any]
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
        return cls(**arguments)
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
        converter = build_converter(settings, [Path(folder)] if folder else [], job["station"])
        reports = ensure_report_ids(list(converter.convert(path)), path.read_bytes())
        if not reports:
            raise JobError(f"converter {settings['name']!r} produced no report from {path.name}")
        serialised = [serialise(report, index, path) for index, report in enumerate(reports)]
    except (ConversionError, JobError, OSError, ValueError) as error:
        print(f"{path}: {error}", file=sys.stderr)
        return 1
    documents = [json.loads(item["json"]) for item in serialised]
    json.dump(documents[0] if len(documents) == 1 else documents, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--once"]:
        raise SystemExit(convert_once())
    run_worker(ConverterWorker)
