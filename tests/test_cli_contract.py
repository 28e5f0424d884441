"""What the ``k8see`` command promises a script or an operator who has never read its code.

Covers, through the real ``k8see`` process: ``--version`` prints the installed version; every
exit code is named in ``--help`` and in docs/operations.md; ``enqueue --wait`` that gives up
following exits with its own code (4), not the code of a failed run (1); with ``--json`` the
progress lines of ``--wait`` still appear, on stderr, and stdout holds only the one JSON object;
``validate --json`` on an invalid file prints a JSON error document on stdout; shell
completion is documented with the variable click reads, and that variable does produce a
completion script.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from k8see import cli

ROOT = Path(__file__).resolve().parents[1]
SHA = "e" * 40


def _cli(
    *args: str, redis_url: str = "redis://127.0.0.1:1/0", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "K8SEE_REDIS__URL": redis_url}
    env.pop("GITHUB_EVENT_NAME", None)
    return subprocess.run(
        [sys.executable, "-m", "k8see", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def test_version_prints_the_installed_version() -> None:
    out = _cli("--version")
    assert out.returncode == cli.EXIT_OK, out.stderr
    assert out.stdout.strip() == f"k8see, version {version('k8see')}"


def test_every_exit_code_is_named_in_help_and_in_the_operations_guide() -> None:
    codes = {
        cli.EXIT_OK: 0,
        cli.EXIT_USER_ERROR: 1,
        cli.EXIT_USAGE: 2,
        cli.EXIT_UNREACHABLE: 3,
        cli.EXIT_WAIT_TIMEOUT: 4,
    }
    assert list(codes) == list(codes.values())
    help_text = _cli("--help").stdout
    guide = (ROOT / "docs" / "operations.md").read_text()
    for code in codes:
        assert re.search(rf"^ +{code}  \S", help_text, re.MULTILINE), help_text
        assert f"\n| {code} | " in guide


def test_a_wait_that_gives_up_exits_4_and_json_keeps_progress_on_stderr(redis_url: str) -> None:
    # Given no worker consumes the queue, so the run stays queued
    out = _cli(
        "enqueue",
        "--repo",
        "acme/shop",
        "--pr",
        "9",
        "--action",
        "opened",
        "--sha",
        SHA,
        "--wait",
        "--timeout",
        "1.5",
        "--json",
        redis_url=redis_url,
    )
    # Then following gives up with its own exit code, distinct from a failed run's
    assert out.returncode == cli.EXIT_WAIT_TIMEOUT == 4, out.stderr
    # And stdout is one JSON object saying so, while the progress went to stderr
    summary = json.loads(out.stdout)
    assert summary["status"] == "queued" and summary["timed_out"] is True
    assert "queued" in out.stderr and "Gave up following" in out.stderr


def test_validate_json_on_an_invalid_file_prints_a_json_error(tmp_path: Path) -> None:
    (tmp_path / "k8s-ee.yaml").write_text("projectId: shop\napp:\n  port: not-a-port\n")
    out = _cli("validate", "k8s-ee.yaml", "--json", cwd=tmp_path)
    assert out.returncode == cli.EXIT_USER_ERROR
    document = json.loads(out.stdout)
    assert document["exit_code"] == cli.EXIT_USER_ERROR
    assert document["error"]["type"] == "ConfigError"
    assert document["error"]["where"] == {"file": "k8s-ee.yaml", "field": "app.port", "line": 3}
    # The human-readable error is still on stderr
    assert out.stderr.startswith("Error: ")


def test_validate_json_on_a_valid_file_says_it_is_valid(tmp_path: Path) -> None:
    (tmp_path / "k8s-ee.yaml").write_text("projectId: shop\n")
    out = _cli("validate", "k8s-ee.yaml", "--json", cwd=tmp_path)
    assert out.returncode == cli.EXIT_OK, out.stderr
    assert json.loads(out.stdout)["projectId"] == "shop"


def test_an_unreachable_redis_with_json_prints_a_json_error() -> None:
    out = _cli("status", "--repo", "acme/shop", "--json")
    assert out.returncode == cli.EXIT_UNREACHABLE
    document = json.loads(out.stdout)
    assert document["exit_code"] == cli.EXIT_UNREACHABLE and document["error"]["hint"]


def test_shell_completion_is_documented_and_works() -> None:
    docs = (ROOT / "docs" / "operations.md").read_text()
    assert "_K8SEE_COMPLETE=bash_source k8see" in docs
    assert "_K8SEE_COMPLETE=zsh_source k8see" in docs
    env = {**os.environ, "_K8SEE_COMPLETE": "bash_source"}
    k8see = Path(sys.executable).with_name("k8see")
    out = subprocess.run([str(k8see)], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and "complete -o nosort -F" in out.stdout, out.stderr
