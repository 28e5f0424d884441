"""The capacity gate at work (``k8see.capacity_gate``) on real Redis, with real enqueued runs.

Covers: a run over the ceiling gets the ``waiting`` record with its position and a comment
task, and its chain is not continued; a forged deploy message (a bogus PR, or a stale run of
a real PR) neither takes a place nor moves one; a release sends the head's deploy from the
deploy stage with the record back at ``queued``; the watchdog's re-check releases what the
records say is destroyed, counts a running environment it did not know, and admits the head;
a waiting run whose place in line moved gets its record and its PR comment refreshed.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis
from celery import Celery

from k8see import capacity, capacity_gate, intake, state
from k8see.app import QUEUES, create_app
from k8see.client import enqueue
from k8see.events import decide_from_flags
from k8see.run import Action, Run, Status
from k8see.settings import PlatformSettings, load_settings

REPO = "acme/shop"


@pytest.fixture
def settings(redis_url: str) -> PlatformSettings:
    return load_settings(redis={"url": redis_url}, capacity={"max_environments": 1})


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def app(settings: PlatformSettings) -> Celery:
    return create_app(settings, name="capacity-gate")


def validated(run: Run) -> Run:
    """The run as it reaches deploy: with its validate result (the config's projectId)."""
    return run.with_result(
        "validate", {"project_id": "shop", "config": {"app": {"port": 3000}}, "databases": []}
    )


def enqueued(settings: PlatformSettings, client: redis.Redis, pr: int) -> Run:
    decision = decide_from_flags(
        repo=REPO, pr=pr, action="opened", sha=f"{pr:x}" * 40, ref="x", trigger="automatic"
    )
    run_id = enqueue(decision, settings=settings, trigger="pull_request:opened").run_id
    found = intake.stored(client, run_id=run_id)
    assert found is not None
    return validated(found.run)


def pending(client: redis.Redis) -> list[dict[str, Any]]:
    """The task messages waiting in the queues (no worker runs here): name and id."""
    out = []
    for queue in QUEUES:
        for raw in client.lrange(queue, 0, -1):
            headers = json.loads(raw)["headers"]
            out.append({"task": headers["task"], "id": headers["id"]})
    return out


def test_a_run_over_the_ceiling_waits_and_a_release_sends_its_deploy(
    settings: PlatformSettings, client: redis.Redis, app: Celery
) -> None:
    first, second = enqueued(settings, client, 1), enqueued(settings, client, 2)
    assert capacity_gate.gate(client, app=app, settings=settings, run=first) is None
    # When the second PR's deploy asks while the platform is full
    waits = capacity_gate.gate(client, app=app, settings=settings, run=second)
    # Then it waits, first in line, on its record, and its PR comment is sent
    assert waits == {"stopped": "waiting", "position": 1}
    record = state.get(client, repo=REPO, pr=2) or {}
    assert record["status"] == Status.WAITING.value and record["capacity_position"] == 1
    assert "k8see.comment" in [m["task"] for m in pending(client)]
    # When the first environment is destroyed
    sent = capacity_gate.release(client, app=app, settings=settings, repo=REPO, pr=1)
    # Then the second run's deploy is sent (from deploy, same task id) and its record queued
    assert sent == [second.run_id]
    assert f"{second.run_id}-deploy" in [m["id"] for m in pending(client)]
    assert (state.get(client, repo=REPO, pr=2) or {})["status"] == Status.QUEUED.value
    assert set(capacity.admitted(client)) == {"acme/shop#2"}


def test_a_forged_deploy_message_neither_takes_nor_moves_a_place(
    settings: PlatformSettings, client: redis.Redis, app: Celery
) -> None:
    holder, waiter = enqueued(settings, client, 1), enqueued(settings, client, 2)
    assert capacity_gate.gate(client, app=app, settings=settings, run=holder) is None
    assert capacity_gate.gate(client, app=app, settings=settings, run=waiter) is not None
    bogus = validated(Run(repo=REPO, pr=99, sha="f" * 40, generation=1, action=Action.DEPLOY))
    stale = Run.from_dict({**waiter.to_dict(), "run_id": "f" * 12})
    for forged in (bogus, stale):
        said = capacity_gate.gate(client, app=app, settings=settings, run=forged)
        assert said == {"stopped": "unverified"}
    assert capacity.order(client, settings=settings.capacity) == ["acme/shop#2"]
    assert set(capacity.admitted(client)) == {"acme/shop#1"}
    assert state.get(client, repo=REPO, pr=99) is None


def test_the_watchdog_recheck_reconciles_and_admits_the_head(
    settings: PlatformSettings, client: redis.Redis, app: Celery
) -> None:
    holder, waiter = enqueued(settings, client, 1), enqueued(settings, client, 2)
    assert capacity_gate.gate(client, app=app, settings=settings, run=holder) is None
    assert capacity_gate.gate(client, app=app, settings=settings, run=waiter) is not None
    # Given the holder's record says destroyed, but its release was lost
    state.set_status(client, repo=REPO, pr=1, generation=holder.generation,
                     status=Status.DESTROYED, ttl_seconds=600)  # fmt: skip
    # And a ready environment the admitted set never knew (deployed before the ceiling)
    other = enqueued(settings, client, 3)
    state.set_status(client, repo=REPO, pr=3, generation=other.generation,
                     status=Status.READY, ttl_seconds=600)  # fmt: skip
    result = capacity_gate.recheck(client, app=app, settings=settings)
    assert result["released"] == ["acme/shop#1"]
    assert result["counted"] == ["acme/shop#3"]
    # The running environment fills the platform: the waiter is still waiting, not evicted
    assert result["sent"] == [] and result["waiting"] == {"acme/shop#2": 1}
    # When the running one is destroyed too, the next re-check admits the waiter
    state.set_status(client, repo=REPO, pr=3, generation=other.generation,
                     status=Status.DESTROYED, ttl_seconds=600)  # fmt: skip
    again = capacity_gate.recheck(client, app=app, settings=settings)
    assert again["sent"] == [waiter.run_id]


def test_a_waiting_run_that_moves_up_gets_its_comment_refreshed(
    settings: PlatformSettings, client: redis.Redis, app: Celery
) -> None:
    holder, first, second = (enqueued(settings, client, pr) for pr in (1, 2, 3))
    assert capacity_gate.gate(client, app=app, settings=settings, run=holder) is None
    assert capacity_gate.gate(client, app=app, settings=settings, run=first) is not None
    assert capacity_gate.gate(client, app=app, settings=settings, run=second) is not None
    assert (state.get(client, repo=REPO, pr=3) or {})["capacity_position"] == 2
    for queue in QUEUES:
        client.delete(queue)  # the comments of the first waits
    # When the first in line is closed while it waits, the second moves up at the re-check
    capacity.release(client, settings=settings.capacity, env=capacity.env_key(REPO, 2))
    state.set_status(client, repo=REPO, pr=2, generation=first.generation,
                     status=Status.DESTROYED, ttl_seconds=600)  # fmt: skip
    capacity_gate.recheck(client, app=app, settings=settings)
    # Then its record says position 1 and its PR comment is sent again for its run, once
    assert (state.get(client, repo=REPO, pr=3) or {})["capacity_position"] == 1
    comments = [m for m in pending(client) if m["task"] == "k8see.comment"]
    assert len(comments) == 1
    raw = json.loads(next(r for q in QUEUES for r in client.lrange(q, 0, -1)))
    args, _, _ = json.loads(base64.b64decode(raw["body"]))
    sent = Run.from_dict(args[0])
    assert (sent.repo, sent.pr, sent.run_id) == (REPO, 3, second.run_id)
    # and a re-check that moves nothing sends nothing
    for queue in QUEUES:
        client.delete(queue)
    capacity_gate.recheck(client, app=app, settings=settings)
    assert [m for m in pending(client) if m["task"] == "k8see.comment"] == []
