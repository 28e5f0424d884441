"""The composite action's enqueue script, run by bash as a GitHub runner would (real Redis).

Covers: the action file parses as a composite action whose inputs reach the script only
through env; an ordinary comment exits 0 with an empty run id; a command is queued and its run
id lands in ``$GITHUB_OUTPUT``; a bad Redis URL fails the step with k8see's exit code; with
the enqueue credential the event goes to the intake list and its progress token is masked
in the log. The install step installs the k8see of the action's own commit by default, a
pinned requirement (``==`` from an index, or a git URL at a 40-hex commit) when given, and
refuses anything unpinned before pip runs (pip itself is a recording stand-in: it would reach
PyPI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.contracts.webhooks import comment_webhook

ROOT = Path(__file__).resolve().parents[1]
ACTION = ROOT / "examples" / "actions" / "enqueue" / "action.yml"


def _step(name: str) -> dict[str, Any]:
    action = yaml.safe_load(ACTION.read_text())
    assert action["runs"]["using"] == "composite"
    (step,) = [s for s in action["runs"]["steps"] if s.get("name") == name]
    return dict(step)


def _run(tmp_path: Path, body: str, redis_url: str) -> tuple[subprocess.CompletedProcess[str], str]:
    event = tmp_path / "event.json"
    event.write_text(json.dumps(comment_webhook("acme/shop", 5, body, login="dana")))
    output = tmp_path / "github_output"
    output.write_text("")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_EVENT_NAME": "issue_comment",
        "GITHUB_OUTPUT": str(output),
        "K8SEE_REDIS__URL": redis_url,
        "K8SEE_CONFIG": "k8s-ee.yaml",
        "K8SEE_WAIT": "true",
        "K8SEE_TIMEOUT": "30",
    }
    done = subprocess.run(
        ["bash", "-e", "-c", _step("Enqueue")["run"]],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done, output.read_text()


def test_inputs_reach_the_script_through_env_only() -> None:
    step = _step("Enqueue")
    assert "${{" not in step["run"]
    assert step["env"]["K8SEE_REDIS__URL"] == "${{ inputs.redis-url }}"


def test_an_ordinary_comment_is_a_green_no_op(tmp_path: Path, redis_url: str) -> None:
    done, output = _run(tmp_path, "Looks good to me", redis_url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["action"] == "skip"
    assert output == "run-id=\n"
    assert redis.Redis.from_url(redis_url).dbsize() == 0


def test_a_command_is_queued_and_its_run_id_is_an_output(tmp_path: Path, redis_url: str) -> None:
    done, output = _run(tmp_path, "/help", redis_url)
    assert done.returncode == 0, done.stderr
    run_id = output.strip().removeprefix("run-id=")
    assert len(run_id) == 12 and run_id == json.loads(done.stdout)["run_id"]
    assert redis.Redis.from_url(redis_url).llen("default") == 1


def test_with_the_enqueue_credential_the_progress_token_is_masked(
    tmp_path: Path, redis_urls: dict[str, str]
) -> None:
    done, output = _run(tmp_path, "/help", redis_urls["enqueue"])
    assert done.returncode == 0, done.stderr
    mask, printed = done.stdout.split("\n", 1)
    summary = json.loads(printed)
    # The token is masked in the log before the line that carries it is printed
    assert mask == f"::add-mask::{summary['progress']}" and len(summary["progress"]) >= 22
    assert output.strip() == f"run-id={summary['run_id']}"
    # and the event was submitted to the intake list, not sent to a queue
    admin = redis.Redis.from_url(redis_urls["admin"])
    assert admin.llen("k8see:intake") == 1 and admin.llen("default") == 0


def test_an_unreachable_redis_fails_the_step(tmp_path: Path) -> None:
    done, _ = _run(tmp_path, "/help", "redis://127.0.0.1:1/0")
    assert done.returncode == 3
    assert "Traceback" not in done.stderr


def test_the_example_workflow_and_the_readme_filter_comments_alike() -> None:
    # Both templates start a runner only for PR events and PR comments that may be commands
    workflow = yaml.safe_load((ROOT / "examples" / "workflows" / "pr-environment.yml").read_text())
    condition = workflow["jobs"]["enqueue"]["if"]
    readme = (ROOT / "README.md").read_text()
    assert f"if: {condition}" in readme
    assert "startsWith(github.event.comment.body, '/')" in condition


def _install(tmp_path: Path, package: str = "", index_url: str = "") -> tuple[int, str, list[str]]:
    """Run the install step with a recording stand-in for python, which would reach PyPI."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls"
    shim = bindir / "python"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {calls}\n')
    shim.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "GITHUB_ACTION_PATH": str(ACTION.parent),
        "K8SEE_PACKAGE": package,
        "K8SEE_INDEX_URL": index_url,
    }
    done = subprocess.run(
        ["bash", "-e", "-c", _step("Install the k8see client")["run"]],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    argv = calls.read_text().splitlines() if calls.exists() else []
    return done.returncode, done.stdout + done.stderr, argv


def test_the_client_comes_from_the_commit_the_action_is_pinned_to(tmp_path: Path) -> None:
    # Given no k8see-package: the repository GitHub fetched to run this action, at its commit
    code, said, argv = _install(tmp_path)
    assert code == 0, said
    assert argv == ["-m", "pip", "install", "--quiet", str(ROOT)]
    project = (ROOT / "pyproject.toml").read_text()
    assert '\nname = "k8see"\n' in project


@pytest.mark.parametrize(
    ("package", "index_url"),
    [
        ("k8see==1.2.3", "https://pypi.platform.example/simple"),
        ("k8see[worker]==0.1.0", ""),
        ("k8see @ git+https://github.com/acme/k8see@" + "0123456789abcdef" * 2 + "01234567", ""),
    ],
)
def test_a_pinned_requirement_is_installed_from_where_it_says(
    tmp_path: Path, package: str, index_url: str
) -> None:
    code, said, argv = _install(tmp_path, package, index_url)
    assert code == 0, said
    assert argv[-1] == package
    assert ("--index-url" in argv) == bool(index_url)
    if index_url:
        assert argv[argv.index("--index-url") + 1] == index_url


@pytest.mark.parametrize(
    "package",
    [
        "k8see",
        "k8see>=0.1",
        "k8see @ git+https://github.com/acme/k8see@main",
        "k8see @ git+https://github.com/acme/k8see@v1.0.0",
        "k8s-see==1.0",
    ],
)
def test_an_unpinned_requirement_is_refused_before_pip_runs(tmp_path: Path, package: str) -> None:
    code, said, argv = _install(tmp_path, package)
    assert code == 2 and "is not pinned" in said
    assert argv == []
