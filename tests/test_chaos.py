"""Under kill -9 of workers and supervisor and a misbehaving server, no file or report is lost,
duplicated or left behind: the short version of ``python -m wats_station.lab.chaos``, same code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from wats_station.lab.chaos import (
    ChaosSettings,
    DroppedFile,
    file_problems,
    print_result,
    report_problems,
    run_chaos,
)

SHORT_RUN = ChaosSettings(
    files=300,
    seconds=30.0,
    seed=20240611,
    poison_every=10,
    worker_kill_every_s=(0.5, 2.0),
    supervisor_kill_every_s=(5.0, 10.0),
    fault_switch_every_s=(0.3, 1.5),
    drain_timeout_s=90.0,
)


@pytest.mark.timeout(240)
def test_a_chaos_run_loses_nothing_duplicates_nothing_and_leaves_nothing_behind(home: Path):
    result = run_chaos(SHORT_RUN, home)
    print_result(result)  # pytest shows the figures when the test fails, or with -s
    assert result.problems == []
    # The run did attack: otherwise a clean ledger would prove nothing.
    assert result.figures["supervisor kills (kill -9)"] >= 1
    assert not result.figures["worker kills (kill -9)"].startswith("0 ")
    assert result.figures["faults injected by the emulator"] > 0
    assert result.figures["reports received (unique ids)"] == 270


def test_the_ledger_names_every_kind_of_loss_it_exists_to_catch(tmp_path: Path):
    # A clean run proves something only if the ledger sees what it looks for.
    inbox = tmp_path / "in"
    for folder in ("wsjf/Done", "wsjf/Error", "wstf/Done", "wstf/Error"):
        (inbox / folder).mkdir(parents=True)
    (inbox / "wsjf" / "Error" / "good.json").write_text("{}")  # good, quarantined, no sidecar
    (inbox / "wsjf" / "Done" / "poison.json").write_text("")  # poison, converted
    (inbox / "wstf" / "Done" / "twice.txt").write_text("x")
    (inbox / "wstf" / "Done" / "twice (2).txt").write_text("x")  # moved twice
    (inbox / "wstf" / "left.txt").write_text("x")  # never picked up
    dropped = [
        DroppedFile("good.json", "wsjf", None, "id-good"),
        DroppedFile("poison.json", "wsjf", "empty", None),
        DroppedFile("twice.txt", "wstf", None, "id-twice"),
        DroppedFile("left.txt", "wstf", None, "id-left"),
        DroppedFile("gone.txt", "wstf", None, "id-gone"),
    ]
    problems = "\n".join(file_problems(inbox, dropped))
    assert "good file in Error: wsjf/good.json" in problems
    assert "no reason for wsjf/good.json" in problems
    assert "poison file converted: wsjf/poison.json" in problems
    assert "unexpected files in wstf/Done: twice (2).txt" in problems
    assert "file left behind: wstf/left.txt" in problems
    assert "lost file: wstf/gone.txt" in problems

    reports = {"id-good": "completed", "id-twice": "pending", "id-other": "completed"}
    sources = [("good.json", "done", 1), ("twice.txt", "done", 1), ("twice.txt", "done", 1)]
    received = ["id-good", "id-good", "id-stranger"]
    problems = "\n".join(report_problems(dropped, reports, sources, received))
    assert "reports not completed once the server was healthy: id-twice (pending)" in problems
    assert "never queued: id-gone, id-left" in problems
    assert "no good file explains (a duplicate by another id?): id-other" in problems
    assert "server never received (lost): id-other, id-twice" in problems
    assert "the station never queued: id-stranger" in problems
    assert "WSJF files whose own id the server never received" not in problems
    assert "twice.txt: source records [('done', 1), ('done', 1)]" in problems
