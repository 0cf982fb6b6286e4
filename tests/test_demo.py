"""The README's run command: the demo shows a whole station at work and says what happened."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from wats_station.lab.processes import kill_sessions


def test_the_demo_converts_uploads_and_explains(home: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATS_STATION_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "wats_station.cli", "demo", "--home", str(home)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=120)
    finally:
        kill_sessions({process.pid})
    assert process.returncode == 0, output
    converted = re.search(
        r"converted\s+(\d+) files into (\d+) reports.*holds (\d+) reports", output
    )
    assert converted, output
    files, reports, on_server = map(int, converted.groups())
    assert files == 33 and reports == on_server and reports > files  # WSTF files hold two UUTs
    assert "1 file(s) in an Error folder" in output
    assert "broken_run.json: " in output and "malformed JSON at line 1" in output
    drop = home / "default" / "data" / "drop"
    assert not [p for p in drop.glob("*/*") if p.is_file()], "every input file left its folder"
    assert (drop / "wsjf" / "Error" / "broken_run.json.error.json").exists()
