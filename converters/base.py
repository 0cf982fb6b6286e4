"""The converter contract: what every converter is, what it returns, and how it fails.

A converter turns one input file into one or more WSJF reports (plain dicts). It is
constructed with the ``arguments`` of its configuration entry and must not keep state
between files: a converter worker may be restarted at any moment.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any, ClassVar

Report = dict[str, Any]

# Fixed namespace so that the same file bytes always yield the same report ids, on every
# station and in every release: a retried conversion must overwrite, never duplicate.
REPORT_ID_NAMESPACE = uuid.UUID("6b0f3c52-8a1e-4f4e-9a57-2f0d3e1c9b41")


class ConversionError(Exception):
    """The file cannot be turned into a report; ``str(error)`` says why and where."""


class Converter:
    """Base class of Python converters.

    Subclasses set ``name``, ``version`` and ``file_patterns`` and implement ``convert``.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1.0.0"
    file_patterns: ClassVar[tuple[str, ...]] = ("*",)
    # The station's cached list of the server's processes (converters.processes), set by the
    # converter worker; None where there is none (a converter used on its own).
    processes_file: Path | None = None

    def __init__(self, **arguments: Any) -> None:
        self.arguments = arguments

    def validate(self, path: Path) -> float:
        """How confident this converter is that it can convert ``path``, from 0.0 to 1.0."""
        return 0.5

    def convert(self, path: Path) -> list[Report]:
        """Return the reports in ``path``; raise ConversionError when it cannot."""
        raise NotImplementedError


def file_head(path: Path, size: int = 4096) -> bytes:
    """The first ``size`` bytes of a file: what ``validate`` and format recognition look at."""
    with path.open("rb") as file:
        return file.read(size)


def derived_report_id(content: bytes, position: int) -> str:
    """A stable report id for the ``position``-th report of a file with these bytes."""
    digest = hashlib.sha256(content).hexdigest()
    return str(uuid.uuid5(REPORT_ID_NAMESPACE, f"{digest}:{position}"))


def canonical_id(report_id: str) -> str:
    """The one form a report id is stored and sent in: lowercase, hyphenated, no braces or
    ``urn:uuid:``. ValueError if it is no UUID at all."""
    if not isinstance(report_id, str):
        raise ValueError(f"a report id must be a string, not {type(report_id).__name__}")
    return str(uuid.UUID(report_id))


def ensure_report_ids(reports: list[Report], content: bytes) -> list[Report]:
    """Give every report without an ``id`` one derived from the file's content and position."""
    for position, report in enumerate(reports):
        if not report.get("id"):
            report["id"] = derived_report_id(content, position)
    return reports
