"""The cached list of the server's processes: what is kept, and how names become codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from wats_station.converters.processes import (
    UnknownOperationType,
    cache_age_s,
    compact_processes,
    load_processes,
    operation_code,
    store_processes,
)
from wats_station.emulator import DEFAULT_PROCESSES


def test_the_cache_keeps_only_what_converters_need(tmp_path: Path) -> None:
    path = tmp_path / "processes.json"
    compact = compact_processes(
        [*DEFAULT_PROCESSES, {"code": "x"}, "junk", {"Code": 7, "Name": "Old"}]
    )
    store_processes(path, compact)

    loaded = load_processes(path)

    assert {"code": 10, "name": "SW Debug", "test": True, "repair": False} in loaded
    assert {"code": 500, "name": "Repair", "test": False, "repair": True} in loaded
    assert {"code": 7, "name": "Old", "test": False, "repair": False} in loaded
    assert len(loaded) == len(DEFAULT_PROCESSES) + 1
    assert 0 <= cache_age_s(path) < 60
    assert path.stat().st_size < 1000  # small: no descriptions, states or indexes
    assert not list(tmp_path.glob(".*.tmp"))


def test_codes_pass_through_and_names_are_looked_up(tmp_path: Path) -> None:
    path = tmp_path / "processes.json"
    store_processes(path, compact_processes(list(DEFAULT_PROCESSES)))

    assert operation_code(30, None) == 30
    assert operation_code(" 40 ", None) == 40  # a code needs no list
    assert operation_code("End of line test", path) == 100
    assert operation_code("end OF line TEST", path) == 100
    with pytest.raises(UnknownOperationType, match=r"'Burn-in' is not in the server's process "):
        operation_code("Burn-in", path)


def test_without_a_list_a_name_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UnknownOperationType, match="has no list of the server's processes yet"):
        operation_code("SW Debug", tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UnknownOperationType, match="cannot be read"):
        operation_code("SW Debug", broken)
    assert cache_age_s(broken) is None
