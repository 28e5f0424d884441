"""The composite action's enqueue script with ``api-url``: a GitHub-hosted job with no k8see
secret, only ``id-token: write``, queues its event through ``k8see api`` (bash, real HTTP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import redis

from k8see_sandbox.github import GitHubSandbox
from tests.api.conftest import ApiServer
from tests.api.helpers import SHA, generation
from tests.test_enqueue_action import _step


def _run(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    output = tmp_path / "github_output"
    output.write_text("")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("K8SEE_", "ACTIONS_"))}
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-e", "-c", _step("Enqueue")["run"]],
        cwd=tmp_path,
        env={
            **base,
            "PATH": path,
            "GITHUB_OUTPUT": str(output),
            "K8SEE_CONFIG": "k8s-ee.yaml",
            "K8SEE_WAIT": "false",
            "K8SEE_TIMEOUT": "30",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_api_url_sends_the_event_with_the_jobs_oidc_token(
    tmp_path: Path, start_api: Callable[..., ApiServer], github: GitHubSandbox, redis_url: str
) -> None:
    api = start_api(drain=False)
    github.add_repo("acme/shop")
    github.add_pull("acme/shop", 9, head_sha=SHA, head_ref="feature")
    event = tmp_path / "event.json"
    event.write_text(json.dumps(github.pull_request_event("acme/shop", 9, "opened")))
    done = _run(tmp_path, {
        "GITHUB_EVENT_PATH": str(event), "GITHUB_EVENT_NAME": "pull_request",
        "K8SEE_ACTION_API": api.url, "K8SEE_ACTION_AUDIENCE": "k8see",
        **github.oidc.job_environment("acme/shop"),
    })  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["run_id"]
    assert generation(redis.Redis.from_url(redis_url), "acme/shop", 9) == 1


def test_neither_api_url_nor_redis_url_says_which_to_set(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text("{}")
    done = _run(tmp_path, {"GITHUB_EVENT_PATH": str(event), "GITHUB_EVENT_NAME": "pull_request"})
    assert done.returncode == 2
    assert "api-url" in done.stdout and "redis-url" in done.stdout
