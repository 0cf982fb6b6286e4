"""Test fixtures: real stations in throw-away homes (the harness is ``wats_station.lab``)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wats_station.lab.harness import Station


@pytest.fixture
def home() -> Iterator[Path]:
    # Unix socket paths must stay short, so not pytest's deep tmp_path.
    path = Path(tempfile.mkdtemp(prefix="ws-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_station(home: Path) -> Iterator[Callable[..., Station]]:
    stations: list[Station] = []

    def make(
        instance: str = "default",
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        start: bool = True,
    ) -> Station:
        station = Station(home, instance, env)
        station.write_config(config or {})
        stations.append(station)
        return station.start() if start else station

    try:
        yield make
    finally:
        for station in stations:
            station.cleanup()
            # pytest shows this only when the test fails: the station's own account.
            print(f"--- station {station.instance} log (tail) ---\n{station.output()[-6000:]}")
