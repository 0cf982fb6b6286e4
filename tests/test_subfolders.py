"""Recursive watch folders: every file of the tree is taken once, and nothing from Done or Error.

The watcher tests run the real FolderWatcher (inotify and rescans) on real folders; the station
test runs real processes end to end against the emulator.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wats_station.emulator import Emulator
from wats_station.lab.harness import wait_until
from wats_station.samples import sample_report
from wats_station.supervisor.config import ConfigError, ConverterSettings, parse_config
from wats_station.supervisor.conversions import SIDECAR_SUFFIX, post_action
from wats_station.workers.folder_watch import FolderWatcher, ReadyFile, WatchSpec

TOKEN = "dHJlZTp0cmVl"
DEEP = Path("lineA") / "2026-12-01" / "cell3"  # three levels below the watch folder


class Seen:
    """What a watcher reported, thread-safe enough for list appends."""

    def __init__(self) -> None:
        self.ready: list[ReadyFile] = []
        self.rejected: list[tuple[Path, str]] = []

    def paths(self) -> Counter[Path]:
        return Counter(ready.path for ready in list(self.ready))


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def make_watcher(seen: Seen) -> Iterator[Callable[..., FolderWatcher]]:
    watchers: list[FolderWatcher] = []

    def make(specs: list[WatchSpec], **options: object) -> FolderWatcher:
        options.setdefault("debounce_s", 0.1)
        options.setdefault("rescan_interval_s", 30.0)  # long: the events must do the work
        watcher = FolderWatcher(
            specs,
            seen.ready.append,
            on_rejected=lambda path, reason: seen.rejected.append((path, reason)),
            **options,
        )
        watchers.append(watcher)
        watcher.start()
        return watcher

    try:
        yield make
    finally:
        for watcher in watchers:
            watcher.stop()


def put(path: Path, text: str = "data\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def tree_spec(root: Path, **options: object) -> WatchSpec:
    return WatchSpec("wsjf", root, ("*.json",), recursive=True, **options)


def test_files_three_levels_deep_before_and_after_the_start_are_reported_once(
    tmp_path, seen, make_watcher
):
    root = tmp_path / "drop"
    before = put(root / DEEP / "before.json")
    top = put(root / "top.json")
    make_watcher([tree_spec(root)], excluded=[root / "Done", root / "Error"])
    wait_until(lambda: {before, top} <= set(seen.paths()), 5, "the files present at start")

    after = put(root / "lineB" / "new" / "deeper" / "after.json")  # folders made after start
    wait_until(lambda: after in seen.paths(), 5, "a file in folders created after the start")
    moved_in = put(tmp_path / "elsewhere" / "x" / "y" / "moved.json")
    os.rename(tmp_path / "elsewhere", root / "lineC")
    moved = root / "lineC" / "x" / "y" / "moved.json"
    wait_until(lambda: moved in seen.paths(), 5, "a file in a folder moved into the tree")

    assert not moved_in.exists()
    assert set(seen.paths().values()) == {1}
    assert {ready.converter for ready in seen.ready} == {"wsjf"}


def test_done_error_hidden_symlinked_and_too_deep_folders_are_never_taken(
    tmp_path, seen, make_watcher
):
    root = tmp_path / "drop"
    outside = tmp_path / "outside"
    put(outside / "linked.json")
    done_elsewhere = root / "lineA" / "Done"  # Done may sit anywhere in the tree
    for folder in (root / "Error" / "lineA", done_elsewhere / "x", root / ".partial"):
        put(folder / "never.json")
    put(root / "a" / "b" / "c" / "too_deep.json")
    put(root / "a" / "b" / "ok.json")
    (root / "a" / "link").symlink_to(outside, target_is_directory=True)
    watcher = make_watcher(
        [tree_spec(root, max_depth=2)], excluded=[done_elsewhere, root / "Error"]
    )
    wait_until(lambda: root / "a" / "b" / "ok.json" in seen.paths(), 5, "the file in reach")

    for folder in (root / "Error" / "lineB", done_elsewhere / "y"):  # written after the start
        put(folder / "later.json")
    put(root / "a" / "b" / "c" / "later_too_deep.json")
    marker = put(root / "a" / "marker.json")
    wait_until(lambda: marker in seen.paths(), 5, "the marker")

    assert set(seen.paths()) == {root / "a" / "b" / "ok.json", marker}
    assert seen.rejected == []
    warnings = [w for w in watcher.warnings if "symlink" in w]
    assert len(warnings) == 1 and str(outside) in warnings[0]


def test_an_excluded_folder_spelt_through_a_symlink_is_still_excluded(tmp_path, seen, make_watcher):
    root = tmp_path / "drop"
    (root / "Done").mkdir(parents=True)
    (tmp_path / "done-link").symlink_to(root / "Done", target_is_directory=True)
    make_watcher([tree_spec(root)], excluded=[tmp_path / "done-link"])
    put(root / "Done" / "line" / "converted.json")
    marker = put(root / "line" / "marker.json")
    wait_until(lambda: marker in seen.paths(), 5, "the marker")
    assert set(seen.paths()) == {marker}


def test_done_named_by_its_real_path_under_a_symlinked_watch_folder_is_excluded(
    tmp_path, seen, make_watcher
):
    real_root = tmp_path / "drop"
    (real_root / "Done").mkdir(parents=True)
    root = tmp_path / "drop-link"
    root.symlink_to(real_root, target_is_directory=True)
    put(root / "Done" / "line" / "converted.json")
    make_watcher([tree_spec(root)], excluded=[real_root / "Done"], rescan_interval_s=0.1)
    put(root / "Done" / "line" / "converted_later.json")
    marker = put(root / "line" / "marker.json")
    wait_until(lambda: marker in seen.paths(), 5, "the marker")  # written last: decided last
    assert set(seen.paths()) == {marker}


def test_a_nested_watch_folder_belongs_to_its_own_converter(tmp_path, seen, make_watcher):
    root = tmp_path / "drop"
    inner = root / "csv-line"
    csv_spec = WatchSpec("csv", inner, ("*",))
    make_watcher([WatchSpec("any", root, ("*",), recursive=True), csv_spec])
    deep = put(root / "x" / "deep.txt")
    own = put(inner / "own.csv")
    put(inner / "sub" / "not_recursive.csv")
    wait_until(lambda: {deep, own} <= set(seen.paths()), 5, "both files")
    marker = put(root / "marker.txt")
    wait_until(lambda: marker in seen.paths(), 5, "the marker")
    assert {r.path: r.converter for r in seen.ready} == {deep: "any", own: "csv", marker: "any"}


def test_polling_takes_subfolder_files_by_the_rescan(tmp_path, seen, make_watcher):
    root = tmp_path / "drop"
    make_watcher([tree_spec(root)], polling=True, rescan_interval_s=0.2, excluded=[root / "Done"])
    deep = put(root / DEEP / "polled.json")
    put(root / "Done" / "lineA" / "old.json")
    wait_until(lambda: deep in seen.paths(), 5, "the file three levels down")
    marker = put(root / "marker.json")
    wait_until(lambda: marker in seen.paths(), 5, "the marker")
    assert set(seen.paths()) == {deep, marker}


def test_a_non_recursive_spec_ignores_subfolders(tmp_path, seen, make_watcher):
    root = tmp_path / "drop"
    put(root / "sub" / "inner.json")
    make_watcher([WatchSpec("wsjf", root, ("*.json",))], rescan_interval_s=0.1)
    put(root / "sub" / "later.json")
    marker = put(root / "marker.json")
    wait_until(lambda: marker in seen.paths(), 5, "the marker")  # written last: decided last
    assert set(seen.paths()) == {marker}


def test_a_tree_near_the_inotify_watch_limit_is_reported_once(
    tmp_path, seen, make_watcher, monkeypatch
):
    from wats_station.workers import folder_watch

    limit_file = tmp_path / "max_user_watches"
    limit_file.write_text("1500\n")
    monkeypatch.setattr(folder_watch, "MAX_USER_WATCHES", str(limit_file))
    root = tmp_path / "drop"
    for line in range(1000):
        (root / f"line{line:04}").mkdir(parents=True)
    deep = put(root / "line0999" / "x.json")
    watcher = make_watcher([tree_spec(root)], rescan_interval_s=0.05)
    wait_until(lambda: deep in seen.paths(), 10, "the file")
    wait_until(lambda: any("inotify watches" in w for w in watcher.warnings), 5, "the warning")
    marker = put(root / "marker.json")
    wait_until(lambda: marker in seen.paths(), 5, "the marker, a few rescans later")
    about_limit = [w for w in watcher.warnings if "inotify watches" in w]
    assert len(about_limit) == 1 and "1001 folders" in about_limit[0] and "1500" in about_limit[0]


UNREADABLE_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys, time
    from pathlib import Path
    # Loaded by file: this interpreter may be one an unprivileged user can run, without our venv.
    spec = importlib.util.spec_from_file_location("folder_watch", sys.argv[2])
    folder_watch = importlib.util.module_from_spec(spec)
    sys.modules["folder_watch"] = folder_watch
    spec.loader.exec_module(folder_watch)
    root = Path(sys.argv[1])
    seen = []
    watcher = folder_watch.FolderWatcher(
        [folder_watch.WatchSpec("wsjf", root, ("*.json",), recursive=True)],
        seen.append, debounce_s=0.05, rescan_interval_s=0.05)
    watcher.start()
    deadline = time.monotonic() + 20
    while len(seen) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # about ten more rescans, each of which meets the locked folder again
    watcher.stop()
    print(json.dumps({"warnings": watcher.warnings, "seen": [str(r.path) for r in seen]}))
    """
)
SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="needs POSIX permissions")
@pytest.mark.timeout(60)
def test_an_unreadable_subfolder_is_reported_once_and_the_rest_flows():
    import watchdog

    from wats_station.workers import folder_watch

    if os.getuid() == 0:  # root reads any folder: run the watcher as nobody instead
        if not SYSTEM_PYTHON.exists():
            pytest.skip("running as root and no system python to run as nobody")
        command = [str(SYSTEM_PYTHON)]
        options = {"user": 65534, "group": 65534, "extra_groups": []}
    else:
        command, options = [sys.executable], {}
    site = str(Path(watchdog.__file__).parents[1])
    top = Path(tempfile.mkdtemp(prefix="ws-tree-"))
    try:
        top.chmod(0o755)
        root = top / "drop"
        readable = put(root / "open" / "ok.json")
        put(root / "locked" / "inner.json")
        (root / "locked").chmod(0)
        result = subprocess.run(
            [*command, "-c", UNREADABLE_SCRIPT, str(root), folder_watch.__file__],
            capture_output=True, text=True, timeout=40, env={**os.environ, "PYTHONPATH": site},
            **options,
        )  # fmt: skip
        (root / "locked").chmod(0o755)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["seen"] == [str(readable)]
    about_locked = [w for w in outcome["warnings"] if str(root / "locked") in w]
    assert len(about_locked) == 1, outcome["warnings"]
    assert "Permission denied" in about_locked[0]


