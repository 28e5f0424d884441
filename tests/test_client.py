"""The enqueue client against a real Redis (no workers): what lands in Redis, and the CLI.

Covers: one message set per accepted event (a chain message on the right queue, the generation
bumped, the record queued); the close mark set by a destroy and cleared by a deploy; a
redelivered event enqueues nothing; --dry-run prints one JSON decision and sends nothing; bad
input is one readable error without a traceback; the client imports no worker dependency.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import redis

from k8see import coordination, state
from k8see.client import enqueue
from k8see.events import decide_from_flags
from k8see.settings import load_settings

SHA = "c" * 40


def _settings(url: str):  # type: ignore[no-untyped-def]
    return load_settings(redis={"url": url})


def test_an_opened_event_becomes_one_chain_message_on_the_default_queue(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    decision = decide_from_flags(
        repo="acme/shop", pr=5, action="opened", sha=SHA, ref="x", trigger="automatic"
    )
    sent = enqueue(decision, settings=_settings(redis_url), trigger="pull_request:opened")

    assert sent.duplicate_of is None
    assert coordination.current_generation(client, repo="acme/shop", pr=5) == 1
    assert client.llen("default") == 1  # validate first; the rest of the chain rides along
    message = json.loads(client.lindex("default", 0))
    assert message["headers"]["task"] == "k8see.validate"
    record = state.get(client, repo="acme/shop", pr=5)
    assert record is not None and record["status"] == "queued" and record["run_id"] == sent.run_id


def test_close_marks_and_reopen_clears(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    settings = _settings(redis_url)
    for action in ("closed", "reopened"):
        decision = decide_from_flags(
            repo="a/b", pr=1, action=action, sha=SHA, ref="", trigger="automatic"
        )
        enqueue(decision, settings=settings, trigger=f"pull_request:{action}")
        assert coordination.is_closed(client, repo="a/b", pr=1) is (action == "closed")
    # destroy runs go to the deploy queue
    assert client.llen("deploy") == 1


def test_a_redelivered_event_enqueues_nothing(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    settings = _settings(redis_url)
    decision = decide_from_flags(
        repo="a/b", pr=9, action="synchronize", sha=SHA, ref="", trigger="automatic"
    )
    first = enqueue(decision, settings=settings, trigger="pull_request:synchronize")
    again = [
        enqueue(decision, settings=settings, trigger="pull_request:synchronize") for _ in range(4)
    ]

    assert {a.run_id for a in again} == {first.run_id}
    assert client.llen("default") == 1
    assert coordination.current_generation(client, repo="a/b", pr=9) == 1


def _cli(*args: str, redis_url: str = "redis://127.0.0.1:1/0") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "K8SEE_REDIS__URL": redis_url}
    return subprocess.run(
        [sys.executable, "-m", "k8see", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_dry_run_prints_the_decision_and_sends_nothing(redis_url: str) -> None:
    out = _cli(
        "enqueue",
        "--repo",
        "acme/shop",
        "--pr",
        "3",
        "--action",
        "synchronize",
        "--sha",
        SHA,
        "--dry-run",
        redis_url=redis_url,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "action": "deploy",
        "repo": "acme/shop",
        "pr": 3,
        "sha": SHA,
        "reason": json.loads(out.stdout)["reason"],
    }
    assert redis.Redis.from_url(redis_url).llen("default") == 0


def test_bad_input_is_one_readable_error() -> None:
    out = _cli(
        "enqueue", "--repo", "acme/shop", "--pr", "3", "--action", "opened", "--sha", "not-a-sha"
    )
    assert out.returncode == 1
    assert out.stderr.startswith("Error: ")
    assert "Hint: " in out.stderr
    assert "Traceback" not in out.stderr


def test_unreachable_redis_is_exit_code_3() -> None:
    out = _cli("enqueue", "--repo", "acme/shop", "--pr", "3", "--action", "opened", "--sha", SHA)
    assert out.returncode == 3
    assert "cannot reach Redis" in out.stderr and "Traceback" not in out.stderr


def test_the_client_imports_no_worker_dependency() -> None:
    code = (
        "import sys, k8see.cli, k8see.client, k8see.events, k8see.config;"
        "bad = [m for m in ('kubernetes', 'boto3', 'docker', 'pyhelm3', 'k8see.tasks',"
        " 'k8see.stages', 'k8see.integrations') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
