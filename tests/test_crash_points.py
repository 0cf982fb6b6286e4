"""A crash at any named point of a file's or report's life leaves it exactly where it belongs.

For each point the station is run with that point armed once (WATS_STATION_CRASH_AT), one
file is dropped, the process that reaches the point kills itself with SIGKILL, and the
supervisor is restarted the way systemd would. Afterwards the file is in Done once, its
report is on the server once by id, and the queue agrees.
"""

from __future__ import annotations

import json

import pytest

from wats_station.emulator import Emulator
from wats_station.lab.harness import FAST_UPLOAD, wait_until
from wats_station.samples import write_wstf_files
from wats_station.supervisor.queue import ReportQueue
from wats_station.workers.crashpoints import POINTS

TOKEN = "Y3Jhc2g6cG9pbnRz"
LIFE_OF_A_FILE = [p for p in POINTS if p not in ("service-started", "worker-start")]


@pytest.mark.parametrize("point", LIFE_OF_A_FILE)
def test_a_crash_at_each_point_ends_with_the_file_done_and_its_report_on_the_server_once(
    make_station, home, point
):
    once = home / "fired"
    watch = home / "in"
    converter = {
        "name": "wstf", "module": "wstf", "file_patterns": ["*.txt"], "watch_folder": str(watch),
        "done_folder": str(home / "Done"), "error_folder": str(home / "Error"),
    }  # fmt: skip
    with Emulator(token=TOKEN) as emulator:
        station = make_station(
            config={
                "server": {"url": emulator.url, "token": TOKEN},
                "upload": {**FAST_UPLOAD, "max_concurrency": 1},
                "watch": {"debounce_s": 0.2, "rescan_interval_s": 0.5},
                "converters": [converter],
            },
            env={"WATS_STATION_CRASH_AT": f"{point}@{once}"},
        )
        (staged,) = write_wstf_files(home / "staging", 1)
        expected_id = json.loads(station.cli("convert", str(staged), check=True).stdout)["id"]
        watch.mkdir(parents=True, exist_ok=True)
        path = staged.rename(watch / staged.name)

        def settled() -> bool:
            if station.process.poll() is not None:  # the supervisor died: restart it, like systemd
                station.start(wait=False)
                return False
            done = list((home / "Done").glob("*")) if (home / "Done").exists() else []
            stats = station.call("get_queue_stats", timeout_s=1.0)
            return once.exists() and len(done) == 1 and stats["completed"] == 1

        wait_until(settled, 45, f"the file and its report to settle after a crash at {point}")
        assert emulator.stats()["unique"] == 1
        assert set(emulator.received_ids()) == {expected_id}
        assert not path.exists()
        assert not (home / "Error").exists() or not list((home / "Error").iterdir())
        station.stop()
    queue = ReportQueue(station.paths.queue_db)
    try:
        assert queue.stats() == {"pending": 0, "processing": 0, "completed": 1, "failed": 0}
        assert queue.source_stats().get("done") == 1
    finally:
        queue.close()


def test_an_unknown_crash_point_name_is_an_error_not_a_silent_miss():
    from wats_station.workers.crashpoints import crash_point

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WATS_STATION_CRASH_AT", "after-file-recorded")
        with pytest.raises(ValueError, match=r"not in crashpoints\.POINTS"):
            crash_point("after-file-recoded")
