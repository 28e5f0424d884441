"""Admission cannot half-happen: Redis vanishing at any command of an enqueue loses nothing.

Covers, against a real redis-server behind a TCP proxy that cuts every connection at the N-th
command (``tests/redis_proxy.py``), for every N of a push's enqueue and of a
``/deploy-preview`` comment's, with Redis vanishing just before command N or just after it ran:
retrying the enqueue queues exactly one chain (or one command message), with the record and
the generation of that one run. Also: a run admitted by a client that then died is sent by the
watchdog job's outbox pass; a command task redelivered after admitting does not bump the
generation again or send a second chain.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu.exceptions import OperationalError

from k8see import coordination, intake, pipeline, redis_acl, state
from k8see.app import create_app
from k8see.client import Enqueued, enqueue
from k8see.events import Decision, decide_from_comment, decide_from_flags
from k8see.jobs.watchdog import run_watchdog
from k8see.run import Action, Run
from k8see.settings import PlatformSettings, load_settings
from tests.conftest import REDIS_PASSWORDS, RedisServer
from tests.redis_proxy import CuttingProxy

REPO, PR, SHA = "acme/shop", 5, "c" * 40


def _push() -> tuple[Decision, str]:
    decision = decide_from_flags(
        repo=REPO, pr=PR, action="synchronize", sha=SHA, ref="x", trigger="automatic"
    )
    return decision, "pull_request:synchronize"


def _comment() -> tuple[Decision, str]:
    decision = decide_from_comment(
        repo=REPO, pr=PR, body="/deploy-preview", trigger="on-demand", commenter="carol",
        comment_id=12,
    )  # fmt: skip
    return decision, "issue_comment:/deploy-preview"


EVENTS = {"push": _push, "comment": _comment}


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    found = redis.Redis.from_url(redis_url)
    yield found
    found.close()


def _messages(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(m) for m in client.lrange("default", 0, -1)]


def _enqueue_through(proxy: CuttingProxy, decision: Decision, trigger: str) -> Exception | None:
    try:
        enqueue(decision, settings=load_settings(redis={"url": _admin(proxy.url)}), trigger=trigger)
    except (redis.RedisError, OperationalError, OSError) as exc:  # Redis vanished
        return exc
    return None


def _admin(url: str) -> str:
    """The proxy's URL with the admin credential (tests run with Redis ACLs on)."""
    return redis_acl.url_for(url, "admin", REDIS_PASSWORDS["admin"])


def _commands_of_one_enqueue(server: RedisServer, client: redis.Redis, event: str) -> list[str]:
    proxy = CuttingProxy(server.port)
    try:
        assert _enqueue_through(proxy, *EVENTS[event]()) is None
        return list(proxy.commands)
    finally:
        proxy.close()
        client.flushall()


def _assert_exactly_once(client: redis.Redis, event: str, retried: Enqueued, where: str) -> None:
    messages = _messages(client)
    assert len(messages) == 1, f"{where}: {len(messages)} messages queued"
    run_id = retried.run_id
    stored = intake.stored(client, run_id=run_id)
    assert stored is not None, where
    assert client.zcard(intake.OUTBOX_KEY) == 0, f"{where}: left in the outbox"
    headers = messages[0]["headers"]
    if event == "push":
        assert headers["task"] == "k8see.validate" and headers["id"] == f"{run_id}-validate", where
        record = state.get(client, repo=REPO, pr=PR) or {}
        assert record.get("run_id") == run_id and record.get("status") == "queued", where
        assert coordination.current_generation(client, repo=REPO, pr=PR) == 1, where
        assert record["generation"] == 1 and stored.state == intake.SENT, where
        args = json.loads(base64.b64decode(messages[0]["body"]))[0]
        assert args[0]["run_id"] == run_id and args[0]["generation"] == 1, where
    else:
        assert headers["task"] == "k8see.command" and headers["id"] == f"{run_id}-command", where
        # A command is admitted by the worker after authorizing it: nothing about the PR yet.
        assert coordination.current_generation(client, repo=REPO, pr=PR) == 0, where
        assert state.get(client, repo=REPO, pr=PR) is None, where
        assert stored.state == intake.COMMAND_SENT and retried.authorizing, where


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["before", "after"])
@pytest.mark.parametrize("event", ["push", "comment"])
def test_a_retried_enqueue_queues_exactly_once_wherever_redis_vanished(
    redis_server: RedisServer, client: redis.Redis, event: str, mode: str
) -> None:
    commands = _commands_of_one_enqueue(redis_server, client, event)
    assert len(commands) > 10, commands
    for n in range(1, len(commands) + 1):
        where = f"Redis vanished {mode} command {n} ({commands[n - 1]!r})"
        # Given Redis vanishes at command n of an enqueue
        proxy = CuttingProxy(redis_server.port, cut_at=n, mode=mode)
        try:
            _enqueue_through(proxy, *EVENTS[event]())
        finally:
            proxy.close()
        # When the workflow retries the enqueue, with Redis back
        decision, trigger = EVENTS[event]()
        retried = enqueue(
            decision, settings=load_settings(redis={"url": redis_server.url}), trigger=trigger
        )
        # Then exactly one chain (or command) is queued, for one run, with its record
        _assert_exactly_once(client, event, retried, where)
        client.flushall()


def test_the_outbox_sends_a_run_whose_client_died_after_admitting_it(
    redis_server: RedisServer, client: redis.Redis
) -> None:
    # Given a client that admitted a run and died before it wrote the record or sent the chain
    admitted = next(
        i for i, c in enumerate(_commands_of_one_enqueue(redis_server, client, "push"), 1)
        if c.startswith("EVAL")
    )  # fmt: skip
    proxy = CuttingProxy(redis_server.port, cut_at=admitted + 1, mode="before")
    try:
        assert _enqueue_through(proxy, *_push()) is not None
    finally:
        proxy.close()
    assert client.zcard(intake.OUTBOX_KEY) == 1 and not _messages(client)
    settings = load_settings(redis={"url": redis_server.url}, queues={"outbox_grace_seconds": 0})
    app = create_app(settings, name="outbox-test")
    # When the watchdog job runs (nobody retries the enqueue)
    report = run_watchdog(settings=settings, client=client, app=app)
    # Then the run is sent once, with its record, and a second pass sends nothing more
    assert len(report["resent"]) == 1
    run_watchdog(settings=settings, client=client, app=app)
    (message,) = _messages(client)
    run_id = report["resent"][0]["run_id"]
    assert message["headers"]["id"] == f"{run_id}-validate"
    record = state.get(client, repo=REPO, pr=PR) or {}
    assert record["run_id"] == run_id and record["status"] == "queued"
    assert client.zcard(intake.OUTBOX_KEY) == 0


def test_a_redelivered_command_task_admits_its_run_once(
    redis_url: str, client: redis.Redis
) -> None:
    settings: PlatformSettings = load_settings(redis={"url": redis_url})
    app = create_app(settings, name="admit-twice")
    run = Run(repo=REPO, pr=PR, sha=SHA, generation=0, action=Action.DEPLOY, trigger="x")
    # When the command task admits the same run twice (redelivered after a crash)
    first = pipeline.admit(run, app=app, settings=settings, client=client)
    again = pipeline.admit(run, app=app, settings=settings, client=client)
    # Then one generation bump and one chain
    assert first.generation == again.generation == 1
    assert coordination.current_generation(client, repo=REPO, pr=PR) == 1
    assert len(_messages(client)) == 1
