"""Find a converter class from its configured name: a standard name or a module.Class path."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from wats_station.converters.base import Converter

STANDARD_CONVERTERS: dict[str, str] = {
    "wsjf": "wats_station.converters.wsjf.WSJFConverter",
    "wsxf": "wats_station.converters.wsxf.WSXFConverter",
    "wstf": "wats_station.converters.wstf.WSTFConverter",
    "csv": "wats_station.converters.csvfile.CSVConverter",
    "atml": "wats_station.converters.atml.ATMLConverter",
    "teststand-xml": "wats_station.converters.teststand_xml.TestStandXMLConverter",
    "openhtf": "wats_station.converters.openhtf.OpenHTFConverter",
}


class ConverterLoadError(ValueError):
    """The configured converter cannot be loaded; the message names the spec and why."""


def load_converter_class(spec: str, search_paths: Sequence[Path] = ()) -> type[Converter]:
    """The Converter subclass that ``spec`` names.

    ``spec`` is a standard name (see STANDARD_CONVERTERS) or a dotted ``module.Class`` path.
    ``search_paths`` (a station's converters folder) are appended to sys.path, after the
    standard library and our packages so that a station's ``csv.py`` cannot shadow them, and
    stay there because a converter module may import its sibling modules later, while
    converting.
    """
    class_path = STANDARD_CONVERTERS.get(spec, spec)
    module_name, _, class_name = class_path.rpartition(".")
    if not module_name or not class_name:
        raise ConverterLoadError(
            f"converter {spec!r}: not a standard converter "
            f"({', '.join(STANDARD_CONVERTERS)}) nor a module.Class path"
        )
    for folder in search_paths:
        if str(folder) not in sys.path:
            sys.path.append(str(folder))
    module = _import(spec, module_name, search_paths)
    converter_class = getattr(module, class_name, None)
    if converter_class is None:
        raise ConverterLoadError(
            f"converter {spec!r}: module {module_name!r} ({module.__file__}) has no {class_name!r}"
        )
    if not isinstance(converter_class, type) or not issubclass(converter_class, Converter):
        raise ConverterLoadError(
            f"converter {spec!r}: {class_path} is not a subclass of converters.base.Converter"
        )
    if converter_class is Converter:
        raise ConverterLoadError(f"converter {spec!r}: the base class converts nothing")
    return converter_class


def _import(spec: str, module_name: str, search_paths: Sequence[Path]) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if module_name == missing or module_name.startswith(f"{missing}."):
            searched = ", ".join(str(folder) for folder in search_paths) or "no extra folders"
            raise ConverterLoadError(
                f"converter {spec!r}: no module named {module_name!r} (searched {searched} "
                "and the installed packages)"
            ) from None
        raise ConverterLoadError(
            f"converter {spec!r}: module {module_name!r} needs {error.name!r}, "
            "which is not installed"
        ) from None
    except Exception as error:
        raise ConverterLoadError(
            f"converter {spec!r}: importing {module_name!r} failed: {type(error).__name__}: {error}"
        ) from error
