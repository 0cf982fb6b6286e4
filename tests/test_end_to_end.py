"""The whole station, every part real: a corpus of files in, the right reports out, once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import requests

from wats_station.converters.wsxf import SERVER_SIDE_KEYS
from wats_station.emulator import Emulator
from wats_station.lab.harness import FAST_UPLOAD, REPO, wait_until
from wats_station.samples import write_csv_files, write_wsjf_files, write_wstf_files

SAMPLES = REPO / "scripts" / "sample_files"
TOKEN = "ZTJlOmUyZQ=="


def fetch(emulator: Emulator, report_id: str) -> dict:
    response = requests.get(
        f"{emulator.url}/api/Report/Wsjf/{report_id}",
        headers={"Authorization": f"Basic {TOKEN}"},
        timeout=5,
    )
    response.raise_for_status()
    return response.json()


def test_a_corpus_dropped_into_the_standard_folders_arrives_once_with_the_right_content(
    make_station, home
):
    with Emulator(token=TOKEN) as emulator:
        station = make_station(
            config={
                "server": {"url": emulator.url, "token": TOKEN},
                "watch": {"debounce_s": 0.2, "rescan_interval_s": 1.0},
                "upload": FAST_UPLOAD,
                "supervisor": {"converter_workers": 2},
            }
        )
        folders = {c["name"]: Path(c["watch_folder"]) for c in station.call("list_converters")}
        expected: dict[str, Path] = {}  # report id -> the file it came from
        for sample in ("new_report_example.json", "uur_example.json"):
            target = folders["wsjf"] / sample
            shutil.copy(SAMPLES / sample, target)
            expected[json.loads(target.read_text())["id"]] = target
        xml = folders["wsxf"] / "export.xml"
        shutil.copy(SAMPLES / "uut-wsxf-export.xml", xml)
        expected[json.loads((SAMPLES / "uut-wsjf-export.json").read_text())["id"]] = xml
        staging = home / "staging"
        generated = {
            "wsjf": write_wsjf_files(staging / "wsjf", 40),
            "wstf": write_wstf_files(staging / "wstf", 30, uuts_per_file=2),
            "csv": write_csv_files(staging / "csv", 20),
        }
        # What each generated file must become: the converter run on its own, before the drop.
        for converter, paths in generated.items():
            for path in paths:
                result = station.cli("convert", str(path), check=True)
                documents = json.loads(result.stdout)
                target = folders[converter] / path.name
                for document in documents if isinstance(documents, list) else [documents]:
                    expected[document["id"]] = target
                path.rename(target)
        poison = folders["wstf"] / "unfinished.txt"
        poison.write_text("--Header-Start--\nSerialNumber\tSN-1\n")  # the tester died mid-file
        assert len(expected) >= 3 + 40 + 60 + 20  # WSTF files hold two UUTs each

        def settled() -> bool:
            inputs = [p for folder in folders.values() for p in folder.iterdir() if p.is_file()]
            queue = station.call("get_queue_stats")
            return not inputs and queue["completed"] == len(expected) and not queue["pending"]

        wait_until(settled, 90, "every file handled and every report uploaded")
        stats = emulator.stats()
        assert stats["unique"] == len(expected)
        assert stats["duplicates"] == 0
        assert set(emulator.received_ids()) == set(expected)

        # Content: WSJF files arrive as they were; the WSXF export arrives as its WSJF twin.
        for sample in ("new_report_example.json", "uur_example.json"):
            original = json.loads((SAMPLES / sample).read_text())
            assert fetch(emulator, original["id"]) == original
        twin = json.loads((SAMPLES / "uut-wsjf-export.json").read_text())
        arrived = fetch(emulator, twin["id"])
        assert arrived == {k: v for k, v in twin.items() if k not in SERVER_SIDE_KEYS}

        # Every input file ended in Done or in Error (with a reason), none in both.
        done = {p.name for folder in folders.values() for p in (folder / "Done").glob("*")}
        error = {p.name for folder in folders.values() for p in (folder / "Error").glob("*")}
        assert {p.name for p in expected.values()} <= done
        assert error == {"unfinished.txt", "unfinished.txt.error.json"}
        reason = json.loads((folders["wstf"] / "Error" / "unfinished.txt.error.json").read_text())
        assert "--UUT-End--" in json.dumps(reason)
