"""One pass of the supervisor's loop and what must wait for its commit (group commit).

Every queue write of a pass goes into one transaction (``ReportQueue.group``): one fsync per
pass instead of one per file. Whatever may only happen once those writes are durable waits in
the Turn until the commit: answering a client, publishing an event, moving a converted file
to Done, a crash point that promises "committed". Directories touched by those moves are
fsynced once each, and writes that must follow a move (marking the file done) go into the next
pass's transaction, after the moves are on disk.

Outside a pass (start-up recovery) every action runs at once.

If the commit fails (a full disk), nothing of the pass is durable: its after-commit actions are
dropped (no answer, event or job goes out), the undo actions registered with ``on_rollback``
bring the handlers' memory back in line with the database (files to be taken again, claims
forgotten), the next-pass writes that ran in it wait for the next pass again, and the error is
raised for the loop to tell the queue guard. Next-pass writes wait while ``may_write`` says the
queue cannot be written, so a full disk does not make the loop spin.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from wats_station.supervisor.atomic import fsync_dir
from wats_station.supervisor.queue import ReportQueue

log = logging.getLogger("wats-station")

Action = Callable[[], None]


class Turn:
    def __init__(self, queue: ReportQueue, may_write: Callable[[], bool] = lambda: True) -> None:
        self.queue = queue
        self.may_write = may_write
        self.open = False
        self._first: list[Action] = []
        self._after: list[Action] = []
        self._undo: list[Action] = []
        self._next: list[Action] = []
        self._dirs: set[Path] = set()
        self._syncing = False
        self.failure: BaseException | None = None  # why the last pass was rolled back

    @property
    def has_next(self) -> bool:
        """Writes are waiting for the next pass: the loop must not sleep."""
        return bool(self._next) and self.may_write()

    def after_commit(self, action: Action, *, first: bool = False) -> None:
        """Run ``action`` once this pass's writes are committed; ``first`` (answers to clients)
        before the slower rest (moving files)."""
        if not self.open:
            action()
        elif first:
            self._first.append(action)
        else:
            self._after.append(action)

    def on_rollback(self, action: Action) -> None:
        """Run ``action`` if this pass's writes are rolled back instead of committed."""
        if self.open:
            self._undo.append(action)

    def next_turn(self, action: Action) -> None:
        """Run ``action`` (a queue write) in the next pass, after this pass's moves are synced."""
        if self.open or self._syncing:
            self._next.append(action)
        else:
            action()

    def sync_dir(self, folder: Path) -> None:
        if self.open or self._syncing:
            self._dirs.add(folder)
        else:
            fsync_dir(folder)

    @contextmanager
    def run(self) -> Iterator[None]:
        """One pass: the writes inside (and those left for it) commit together; then the
        actions that waited for the commit run, and the touched folders are synced once."""
        pending: list[Action] = []
        if self.may_write():
            pending, self._next = self._next, []
        self.open = True
        self.failure = None
        committed = False
        try:
            with self.queue.group():
                for action in pending:
                    action()
                yield
            committed = True
        except BaseException as error:
            self.failure = error  # for the undo actions to tell
            raise
        finally:
            self.open = False
            after, self._first, self._after = self._first + self._after, [], []
            undo, self._undo = self._undo, []
            if committed:
                self._finish(after)
            else:
                self._next[:0] = pending  # their writes were rolled back too: again, later
                self._dirs.clear()
                self._roll_back(undo)

    @staticmethod
    def _roll_back(undo: list[Action]) -> None:
        for action in reversed(undo):
            try:
                action()
            except Exception:
                log.exception("undoing a rolled-back action failed")

    def _finish(self, after: list[Action]) -> None:
        self._syncing = True
        try:
            for action in after:
                try:
                    action()
                except Exception:
                    log.exception("an action after the commit failed")
            dirs, self._dirs = self._dirs, set()
            for folder in dirs:
                try:
                    fsync_dir(folder)
                except OSError as error:
                    log.error("cannot sync folder %s: %s", folder, error)
        finally:
            self._syncing = False