# -- where a file from a subfolder ends up --------------------------------------------------


def converter_settings(root: Path, **options: object) -> ConverterSettings:
    return ConverterSettings(
        name="wsjf",
        module="wsjf",
        watch_folder=str(root),
        done_folder=str(root / "Done"),
        error_folder=str(root / "Error"),
        recursive=True,
        **options,
    )


def test_move_and_archive_keep_the_relative_path(tmp_path):
    root = tmp_path / "drop"
    moved = post_action(put(root / DEEP / "x.json"), converter_settings(root))
    assert moved == str(root / "Done" / DEEP / "x.json")
    again = post_action(put(root / DEEP / "x.json"), converter_settings(root))
    assert again == str(root / "Done" / DEEP / "x (2).json")

    archived = post_action(
        put(root / "lineA" / "y.json"), converter_settings(root, post_action="archive")
    )
    zip_path, name = archived.rsplit(":", 1)
    assert name == "lineA/y.json"
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.read("lineA/y.json") == b"data\n"
    assert post_action(put(root / "top.json"), converter_settings(root)) == str(
        root / "Done" / "top.json"
    )


def test_recursive_max_depth_and_priority_are_checked_config_keys(tmp_path):
    from wats_station.ipc.endpoints import instance_paths

    paths = instance_paths("t", env={"WATS_STATION_HOME": str(tmp_path)})
    base = {"name": "w", "module": "wsjf"}
    config = parse_config(
        {"converters": [{**base, "recursive": True, "max_depth": 3, "priority": 5}]}, paths, env={}
    )
    assert (config.converters[0].recursive, config.converters[0].max_depth) == (True, 3)
    assert config.converters[0].priority == 5
    default = parse_config({"converters": [base]}, paths, env={}).converters[0]
    assert (default.recursive, default.max_depth, default.priority) == (False, None, 0)
    bad = {
        "max_depth: only applies with 'recursive': true": {"max_depth": 2},
        "max_depth: must be between 1 and 1000, got 0": {"recursive": True, "max_depth": 0},
        "max_depth: must be an integer": {"recursive": True, "max_depth": "deep"},
        "priority: must be between -1000 and 1000, got 5000": {"priority": 5000},
        "recursive: must be true or false": {"recursive": "yes"},
    }
    for message, keys in bad.items():
        with pytest.raises(ConfigError, match=f"converters\\[0\\]\\.{message}"):
            parse_config({"converters": [{**base, **keys}]}, paths, env={})


