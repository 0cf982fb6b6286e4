"""The folder watcher reports each input file once, only after it is completely written."""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from watchdog.observers import Observer

from wats_station.workers import folder_watch
from wats_station.workers.folder_watch import FolderWatcher, ReadyFile, WatchSpec

FAR_FUTURE_NS = time.time_ns() + 3600 * 10**9


class Recorder:
    """Collects what the watcher reports, with the time each report arrived."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ready: list[tuple[float, ReadyFile]] = []
        self.rejected: list[tuple[Path, str]] = []

    def on_ready(self, ready: ReadyFile) -> None:
        with self._lock:
            self.ready.append((time.monotonic(), ready))

    def on_rejected(self, path: Path, reason: str) -> None:
        with self._lock:
            self.rejected.append((path, reason))

    def files(self) -> list[ReadyFile]:
        with self._lock:
            return [ready for _, ready in self.ready]

    def names(self) -> list[str]:
        return [ready.path.name for ready in self.files()]

    def wait_for(self, predicate: Callable[[Recorder], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"condition not met within {timeout} s; reported {self.names()}, "
                    f"rejected {self.rejected}"
                )
            time.sleep(0.01)

    def wait_for_name(self, name: str, count: int = 1, timeout: float = 5.0) -> None:
        self.wait_for(lambda rec: rec.names().count(name) >= count, timeout)


WatcherFactory = Callable[..., FolderWatcher]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def make_watcher(recorder: Recorder) -> Iterator[WatcherFactory]:
    """Starts watchers with test-sized delays; stops them and checks no thread is left."""
    threads_before = set(threading.enumerate())
    watchers: list[FolderWatcher] = []

    def make(folder: Path, *, patterns: tuple[str, ...] = ("*.txt",), **options) -> FolderWatcher:
        options.setdefault("debounce_s", 0.2)
        options.setdefault("rescan_interval_s", 30.0)  # long: events, not rescans, must work
        specs = options.pop("specs", [WatchSpec("wstf", folder, patterns)])
        watcher = FolderWatcher(
            specs, recorder.on_ready, on_rejected=recorder.on_rejected, **options
        )
        watchers.append(watcher)
        watcher.start()
        return watcher

    try:
        yield make
    finally:
        for watcher in watchers:
            watcher.stop()
    leftover = [thread for thread in threading.enumerate() if thread not in threads_before]
    assert leftover == [], f"threads still running after stop(): {leftover}"


def write(path: Path, text: str = "data\n", mtime_ns: int | None = None) -> Path:
    path.write_text(text)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def write_marker(folder: Path, name: str = "marker.txt") -> Path:
    """A file written last and dated last: once it is reported, every earlier file was decided."""
    return write(folder / name, "marker\n", FAR_FUTURE_NS)


def test_files_present_at_start_are_reported_oldest_first(inbox, recorder, make_watcher):
    base = time.time_ns() - 3600 * 10**9
    for name, age in [("c.txt", 3), ("a.txt", 1), ("e.txt", 5), ("b.txt", 2), ("d.txt", 4)]:
        write(inbox / name, mtime_ns=base - age * 10**9)

    make_watcher(inbox)

    recorder.wait_for(lambda rec: len(rec.files()) == 5)
    assert recorder.names() == ["e.txt", "d.txt", "c.txt", "b.txt", "a.txt"]
    assert all(ready.path.is_absolute() and ready.converter == "wstf" for ready in recorder.files())


def test_new_file_is_reported_once_after_the_debounce(inbox, recorder, make_watcher):
    make_watcher(inbox, debounce_s=0.3)
    written_at = time.monotonic()
    path = write(inbox / "run.txt", "hello\n")

    recorder.wait_for_name("run.txt")
    write_marker(inbox)
    recorder.wait_for_name("marker.txt")

    [(reported_at, ready)] = [item for item in recorder.ready if item[1].path == path]
    assert reported_at - written_at >= 0.3
    st = path.stat()
    assert (ready.size, ready.mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_files_in_one_folder_go_to_the_converter_whose_pattern_matches(
    inbox, recorder, make_watcher
):
    specs = [WatchSpec("wstf", inbox, ("*.txt",)), WatchSpec("wsxf", inbox, ("*.xml",))]
    make_watcher(inbox, specs=specs)
    write(inbox / "a.txt")
    write(inbox / "b.xml")

    recorder.wait_for(lambda rec: len(rec.files()) == 2)
    assert {ready.path.name: ready.converter for ready in recorder.files()} == {
        "a.txt": "wstf",
        "b.xml": "wsxf",
    }


def test_slow_writer_is_reported_once_with_its_final_size(inbox, recorder, make_watcher):
    make_watcher(inbox, debounce_s=0.3)
    path = inbox / "slow.txt"
    chunk = b"x" * 1000

    def write_slowly() -> None:
        with path.open("wb") as out:
            for _ in range(15):  # a chunk every 0.1 s for 1.5 s: pauses shorter than the debounce
                out.write(chunk)
                out.flush()
                time.sleep(0.1)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    try:
        recorder.wait_for_name("slow.txt")
    finally:
        writer.join()
    write_marker(inbox)
    recorder.wait_for_name("marker.txt")

    reports = [ready for ready in recorder.files() if ready.path == path]
    assert [ready.size for ready in reports] == [15 * len(chunk)]


def test_file_renamed_into_place_is_reported_under_its_final_name(inbox, recorder, make_watcher):
    make_watcher(inbox)
    partial = write(inbox / "run.txt.tmp", "complete report\n")
    os.replace(partial, inbox / "run.txt")

    recorder.wait_for_name("run.txt")
    write_marker(inbox)
    recorder.wait_for_name("marker.txt")
    assert recorder.names() == ["run.txt", "marker.txt"]
    assert recorder.files()[0].size == len("complete report\n")


def test_hidden_temporary_unmatched_names_and_directories_are_ignored(
    inbox, recorder, make_watcher
):
    ignored = [".hidden.txt", "a.tmp", "b.TMP", "c.temp", "d.txt.part", "e.partial"]
    ignored += ["f.crdownload", "~g.txt", "h.txt~", ".i.txt.swp", "notes.csv"]
    if sys.platform != "win32":
        ignored.append("UPPER.TXT")  # patterns are case-sensitive except on Windows
    make_watcher(inbox)
    for name in ignored:
        write(inbox / name)
    (inbox / "folder.txt").mkdir()
    write(inbox / "folder.txt" / "inner.txt")  # the watch is not recursive

    write_marker(inbox)
    recorder.wait_for_name("marker.txt")
    assert recorder.names() == ["marker.txt"]


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_symlinks_are_rejected_and_never_reported(tmp_path, inbox, recorder, make_watcher):
    outside = write(tmp_path / "secret.txt", "not for upload\n")
    inside = write(inbox / "real.dat")
    make_watcher(inbox)
    (inbox / "outside.txt").symlink_to(outside)
    (inbox / "inside.txt").symlink_to(inside)

    recorder.wait_for(lambda rec: len(rec.rejected) == 2)
    write_marker(inbox)
    recorder.wait_for_name("marker.txt")

    reasons = dict(recorder.rejected)
    assert "outside the watch folder" in reasons[inbox / "outside.txt"]
    assert "symlinks are not followed" in reasons[inbox / "inside.txt"]
    assert recorder.names() == ["marker.txt"]
    assert outside.read_text() == "not for upload\n"


def test_file_that_vanishes_before_it_is_stable_is_dropped(inbox, recorder, make_watcher):
    make_watcher(inbox, debounce_s=0.5)
    write(inbox / "gone.txt").unlink()

    write_marker(inbox)
    recorder.wait_for_name("marker.txt")
    assert recorder.names() == ["marker.txt"]


def test_polling_mode_reports_new_files(inbox, recorder, make_watcher):
    watcher = make_watcher(inbox, polling=True)
    write(inbox / "share.txt")

    recorder.wait_for_name("share.txt")
    assert watcher.warnings == []


def _observer_out_of_instances() -> Observer:
    raise OSError(errno.EMFILE, "inotify instance limit reached")


class _ObserverOutOfWatches(Observer):
    def schedule(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "inotify watch limit reached")


# We cannot exhaust the kernel's inotify limits without root, so we swap in an observer that
# fails the way watchdog does when they are hit.
@pytest.mark.parametrize("failing_observer", [_observer_out_of_instances, _ObserverOutOfWatches])
def test_falls_back_to_polling_when_inotify_limits_are_hit(
    inbox, recorder, make_watcher, monkeypatch, failing_observer
):
    monkeypatch.setattr(folder_watch, "Observer", failing_observer)
    watcher = make_watcher(inbox, rescan_interval_s=60.0)
    write(inbox / "late.txt")

    recorder.wait_for_name("late.txt")
    [warning] = watcher.warnings
    assert "limit reached" in warning
    assert "polling" in warning
    assert "fs.inotify.max_user_watches" in warning
    assert "fs.inotify.max_user_instances" in warning


# An honest way to lose events: inotify watches the folder's inode, so when someone replaces
# the folder (renames it away and creates a new one at the same path) no event ever arrives for
# files written into the new folder. A second watcher without rescans shows the events are lost.
@pytest.mark.skipif(sys.platform != "linux", reason="relies on inotify watching the inode")
def test_rescan_finds_files_whose_events_were_missed(tmp_path, inbox):
    with_rescan, events_only = Recorder(), Recorder()
    write(inbox / "before.txt")
    watchers = [
        FolderWatcher(
            [WatchSpec("wstf", inbox, ("*.txt",))],
            rec.on_ready,
            debounce_s=0.1,
            rescan_interval_s=rescan_s,
        )
        for rec, rescan_s in [(with_rescan, 1.0), (events_only, 60.0)]
    ]
    try:
        for watcher in watchers:
            watcher.start()
        for rec in (with_rescan, events_only):
            rec.wait_for_name("before.txt")
        os.rename(inbox, tmp_path / "replaced-inbox")
        inbox.mkdir()
        write(inbox / "after.txt")

        with_rescan.wait_for_name("after.txt")
        assert events_only.names() == ["before.txt"]
    finally:
        for watcher in watchers:
            watcher.stop()


def test_unchanged_file_is_reported_again_after_the_rereport_interval(
    inbox, recorder, make_watcher
):
    make_watcher(inbox, debounce_s=0.1, rereport_after_s=0.5)
    write(inbox / "stuck.txt")

    recorder.wait_for_name("stuck.txt", count=2)
    (first_at, first), (second_at, second) = recorder.ready[:2]
    assert second == first
    assert second_at - first_at >= 0.5


def test_changed_file_is_reported_again_as_a_new_candidate(inbox, recorder, make_watcher):
    make_watcher(inbox)
    path = write(inbox / "run.txt", "one\n")
    recorder.wait_for_name("run.txt")
    with path.open("a") as out:
        out.write("two\n")

    recorder.wait_for_name("run.txt", count=2)
    assert [ready.size for ready in recorder.files()] == [4, 8]


def test_forget_lets_the_next_rescan_report_the_file_again(inbox, recorder, make_watcher):
    watcher = make_watcher(inbox, rescan_interval_s=0.5)
    path = write(inbox / "kept.txt")
    recorder.wait_for_name("kept.txt")

    watcher.forget(path)  # nothing touches the file again: only a rescan can find it

    recorder.wait_for_name("kept.txt", count=2)
    first, second = recorder.files()
    assert first == second


def test_stop_is_idempotent_and_leaves_no_threads(inbox, recorder):
    threads_before = set(threading.enumerate())
    watcher = FolderWatcher([WatchSpec("wstf", inbox, ("*.txt",))], recorder.on_ready)
    watcher.stop()  # before start: harmless
    watcher = FolderWatcher([WatchSpec("wstf", inbox, ("*.txt",))], recorder.on_ready)
    watcher.start()
    watcher.stop()
    watcher.stop()

    assert [t for t in threading.enumerate() if t not in threads_before] == []
    with pytest.raises(RuntimeError, match="starts only once"):
        watcher.start()


def test_spec_without_patterns_is_refused(inbox, recorder):
    with pytest.raises(ValueError, match=r"converter 'wstf' .* has no file name patterns"):
        FolderWatcher([WatchSpec("wstf", inbox, ())], recorder.on_ready)


def test_missing_folder_is_created_and_an_impossible_one_only_warns(
    tmp_path, recorder, make_watcher
):
    missing = tmp_path / "new" / "inbox"
    blocked = write(tmp_path / "a-file") / "inbox"
    specs = [WatchSpec("wstf", missing, ("*.txt",)), WatchSpec("csv", blocked, ("*.csv",))]
    watcher = make_watcher(missing, specs=specs)

    assert missing.is_dir()
    [warning] = watcher.warnings
    assert str(blocked) in warning
    assert "converter csv" in warning
    write(missing / "run.txt")
    recorder.wait_for_name("run.txt")


@pytest.mark.skipif(sys.platform != "linux", reason="file names are arbitrary bytes on Linux only")
def test_name_that_is_not_utf8_is_reported(inbox, recorder, make_watcher):
    raw_name = b"run-\xff\xfe.txt"
    make_watcher(inbox)
    with open(os.path.join(os.fsencode(inbox), raw_name), "wb") as out:
        out.write(b"bytes\n")

    recorder.wait_for(lambda rec: len(rec.files()) == 1)
    [ready] = recorder.files()
    assert os.fsencode(ready.path.name) == raw_name
    assert ready.path.read_bytes() == b"bytes\n"


def test_thousand_files_dropped_at_once_are_each_reported_once(inbox, recorder, make_watcher):
    make_watcher(inbox, rescan_interval_s=2.0)
    for index in range(1000):
        write(inbox / f"run_{index:04}.txt", f"run {index}\n")
    write_marker(inbox)

    recorder.wait_for_name("marker.txt", timeout=15.0)
    counts = Counter(recorder.names())
    assert len(counts) == 1001
    assert set(counts.values()) == {1}
    assert all(ready.size == len(ready.path.read_text()) for ready in recorder.files())


def test_startup_scan_of_ten_thousand_files_is_fast(inbox, recorder, make_watcher):
    for index in range(10_000):
        (inbox / f"run_{index:05}.txt").write_bytes(b"x")

    started = time.monotonic()
    make_watcher(inbox, debounce_s=0.2)
    recorder.wait_for(lambda rec: len(rec.ready) == 10_000, timeout=10.0)
    elapsed = time.monotonic() - started

    # Two stats per file (scan, then the end of the quiet period) plus the 0.2 s debounce.
    assert elapsed < 1.2, f"10,000 files took {elapsed:.2f} s to report"
