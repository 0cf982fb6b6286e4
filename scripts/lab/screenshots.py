"""Pictures of every page of the station window, from the real application with a real station.

    python -m wats_station.lab.screenshots docs/screenshots

Starts the emulator and a station in a throw-away home, gives it some work (uploads, one
report the server rejects, converted files and a broken one), opens the window offscreen at
1024x768 and saves ``QWidget.grab()`` of each page; last, the window with its station gone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TOKEN = "c2NyZWVuOnNob3Q="


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", default="1024x768", help="window size, WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="ws-shot-", dir="/tmp"))
    os.environ["WATS_STATION_HOME"] = str(home)
    try:
        return shoot(home, args.folder, tuple(int(n) for n in args.size.split("x")))
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(home.with_name(home.name + "-try"), ignore_errors=True)


def shoot(home: Path, folder: Path, size: tuple[int, ...]) -> int:
    from PySide6.QtWidgets import QApplication

    from wats_station.emulator import Emulator
    from wats_station.gui.converters import ConvertersPage
    from wats_station.gui.queue import QueuePage
    from wats_station.gui.window import MainWindow, is_ready
    from wats_station.lab.harness import Station, wait_until
    from wats_station.samples import sample_report, write_wstf_files

    app = QApplication.instance() or QApplication(sys.argv[:1])
    folder.mkdir(parents=True, exist_ok=True)

    def settle(seconds: float, until: Callable[[], object] = lambda: False) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until():
            app.processEvents()
            time.sleep(0.02)

    with Emulator(token=TOKEN) as server:
        station = Station(home)
        station.write_config(
            {
                "server": {"url": server.url, "token": TOKEN},
                "station": {"name": "ICT-LINE-4", "location": "Plant 2"},
                "watch": {"debounce_s": 0.2, "rescan_interval_s": 1.0},
                "upload": {"max_concurrency": 2},
            }
        )
        Station(home, "fct").write_config({})  # a second instance, not running
        station.start()
        try:
            for unit in range(24):
                station.call("submit_report", report=sample_report(unit))
            wait_until(lambda: station.call("get_queue_stats")["completed"] == 24, 30)
            server.set_faults(failure_rate=1.0, failure_status=400)
            rejected = station.call("submit_report", report=sample_report(99, 1))["id"]
            wait_until(lambda: station.call("get_report", id=rejected)["state"] == "failed", 30)
            server.set_faults(failure_rate=0.0)

            window = MainWindow("default")
            window.resize(*size)
            window.show()
            settle(20, lambda: is_ready(window))
            drop = station.paths.data_dir / "drop"
            write_wstf_files(drop / "wstf", 3)
            (drop / "csv").mkdir(parents=True, exist_ok=True)
            (drop / "csv" / "line4_0815.csv").write_text("SerialNumber;broken\n")
            wait_until(lambda: station.call("get_status")["files"]["failed"] >= 1, 30)
            wait_until(lambda: station.call("get_status")["files"]["converted"] >= 3, 30)
            settle(2)

            sample = write_wstf_files(home.with_name(home.name + "-try"), 1)[0]
            converters = window.page(ConvertersPage)
            converters.try_file(str(sample), "wstf")
            queue = window.page(QueuePage)
            for index, page in enumerate(window.pages, 1):
                window.show_page(index - 1)
                if page is queue:
                    settle(3, lambda: queue.table.select_key(rejected))
                    settle(2, lambda: queue.header_labels["id"].text() == rejected)
                    queue.details.setCurrentIndex(1)
                if page is converters:
                    settle(15, lambda: converters.tree.topLevelItemCount() > 0)
                settle(1.5)
                target = folder / f"{index}-{page.title.lower()}.png"
                window.grab().save(str(target))
                print(f"wrote {target}")
                if page is queue:
                    queue.details.setCurrentIndex(2)
                    settle(1)
                    target = folder / f"{index}b-queue-history.png"
                    window.grab().save(str(target))
                    print(f"wrote {target}")
            station.stop()
            window.show_page(0)
            settle(10, lambda: window.banner.isVisible())
            settle(0.5)
            target = folder / "8-not-connected.png"
            window.grab().save(str(target))
            print(f"wrote {target}")
            window.close()
        finally:
            station.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
