"""The watchdog re-drives lost runs instead of failing them, and covers every non-terminal status.

Covers, against a real Redis (no workers; a lost run is one whose messages are not in any
queue and not in the broker's unacked hash, as after a worker acknowledged a stage it could
not finish):
- a ``queued`` run whose chain is gone is sent again, as the same run (same task ids and
  generation), on the second look, not the first (kombu moves a message in two steps);
- a ``building`` run whose message is delivered and unacknowledged (at work, or held for a
  retry's countdown) and a run still waiting in its queue are left alone, however old;
- a run lost again and again fails after ``cleanup.watchdog_max_redrives`` re-drives, saying
  so, and the PR comment is queued;
- a lost run a newer event replaced ends ``superseded`` instead of running again.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from celery import Celery

from k8see import intake, state
from k8see.app import create_app
from k8see.client import enqueue
from k8see.events import decide_from_flags
from k8see.jobs.watchdog import run_watchdog
from k8see.run import Action, Run, Status
from k8see.settings import PlatformSettings, load_settings

REPO, PR, SHA = "acme/shop", 8, "e" * 40
GRACE = 120


@pytest.fixture
def settings(redis_url: str) -> PlatformSettings:
    return load_settings(
        redis={"url": redis_url},
        cleanup={"watchdog_grace_seconds": GRACE, "watchdog_max_redrives": 2},
    )


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def app(settings: PlatformSettings) -> Celery:
    return create_app(settings, name="watchdog-redrive")


def _enqueue(settings: PlatformSettings, sha: str = SHA) -> str:
    decision = decide_from_flags(
        repo=REPO, pr=PR, action="synchronize", sha=sha, ref="x", trigger="automatic"
    )
    return enqueue(decision, settings=settings, trigger="pull_request:synchronize").run_id


def _later(seconds: float = GRACE + 60) -> float:
    return time.time() + seconds


def _pass(settings: PlatformSettings, client: redis.Redis, app: Celery) -> dict[str, Any]:
    return run_watchdog(settings=settings, client=client, app=app, now=_later())


def _ids(client: redis.Redis, queue: str = "default") -> list[str]:
    return [json.loads(m)["headers"]["id"] for m in client.lrange(queue, 0, -1)]


def test_a_queued_run_whose_chain_was_lost_is_sent_again_as_the_same_run(
    settings: PlatformSettings, client: redis.Redis, app: Celery
) -> None:
    # Given a queued run whose message vanished (a worker took it and acknowledged it)
    run_id = _enqueue(settings)
    client.delete("default")
    # When the watchdog looks twice
    first = _pass(settings, client, app)
    assert first["redriven"] == [] and _ids(client) == []
    second = _pass(settings, client, app)
    # Then the same run's chain is queued again, once, and the record says so
    assert [r["run_id"] for r in second["redriven"]] == [run_id]
    assert _ids(client) == [f"{run_id}-validate"]
    record = state.get(client, repo=REPO, pr=PR) or {}
    assert record["status"] == "queued" and record["redriven"] == 1
    assert record["run_id"] == run_id and record["generation"] == 1
    # And while that message waits, later passes leave it alone
    assert _pass(settings, client, app)["redriven"] == []
    assert _ids(client) == [f"{run_id}-validate"]


def test_runs_at_work_or_waiting_in_their_queue_are_left_alone(
    settings: PlatformSettings, client: redis.Redis, app: Celery
) -> None:
    # Given a run still waiting in its queue, long past every limit
    waiting = _enqueue(settings)
    # And another PR's run whose build message is delivered, unacknowledged (at work)
    decision = decide_from_flags(
        repo=REPO, pr=PR + 1, action="synchronize", sha=SHA, ref="x", trigger="automatic"
    )
    working = enqueue(decision, settings=settings, trigger="pull_request:synchronize").run_id
    raw = client.lpop("default")  # the newer message is at the head
    message = json.loads(raw)
    assert message["headers"]["id"] == f"{working}-validate"
    client.hset("unacked", "tag-1", json.dumps([message, "", "default"]))
    state.set_status(client, repo=REPO, pr=PR + 1, generation=1, status=Status.BUILDING,
                     ttl_seconds=60)  # fmt: skip
    # When the watchdog looks, a day later, three times
    far = time.time() + 86400
    for _ in range(3):
        report = run_watchdog(settings=settings, client=client, app=app, now=far)
        # Then nothing is sent again and nothing fails
        assert report["redriven"] == [] and report["failed"] == [], report
    assert _ids(client) == [f"{waiting}-validate"]


def test_a_run_lost_again_and_again_fails_after_the_redrive_bound(
    settings: PlatformSettings, client: redis.Redis, app: Celery
) -> None:
    run_id = _enqueue(settings)
    redrives = 0
    # Given a run whose chain is lost every time it is sent
    for _ in range(10):
        client.delete("default")
        report = _pass(settings, client, app)
        redrives += len(report["redriven"])
        if report["failed"]:
            break
    # Then it was sent again max_redrives times, then failed saying so
    assert redrives == 2
    assert [f["run_id"] for f in report["failed"]] == [run_id]
    record = state.get(client, repo=REPO, pr=PR) or {}
    assert record["status"] == "failed" and record["error"]["reason"] == "lost"
    assert "sent again 2 times" in record["error"]["message"]
    assert run_id in record["error"]["hint"]
    assert [json.loads(m)["headers"]["task"] for m in client.lrange("default", 0, -1)] == [
        "k8see.comment"
    ]


def test_a_lost_run_that_a_newer_event_replaced_ends_superseded(
    settings: PlatformSettings, client: redis.Redis, app: Celery
) -> None:
    # Given a lost run, and a newer event admitted whose record was never written
    _enqueue(settings)
    client.delete("default")
    replacement = Run(repo=REPO, pr=PR, sha="f" * 40, generation=0, action=Action.DEPLOY)
    newer = intake.admit(client, run=replacement, command=False, run_ttl_seconds=60)
    assert newer.stored is not None and newer.stored.run.generation == 2
    _pass(settings, client, app)
    _pass(settings, client, app)
    record = state.get(client, repo=REPO, pr=PR) or {}
    assert record["status"] == "superseded" and "generation 2" in record["reason"]
    assert _ids(client) == []
