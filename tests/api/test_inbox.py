"""The webhook inbox's promise: an accepted delivery is handled at least once, never lost.

Against real Redis, with the real ``Drainer``: an entry a dead consumer took and never
finished is taken over; a handler that keeps failing moves the entry to the dead-letter
stream instead of dropping it; a replayed delivery id appends nothing; and a Redis that fails
mid-handling leaves the entry pending for the next try.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from k8see.api import inbox
from tests.api.helpers import wait_for


@pytest.fixture
def rds(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    inbox.ensure_group(client)
    yield client
    client.close()


def _entry(delivery: str) -> inbox.Entry:
    return inbox.Entry(delivery=delivery, event="pull_request", kind="run", data={"n": delivery})


def test_a_replayed_delivery_appends_nothing(rds: redis.Redis) -> None:
    assert inbox.accept(rds, _entry("d-1"), ttl_seconds=60) is not None
    assert inbox.accept(rds, _entry("d-1"), ttl_seconds=60) is None
    assert rds.xlen(inbox.INBOX_KEY) == 1
    assert 0 < rds.ttl(inbox.delivery_key("d-1")) <= 60


def test_an_entry_a_dead_consumer_left_pending_is_taken_over(rds: redis.Redis) -> None:
    inbox.accept(rds, _entry("d-1"), ttl_seconds=60)
    # Another API process read it and died before acknowledging it.
    rds.xreadgroup(inbox.GROUP, "dead-pod", {inbox.INBOX_KEY: ">"}, count=1)
    handled: list[str] = []
    drainer = inbox.Drainer(rds, lambda e: handled.append(e.delivery), claim_idle_seconds=0.2)
    assert drainer.drain_once() == 0  # not idle long enough: still the dead pod's
    drainer.start()
    try:
        wait_for(lambda: handled == ["d-1"], what="the take-over")
    finally:
        drainer.stop()
    assert rds.xlen(inbox.INBOX_KEY) == 0
    assert rds.xpending(inbox.INBOX_KEY, inbox.GROUP)["pending"] == 0


def test_an_entry_that_keeps_failing_moves_to_the_dead_letter_stream(rds: redis.Redis) -> None:
    inbox.accept(rds, _entry("d-bad"), ttl_seconds=60)
    attempts: list[str] = []

    def broken(entry: inbox.Entry) -> None:
        attempts.append(entry.delivery)
        raise ValueError("a handler bug")

    drainer = inbox.Drainer(rds, broken, claim_idle_seconds=0.05, block_seconds=0.05)
    drainer.start()
    try:
        wait_for(lambda: rds.xlen(inbox.DEAD_KEY) == 1, what="the dead letter")
    finally:
        drainer.stop()
    assert len(attempts) == inbox.MAX_ATTEMPTS
    dead = rds.xrange(inbox.DEAD_KEY)[0][1]
    assert dead[b"delivery"] == b"d-bad" and dead[b"data"] == b'{"n":"d-bad"}'
    assert rds.xlen(inbox.INBOX_KEY) == 0


def test_a_redis_failure_while_handling_leaves_the_entry_pending(rds: redis.Redis) -> None:
    inbox.accept(rds, _entry("d-1"), ttl_seconds=60)
    calls: list[str] = []

    def flaky(entry: inbox.Entry) -> None:
        calls.append(entry.delivery)
        if len(calls) == 1:
            raise redis.ConnectionError("Redis went away mid-enqueue")

    drainer = inbox.Drainer(rds, flaky, claim_idle_seconds=0.2, block_seconds=0.05)
    drainer.start()
    try:
        wait_for(lambda: len(calls) == 2 and rds.xlen(inbox.INBOX_KEY) == 0, what="the retry")
    finally:
        drainer.stop()
    assert calls == ["d-1", "d-1"]
