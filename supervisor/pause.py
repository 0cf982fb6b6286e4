"""Operator pauses of uploads and conversions: intent kept in the queue file until resumed.

A pause stops new work, never work in flight: paused uploads leave reports in the queue
(an upload already sent finishes and its answer is recorded); paused conversions leave new
files in their drop folders (a file already being converted finishes). Files that arrive
are still fingerprinted and recorded, so a restart or a resume loses none. A pause outlives
a restart of the station: it is read back from the ``meta`` table when the station opens.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from wats_station.ipc.states import PauseTarget
from wats_station.supervisor import trail

if TYPE_CHECKING:
    from wats_station.supervisor.queue import ReportQueue

KINDS = (PauseTarget.UPLOADS, PauseTarget.CONVERSIONS)


def targets(what: str) -> tuple[PauseTarget, ...]:
    """The kinds `what` names; ValueError if it names none."""
    target = PauseTarget(what)
    return KINDS if target is PauseTarget.ALL else (target,)


class Pause:
    def __init__(self, queue: ReportQueue) -> None:
        self.queue = queue
        self.state: dict[str, dict[str, str] | None] = {
            str(kind): trail.get_meta(queue, f"pause.{kind}") for kind in KINDS
        }

    @property
    def uploads(self) -> bool:
        return self.state[PauseTarget.UPLOADS] is not None

    @property
    def conversions(self) -> bool:
        return self.state[PauseTarget.CONVERSIONS] is not None

    def pause(self, what: str, by: str) -> dict[str, Any]:
        """Pause; a kind already paused keeps who paused it first and when."""
        stamp = {"by": by, "at": datetime.now(UTC).isoformat(timespec="seconds")}
        for kind in targets(what):
            if self.state[kind] is None:
                trail.set_meta(self.queue, f"pause.{kind}", stamp)
                self.state[kind] = stamp
        return self.as_dict()

    def resume(self, what: str) -> dict[str, Any]:
        for kind in targets(what):
            if self.state[kind] is not None:
                trail.set_meta(self.queue, f"pause.{kind}", None)
                self.state[kind] = None
        return self.as_dict()

    def as_dict(self) -> dict[str, Any]:
        return dict(self.state)

    def describe(self) -> str:
        """'uploads paused by ann@host since ...; ...' or '' when nothing is paused."""
        return "; ".join(
            f"{kind} paused by {stamp['by']} since {stamp['at']}"
            for kind, stamp in self.state.items()
            if stamp is not None
        )
