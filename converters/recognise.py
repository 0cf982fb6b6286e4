"""What a file is, from its content: which standard converter takes it, or what it looks like.

Used by ``wats-station convert FILE`` without ``--converter`` and by converters that are given
a file of another format, so the message says "this is an ATML report" rather than a parse
error deep inside.
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree.ElementTree import Element

from wats_station.converters.base import file_head
from wats_station.converters.xmltools import is_atml, local, namespace

WSXF_NAMESPACE = "http://wats.virinco.com/schemas/WATS/Report/wsxf"
# The standard converters whose files recognise() tells apart by content.
RECOGNISED = frozenset({"wsjf", "wsxf", "wstf", "atml", "teststand-xml", "openhtf"})
SNIFF_BYTES = 65536


def describe_xml_root(root: Element) -> str:
    """What an XML document with this root element is, in words a user understands."""
    name = local(root.tag)
    if is_atml(root):
        return "an IEEE 1636.1 ATML test results document (use the atml converter)"
    if namespace(root) == WSXF_NAMESPACE:
        return "a WSXF document (use the wsxf converter)"
    if name == "Reports" and any(local(c.tag) == "Report" and c.get("Type") for c in root):
        return "an NI TestStand XML report (use the teststand-xml converter)"
    where = f" in namespace {namespace(root)!r}" if namespace(root) else ""
    return f"an XML document whose root element is <{name}>{where}"


def recognise(path: Path) -> tuple[str | None, str]:
    """(the standard converter for this file or None, what the file looks like)."""
    head = file_head(path, SNIFF_BYTES)
    if not head.strip():
        return None, "an empty file"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if b"--Header-Start--" in head:
        return "wstf", "a WATS Standard Text Format (WSTF) file"
    if text.startswith((b"{", b"[")):
        return _recognise_json(path)
    if text.startswith(b"<"):
        return _recognise_xml(path)
    if b"\x00" in head:
        return None, "a binary file, not text"
    first_line = text.splitlines()[0][:80].decode("utf-8", "replace") if text else ""
    if first_line.count(",") >= 2 or first_line.count(";") >= 2:
        return None, f"delimited text (CSV?) starting {first_line!r}"
    return None, f"text starting {first_line!r}"


def _recognise_json(path: Path) -> tuple[str | None, str]:
    try:
        document = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as error:
        return None, f"a file that starts like JSON but is not valid JSON ({error})"
    first = document[0] if isinstance(document, list) and document else document
    if not isinstance(first, dict):
        return None, f"JSON holding {type(first).__name__}, not an object"
    if "dut_id" in first and "phases" in first:
        return "openhtf", "an OpenHTF JSON test record"
    if first.get("type") in ("T", "R") and ("pn" in first or "root" in first or "uur" in first):
        return "wsjf", "a WSJF report"
    keys = ", ".join(list(first)[:8])
    return None, f"a JSON object with the keys {keys}"


def _recognise_xml(path: Path) -> tuple[str | None, str]:
    from wats_station.converters.base import ConversionError
    from wats_station.converters.xmltools import parse_xml

    try:
        root = parse_xml(path.read_bytes(), str(path))
    except ConversionError as error:
        return None, f"a file that starts like XML but is not well-formed ({error})"
    if is_atml(root):
        return "atml", describe_xml_root(root)
    if namespace(root) == WSXF_NAMESPACE:
        return "wsxf", "a WSXF report"
    if local(root.tag) == "Reports" and any(
        local(c.tag) == "Report" and c.get("Type") for c in root
    ):
        return "teststand-xml", "an NI TestStand XML report"
    return None, describe_xml_root(root)
