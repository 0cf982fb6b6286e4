"""The demo: a whole station at work in under a minute, on embedded defaults.

It starts a WATS emulator and a station instance in a temporary home, drops the real sample
files (WSJF, WSXF) plus generated WSTF and CSV files and one broken file into the standard
watch folders, shows progress while they flow, then says what happened and where to look.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wats_station.emulator import Emulator
from wats_station.ipc.client import StationClient, StationUnavailable
from wats_station.ipc.endpoints import HOME_ENV, instance_paths
from wats_station.samples import write_csv_files, write_wstf_files
from wats_station.supervisor.conversions import SIDECAR_SUFFIX

SAMPLE_FILES = Path(__file__).resolve().parent / "sample_files"
TOKEN = "ZGVtbzpkZW1v"  # base64 of demo:demo, as a WATS admin would issue it
DEADLINE_S = 120.0


def drop_files(drop: Path) -> dict[str, list[Path]]:
    """Put the demo's input files into the standard converters' folders."""
    for name in ("wsjf", "wsxf", "wstf", "csv"):
        (drop / name).mkdir(parents=True, exist_ok=True)
    dropped: dict[str, list[Path]] = {}
    for sample, converter in [
        ("new_report_example.json", "wsjf"),
        ("uur_example.json", "wsjf"),
        ("uut-wsxf-export.xml", "wsxf"),
    ]:
        target = drop / converter / sample
        shutil.copy(SAMPLE_FILES / sample, target)
        dropped.setdefault(converter, []).append(target)
    dropped["wstf"] = write_wstf_files(drop / "wstf", 20, uuts_per_file=2, failing_every=7)
    dropped["csv"] = write_csv_files(drop / "csv", 10)
    broken = drop / "wsjf" / "broken_run.json"
    broken.write_text('{"type": "T", "sn": "SN-BROKEN", ')  # a test program died mid-write
    dropped["wsjf"].append(broken)
    return dropped


def remaining_inputs(drop: Path) -> int:
    return sum(1 for folder in drop.iterdir() for entry in folder.iterdir() if entry.is_file())


def progress_line(status: dict[str, Any], server: dict[str, int], left: int) -> str:
    files, queue = status["files"], status["queue"]
    return (
        f"  files: {files['converted']} converted, {files['failed']} to Error, {left} waiting | "
        f"reports: {queue.get('pending', 0) + queue.get('processing', 0)} queued, "
        f"{queue.get('completed', 0)} uploaded | server has {server['unique']} | "
        f"server link {status['server']['state']}"
    )


def run(home: Path, keep_running: bool) -> int:
    paths = instance_paths("default", env={HOME_ENV: str(home)})
    env = {**os.environ, HOME_ENV: str(home)}
    for key in ("WATS_STATION_SERVER_URL", "WATS_STATION_TOKEN", "WATS_STATION_CRASH_AT"):
        env.pop(key, None)
    with Emulator(token=TOKEN, store_dir=home / "server") as emulator:
        config = {
            "server": {"url": emulator.url, "token": TOKEN},
            "watch": {"debounce_s": 0.3, "rescan_interval_s": 2.0},
        }
        paths.config_file.parent.mkdir(parents=True, exist_ok=True)
        paths.config_file.write_text(json.dumps(config, indent=2))
        print(f"WATS emulator listening on {emulator.url}")
        print(f"station home {home}\n")
        log = open(home / "station.out", "wb")  # noqa: SIM115 - closed in finally
        station = subprocess.Popen(
            [sys.executable, "-m", "wats_station.cli", "service"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            return watch_it_work(station, paths, emulator, home, keep_running)
        finally:
            stop(station)
            log.close()


def watch_it_work(station: subprocess.Popen, paths: Any, emulator: Emulator, home: Path,
                  keep_running: bool) -> int:  # fmt: skip
    client = StationClient(paths=paths, timeout_s=2.0)
    started = time.monotonic()
    while True:
        if station.poll() is not None:
            print(f"the station exited ({station.returncode}); see {home / 'station.out'}")
            return 1
        try:
            if client.call("get_status")["state"] == "running":
                break
        except StationUnavailable:
            pass
        time.sleep(0.1)
    print(f"station running after {time.monotonic() - started:.1f} s; dropping files...")
    drop = paths.data_dir / "drop"
    dropped = drop_files(drop)
    total = sum(len(files) for files in dropped.values())
    print(f"dropped {total} files into {drop}/{{wsjf,wsxf,wstf,csv}}\n")
    deadline = time.monotonic() + DEADLINE_S
    last_line = ""
    while time.monotonic() < deadline:
        status = client.call("get_status")
        left = remaining_inputs(drop)
        line = progress_line(status, emulator.stats(), left)
        if line != last_line:
            print(line, flush=True)
            last_line = line
        queue = status["queue"]
        if (
            left == 0
            and not status["files"]["waiting"]
            and not queue["pending"] + queue["processing"]
        ):
            break
        time.sleep(0.5)
    else:
        print("\nthe demo did not finish in time; the station's log says why")
    summarise(client.call("get_status"), emulator, drop, home, paths, time.monotonic() - started)
    client.close()
    if keep_running:
        print("\nThe station keeps running; press Ctrl-C to stop it.")
        try:
            station.wait()
        except KeyboardInterrupt:
            pass
    return 0


def summarise(status: dict[str, Any], emulator: Emulator, drop: Path, home: Path, paths: Any,
              seconds: float) -> None:  # fmt: skip
    server = emulator.stats()
    print(f"\nDone in {seconds:.1f} s.")
    print(f"  converted   {status['files']['converted']} files into {status['queue']['completed']} "
          f"reports, all uploaded: the emulator holds {server['unique']} reports "
          f"({server['duplicates']} resent by id)")  # fmt: skip
    errors = sorted(drop.glob(f"*/Error/*{SIDECAR_SUFFIX}"))
    print(f"  errors      {len(errors)} file(s) in an Error folder, each with a reason beside it:")
    for sidecar in errors:
        reason = json.loads(sidecar.read_text())
        text = reason.get("error") or reason.get("message") or "?"
        print(f"              {sidecar.name.removesuffix(SIDECAR_SUFFIX)}: {text.splitlines()[0]}")
    print("\nWhere to look:")
    print(f"  input files     {drop}/<converter>/Done and /Error")
    print(f"  queue database  {paths.queue_db}")
    print(f"  station log     {paths.log_file}")
    print(f"  what the server received   {home / 'server'}")
    print(
        f"  try             {HOME_ENV}={home} .venv/bin/wats-station status   (with --keep-running)"
    )


def stop(station: subprocess.Popen) -> None:
    if station.poll() is None:
        station.send_signal(signal.SIGTERM)
        try:
            station.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(station.pid, signal.SIGKILL)
            station.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wats-station demo", description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="use this folder instead of a new temporary one")
    parser.add_argument("--keep-running", action="store_true", help="leave the station running")
    args = parser.parse_args(argv)
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="wats-demo-", dir="/tmp"))
    home.mkdir(parents=True, exist_ok=True)
    return run(home.absolute(), args.keep_running)


if __name__ == "__main__":
    raise SystemExit(main())
