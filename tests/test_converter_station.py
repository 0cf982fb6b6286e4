"""The standard converters in a running station: fresh folders, the server's process list, CLI.

Real station processes, real folders, the emulator over HTTP. A fresh configuration (no
converters key) must give every standard converter its own drop folder; the uploader fetches
the server's process list so that a WSTF file naming its operation type converts offline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests

from wats_station.converters.processes import PROCESSES_FILE_NAME, load_processes
from wats_station.emulator import DEFAULT_PROCESSES, Emulator
from wats_station.lab.harness import wait_until

TOKEN = "dGVzdDp0ZXN0"
CORPUS = Path(__file__).parent / "corpus"
# "SW Debug" under a code no default would give, to prove the name was looked up.
PROCESSES = [
    {"code": 42, "name": "SW Debug", "isTestOperation": True},
    {"code": 500, "name": "Repair", "isRepairOperation": True},
]


@pytest.fixture
def emulator():
    with Emulator(token=TOKEN, processes=PROCESSES) as server:
        yield server


def fresh_config(emulator: Emulator) -> dict:
    return {
        "server": {"url": emulator.url, "token": TOKEN},
        "upload": {"probe_base_s": 0.1, "probe_cap_s": 0.3},
        "watch": {"debounce_s": 0.3, "rescan_interval_s": 1.0},
    }


def test_the_emulator_serves_a_process_list(emulator: Emulator) -> None:
    answer = requests.get(
        f"{emulator.url}/api/App/Processes", headers={"Authorization": f"Basic {TOKEN}"}, timeout=5
    )
    assert answer.status_code == 200 and answer.json() == PROCESSES
    with Emulator() as default:
        listed = requests.get(f"{default.url}/api/App/Processes", timeout=5).json()
    assert listed == list(DEFAULT_PROCESSES)
    assert {"code": 10, "name": "SW Debug"}.items() <= listed[0].items()


@pytest.mark.timeout(90)
def test_a_fresh_station_converts_every_corpus_format_from_its_own_folder(
    make_station, emulator, home
) -> None:
    station = make_station(config=fresh_config(emulator))
    cache = station.paths.data_dir / PROCESSES_FILE_NAME
    wait_until(lambda: cache.exists(), 30, "the uploader to cache the server's process list")
    assert load_processes(cache) == [
        {"code": 42, "name": "SW Debug", "test": True, "repair": False},
        {"code": 500, "name": "Repair", "test": False, "repair": True},
    ]
    drops = {
        "wstf": CORPUS / "wstf" / "WatsStandardTextFormat.txt",
        "wsxf": CORPUS / "wsxf" / "uur-wsxf.xml",
        "atml": next((CORPUS / "atml").glob("ATML 2.02*")),  # upper-case .XML
        "teststand-xml": CORPUS / "teststand-xml" / "TsWithoutWats.xml",
        "openhtf": CORPUS / "openhtf-json" / "1.hello_world.json",
    }
    for name, source in drops.items():
        shutil.copy(source, station.paths.data_dir / "drop" / name / source.name)

    wait_until(lambda: emulator.stats()["unique"] == len(drops), 60, "a report from each file")

    arrived = {}
    for report_id in emulator.received_ids():
        report = requests.get(
            f"{emulator.url}/api/Report/Wsjf/{report_id}",
            headers={"Authorization": f"Basic {TOKEN}"},
            timeout=5,
        ).json()
        arrived[report["sn"]] = report
    assert set(arrived) == {"423664753", "FATTest-311", "123456789", "2342343", "1"}
    assert arrived["423664753"]["processCode"] == 42  # "SW Debug" from the server's list
    assert arrived["FATTest-311"]["type"] == "R"
    assert arrived["123456789"]["pn"] == "Ragnar123"
    for name in drops:
        done = station.paths.data_dir / "drop" / name / "Done"
        wait_until(lambda done=done: any(done.iterdir()), 10, f"the {name} file in Done")

    # Offline, the cached list still turns "SW Debug" into its code: the file converts.
    emulator.set_faults(down=True)
    text = drops["wstf"].read_text(encoding="cp1252").replace("423664753", "OFFLINE-1")
    (station.paths.data_dir / "drop" / "wstf" / "offline.txt").write_text(text, "cp1252")
    wait_until(lambda: station.call("get_status")["queue"].get("pending", 0) == 1, 30, "it queued")
    assert not (station.paths.data_dir / "drop" / "wstf" / "Error").exists() or not any(
        (station.paths.data_dir / "drop" / "wstf" / "Error").iterdir()
    )


def test_convert_picks_the_converter_by_content_and_says_which(make_station, emulator, home):
    station = make_station(config=fresh_config(emulator), start=False)
    atml = next((CORPUS / "atml").glob("ATML 6.01*"))

    result = station.cli("convert", str(atml), check=True)

    assert json.loads(result.stdout)["sn"] == "123456789"
    assert "IEEE 1636.1 ATML" in result.stderr and "converting with 'atml'" in result.stderr

    teststand = home / "report.xml"  # an .xml name the wsxf patterns would also match
    shutil.copy(CORPUS / "teststand-xml" / "TsWithoutWats.xml", teststand)
    assert json.loads(station.cli("convert", str(teststand), check=True).stdout)["sn"] == "2342343"

    unknown = home / "notes.xml"
    unknown.write_text("<html><body>hello</body></html>")
    refused = station.cli("convert", str(unknown))
    assert refused.returncode != 0 and not refused.stdout
    assert (
        "no configured converter recognises this file: it looks like an XML document whose "
        "root element is <html>" in refused.stderr
    )

    wrong = station.cli("convert", str(teststand), "--converter", "wsxf")
    assert wrong.returncode == 1
    assert f"{teststand}: this is not WSXF: an NI TestStand XML report" in wrong.stderr
    assert wrong.stderr.count(str(teststand)) == 1  # the path once, not twice
