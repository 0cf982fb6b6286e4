"""Watch the converters' input folders and report each file once it is completely written.

Events from watchdog are only hints: a file is reported when a stat shows its size and mtime
unchanged for the debounce time, and a periodic rescan catches whatever the events missed
(overflowed queues, network shares, a folder replaced under the watch). One checker thread
owns all the bookkeeping; it sleeps until the next stability check or rescan is due.

A recursive spec also takes files in subfolders, down to its ``max_depth``. The rescan walks
the tree itself and is what decides: it never enters an excluded folder (the converters' Done
and Error folders, wherever they are), another spec's watch folder, a hidden folder or a
symlinked one, and it reports a folder it cannot list once (again only after it recovered).
The events come from one recursive inotify watch on the root (watchdog adds a watch per
subfolder as folders appear or move in), filtered by the same rules. A folder moved out of the
tree may keep its watch and send events under its old path: a stat finds nothing there, so
they cost nothing. Polling observes the root only: a recursive poll would list the whole tree,
Done included, every second; the rescan finds files in subfolders instead.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import re
import stat
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)
# watchdog warns when a recursive watch meets a folder it already watches (mkdir -p races its
# own walk); the watch is kept, so the warning only fills the log.
warnings.filterwarnings("ignore", r"Callback with id .* already exists", RuntimeWarning, "watchdog")

# watchdog holds every IN_MOVED_FROM for 0.5 s to pair it with its IN_MOVED_TO, and every event
# behind it waits too. Moving a converted file to Done/ (inside the watched folder, but not
# watched) made the next file dropped within 0.5 s wait that long. Events are only hints here
# (the stat decides), so unpaired moves cost nothing: they pass at once.
InotifyMoveEventGrouper.delay = 0.0

TEMPORARY_NAME_PATTERNS = (
    "*.tmp",
    "*.temp",
    "*.part",
    "*.partial",
    "*.crdownload",
    "~*",
    "*~",
    "*.swp",
)
HINT_EVENTS = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileClosedEvent,
    FileDeletedEvent,
]
JOIN_TIMEOUT_S = 5.0
MAX_USER_WATCHES = "/proc/sys/fs/inotify/max_user_watches"
INOTIFY_LIMIT_HINT = (
    "raise the limits, e.g. `sudo sysctl fs.inotify.max_user_watches=524288 "
    "fs.inotify.max_user_instances=512` (persist them in /etc/sysctl.d/)"
)


@dataclass(frozen=True)
class WatchSpec:
    """One converter's input folder and the file names it takes."""

    converter: str
    folder: Path
    patterns: tuple[str, ...]
    recursive: bool = False
    max_depth: int | None = None  # subfolder levels taken when recursive; None: all

    def takes_depth(self, depth: int) -> bool:
        """Whether files `depth` subfolder levels below the watch folder are this spec's."""
        if depth == 0:
            return True
        return self.recursive and (self.max_depth is None or depth <= self.max_depth)

    @property
    def depth_limit(self) -> float:
        if not self.recursive:
            return 0
        return float("inf") if self.max_depth is None else self.max_depth


@dataclass(frozen=True)
class ReadyFile:
    """A file whose size and mtime held still for the debounce time."""

    converter: str
    path: Path
    size: int
    mtime_ns: int


@dataclass
class _Candidate:
    """What we last saw of one file, and when."""

    converter: str
    size: int
    mtime_ns: int
    stable_since: float
    rejection: str | None = None
    reported_at: float | None = None
    # A rename changes the inode's ctime, not its mtime: a file moved out to Error and put back
    # (``files retry``) between two looks is a new arrival, not the one reported before.
    ctime_ns: int = 0

    @property
    def signature(self) -> tuple[int, int, int]:
        return (self.size, self.mtime_ns, self.ctime_ns)


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


