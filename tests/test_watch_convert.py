"""Files dropped into watch folders are converted once, and bad ones end in Error with a reason.

Real folders, real watcher, real converter processes (including a C library compiled here
that segfaults on purpose), real queue, and the emulator over HTTP.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wats_station.converters.wsxf import SERVER_SIDE_KEYS
from wats_station.emulator import Emulator
from wats_station.lab.harness import FAST_UPLOAD, REPO, wait_until
from wats_station.samples import sample_report, write_wsjf_files, write_wstf_files
from wats_station.supervisor.conversions import SIDECAR_SUFFIX
from wats_station.supervisor.queue import ReportQueue

TOKEN = "dGVzdDp0ZXN0"
SAMPLES = REPO / "scripts" / "sample_files"


@pytest.fixture
def emulator():
    with Emulator(token=TOKEN) as server:
        yield server


def config(
    emulator: Emulator, home: Path, converters: list[dict] | None = None, **sections: dict
) -> dict:
    document = {
        "server": {"url": emulator.url, "token": TOKEN},
        "upload": {**FAST_UPLOAD, "max_concurrency": 1},
        "watch": {"debounce_s": 0.3, "rescan_interval_s": 1.0},
        **sections,
    }
    if converters is not None:
        document["converters"] = converters
    return document


def folders(home: Path, name: str) -> dict[str, str]:
    watch = home / "in" / name
    return {
        "watch_folder": str(watch),
        "done_folder": str(watch / "Done"),
        "error_folder": str(watch / "Error"),
    }


def standard(home: Path, name: str, patterns: list[str], **extra: object) -> dict:
    return {"name": name, "module": name, "file_patterns": patterns, **folders(home, name), **extra}


def sidecars(error_folder: Path) -> dict[str, dict]:
    return {
        p.name[: -len(SIDECAR_SUFFIX)]: json.loads(p.read_text())
        for p in error_folder.glob(f"*{SIDECAR_SUFFIX}")
    }


def done_names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_the_wsxf_sample_arrives_as_its_wsjf_twin(make_station, emulator, home):
    station = make_station(config=config(emulator, home, [standard(home, "wsxf", ["*.xml"])]))
    watch = home / "in" / "wsxf"
    shutil.copy(SAMPLES / "uut-wsxf-export.xml", watch / "run_0042.xml")
    wait_until(lambda: emulator.stats()["unique"] == 1, 20, "the report on the server")
    (report_id,) = emulator.received_ids()
    import requests

    arrived = requests.get(
        f"{emulator.url}/api/Report/Wsjf/{report_id}",
        headers={"Authorization": f"Basic {TOKEN}"},
        timeout=5,
    ).json()
    expected = json.loads((SAMPLES / "uut-wsjf-export.json").read_text())
    for key in SERVER_SIDE_KEYS:
        expected.pop(key, None)
    assert arrived == expected
    wait_until(lambda: "run_0042.xml" in done_names(watch / "Done"), 10, "the file in Done")
    assert station.call("get_status")["files"]["converted"] == 1


def test_a_slowly_written_file_is_converted_once_after_its_last_write(make_station, emulator, home):
    make_station(config=config(emulator, home, [standard(home, "wsjf", ["*.json"])]))
    watch = home / "in" / "wsjf"
    content = json.dumps(sample_report(5), indent=1).encode()
    target = watch / "slow.json"
    with open(target, "wb") as handle:
        for start in range(0, len(content), len(content) // 12 + 1):
            handle.write(content[start : start + len(content) // 12 + 1])
            handle.flush()
            time.sleep(0.15)  # the instrument writes slowly, in bursts shorter than the debounce
    wait_until(lambda: emulator.stats()["unique"] == 1, 20, "the report")
    wait_until(lambda: "slow.json" in done_names(watch / "Done"), 10, "slow.json in Done")
    assert emulator.stats()["received"] == 1
    assert not (watch / "Error").exists() or not list((watch / "Error").iterdir())


def test_files_dropped_while_the_station_is_down_are_all_converted_once_oldest_first(
    make_station, emulator, home
):
    station = make_station(
        config=config(emulator, home, [standard(home, "wsjf", ["*.json"])]), start=False
    )
    watch = home / "in" / "wsjf"
    watch.mkdir(parents=True)
    paths = write_wsjf_files(watch, 1000)
    base = time.time() - 2000
    for index, path in enumerate(paths):  # give them distinct, increasing modification times
        os.utime(path, (base + index, base + index))
    expected = [json.loads(p.read_text())["id"] for p in paths]
    station.start()
    wait_until(lambda: emulator.stats()["unique"] == 1000, 120, "1000 reports on the server")
    assert emulator.received_ids() == expected  # one converter, one upload at a time: order kept
    wait_until(lambda: len(done_names(watch / "Done")) == 1000, 20, "1000 files in Done")
    assert not [p for p in watch.iterdir() if p.is_file()]
    assert station.call("get_queue_stats")["completed"] == 1000


def test_kill9_between_report_committed_and_file_moved_makes_no_second_report(
    make_station, emulator, home
):
    once = home / "crashed-once"
    station = make_station(
        config=config(emulator, home, [standard(home, "wstf", ["*.txt"])]),
        env={"WATS_STATION_CRASH_AT": f"after-report-committed@{once}"},
    )
    watch = home / "in" / "wstf"
    (path,) = write_wstf_files(watch, 1)
    wait_until(lambda: station.process.poll() is not None, 20, "the supervisor to kill itself")
    assert once.exists() and path.exists()  # committed, not yet moved
    station.start()
    wait_until(lambda: path.name in done_names(watch / "Done"), 20, "the file moved to Done")
    wait_until(lambda: emulator.stats()["unique"] == 1, 20, "the report on the server")
    # The server stores the report before the station hears its answer: wait for that too.
    settled = {"pending": 0, "processing": 0, "completed": 1, "failed": 0}
    wait_until(lambda: station.call("get_queue_stats") == settled, 10, "the report completed")
    assert emulator.stats()["received"] == 1


def compile_library(tmp_path: Path) -> Path:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler on this machine")
    source = tmp_path / "crashy.c"
    report = json.dumps(sample_report(0))
    template = textwrap.dedent(
        r"""
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        static const char *TEMPLATE = "%s";
        int wats_convert(const char *input_path, char **out_json, char **out_error) {
            if (strstr(input_path, "poison")) { volatile int *p = NULL; *p = 1; }
            FILE *f = fopen(input_path, "r");
            char serial[64] = {0};
            if (!f || !fgets(serial, sizeof serial, f)) {
                *out_error = strdup("unreadable");
                return 1;
            }
            fclose(f);
            serial[strcspn(serial, "\r\n")] = 0;
            size_t size = strlen(TEMPLATE) + 128;
            *out_json = malloc(size);
            snprintf(*out_json, size, TEMPLATE, serial, serial);
            return 0;
        }
        void wats_free(char *p) { free(p); }
        """
    )
    # The report's sn and id become placeholders filled from the file's content.
    body = report.replace('"sn": "SN00000000"', '"sn": "%s"')
    body = body.replace(json.loads(report)["id"], "00000000-0000-4000-8000-%012s")
    escaped = body.replace("\\", "\\\\").replace('"', '\\"')
    source.write_text(template % escaped.replace("%012s", "%s"))
    library = tmp_path / "libcrashy.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(library), str(source)], check=True)
    return library


def test_a_segfaulting_native_converter_costs_one_file_and_nothing_else(
    make_station, emulator, home, tmp_path
):
    library = compile_library(tmp_path)
    native = {
        "name": "native", "kind": "native", "library": str(library),
        "file_patterns": ["*.dat"], "max_crashes": 2, **folders(home, "native"),
    }  # fmt: skip
    station = make_station(
        config=config(
            emulator,
            home,
            [native],
            supervisor={"converter_workers": 2},
            upload={"max_concurrency": 5},
        )
    )
    watch = home / "in" / "native"
    (watch / "poison.dat").write_text("999999999999\n")
    for index in range(100):
        (watch / f"unit{index:03d}.dat").write_text(f"{index:012d}\n")
    wait_until(lambda: emulator.stats()["unique"] == 100, 60, "100 reports on the server")
    error = watch / "Error"
    reasons = wait_until(lambda: sidecars(error), 30, "the poison file's sidecar")
    assert set(reasons) == {"poison.dat"}
    assert "SIGSEGV" in reasons["poison.dat"]["error"]
    assert reasons["poison.dat"]["attempts"] == 2
    assert reasons["poison.dat"]["converter"] == "native"
    assert (error / "poison.dat").exists()
    wait_until(lambda: len(done_names(watch / "Done")) == 100, 20, "100 files in Done")
    assert emulator.stats()["received"] == 100
    wait_until(
        lambda: all(w["state"] == "running" for w in station.call("list_workers")), 10, "healthy"
    )


CONVERTERS_MODULE = """
from wats_station.converters.base import Converter


