"""Native converters: a shared library implementing the C ABI in ``native_abi.h``.

The library is loaded once per converter worker and called in-process, so it is fast and as
dangerous as C: a crash kills the worker, which the supervisor expects and handles.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

from wats_station.converters.base import ConversionError, Report, ensure_report_ids
from wats_station.converters.external import reports_from_json


class NativeConverter:
    """Calls ``wats_convert`` of ``library`` for each file and copies out the JSON it returns."""

    def __init__(self, *, library: Path) -> None:
        self.library = Path(library)
        try:
            handle = ctypes.CDLL(os.fspath(self.library))
        except OSError as error:
            raise ConversionError(f"cannot load native converter {self.library}: {error}") from None
        self._convert = _symbol(handle, self.library, "wats_convert")
        self._convert.argtypes = [
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.POINTER(ctypes.c_void_p),
        ]
        self._convert.restype = ctypes.c_int
        self._free = _symbol(handle, self.library, "wats_free")
        self._free.argtypes = [ctypes.c_void_p]
        self._free.restype = None
        self.name = self.library.name
        named = getattr(handle, "wats_converter_name", None)
        if named is not None:
            named.argtypes = []
            named.restype = ctypes.c_char_p
            self.name = f"{self.library.name} ({(named() or b'').decode('utf-8', 'replace')})"

    def convert(self, path: Path) -> list[Report]:
        json_text, error_text, status = self._call(path)
        if status != 0:
            message = error_text.decode("utf-8", "replace") if error_text else "no message"
            raise ConversionError(
                f"native converter {self.name} could not convert {path}: {message} "
                f"(wats_convert returned {status})"
            )
        if json_text is None:
            raise ConversionError(
                f"native converter {self.name} returned 0 for {path} but set no JSON"
            )
        try:
            reports = reports_from_json(json_text)
        except ValueError as error:
            raise ConversionError(
                f"native converter {self.name} returned no valid WSJF JSON for {path}: {error}"
            ) from None
        return ensure_report_ids(reports, path.read_bytes())

    def _call(self, path: Path) -> tuple[bytes | None, bytes | None, int]:
        out_json, out_error = ctypes.c_void_p(), ctypes.c_void_p()
        try:
            status = self._convert(
                os.fsencode(path), ctypes.byref(out_json), ctypes.byref(out_error)
            )
            return _copied(out_json), _copied(out_error), status
        finally:
            for pointer in (out_json, out_error):
                if pointer.value:
                    self._free(pointer)


def _symbol(handle: ctypes.CDLL, library: Path, name: str) -> Any:
    try:
        return getattr(handle, name)
    except AttributeError:
        raise ConversionError(
            f"native converter {library} does not export {name} (see converters/native_abi.h)"
        ) from None


def _copied(pointer: ctypes.c_void_p) -> bytes | None:
    return ctypes.string_at(pointer.value) if pointer.value else None