class _HintHandler(FileSystemEventHandler):
    def __init__(self, hint: Callable[[str], None]) -> None:
        self._hint = hint

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        self._hint(os.fsdecode(event.src_path))
        if event.dest_path:
            self._hint(os.fsdecode(event.dest_path))


def _compile_patterns(patterns: Sequence[str], flags: int = 0) -> re.Pattern[str]:
    # One regex per pattern list: a rescan tests every name in the folder.
    return re.compile("|".join(fnmatch.translate(pattern) for pattern in patterns), flags)


_TEMPORARY_NAME = _compile_patterns(TEMPORARY_NAME_PATTERNS, re.IGNORECASE)
# Spec patterns fold case only where the file system does, as fnmatch.fnmatch would.
_PATTERN_FLAGS = re.IGNORECASE if os.name == "nt" else 0


def is_ignored_name(name: str) -> bool:
    """Hidden and temporary names: writers use them for files that are not finished yet."""
    return name.startswith(".") or _TEMPORARY_NAME.match(name) is not None


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _symlink_rejection(path: Path) -> str:
    target = Path(os.path.realpath(path))
    folder = Path(os.path.realpath(path.parent))
    if target.is_relative_to(folder):
        return f"symlink to {target}: symlinks are not followed"
    return f"symlink to {target}, outside the watch folder {folder}: symlinks are not followed"


