"""How wats-station installs: one import root, beside supervisord, without its tooling.

These build a real wheel and install it, with supervisord, into real virtual environments.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from wats_station.lab.harness import REPO

TOOLING = ("wats_station.lab", "wats_station.bench")


def run(*command: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    # Not from the repository: there, `python -c` would find its supervisor/ folder first.
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=timeout, cwd="/"
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", folder, REPO)
    (built,) = folder.glob("wats_station-*.whl")
    return built


def imports_of(source: str) -> Iterator[str]:
    """Every module a file imports, relative imports excluded (we use none)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


@pytest.mark.timeout(300)
def test_the_wheel_holds_one_top_level_package_and_no_tooling(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top_level = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top_level == {"wats_station"}
    assert not [
        name for name in names if name.startswith(("wats_station/lab/", "wats_station/bench/"))
    ]
    # What the product needs at run time is in it: the unit template and the sample files.
    assert "wats_station/wats-station@.service" in names
    assert "wats_station/sample_files/uut-wsjf-export.json" in names


@pytest.mark.timeout(300)
def test_no_module_of_the_product_imports_tooling_or_tests(wheel: Path) -> None:
    offenders = []
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if not name.endswith(".py"):
                continue
            for module in imports_of(archive.read(name).decode()):
                if module.startswith(TOOLING) or module.split(".")[0] in ("tests", "conftest"):
                    offenders.append(f"{name} imports {module}")
    assert offenders == []


def test_every_import_arrow_points_down_the_layers() -> None:
    """scripts (the root) -> supervisor -> workers -> converters, ipc; never back up."""
    rank = {"ipc": 0, "converters": 1, "workers": 2, "supervisor": 3}
    upward = []
    for folder, own_rank in rank.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            for module in imports_of(path.read_text()):
                parts = module.split(".")
                if parts[0] != "wats_station":
                    continue
                target = parts[1] if len(parts) > 1 else ""
                if rank.get(target, 4) > own_rank:
                    upward.append(f"{path.relative_to(REPO)} imports {module}")
    assert upward == []


@pytest.mark.timeout(600)
def test_wats_station_and_supervisord_share_one_environment(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python, bin_dir = env_dir / "bin" / "python", env_dir / "bin"
    pip = (python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check")

    run(*pip, "supervisor", wheel)
    assert run(bin_dir / "supervisord", "--version").stdout.strip()
    run(python, "-c", "import supervisor.options")
    assert "usage" in run(bin_dir / "wats-station", "--help").stdout

    # Removing either leaves the other whole.
    run(python, "-m", "pip", "uninstall", "--yes", "wats-station")
    run(python, "-c", "import supervisor.options, supervisor.supervisord")
    assert run(bin_dir / "supervisord", "--version").stdout.strip()

    run(*pip, "--editable", REPO)
    assert "usage" in run(bin_dir / "wats-station", "--help").stdout
    run(python, "-m", "pip", "uninstall", "--yes", "supervisor")
    assert "usage" in run(bin_dir / "wats-station", "--help").stdout
    run(python, "-c", "import wats_station.supervisor.service, wats_station.workers.uploader")


def test_the_modules_of_the_product_import_each_other_without_a_circle() -> None:
    """Counting imports made only for type checking too: a handler that needs the station
    says what it uses (a Protocol), it does not import the service that imports it."""
    modules = {
        f"wats_station.{folder}.{path.stem}": path
        for folder in ("ipc", "converters", "workers", "supervisor")
        for path in (REPO / folder).glob("*.py")
        if path.stem != "__init__"
    }
    graph = {
        name: {m for m in imports_of(path.read_text()) if m in modules and m != name}
        for name, path in modules.items()
    }
    circles, done = [], set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            circles.append(" -> ".join([*trail[trail.index(name) :], name]))
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert circles == []
