"""Process converters: an external program turns the input file into WSJF JSON.

The program runs in a process group of its own with stdin closed, so a timeout kills it and
everything it started. It prints the report(s) on stdout, or writes them to the file named by
the ``{output}`` placeholder. Whatever goes wrong, the error carries the exit status or the
signal and the tail of the program's stderr, which is where its author will have said why.
It gets the worker's environment without any ``WATS_STATION_*`` variable, plus its ``env``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from wats_station.converters.base import ConversionError, Report, ensure_report_ids

OUTPUTS = ("stdout", "file")
STDERR_TAIL_LINES = 20
STDERR_TAIL_BYTES = 4096
# After the kill, how long the pipes may stay open (held by an escaped grandchild).
DRAIN_AFTER_KILL_S = 5.0
STATION_ENV_PREFIX = "WATS_STATION_"


class ProcessConverter:
    """Runs ``command`` once per file; ``{input}`` and ``{output}`` in it are replaced by paths."""

    def __init__(
        self,
        *,
        command: list[str],
        output: str = "stdout",
        timeout_s: float = 60.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if not command or not all(isinstance(part, str) for part in command):
            raise ValueError(f"command must be a non-empty list of strings, not {command!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, not {output!r}")
        if output == "file" and not any("{output}" in part for part in command):
            raise ValueError('output = "file" needs an {output} placeholder in the command')
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s!r}")
        self.command = list(command)
        self.output = output
        self.timeout_s = timeout_s
        self.env = dict(env or {})
        shown = shlex.join(command)
        self.program = shown if len(shown) <= 160 else f"{shown[:157]}..."

    def convert(self, path: Path) -> list[Report]:
        with tempfile.TemporaryDirectory(prefix="wats-convert-") as folder:
            output_path = Path(folder) / "report.json"
            arguments = [
                part.replace("{input}", str(path)).replace("{output}", str(output_path))
                for part in self.command
            ]
            stdout, stderr = self._run(arguments, path)
            if self.output == "stdout":
                data, origin = stdout, "stdout"
            else:
                try:
                    data = output_path.read_bytes()
                except FileNotFoundError:
                    raise self._error(
                        f"exited 0 but wrote no output file {{output}} for {path}", stderr
                    ) from None
                origin = "its output file"
        reports = self._reports(data, origin, stderr)
        return ensure_report_ids(reports, path.read_bytes())

    def _run(self, arguments: list[str], path: Path) -> tuple[bytes, bytes]:
        try:
            process = subprocess.Popen(
                arguments,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=converter_environment(os.environ, self.env),
                start_new_session=True,
            )
        except OSError as error:
            raise ConversionError(f"cannot start {self.command[0]!r}: {error}") from None
        try:
            stdout, stderr = process.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            stderr = _drain_stderr(process)
            raise self._error(
                f"did not finish converting {path} within the timeout of {self.timeout_s:g} s; "
                "killed it and its process group",
                stderr,
            ) from None
        if process.returncode < 0:
            raise self._error(
                f"was killed by signal {_signal_name(-process.returncode)} while converting {path}",
                stderr,
            )
        if process.returncode > 0:
            raise self._error(
                f"failed with exit status {process.returncode} while converting {path}", stderr
            )
        return stdout, stderr

    def _reports(self, data: bytes, origin: str, stderr: bytes) -> list[Report]:
        try:
            return reports_from_json(data)
        except ValueError as error:
            raise self._error(f"wrote no valid WSJF JSON on {origin}: {error}", stderr) from None

    def _error(self, what: str, stderr: bytes) -> ConversionError:
        return ConversionError(f"converter program `{self.program}` {what}{stderr_tail(stderr)}")


def converter_environment(environ: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The station's own variables (its token among them) are no business of a converter's."""
    inherited = {k: v for k, v in environ.items() if not k.startswith(STATION_ENV_PREFIX)}
    return {**inherited, **extra}


def reports_from_json(data: bytes) -> list[Report]:
    """WSJF JSON bytes (one report object or a list of them) as report dicts.

    Raises ValueError saying what is wrong; the caller adds where the bytes came from.
    """
    if not data.strip():
        raise ValueError("the output is empty")
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 at byte {error.start}") from None
    except json.JSONDecodeError as error:
        start = data[:60].decode("utf-8", errors="replace")
        raise ValueError(
            f"malformed JSON at line {error.lineno}, column {error.colno}: {error.msg} "
            f"(output starts {start!r})"
        ) from None
    reports = document if isinstance(document, list) else [document]
    if not reports:
        raise ValueError("an empty list of reports")
    for position, report in enumerate(reports):
        if not isinstance(report, dict):
            raise ValueError(
                f"item [{position}] is {type(report).__name__}, not a report object"
                if isinstance(document, list)
                else f"expected a report object or a list of them, not {type(report).__name__}"
            )
    return reports


def stderr_tail(stderr: bytes) -> str:
    """The last lines of a program's stderr, ready to append to an error message."""
    text = stderr[-STDERR_TAIL_BYTES:].decode("utf-8", errors="replace").rstrip()
    if not text:
        return " (its stderr was empty)"
    lines = text.splitlines()[-STDERR_TAIL_LINES:]
    return "\nlast lines of its stderr:\n" + "\n".join(lines)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    # The leader is not reaped yet, so its pid is still the group id and cannot be reused.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _drain_stderr(process: subprocess.Popen[bytes]) -> bytes:
    try:
        _, stderr = process.communicate(timeout=DRAIN_AFTER_KILL_S)
    except subprocess.TimeoutExpired:
        # A grandchild left the group and holds the pipes; give up on the rest of its output.
        process.kill()
        process.wait()
        return b""
    return stderr


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"{number}"
