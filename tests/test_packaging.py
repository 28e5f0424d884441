"""What ``pip install k8see`` installs: the product, never the stand-ins.

The sandbox (local cluster, GitHub stand-in, demo) is the k8see-sandbox distribution in
``sandbox/``; it depends on k8see and adds ``k8see sandbox`` and ``k8see demo`` through the
``k8see.commands`` entry points. Both wheels are built here from a copy of the sources (pip
would otherwise leave ``build/`` in the checkout) and their file lists read.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import click
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(600)


def _wheel(source: Path, out: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check",
         "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    tmp = tmp_path_factory.mktemp("wheels")
    product = tmp / "k8see"
    product.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, product / name)
    shutil.copytree(ROOT / "k8see", product / "k8see", ignore=shutil.ignore_patterns("__pycache__"))
    sandbox = tmp / "sandbox"
    shutil.copytree(
        ROOT / "sandbox", sandbox, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    return {
        "k8see": _wheel(product, tmp / "dist-k8see"),
        "k8see-sandbox": _wheel(sandbox, tmp / "dist-sandbox"),
    }


def test_the_k8see_wheel_holds_the_product_and_no_stand_in(wheels: dict[str, list[str]]) -> None:
    files = wheels["k8see"]
    packages = {name.split("/")[0] for name in files if name.endswith(".py")}
    assert packages == {"k8see"}
    assert "k8see/cli/__init__.py" in files and "k8see/cli/submit.py" in files
    assert "k8see/client.py" in files and "k8see/py.typed" in files
    assert not [name for name in files if "sandbox" in name], "stand-in code in the wheel"


def test_the_sandbox_wheel_holds_the_stand_ins_and_adds_the_commands(
    wheels: dict[str, list[str]],
) -> None:
    files = wheels["k8see-sandbox"]
    assert {name.split("/")[0] for name in files if name.endswith(".py")} == {"k8see_sandbox"}
    assert "k8see_sandbox/github.py" in files and "k8see_sandbox/cluster/__init__.py" in files
    entry_points = next(name for name in files if name.endswith("entry_points.txt"))
    assert entry_points.startswith("k8see_sandbox-")


def test_the_cli_has_the_sandbox_commands_only_through_the_plugin() -> None:
    # In this checkout k8see-sandbox is installed (make bootstrap), so the commands are there
    from importlib.metadata import entry_points

    from k8see.cli import PLUGIN_GROUP, main

    found = {entry.name: entry.value for entry in entry_points(group=PLUGIN_GROUP)}
    assert found == {"sandbox": "k8see_sandbox.cli:sandbox", "demo": "k8see_sandbox.cli:demo"}
    with click.Context(main) as ctx:
        assert {"sandbox", "demo"} <= set(main.list_commands(ctx))
        assert main.get_command(ctx, "sandbox") is not None
        assert main.get_command(ctx, "demo") is not None


def test_a_command_of_k8see_itself_loads_no_plugin() -> None:
    # `k8see enqueue` (a workflow's cold start) and the workers never import the sandbox
    probe = (
        "import sys, click; from k8see.cli import main\n"
        "with click.Context(main) as ctx: assert main.get_command(ctx, 'enqueue')\n"
        "print(sorted(m for m in sys.modules if m.startswith('k8see_sandbox')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
