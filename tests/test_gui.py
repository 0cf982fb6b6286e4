"""The station window, driven for real: a real station and the emulator behind it, Qt offscreen.

Every page must show what the station says, every action must change the station as the CLI
then shows it, and the window must survive the station stopping, dying and coming back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no display needed, as in CI

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QLineEdit

from wats_station.emulator import Emulator
from wats_station.gui.converters import ConvertersPage
from wats_station.gui.events import EventsPage
from wats_station.gui.files import FilesPage
from wats_station.gui.instances import InstancesPage, find_instances
from wats_station.gui.link import Reply
from wats_station.gui.overview import OverviewPage
from wats_station.gui.queue import QueuePage
from wats_station.gui.settings import SettingsPage
from wats_station.gui.window import MainWindow, is_ready
from wats_station.ipc.client import CommandFailed
from wats_station.lab.harness import wait_until
from wats_station.samples import sample_report, write_wstf_files
from wats_station.supervisor.config import MASK, merge_config_changes

TOKEN = "Z3VpOnNlY3JldA=="
WAIT_MS = 15_000


@pytest.fixture
def emulator():
    with Emulator(token=TOKEN) as server:
        yield server


@pytest.fixture
def station(make_station, home, emulator, monkeypatch):
    monkeypatch.setenv("WATS_STATION_HOME", str(home))  # the window finds the station here
    return make_station(
        config={
            "server": {"url": emulator.url, "token": TOKEN},
            "upload": {"max_concurrency": 1, "probe_base_s": 0.1, "probe_cap_s": 0.3},
            "watch": {"debounce_s": 0.2, "rescan_interval_s": 1.0},
        }
    )


@pytest.fixture
def window(qtbot, station):
    main = MainWindow(station.instance)
    qtbot.addWidget(main)
    main.resize(1024, 768)
    main.show()
    qtbot.waitUntil(lambda: is_ready(main), timeout=WAIT_MS)
    yield main
    main.close()


def page(window: MainWindow, cls):
    index = next(i for i, p in enumerate(window.pages) if isinstance(p, cls))
    window.show_page(index)
    return window.pages[index]


def click_row(table, key) -> None:
    assert table.select_key(key), f"{key!r} is not in the table: {table.column_texts(0)}"


@pytest.mark.timeout(90)
def test_overview_queue_and_events_show_the_station_and_their_actions_change_it(
    qtbot, station, emulator, window
):
    ids = [station.call("submit_report", report=sample_report(unit))["id"] for unit in range(3)]
    wait_until(lambda: station.call("get_queue_stats")["completed"] == 3, 20, "3 uploads")

    overview = page(window, OverviewPage)
    qtbot.waitUntil(lambda: "3 completed" in overview.fields["reports"].text(), timeout=WAIT_MS)
    workers = station.call("list_workers")
    assert overview.workers.column_texts(0) == [w["name"] for w in workers]
    assert overview.workers.column_texts(3) == [w["state"] for w in workers]
    assert "Online" in overview.fields["server"].text()
    assert overview.fields["oldest"].text() == "nothing waiting to be sent"

    # Restart a worker: the station (and so `wats-station workers list`) shows a new process.
    before = station.worker("uploader")
    click_row(overview.workers, "uploader")
    qtbot.mouseClick(overview.worker_buttons["restart"], Qt.MouseButton.LeftButton)
    after = station.wait_worker(
        "uploader", lambda w: w["pid"] not in (None, before["pid"]) and w["state"] == "running"
    )
    assert str(after["pid"]) in station.cli("workers", "list", check=True).stdout
    qtbot.waitUntil(lambda: str(after["pid"]) in overview.workers.column_texts(2), timeout=WAIT_MS)

    # A report the server rejects shows as failed with the server's words; retry sends it again.
    emulator.set_faults(failure_rate=1.0, failure_status=400)
    rejected = station.call("submit_report", report=sample_report(7))["id"]
    wait_until(lambda: station.call("get_report", id=rejected)["state"] == "failed", 20)
    queue = page(window, QueuePage)
    queue.state.setCurrentText("failed")
    qtbot.waitUntil(lambda: queue.table.column_texts(0) == [rejected], timeout=WAIT_MS)
    assert "400" in queue.table.column_texts(4)
    click_row(queue.table, rejected)
    qtbot.waitUntil(lambda: queue.header_labels["id"].text() == rejected, timeout=WAIT_MS)
    assert queue.header_labels["sn"].text() == sample_report(7)["sn"]
    assert queue.steps.topLevelItem(0).child(0).text(0) == sample_report(7)["root"]["name"]
    qtbot.waitUntil(lambda: "HTTP 400" in queue.history.toPlainText(), timeout=WAIT_MS)
    emulator.set_faults(failure_rate=0.0)
    qtbot.mouseClick(queue.retry, Qt.MouseButton.LeftButton)
    wait_until(lambda: station.call("get_report", id=rejected)["state"] == "completed", 20)
    shown = station.cli("queue", "show", rejected, check=True).stdout
    assert json.loads(shown)["state"] == "completed"
    queue.state.setCurrentText("completed")
    qtbot.waitUntil(lambda: rejected in queue.table.column_texts(0), timeout=WAIT_MS)

    # Clean: completed reports go, as `queue stats` then shows.
    queue.clean(older_than_days=0, include_failed=False)
    wait_until(lambda: station.call("get_queue_stats")["completed"] == 0, 10, "a clean queue")
    assert "completed   0" in station.cli("queue", "stats", check=True).stdout
    qtbot.waitUntil(lambda: queue.table.rowCount() == 0, timeout=WAIT_MS)

    # Every event the station sent is on the Events page, and the filter finds them.
    events = page(window, EventsPage)
    qtbot.waitUntil(lambda: {"report.completed"} <= {e[2] for e in events.events}, timeout=WAIT_MS)
    events.filter.setText(rejected)
    qtbot.waitUntil(lambda: events.table.rowCount() >= 2, timeout=WAIT_MS)
    assert all(rejected in events.table.cell_text(r, 3) for r in range(events.table.rowCount()))
    assert set(ids) <= {json.loads(e[3]).get("id") for e in events.events}
    events.table.selectRow(0)
    assert rejected in events.detail.toPlainText()  # the selected event in full


@pytest.mark.timeout(90)
def test_pause_resume_health_and_reprocessing_a_file_drive_the_station(
    qtbot, station, home, window
):
    overview = page(window, OverviewPage)
    qtbot.waitUntil(lambda: overview.pause_buttons["all"].isEnabled(), timeout=WAIT_MS)
    qtbot.mouseClick(overview.pause_buttons["uploads"], Qt.MouseButton.LeftButton)
    wait_until(lambda: station.call("get_status")["paused"]["uploads"], 10, "a pause")
    assert "paused" in station.cli("status", check=True).stdout
    qtbot.waitUntil(
        lambda: "uploads paused by" in overview.fields["paused"].text(), timeout=WAIT_MS
    )
    qtbot.mouseClick(overview.resume_button, Qt.MouseButton.LeftButton)
    wait_until(lambda: not station.call("get_status")["paused"]["uploads"], 10, "resumed")
    qtbot.waitUntil(lambda: overview.fields["paused"].text() == "no", timeout=WAIT_MS)

    # A bad file ends in Error: live on the Files page; the verdict (and the tray) follow.
    drop = station.paths.data_dir / "drop"
    (drop / "csv").mkdir(parents=True, exist_ok=True)
    (drop / "csv" / "broken.csv").write_text("not,a,test,result\n")
    files = page(window, FilesPage)
    qtbot.waitUntil(
        lambda: any("broken.csv" in row[2] for row in files.recent_rows), timeout=WAIT_MS
    )
    assert any(row[1] == "error" for row in files.recent_rows)
    health = wait_until(
        lambda: (
            (h := station.call("get_health"))["verdict"] != "ok"
            and any("quarantined" in r["message"] for r in h["reasons"])
            and h
        ),
        10,
        "a verdict that names the quarantined file",
    )
    trouble = next(r["message"] for r in health["reasons"] if "quarantined" in r["message"])
    qtbot.waitUntil(lambda: trouble in overview.verdict.text(), timeout=WAIT_MS)
    assert window.verdict == (health["verdict"], overview.verdict.text())  # the tray's too

    files.state.setCurrentText("error")
    qtbot.waitUntil(lambda: "broken.csv" in files.table.column_texts(0), timeout=WAIT_MS)
    row = files.table.column_texts(0).index("broken.csv")
    assert files.table.cell_text(row, 3)  # the reason
    assert files.selected_folder() is None
    click_row(files.table, "broken.csv")
    assert files.selected_folder() == os.path.dirname(files.table.cell_text(row, 6))
    qtbot.mouseClick(files.reprocess, Qt.MouseButton.LeftButton)
    # The station puts it back into its drop folder (`wats-station files list` shows it
    # waiting), and the trail says so; still broken, it may already have failed again.
    wait_until(
        lambda: (
            "waiting  csv        broken.csv" in station.cli("files", "list").stdout
            or station.call("get_status")["files"]["failed"] >= 2
        ),
        20,
        "the file back in its drop folder",
    )
    trail = [e["what"] for e in station.call("trace", target="broken.csv")["events"]]
    assert "retried" in trail
    files.state.setCurrentText("all")
    qtbot.waitUntil(
        lambda: (
            ("broken.csv", "waiting") in files_and_states(files)
            or station.call("get_status")["files"]["failed"] >= 2
        ),
        timeout=WAIT_MS,
    )


def test_an_older_station_without_pause_health_or_files_is_shown_as_such(qtbot, window):
    overview = window.page(OverviewPage)
    status = {k: v for k, v in window.status.items() if k not in ("paused", "health")}
    overview.show_status(status)
    assert "needs a newer station" in overview.verdict.text()
    assert "needs a newer station" in overview.fields["paused"].text()
    assert not overview.pause_buttons["all"].isEnabled()
    files = window.page(FilesPage)
    files._files_fetched(Reply("list_files", False, error="unknown", code="unknown_command"))
    assert "needs a newer station" in files.note.text()
    assert not files.reprocess.isEnabled()


def files_and_states(files) -> set[tuple[str, str]]:
    return set(zip(files.table.column_texts(0), files.table.column_texts(2), strict=True))


@pytest.mark.timeout(90)
def test_converters_try_a_file_and_settings_save_through_the_station(
    qtbot, station, home, window, tmp_path
):
    converters = page(window, ConvertersPage)
    names = [c["name"] for c in station.call("list_converters")]
    qtbot.waitUntil(lambda: converters.table.column_texts(0) == names, timeout=WAIT_MS)

    # Try a file: the report tree appears, nothing is queued.
    (sample,) = write_wstf_files(tmp_path, 1)
    with qtbot.waitSignal(converters.tried, timeout=30_000) as ok:
        converters.try_file(str(sample), "wstf")
    assert ok.args == [True]
    assert converters.tree.topLevelItemCount() == 1
    assert "SN" in converters.tree.topLevelItem(0).text(0)
    bad = tmp_path / "bad.txt"
    bad.write_text("this is no test result\n")
    with qtbot.waitSignal(converters.tried, timeout=30_000) as failed:
        converters.try_file(str(bad), "wstf")
    assert failed.args == [False]
    assert "bad.txt" in converters.output.toPlainText()
    assert sum(station.call("get_queue_stats").values()) == 0

    # Settings: a bad value is refused naming its key; a good one is saved and applied.
    settings = page(window, SettingsPage)
    qtbot.waitUntil(lambda: settings.loaded is not None, timeout=WAIT_MS)
    token = settings.inputs["server.token"][0]
    assert isinstance(token, QLineEdit) and token.text() == ""  # never shown
    assert token.echoMode() == QLineEdit.EchoMode.Password
    concurrency = settings.inputs["upload.max_concurrency"][0]
    concurrency.setText("0")
    assert settings.check() is None
    assert "upload.max_concurrency" in settings.message.text()
    assert "between 1 and 64" in settings.message.text()
    assert "c62828" in concurrency.styleSheet()
    concurrency.setText("many")
    assert settings.check() is None and "upload.max_concurrency" in settings.message.text()
    concurrency.setText("3")
    settings.inputs["station.location"][0].setText("Line 4")
    qtbot.mouseClick(settings.save_button, Qt.MouseButton.LeftButton)
    wait_until(lambda: station.call("get_config")["upload"]["max_concurrency"] == 3, 10, "saved")
    shown = json.loads(station.cli("config", "show", check=True).stdout)
    assert shown["upload"]["max_concurrency"] == 3
    assert shown["station"]["location"] == "Line 4"
    file = json.loads(station.paths.config_file.read_text())
    assert file["server"]["token"] == TOKEN  # kept, though the form never had it
    qtbot.waitUntil(lambda: "saved to" in settings.message.text(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: concurrency.text() == "3", timeout=WAIT_MS)

    # The file edited by hand: "Reload the file" makes the station read it again.
    file["upload"]["max_concurrency"] = 4
    station.paths.config_file.write_text(json.dumps(file))
    qtbot.mouseClick(settings.reload_button, Qt.MouseButton.LeftButton)
    wait_until(lambda: station.call("get_config")["upload"]["max_concurrency"] == 4, 10)
    qtbot.waitUntil(lambda: concurrency.text() == "4", timeout=WAIT_MS)


@pytest.mark.timeout(90)
def test_the_window_follows_a_station_that_stops_dies_and_comes_back(
    qtbot, station, make_station, window
):
    other = make_station("ict", start=False)  # configured, never started
    instances = page(window, InstancesPage)
    qtbot.waitUntil(
        lambda: {"default", "ict"} <= set(instances.table.column_texts(0)), timeout=WAIT_MS
    )
    row = instances.table.column_texts(0).index("ict")
    assert instances.table.cell_text(row, 1) == "not running"
    assert "wats-station service --instance-id ict" in instances.table.cell_text(row, 4)
    del other

    first_pid = window.status["pid"]
    station.stop()
    qtbot.waitUntil(lambda: not window.link.is_connected, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=WAIT_MS)
    assert "wats-station service --instance-id default" in window.banner.text()
    assert window.verdict[0] == "offline"

    station.start()
    qtbot.waitUntil(lambda: is_ready(window) and window.status["pid"] != first_pid, timeout=WAIT_MS)
    assert not window.banner.isVisible()

    second_pid = window.status["pid"]
    station.kill()  # SIGKILL: the socket files stay behind, nothing says goodbye
    qtbot.waitUntil(lambda: not window.link.is_connected, timeout=WAIT_MS)
    station.start()
    qtbot.waitUntil(
        lambda: is_ready(window) and window.status["pid"] not in (first_pid, second_pid),
        timeout=20_000,
    )
    overview = page(window, OverviewPage)
    qtbot.waitUntil(
        lambda: str(window.status["pid"]) in overview.fields["service"].text(), timeout=WAIT_MS
    )

    # Follow the other instance (not running), then come back.
    instances = page(window, InstancesPage)
    qtbot.waitUntil(lambda: "ict" in instances.table.column_texts(0), timeout=WAIT_MS)
    click_row(instances.table, "ict")
    qtbot.mouseClick(instances.follow, Qt.MouseButton.LeftButton)
    assert window.instance == "ict"
    qtbot.waitUntil(lambda: "station 'ict'" in window.banner.text(), timeout=WAIT_MS)
    assert "wats-station service --instance-id ict" in window.banner.text()
    qtbot.waitUntil(lambda: "default" in instances.table.column_texts(0), timeout=WAIT_MS)
    click_row(instances.table, "default")
    qtbot.keyClick(instances.follow, Qt.Key.Key_Space)
    qtbot.waitUntil(lambda: is_ready(window) and window.instance == "default", timeout=WAIT_MS)


@pytest.mark.timeout(60)
def test_the_station_saves_only_a_valid_config_and_keeps_the_token(station):
    with pytest.raises(CommandFailed, match=r"upload\.max_concurrency: must be between 1 and 64"):
        station.call("save_config", changes={"upload": {"max_concurrency": 0}})
    with pytest.raises(CommandFailed, match=r"upload\.nope: unknown key"):
        station.call("save_config", changes={"upload": {"nope": 1}})
    masked = station.call("get_config")["server"]["token"]
    result = station.call(
        "save_config", changes={"server": {"token": masked}, "watch": {"debounce_s": 0.5}}
    )
    assert result["saved"] == str(station.paths.config_file)
    document = json.loads(station.paths.config_file.read_text())
    assert document["server"]["token"] == TOKEN  # "********" means unchanged
    assert document["watch"]["debounce_s"] == 0.5
    assert document["supervisor"]["heartbeat_interval_s"] == 0.2  # the rest is kept
    assert station.call("get_config")["watch"]["debounce_s"] == 0.5


def test_the_installed_qt_keeps_python_reference_counts(qapp):
    # PySide6 6.12.0 on Python 3.11 lost a reference to True on every emit and to None on
    # every sender() returning None: the window aborted after some thousand signals.
    class Probe(QObject):
        ping = Signal(object)

    probe = Probe()
    probe.ping.connect(lambda _value: None)
    before = sys.getrefcount(True), sys.getrefcount(None)
    for _ in range(1000):
        probe.ping.emit(None)
        probe.sender()
    assert abs(sys.getrefcount(True) - before[0]) < 50
    assert abs(sys.getrefcount(None) - before[1]) < 50


def test_merging_changes_lays_sections_over_the_file():
    document = {"server": {"url": "http://a", "token": "t"}, "upload": {"max_concurrency": 2}}
    merged = merge_config_changes(
        document, {"server": {"token": MASK}, "upload": {"read_timeout_s": 9.0}}
    )
    assert merged == {
        "server": {"url": "http://a", "token": "t"},
        "upload": {"max_concurrency": 2, "read_timeout_s": 9.0},
    }
    assert document["upload"] == {"max_concurrency": 2}  # not changed in place


def test_instances_are_found_where_their_files_live(home, monkeypatch):
    monkeypatch.setenv("WATS_STATION_HOME", str(home))
    (home / "config_ict.json").write_text("{}")
    (home / "fct" / "run").mkdir(parents=True)
    (home / "not an id!" / "run").mkdir(parents=True)
    (home / "samples").mkdir()  # a folder, but no instance's
    assert find_instances("eol") == ["eol", "fct", "ict"]


def test_the_gui_command_says_how_to_install_qt_when_it_is_missing():
    code = (
        "import sys; sys.modules['PySide6'] = None\n"
        "from wats_station.cli import main\n"
        "raise SystemExit(main(['gui']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert "pip install 'wats-station[gui]'" in result.stderr


@pytest.mark.timeout(60)
def test_keyboard_layout_and_copying(qtbot, window):
    assert window.minimumSizeHint().width() <= 1024
    assert window.minimumSizeHint().height() <= 768
    qtbot.keyClick(window, Qt.Key.Key_3, Qt.KeyboardModifier.ControlModifier)
    assert isinstance(window.stack.currentWidget(), QueuePage)
    qtbot.keyClick(window, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier)
    overview = window.stack.currentWidget()
    assert isinstance(overview, OverviewPage)
    qtbot.waitUntil(lambda: overview.workers.rowCount() == 3, timeout=WAIT_MS)
    overview.workers.setFocus()
    overview.workers.selectAll()
    qtbot.keyClick(overview.workers, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    copied = QGuiApplication.clipboard().text().splitlines()
    assert [line.split("\t")[0] for line in copied] == overview.workers.column_texts(0)
    flags = overview.fields["server"].textInteractionFlags()
    assert flags & Qt.TextInteractionFlag.TextSelectableByKeyboard
