"""The composite action's enqueue script, run by bash as a GitHub runner would (real Redis).

Covers: the action file parses as a composite action whose inputs reach the script only
through env; an ordinary comment exits 0 with an empty run id; a command is queued and its run
id lands in ``$GITHUB_OUTPUT``; a bad Redis URL fails the step with k8see's exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis
import yaml

ROOT = Path(__file__).resolve().parents[1]
ACTION = ROOT / "examples" / "actions" / "enqueue" / "action.yml"


def _step(name: str) -> dict[str, Any]:
    action = yaml.safe_load(ACTION.read_text())
    assert action["runs"]["using"] == "composite"
    (step,) = [s for s in action["runs"]["steps"] if s.get("name") == name]
    return dict(step)


def _run(tmp_path: Path, body: str, redis_url: str) -> tuple[subprocess.CompletedProcess[str], str]:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({
        "action": "created",
        "issue": {"number": 5, "state": "open", "pull_request": {"url": "x"}},
        "comment": {"id": 31, "body": body, "user": {"login": "dana"}},
        "repository": {"full_name": "acme/shop"},
    }))  # fmt: skip
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
