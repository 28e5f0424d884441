"""Comments at the enqueue client, against a real Redis (no workers).

Covers: an ordinary comment is skipped before anything touches Redis (the CLI succeeds even
with Redis unreachable), so it can never disturb queued work; ``/help`` becomes one
``k8see.command`` message that leaves the PR's generation, close mark and record alone, and
``--wait`` does not follow it; ``/deploy-preview`` carries the commenter to the workers.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from k8see import coordination, state
from k8see.client import enqueue
from k8see.events import decide_from_comment, decide_from_flags
from k8see.settings import load_settings
from tests.contracts.webhooks import comment_webhook

SHA = "d" * 40


def _event(tmp_path: Path, body: str, login: str = "alice") -> Path:
    path = tmp_path / "event.json"
    payload = comment_webhook("acme/shop", 4, body, login=login)
    path.write_text(json.dumps(payload))
    return path


def _cli(*args: str, redis_url: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "K8SEE_REDIS__URL": redis_url}
    return subprocess.run(
        [sys.executable, "-m", "k8see", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=cwd,
    )


def test_an_ordinary_comment_is_skipped_before_redis_is_touched(tmp_path: Path) -> None:
    # Given Redis is unreachable: any attempt to use it would exit 3
    event = _event(tmp_path, "LGTM, but please /deploy-preview later")
    out = _cli(
        "enqueue",
        "--event-path",
        str(event),
        "--event-name",
        "issue_comment",
        "--wait",
        redis_url="redis://127.0.0.1:1/0",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("skip: ")


def test_help_is_one_command_message_that_disturbs_nothing(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    settings = load_settings(redis={"url": redis_url})
    # Given a deploy is queued for the PR
    push = decide_from_flags(
        repo="acme/shop", pr=4, action="synchronize", sha=SHA, ref="x", trigger="automatic"
    )
    queued = enqueue(push, settings=settings, trigger="pull_request:synchronize")
    before = state.get(client, repo="acme/shop", pr=4)
    # When a maintainer asks for /help
    decision = decide_from_comment(
        repo="acme/shop", pr=4, body="/help", trigger="automatic", commenter="bob", comment_id=9
    )
    sent = enqueue(decision, settings=settings, trigger="issue_comment:/help")
    # Then one command message, and the queued deploy is still the PR's latest run
    assert client.llen("default") == 2
    message = json.loads(client.lindex("default", 0))
    assert message["headers"]["task"] == "k8see.command"
    assert sent.run.generation == queued.run.generation
    assert coordination.current_generation(client, repo="acme/shop", pr=4) == queued.run.generation
    assert state.get(client, repo="acme/shop", pr=4) == before


def test_wait_does_not_follow_a_command(redis_url: str, tmp_path: Path) -> None:
    out = _cli(
        "enqueue",
        "--event-path",
        str(_event(tmp_path, "/help")),
        "--event-name",
        "issue_comment",
        "--wait",
        "--timeout",
        "30",
        redis_url=redis_url,
    )
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip()) == 12  # the run id, printed at once


def test_deploy_preview_is_authorized_before_it_touches_the_pr(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    decision = decide_from_comment(
        repo="acme/shop", pr=4, body="/deploy-preview", trigger="on-demand", commenter="carol",
        comment_id=12,
    )  # fmt: skip
    sent = enqueue(
        decision,
        settings=load_settings(redis={"url": redis_url}),
        trigger="issue_comment:/deploy-preview",
    )
    assert sent.run.commenter == "carol" and sent.run.comment_id == 12
    assert sent.authorizing
    # Only the command task is queued: it checks carol's permission, then admits the run.
    assert client.llen("default") == 1
    message = json.loads(client.lindex("default", 0))
    assert message["headers"]["task"] == "k8see.command"
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert args[0]["commenter"] == "carol" and args[0]["action"] == "deploy"
    # Until then nothing about the PR changed: no generation, no close mark, no record.
    assert coordination.current_generation(client, repo="acme/shop", pr=4) == 0
    assert not coordination.is_closed(client, repo="acme/shop", pr=4)
    assert state.get(client, repo="acme/shop", pr=4) is None


def test_an_invalid_config_still_lets_a_close_destroy(redis_url: str, tmp_path: Path) -> None:
    # Given a checkout whose k8s-ee.yaml is broken
    (tmp_path / "k8s-ee.yaml").write_text("projectId: [not, a, name\n")
    # When the PR closes
    out = _cli("enqueue", "--repo", "acme/shop", "--pr", "5", "--action", "closed",
               "--config", "k8s-ee.yaml", redis_url=redis_url, cwd=tmp_path)  # fmt: skip
    # Then the destroy is queued all the same, with a warning that names the problem
    assert out.returncode == 0, out.stderr
    assert out.stderr.startswith("Warning: ") and "k8s-ee.yaml" in out.stderr
    assert "Traceback" not in out.stderr
    record = state.get(redis.Redis.from_url(redis_url), repo="acme/shop", pr=5) or {}
    assert (record.get("action"), record.get("status")) == ("destroy", "queued")


def test_config_path_travels_to_the_workers(redis_url: str, tmp_path: Path) -> None:
    # Given a repository whose config lives under services/api
    (tmp_path / "services" / "api").mkdir(parents=True)
    (tmp_path / "services" / "api" / "k8s-ee.yaml").write_text("projectId: api\n")
    # When a push is enqueued with --config pointing there (./ and all)
    out = _cli("enqueue", "--repo", "acme/shop", "--pr", "6", "--action", "synchronize",
               "--sha", SHA, "--ref", "x", "--config", "./services/api/k8s-ee.yaml",
               redis_url=redis_url, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    # Then the queued run carries it, relative to the repository root
    message = json.loads(redis.Redis.from_url(redis_url).lindex("default", 0))
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert args[0]["config_path"] == "services/api/k8s-ee.yaml"
    assert args[0]["platforms"] == ""  # the platform's own list
    # And a path outside the repository is refused before anything is queued
    bad = _cli("enqueue", "--repo", "acme/shop", "--pr", "6", "--action", "synchronize",
               "--sha", SHA, "--ref", "x", "--config", "../k8s-ee.yaml",
               redis_url=redis_url, cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 1
    assert "config-path" in bad.stderr and "Hint:" in bad.stderr


def test_platforms_travel_to_the_workers_and_bad_ones_are_refused(redis_url: str) -> None:
    out = _cli("enqueue", "--repo", "acme/shop", "--pr", "8", "--action", "synchronize",
               "--sha", SHA, "--ref", "x", "--platforms", " linux/amd64 ,linux/amd64",
               redis_url=redis_url)  # fmt: skip
    assert out.returncode == 0, out.stderr
    message = json.loads(redis.Redis.from_url(redis_url).lindex("default", 0))
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert args[0]["platforms"] == "linux/amd64"
    bad = _cli("enqueue", "--repo", "acme/shop", "--pr", "8", "--action", "synchronize",
               "--sha", SHA, "--ref", "x", "--platforms", "linux/amd64;rm -rf /",
               redis_url=redis_url)  # fmt: skip
    assert bad.returncode == 1 and "platforms" in bad.stderr and "Hint:" in bad.stderr
