"""Maintenance jobs around the stages: the watchdog, the beat lock, the preserve command.

Covers:
- a run stuck in ``building`` past the build limit is failed with a clear record error and a
  ``k8see.comment`` task is queued; a run still within its limit is left alone;
- the job lock: a second holder is refused while the first runs, and can take it afterwards;
- the beat schedule puts every job on the maintenance queue;
- ``/preserve`` from a commenter without write access is refused on the PR (reaction -1) and
  changes nothing; from a writer it preserves and answers.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from k8see import state
from k8see.app import beat_schedule, create_app
from k8see.jobs.preserve import run_preserve_command
from k8see.jobs.tasks import exclusive
from k8see.jobs.watchdog import run_watchdog
from k8see.pipeline import HARD_LIMIT_GRACE_SECONDS, stage_time_limit
from k8see_sandbox.github import GitHubSandbox
from tests.fixtures.kube import RUN_ID
from tests.jobs.test_cleanup import add_namespace, make_settings
from tests.jobs.test_preserve import clear_preserves, labels_of


def put_record(client: redis.Redis, record: dict[str, Any]) -> None:
    key = state.record_key(record["repo"], record["pr"])
    client.set(key, json.dumps(record))
    client.zadd(state.INDEX_KEY, {key: time.time()})


def queued_tasks(client: redis.Redis, queue: str) -> list[str]:
    return [json.loads(m)["headers"]["task"] for m in client.lrange(queue, 0, -1)]


def test_watchdog_fails_a_run_stuck_past_its_stage_limit(redis_url: str) -> None:
    settings = make_settings(redis_url=redis_url, kubeconfig="", github_url="http://127.0.0.1:9")
    client = redis.Redis.from_url(redis_url)
    limit = stage_time_limit(settings, "build") + HARD_LIMIT_GRACE_SECONDS
    now = time.time()
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - limit - 200))
    recent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60))
    base = {"generation": 2, "action": "deploy", "sha": "d" * 40, "stage": "build"}
    put_record(client, {**base, "repo": "acme/a", "pr": 1, "status": "building",
                        "updated_at": old, "run_id": "stuck1"})  # fmt: skip
    put_record(client, {**base, "repo": "acme/a", "pr": 2, "status": "building",
                        "updated_at": recent, "run_id": "busy2"})  # fmt: skip
    app = create_app(settings, name="watchdog-test")

    report = run_watchdog(settings=settings, client=client, app=app)

    assert [f["run_id"] for f in report["failed"]] == ["stuck1"]
    stuck = state.get(client, repo="acme/a", pr=1) or {}
    assert stuck["status"] == "failed"
    assert stuck["error"]["stage"] == "build" and "stopped reporting" in stuck["error"]["message"]
    assert "stuck1" in stuck["error"]["hint"]
    assert (state.get(client, repo="acme/a", pr=2) or {})["status"] == "building"
    assert queued_tasks(client, "default") == ["k8see.comment"]


def test_job_lock_lets_one_holder_run(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    with (
        exclusive(client, "cleanup", ttl_seconds=60) as first,
        exclusive(client, "cleanup", ttl_seconds=60) as second,
    ):
        assert first and not second
    with exclusive(client, "cleanup", ttl_seconds=60) as third:
        assert third


def test_beat_schedule_runs_every_job_on_the_maintenance_queue(redis_url: str) -> None:
    settings = make_settings(redis_url=redis_url, kubeconfig="", github_url="http://x.invalid")
    schedule = beat_schedule(settings)
    assert {e["task"] for e in schedule.values()} == {
        "k8see.cleanup", "k8see.preserve_expiry", "k8see.watchdog",
        "k8see.pull_secret_refresh"}  # fmt: skip
    assert schedule["cleanup"]["schedule"] == 900.0
    assert all(e["options"]["queue"] == "maintenance" for e in schedule.values())


def test_preserve_command_needs_write_access(
    redis_url: str, kubeconfig: str, github: GitHubSandbox, kube_api_client: Any
) -> None:
    clear_preserves(kube_api_client)
    settings = make_settings(redis_url=redis_url, kubeconfig=kubeconfig, github_url=github.url)
    client = redis.Redis.from_url(redis_url)
    repo = "acme/perm"
    github.add_repo(repo, collaborators={"writer": "write", "reader": "read"})
    github.add_pull(repo, 5, head_sha="e" * 40, head_ref="f")
    ns = f"perm{RUN_ID}-pr-5"
    add_namespace(kube_api_client, ns, repo=repo, pr=5, last_updated=time.time())
    note = github.add_comment(repo, 5, "/preserve 4", login="reader")

    refused = run_preserve_command(settings=settings, client=client, command={
        "repo": repo, "pr": 5, "command": "preserve", "args": ["4"], "commenter": "reader",
        "comment_id": note["id"]})  # fmt: skip
    assert refused["ok"] is False and "permission: read" in refused["error"]["message"]
    assert "preserve" not in labels_of(kube_api_client, ns)[0]
    assert [r["content"] for r in github.reactions(note["id"])] == ["-1"]

    # A Run forwarded by the command task carries the command in its trigger; the author is
    # read from GitHub by the comment's id
    written = github.add_comment(repo, 5, "/preserve", login="writer")
    forwarded = {"repo": repo, "pr": 5, "trigger": "issue_comment:/preserve",
                 "comment_id": written["id"]}  # fmt: skip
    done = run_preserve_command(settings=settings, client=client, command=forwarded)
    assert done["ok"] is True and done["namespace"] == ns
    assert labels_of(kube_api_client, ns)[0]["preserve"] == "true"
    bodies = [c["body"] for c in github.comments(repo, 5)]
    assert any("Environment preserved" in b for b in bodies)
