"""workers/entrypoint.sh: POOL picks the process; explicit arguments win.

The script runs under ``sh`` (dash, as in the Debian-based image) with a stand-in ``k8see``
on PATH that prints the arguments it got, so what is tested is our script's choice.

Covers: every pool ``k8see worker --pool`` knows, with and without CONCURRENCY; beat, Flower
and metrics listening beyond loopback; an unset or unknown POOL refused with exit 2 and the
list of pools; the platform chart's arguments (``--log-format json worker …``) and bare
subcommands go to k8see; a program on PATH runs as is; the metrics directory is created
(prometheus_client's multiprocess mode needs it and the chart's /tmp is a fresh emptyDir).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from k8see.cli import POOLS
from tests.conftest import ROOT

SCRIPT = ROOT / "workers" / "entrypoint.sh"


@pytest.fixture
def path(tmp_path: Path) -> str:
    fake = tmp_path / "k8see"
    fake.write_text('#!/bin/sh\necho "k8see $*"\n')
    fake.chmod(0o755)
    return f"{tmp_path}:/usr/bin:/bin"


def entry(path: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, timeout=30,
                          env={"PATH": path, **env})  # fmt: skip


def test_the_script_knows_exactly_the_cli_pools() -> None:
    match = re.search(r'^POOLS="([^"]*)"', SCRIPT.read_text(), re.M)
    assert match and set(match[1].split()) == set(POOLS)


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_pool_picks_the_worker(path: str, pool: str) -> None:
    done = entry(path, POOL=pool)
    assert (done.returncode, done.stdout) == (0, f"k8see worker --pool {pool}\n")
    sized = entry(path, POOL=pool, CONCURRENCY="3")
    assert sized.stdout == f"k8see worker --pool {pool} --concurrency 3\n"


def test_beat_flower_and_metrics(path: str) -> None:
    assert entry(path, POOL="beat").stdout == "k8see beat -s /tmp/celerybeat-schedule\n"
    assert entry(path, POOL="flower").stdout == "k8see flower --address 0.0.0.0 --port 5555\n"
    metrics = entry(path, POOL="metrics", METRICS_PORT="9100").stdout
    assert metrics == "k8see metrics --address 0.0.0.0 --port 9100\n"


@pytest.mark.parametrize("pool", [None, "gpu", "build;id", ""])
def test_missing_or_unknown_pool_is_refused(path: str, pool: str | None) -> None:
    done = entry(path, **({} if pool is None else {"POOL": pool}))
    assert done.returncode == 2 and done.stdout == ""
    assert "default build deploy maintenance all" in done.stderr


def test_arguments_win_over_pool(path: str) -> None:
    chart = entry(path, "--log-format", "json", "worker", "--pool", "deploy", POOL="build")
    assert chart.stdout == "k8see --log-format json worker --pool deploy\n"
    assert entry(path, "status", "--json").stdout == "k8see status --json\n"
    assert entry(path, "k8see", "enqueue", "--help").stdout == "k8see enqueue --help\n"
    assert entry(path, "echo", "plain program").stdout == "plain program\n"


def test_the_metrics_directory_is_created(path: str, tmp_path: Path) -> None:
    directory = tmp_path / "tmp" / "metrics"
    done = entry(path, POOL="default", PROMETHEUS_MULTIPROC_DIR=str(directory))
    assert done.returncode == 0 and directory.is_dir()