class Forever(Converter):
    name = "forever"
    file_patterns = ("*.loop",)

    def convert(self, path):
        while True:
            pass


class Hungry(Converter):
    name = "hungry"
    file_patterns = ("*.eat",)

    def convert(self, path):
        chunks = []
        while True:
            chunks.append(bytearray(16 * 1024 * 1024))
"""


def test_endless_and_greedy_python_converters_are_stopped_and_their_files_quarantined(
    make_station, emulator, home
):
    custom = home / "custom"
    custom.mkdir()
    (custom / "bad_converters.py").write_text(CONVERTERS_MODULE)
    converters = [
        {"name": "forever", "module": "bad_converters.Forever", "file_patterns": ["*.loop"],
         "deadline_s": 1.0, "max_crashes": 1, **folders(home, "forever")},
        {"name": "hungry", "module": "bad_converters.Hungry", "file_patterns": ["*.eat"],
         "memory_limit_mb": 400, **folders(home, "hungry")},
        standard(home, "wsjf", ["*.json"]),
    ]  # fmt: skip
    station = make_station(
        config={**config(emulator, home, converters), "converters_folder": str(custom)},
    )
    (home / "in" / "forever" / "spin.loop").write_text("x")
    (home / "in" / "hungry" / "feast.eat").write_text("x")
    write_wsjf_files(home / "in" / "wsjf", 5)
    forever = wait_until(
        lambda: sidecars(home / "in" / "forever" / "Error"), 30, "spin.loop quarantined"
    )
    assert "deadline" in forever["spin.loop"]["error"]
    hungry = wait_until(
        lambda: sidecars(home / "in" / "hungry" / "Error"), 30, "feast.eat quarantined"
    )
    assert "memory limit of 400 MB" in hungry["feast.eat"]["message"]
    wait_until(lambda: emulator.stats()["unique"] == 5, 30, "the good files still flow")
    assert station.call("ping")["pong"]


BAD_INPUTS = {
    "malformed.json": (b'{"type": "T", "id": ', "line 1"),
    "empty.json": (b"", "empty"),
    "garbage.json": (bytes(range(256)) * 4, "UTF-8"),
    "malformed.xml": (b"<Reports><Report></Reports>", "line 1"),
    "bomb.xml": (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        b"<Reports>&lol2;</Reports>",
        "entit",
    ),
}


def test_bad_inputs_each_end_in_error_with_a_clear_reason(make_station, emulator, home):
    station = make_station(
        config=config(
            emulator, home, [standard(home, "wsjf", ["*.json"]), standard(home, "wsxf", ["*.xml"])]
        )
    )
    for name, (content, _) in BAD_INPUTS.items():
        folder = home / "in" / ("wsxf" if name.endswith(".xml") else "wsjf")
        (folder / name).write_bytes(content)
    # A name that is not valid UTF-8, with good content: it converts like any other file.
    odd_name = os.fsencode(home / "in" / "wsjf") + b"/caf\xe9.json"
    with open(odd_name, "wb") as handle:
        handle.write(json.dumps(sample_report(9)).encode())
    # A symlink to a file outside the watch folder is not followed.
    outside = home / "secret.json"
    outside.write_text(json.dumps(sample_report(8)))
    (home / "in" / "wsjf" / "link.json").symlink_to(outside)

    def all_failed() -> dict[str, dict]:
        found = {
            **sidecars(home / "in" / "wsjf" / "Error"),
            **sidecars(home / "in" / "wsxf" / "Error"),
        }
        return found if len(found) >= len(BAD_INPUTS) + 1 else {}

    reasons = wait_until(all_failed, 30, "every bad file in Error")
    for name, (_, words) in BAD_INPUTS.items():
        text = json.dumps(reasons[name]).lower()
        assert words.lower() in text, f"{name}: {reasons[name]}"
        assert reasons[name]["converter"] in ("wsjf", "wsxf")
    assert "symlink" in reasons["link.json"]["error"]
    assert outside.exists()  # the target was not touched
    wait_until(lambda: emulator.stats()["unique"] == 1, 20, "the oddly named file's report")
    assert os.fsencode("caf\udce9.json") in {
        os.fsencode(p.name) for p in (home / "in" / "wsjf" / "Done").iterdir()
    }
    assert emulator.received_ids() == [sample_report(9)["id"]]
    assert station.call("ping")["pong"]


def test_a_file_that_vanishes_before_it_is_read_is_reported(make_station, emulator, home):
    custom = home / "custom"
    custom.mkdir()
    (custom / "slow_reader.py").write_text(
        "import time\nfrom converters.wsjf import WSJFConverter\n\n\n"
        "class Slow(WSJFConverter):\n"
        "    def convert(self, path):\n"
        "        time.sleep(1.0)\n"
        "        return super().convert(path)\n"
    )
    slow = standard(home, "wsjf", ["*.json"], module="slow_reader.Slow")
    station = make_station(
        config={**config(emulator, home, [slow]), "converters_folder": str(custom)}
    )
    path = home / "in" / "wsjf" / "vanish.json"
    path.write_text(json.dumps(sample_report(3)))

    def converting() -> bool:
        jobs = [job for w in station.call("list_workers") for job in w["jobs"]]
        return any(job["what"] == str(path) for job in jobs)

    wait_until(converting, 20, "the conversion to start")
    path.unlink()
    reasons = wait_until(lambda: sidecars(home / "in" / "wsjf" / "Error"), 20, "the sidecar")
    (reason,) = reasons.values()
    assert "vanished" in reason["message"] and reason["file"] == str(path)
    assert emulator.stats()["received"] == 0


def test_convert_cli_prints_wsjf_or_the_error(home, tmp_path):
    env = {**os.environ, "WATS_STATION_HOME": str(home)}

    def convert(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "wats_station.cli", "convert", *args],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    (path,) = write_wstf_files(tmp_path, 1)
    result = convert(str(path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["type"] == "T" and report["root"]["steps"]
    again = json.loads(convert(str(path)).stdout)
    assert again["id"] == report["id"]  # same file, same report id
    bad = tmp_path / "bad.txt"
    bad.write_text("--Header-Start--\nSerialNumber\tX\n")
    failed = convert(str(bad), "--converter", "wstf")
    assert failed.returncode == 1 and "bad.txt" in failed.stderr and not failed.stdout
    unknown = convert(str(path), "--converter", "nope")
    assert unknown.returncode == 2 and "no converter named 'nope'" in unknown.stderr


def test_converters_list_shows_each_converter_and_its_folders(make_station, emulator, home):
    station = make_station(config={"server": {"url": emulator.url}})
    listed = json.loads(station.cli("converters", "list", "--json", check=True).stdout)
    assert [c["name"] for c in listed] == [
        "wsjf", "wsxf", "wstf", "csv", "atml", "teststand-xml", "openhtf"
    ]  # fmt: skip
    for entry in listed:
        assert entry["kind"] == "python"
        assert entry["watch_folder"].startswith(str(home))
        assert entry["done_folder"] and entry["error_folder"]
    station.stop()
    stopped = json.loads(station.cli("converters", "list", "--json", check=True).stdout)
    assert [c["watch_folder"] for c in stopped] == [c["watch_folder"] for c in listed]


def test_a_bad_converter_entry_is_refused_naming_it_and_the_key(make_station, home):
    station = make_station(
        config={"converters": [{"name": "x", "kind": "process", "file_patterns": ["*.x"]}]},
        start=False,
    )
    result = station.cli("config", "validate")
    assert result.returncode == 2
    assert "converters[0].command" in result.stderr


def test_reports_are_recorded_with_their_source_file(make_station, emulator, home):
    station = make_station(config=config(emulator, home, [standard(home, "wstf", ["*.txt"])]))
    write_wstf_files(home / "in" / "wstf", 3, uuts_per_file=2)
    wait_until(lambda: emulator.stats()["unique"] == 6, 30, "six reports from three files")
    station.stop()
    queue = ReportQueue(station.paths.queue_db)
    try:
        assert queue.source_stats()["done"] == 3
    finally:
        queue.close()
