"""Safe XML parsing and namespace-blind element lookups shared by the XML converters.

ATML comes in three schema versions whose namespaces differ while the element names do not,
and TestStand writes its extensions in a namespace of its own per version: looking elements up
by local name lets one converter read them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from wats_station.converters.base import ConversionError


def parse_xml(data: bytes, source: str) -> Element:
    """The root element; entities and external references are refused (defusedxml)."""
    if not data.strip():
        raise ConversionError(f"{source}: the file is empty")
    try:
        return fromstring(data, forbid_entities=True, forbid_external=True)
    except ParseError as error:
        line, column = error.position
        raise ConversionError(
            f"{source}: malformed XML at line {line}, column {column + 1}: {error}"
        ) from None
    except DefusedXmlException as error:
        raise ConversionError(f"{source}: refused: {error}") from None


def local(tag: str) -> str:
    return tag.rpartition("}")[2]


def namespace(element: Element) -> str:
    return element.tag[1:].partition("}")[0] if element.tag.startswith("{") else ""


def child(element: Element | None, name: str) -> Element | None:
    """The first child with this local name, or None (also for a None element)."""
    if element is None:
        return None
    return next((item for item in element if local(item.tag) == name), None)


def children(element: Element | None, name: str) -> Iterator[Element]:
    if element is None:
        return iter(())
    return (item for item in element if local(item.tag) == name)


def path(element: Element | None, *names: str) -> Element | None:
    """Follow local names down from ``element``: path(e, "UUT", "SerialNumber")."""
    for name in names:
        element = child(element, name)
    return element


def text(element: Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


ATML_NAMESPACES = (
    "http://www.ieee.org/ATML/2007/TestResults",  # 2.02
    "urn:IEEE-1636.1:2011:01:TestResultsCollection",  # 5.00
    "urn:IEEE-1636.1:2011:01:TestResults",
    "urn:IEEE-1636.1:2013:TestResultsCollection",  # 6.01
    "urn:IEEE-1636.1:2013:TestResults",
)


def is_atml(root: Element) -> bool:
    """Whether this root element is an IEEE 1636.1 ATML test results document."""
    return local(root.tag) in ("TestResults", "TestResultsCollection") and (
        root.tag.startswith("{") and root.tag[1:].partition("}")[0] in ATML_NAMESPACES
    )