def _rejection(path: Path, mode: int) -> str | None:
    """Why a file that is not a regular file is never read (reported once, then moved away)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return _symlink_rejection(path)
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"{kind}, not a regular file: it is not read"


class FolderWatcher:
    def __init__(
        self,
        specs: Sequence[WatchSpec],
        on_ready: Callable[[ReadyFile], None],
        *,
        on_rejected: Callable[[Path, str], None] | None = None,
        excluded: Sequence[Path] = (),
        debounce_s: float = 1.0,
        rescan_interval_s: float = 10.0,
        polling: bool = False,
        rereport_after_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._folders: dict[Path, list[tuple[WatchSpec, re.Pattern[str]]]] = {}
        for spec in specs:
            if not spec.patterns:
                raise ValueError(
                    f"watch spec for converter {spec.converter!r} ({spec.folder}) has no file "
                    "name patterns, so it would take no files"
                )
            matcher = _compile_patterns(spec.patterns, _PATTERN_FLAGS)
            self._folders.setdefault(Path(os.path.abspath(spec.folder)), []).append((spec, matcher))
        self._depth_limit = {
            folder: max(spec.depth_limit for spec, _ in specs)
            for folder, specs in self._folders.items()
        }
        # Compared by the path as spelt and as resolved: Done may be named through a symlink.
        self._excluded = {Path(os.path.abspath(folder)) for folder in excluded}
        self._excluded |= {_real(folder) for folder in self._excluded}
        self._excluded -= set(self._folders)
        # A walk never follows a symlink, so below a root the resolved path is the root's
        # resolved path plus the relative one: one realpath per root, not one per folder.
        self._real_roots = {folder: _real(folder) for folder in self._folders}
        self._unwalkable = {str(folder) for folder in (*self._excluded, *self._folders)}
        self._on_ready = on_ready
        self._on_rejected = on_rejected
        self._debounce_s = debounce_s
        self._rescan_interval_s = rescan_interval_s
        self._polling = polling
        self._rereport_after_s = rereport_after_s
        self._clock = clock

        # Reentrant because _warn is called both with and without the lock held.
        self._lock = threading.RLock()
        self._tracked: dict[Path, _Candidate] = {}
        self._hints: set[Path] = set()
        self._warnings: list[str] = []
        self._unavailable_folders: set[Path] = set()
        self._symlinked_folders: set[Path] = set()
        self._errors: dict[Path, OSError] = {}
        self._watch_limit_warned = False
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._observers: list[BaseObserver] = []
        self._checker: threading.Thread | None = None

    @property
    def warnings(self) -> list[str]:
        with self._lock:
            return list(self._warnings)

    def start(self) -> None:
        """Scan the folders (files already there are reported oldest first), then follow events."""
        if self._checker is not None or self._stopping.is_set():
            raise RuntimeError("a FolderWatcher starts only once; create a new one instead")
        for folder in self._folders:
            self._create_folder(folder)
        self._start_observers()
        self._checker = threading.Thread(target=self._run, name="folder-watch-checker", daemon=True)
        self._checker.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        observers, self._observers = self._observers, []
        for observer in observers:
            observer.stop()
        for observer in observers:
            observer.join(JOIN_TIMEOUT_S)
        if self._checker is not None:
            self._checker.join(JOIN_TIMEOUT_S)
            if self._checker.is_alive():
                log.warning("folder watcher thread did not stop within %.0f s", JOIN_TIMEOUT_S)

    def converter_of(self, path: Path) -> str | None:
        """The converter whose spec takes this file, if any."""
        spec = self._spec_for(Path(os.path.abspath(path)))
        return spec.converter if spec else None

    def forget(self, path: Path) -> None:
        with self._lock:
            self._tracked.pop(Path(os.path.abspath(path)), None)

    # -- setup -------------------------------------------------------------------------------

    def _warn(self, message: str) -> None:
        log.warning("%s", message)
        with self._lock:
            self._warnings.append(message)

    def _create_folder(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            converters = ", ".join(spec.converter for spec, _ in self._folders[folder])
            self._warn(
                f"watch folder {folder} (converter {converters}) does not exist and cannot be "
                f"created: {exc}; its files are not seen until it appears"
            )
            self._unavailable_folders.add(folder)

    def _start_observers(self) -> None:
        handler = _HintHandler(self._hint)
        folders = [folder for folder in self._folders if folder not in self._unavailable_folders]
        native = None if self._polling else self._start_native_observer(len(folders))
        polling: BaseObserver | None = None
        for folder in folders:
            # Recursive: one inotify watch per subfolder (Done and Error ones inside the tree
            # too: watchdog cannot leave them out; their events are dropped by _spec_for).
            # They count against fs.inotify.max_user_watches; a subfolder watchdog could not
            # watch (the limit) is still covered by the rescan.
            recursive = self._depth_limit[folder] > 0
            if native is not None:
                try:
                    native.schedule(
                        handler, str(folder), recursive=recursive, event_filter=HINT_EVENTS
                    )
                    continue
                except OSError as exc:
                    self._warn(
                        f"cannot watch {folder} with {type(native).__name__} ({exc}); "
                        f"polling it instead{self._limit_hint(exc)}"
                    )
            if polling is None:
                polling = PollingObserver()
                polling.start()
                self._observers.append(polling)
            try:
                polling.schedule(handler, str(folder), event_filter=HINT_EVENTS)
            except OSError as exc:
                self._warn(f"cannot poll {folder} ({exc}); only the periodic rescan covers it")

    def _start_native_observer(self, folder_count: int) -> BaseObserver | None:
        try:
            observer = Observer()
            observer.start()
        except OSError as exc:
            self._warn(
                f"cannot start the file system event observer ({exc}); polling all "
                f"{folder_count} watch folders instead{self._limit_hint(exc)}"
            )
            return None
        self._observers.append(observer)
        return observer

    @staticmethod
    def _limit_hint(exc: OSError) -> str:
        if exc.errno in (errno.ENOSPC, errno.EMFILE):
            return f"; the inotify limits were hit: {INOTIFY_LIMIT_HINT}"
        return ""

    # -- hints from the observer threads -----------------------------------------------------

    def _spec_for(self, path: Path) -> WatchSpec | None:
        """The spec of the nearest watch folder above `path` that takes it, if any."""
        if is_ignored_name(path.name):
            return None
        folder = path.parent
        if folder in self._folders:  # the common case: a file at the top of a watch folder
            return self._spec_in(folder, 0, path.name)
        between = []
        while folder not in self._folders:
            if is_ignored_name(folder.name) or folder in self._excluded:
                return None
            if folder.parent == folder:
                return None
            between.append(folder)
            folder = folder.parent
        real_root = self._real_roots[folder]
        if any(real_root / sub.relative_to(folder) in self._excluded for sub in between):
            return None  # under an excluded folder spelt another way (through a symlink)
        return self._spec_in(folder, len(between), path.name)

    def _spec_in(self, root: Path, depth: int, name: str) -> WatchSpec | None:
        if depth == 0:
            return next(
                (spec for spec, matcher in self._folders[root] if matcher.match(name)), None
            )
        return next(
            (
                spec
                for spec, matcher in self._folders[root]
                if spec.takes_depth(depth) and matcher.match(name)
            ),
            None,
        )

    def _hint(self, raw_path: str) -> None:
        path = Path(raw_path)
        if self._spec_for(path) is None:
            return
        with self._lock:
            self._hints.add(path)
        self._wake.set()

    # -- the checker thread ------------------------------------------------------------------

    def _run(self) -> None:
        next_rescan = self._clock()
        while not self._stopping.is_set():
            now = self._clock()
            try:
                with self._lock:
                    if now >= next_rescan:
                        next_rescan = now + self._rescan_interval_s
                        self._rescan(now)
                    self._apply_hints(now)
                    batch = self._collect_due(now)
                    next_wake = min([next_rescan, *map(self._due_at, self._tracked.values())])
            except Exception:
                # A bug or a file system surprise must not end the watching for good.
                log.exception("folder watcher check failed; trying again at the next rescan")
                batch, next_wake = [], next_rescan
            self._emit(batch)
            self._wake.wait(max(0.0, next_wake - self._clock()))
            self._wake.clear()

    def _rescan(self, now: float) -> None:
        present: set[Path] = set()
        unavailable: set[Path] = set()
        folders = sum(self._scan_tree(root, now, present, unavailable) for root in self._folders)
        self._check_watch_limit(folders)
        for folder in sorted(unavailable - self._unavailable_folders):
            self._warn(f"{self._cannot_list(folder)}; retrying every rescan")
        self._unavailable_folders = unavailable
        self._errors = {folder: self._errors[folder] for folder in unavailable}
        for path in self._tracked.keys() - present:
            # An unlistable folder tells us nothing about its files: keep them.
            if not any(folder in unavailable for folder in path.parents):
                del self._tracked[path]

    def _scan_tree(self, root: Path, now: float, present: set[Path], unavailable: set[Path]) -> int:
        """List `root` and, for a recursive spec, its subfolders down to the depth limit;
        returns how many folders were listed."""
        # Strings, not Paths, while walking: a tree of thousands of folders is walked at
        # every rescan, and only the files that match become Paths.
        limit = self._depth_limit[root]
        pending = [(root, str(root), str(self._real_roots[root]), 0)]
        listed = 0
        while pending:
            folder_path, folder, real, depth = pending.pop()
            listed += 1
            try:
                with os.scandir(folder) as listing:
                    entries = [
                        (entry.name, entry.is_dir(follow_symlinks=False), entry.is_symlink())
                        for entry in listing
                    ]
            except (FileNotFoundError, NotADirectoryError) as exc:
                if depth == 0:
                    unavailable.add(root)
                    self._errors[root] = exc
                continue  # a subfolder removed while we walked: nothing to take from it
            except OSError as exc:
                unavailable.add(folder_path)
                self._errors[folder_path] = exc
                continue
            for name, is_dir, is_link in entries:
                if is_dir:
                    if depth < limit and self._walkable(folder, real, name):
                        pending.append((
                            folder_path / name, os.path.join(folder, name),
                            os.path.join(real, name), depth + 1,
                        ))  # fmt: skip
                elif is_link and os.path.isdir(os.path.join(folder, name)):
                    link = folder_path / name
                    if depth < limit and link not in self._symlinked_folders:
                        self._symlinked_folders.add(link)
                        self._warn(f"not following {link}: a symlink to the folder {_real(link)}")
                elif not is_ignored_name(name) and (spec := self._spec_in(root, depth, name)):
                    path = folder_path / name
                    present.add(path)
                    self._update(path, spec, _lstat(path), now)
        return listed

    def _walkable(self, folder: str, real: str, name: str) -> bool:
        if is_ignored_name(name):
            return False
        path = os.path.join(folder, name)
        # Another spec's watch folder is scanned as its own root.
        return not ({path, os.path.join(real, name)} & self._unwalkable)

    def _check_watch_limit(self, folders: int) -> None:
        """Warn once when the trees come near the inotify watch limit: watchdog skips a
        subfolder it cannot watch without a word, and only the rescan would find its files."""
        if self._polling or self._watch_limit_warned or folders < 1000:
            return
        try:
            limit = int(Path(MAX_USER_WATCHES).read_text())
        except (OSError, ValueError):
            return
        if folders > limit // 2:
            self._watch_limit_warned = True
            self._warn(
                f"the watch folders hold {folders} folders, more than half of the "
                f"{limit} inotify watches a user may have; files in folders beyond the "
                f"limit are found only by the rescan: {INOTIFY_LIMIT_HINT}"
            )

    def _cannot_list(self, folder: Path) -> str:
        error = self._errors.get(folder)
        if folder in self._folders:
            return f"cannot list watch folder {folder} ({error})"
        return f"cannot list subfolder {folder} of a watch folder ({error}); its files wait"

    def _apply_hints(self, now: float) -> None:
        hints, self._hints = self._hints, set()
        for path in hints:
            spec = self._spec_for(path)
            if spec is not None:
                self._update(path, spec, _lstat(path), now)

    def _update(
        self, path: Path, spec: WatchSpec, st: os.stat_result | None, now: float
    ) -> _Candidate | None:
        """Record what a stat showed; a changed size or mtime starts the debounce again."""
        if (
            st is None
            or stat.S_ISDIR(st.st_mode)
            or (stat.S_ISLNK(st.st_mode) and path.is_dir())  # a folder: not followed, not moved
        ):
            self._tracked.pop(path, None)
            return None
        candidate = self._tracked.get(path)
        if candidate is None or candidate.signature != (
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
        ):
            rejection = _rejection(path, st.st_mode)
            candidate = _Candidate(
                spec.converter, st.st_size, st.st_mtime_ns, now, rejection, ctime_ns=st.st_ctime_ns
            )
            self._tracked[path] = candidate
        return candidate

    def _due_at(self, candidate: _Candidate) -> float:
        if candidate.reported_at is not None:
            return candidate.reported_at + self._rereport_after_s
        if candidate.rejection is not None:
            return candidate.stable_since
        return candidate.stable_since + self._debounce_s

    def _collect_due(self, now: float) -> list[tuple[Path, _Candidate]]:
        due = [path for path, candidate in self._tracked.items() if self._due_at(candidate) <= now]
        batch = []
        for path in due:
            spec = self._spec_for(path)
            if spec is None:  # a folder on its way was renamed or excluded since
                del self._tracked[path]
                continue
            # The stat at the end of the quiet period is what proves the file stable.
            candidate = self._update(path, spec, _lstat(path), now)
            if candidate is not None and self._due_at(candidate) <= now:
                candidate.reported_at = now
                batch.append((path, candidate))
        batch.sort(key=lambda item: (item[1].mtime_ns, item[0]))
        return batch

    def _emit(self, batch: list[tuple[Path, _Candidate]]) -> None:
        for path, candidate in batch:
            if self._stopping.is_set():
                return
            try:
                if candidate.rejection is None:
                    self._on_ready(
                        ReadyFile(candidate.converter, path, candidate.size, candidate.mtime_ns)
                    )
                elif self._on_rejected is not None:
                    self._on_rejected(path, candidate.rejection)
            except Exception:
                log.exception("folder watcher callback failed for %s", path)