# -- end to end -----------------------------------------------------------------------------


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(token=TOKEN) as server:
        yield server


def good_report(unit: int) -> str:
    return json.dumps(sample_report(unit))


@pytest.mark.timeout(90)
def test_a_station_takes_a_tree_converts_each_file_once_and_keeps_its_path(
    make_station, emulator, home
):
    root = home / "drop"
    before = {DEEP / "a.json": 1, Path("lineB") / "b.json": 2, Path("c.json"): 3}
    for relative, unit in before.items():
        put(root / relative, good_report(unit))
    put(root / DEEP / "bad.json", "{not json")
    converter = {
        "name": "wsjf", "module": "wsjf", "file_patterns": ["*.json"], "recursive": True,
        "watch_folder": str(root), "priority": 0,
    }  # fmt: skip
    station = make_station(
        config={
            "server": {"url": emulator.url, "token": TOKEN},
            "upload": {"max_concurrency": 2},
            "watch": {"debounce_s": 0.2, "rescan_interval_s": 0.3},
            "converters": [converter],
        }
    )
    after = Path("lineC") / "2026-12-02" / "cell9" / "d.json"  # folders made after the start
    put(root / after, good_report(4))

    done = root / "Done"
    expected = [*before, after]
    wait_until(
        lambda: all((done / relative).exists() for relative in expected), 30, "all files in Done"
    )
    error_file = root / "Error" / DEEP / "bad.json"
    wait_until(error_file.exists, 15, "the bad file in Error under its path")
    reason = json.loads((root / "Error" / DEEP / f"bad.json{SIDECAR_SUFFIX}").read_text())
    assert "bad.json" in reason["file"] and "malformed JSON" in reason["message"]
    wait_until(lambda: emulator.stats()["unique"] == 4, 30, "four reports on the server")

    # Several rescans later nothing was taken again from Done or Error.
    files = station.call("get_status")["files"]
    first_seen = wait_until(lambda: station.call("get_status")["uptime_s"], 5, "uptime")
    wait_until(lambda: station.call("get_status")["uptime_s"] > first_seen + 1.5, 10, "rescans")
    status = station.call("get_status")
    assert status["files"]["converted"] == files["converted"] == 4
    assert status["files"]["failed"] == files["failed"] == 1
    assert emulator.stats()["unique"] == 4 and len(emulator.received_ids()) == 4
    assert sorted(p.relative_to(done) for p in done.rglob("*.json")) == sorted(expected)
    assert not any(root.glob("lineA/**/*.json")) and not (root / "c.json").exists()

    # The operator fixes the bad file where it lies and retries it: it goes back into its own
    # subfolder, is converted once and lands in Done under the same relative path.
    (errors,) = [f for f in station.call("list_files", state="error") if f["name"] == "bad.json"]
    assert errors["path"] == str(error_file)
    error_file.write_text(good_report(5))
    station.call("retry_files", names=["bad.json"])
    wait_until(lambda: (done / DEEP / "bad.json").exists(), 30, "the fixed file in Done/lineA/…")
    wait_until(lambda: emulator.stats()["unique"] == 5, 30, "its report on the server")
    assert not error_file.exists() and emulator.stats()["duplicates"] == 0
