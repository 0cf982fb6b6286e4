"""The watcher worker: tells the supervisor about every completely written input file.

The folder bookkeeping lives in ``workers.folder_watch``; this module only turns its
callbacks into FILE_READY / FILE_REJECTED messages, with the file's fingerprint (size, mtime,
sha256) read safely through one handle (``workers.dropped``): hashing is the watcher's work, so
the supervisor never reads a dropped file. Reporting a file twice is harmless (the supervisor
recognises its fingerprint); reporting a half-written one is what the stability check prevents.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from wats_station.ipc.contract import WorkerKind
from wats_station.ipc.protocol import Message, MsgType
from wats_station.workers.base import Worker, run_worker
from wats_station.workers.dropped import FileChanged, NotReadable, fingerprint
from wats_station.workers.folder_watch import FolderWatcher, ReadyFile, WatchSpec

log = logging.getLogger("wats-station")

FINISHED_FOLDERS = ("done_folder", "error_folder")


class WatcherWorker(Worker):
    kind = WorkerKind.WATCHER

    def configure(self, settings: dict[str, Any]) -> None:
        watch = settings["watch"]
        specs = [
            WatchSpec(
                c["name"],
                Path(c["watch_folder"]),
                tuple(c["file_patterns"]),
                recursive=c["recursive"],
                max_depth=c["max_depth"],
            )
            for c in settings["converters"]
        ]
        # Where converted and failed files go is never input, whichever tree it lies in.
        excluded = [Path(c[key]) for c in settings["converters"] for key in FINISHED_FOLDERS]
        self.capacity = 1
        self.max_file_bytes = int(watch["max_file_mb"] * 1024 * 1024)
        self.folders = FolderWatcher(
            specs,
            self._ready,
            on_rejected=self._rejected,
            excluded=excluded,
            debounce_s=watch["debounce_s"],
            rescan_interval_s=watch["rescan_interval_s"],
            polling=watch["polling"],
        )
        self._folder_count = len({spec.folder for spec in specs})

    def start(self) -> None:
        self.folders.start()
        for warning in self.folders.warnings:
            log.warning("%s", warning)
        self.set_title(f"watching {self._folder_count} folder(s)")

    def stop(self) -> None:
        folders = getattr(self, "folders", None)
        if folders is not None:
            folders.stop()

    def _ready(self, file: ReadyFile) -> None:
        try:
            size, mtime_ns, sha256 = fingerprint(file.path, self.max_file_bytes)
        except FileNotFoundError:
            return  # gone before we looked: nothing to convert, nothing lost
        except FileChanged:
            self.folders.forget(file.path)  # still being written: seen again at the next event
            return
        except NotReadable as error:
            self._rejected(file.path, str(error))
            return
        except OSError as error:
            log.warning("cannot read %s: %s", file.path, error)
            return
        body = {
            "converter": file.converter,
            "path": os.fsencode(file.path),
            "size": size,
            "mtime_ns": mtime_ns,
            "sha256": sha256,
        }
        self.post(Message(MsgType.FILE_READY, body))

    def _rejected(self, path: Path, reason: str) -> None:
        converter = self.folders.converter_of(path) or ""
        body = {"converter": converter, "path": os.fsencode(path), "reason": reason}
        self.post(Message(MsgType.FILE_REJECTED, body))


if __name__ == "__main__":
    run_worker(WatcherWorker)
