"""Drill: Redis restarts (with its append-only file) while 20 runs wait in the queues.

Covers: with every worker pool stopped, 20 PRs are enqueued; redis-server is stopped and
started again on the same port and data directory; the 20 messages are still queued; once the
pools start again, all 20 environments end ready and none ran twice.

Scanning is switched off for this module's workers: the drill is about the queue surviving,
and 20 Trivy scans would only add minutes (the scan runs in every other e2e test).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from tests.drills.common import WORKER_ENV, open_pr, record_figures, settled
from tests.e2e.harness import Harness, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]
RUNS = 20
EXTRA_ENV = {"K8SEE_SCAN__ENABLED": "false"}


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_platform(tmp_path_factory.mktemp("drill-redis"), extra_env=EXTRA_ENV) as h:
        yield h


def _queued(client: redis.Redis) -> int:
    return int(client.llen("default"))


def test_queued_runs_survive_a_redis_restart(harness: Harness) -> None:
    from k8see import state

    h = harness
    repo, path, sha = h.repo("restart")
    h.platform.github.add_repo(repo)
    # Given every worker pool stopped and 20 runs queued
    h.platform.stop_workers()
    for pr in range(1, RUNS + 1):
        open_pr(h, repo, path, sha, pr)
    assert _queued(h.redis) == RUNS
    before = {pr: h.record(repo, pr).get("status") for pr in range(1, RUNS + 1)}
    assert set(before.values()) == {"queued"}, (before, h.redis.keys("k8see:*")[:20])

    # When Redis restarts on the same port and data directory
    h.platform.restart_redis()
    h.redis.connection_pool.disconnect()
    assert _queued(h.redis) == RUNS, "queued messages were lost with the restart"
    records = {pr: h.record(repo, pr).get("status") for pr in range(1, RUNS + 1)}
    assert set(records.values()) == {"queued"}, (records, sorted(h.redis.keys("*"))[:30])

    # Then, once the pools are back, every run ends ready
    started = time.monotonic()
    h.platform.start_workers(extra_env={**WORKER_ENV, **EXTRA_ENV})
    h.wait_for(lambda: all(settled(h, repo, pr) for pr in range(1, RUNS + 1)), timeout=900)
    drained = time.monotonic() - started
    statuses = {pr: h.record(repo, pr)["status"] for pr in range(1, RUNS + 1)}
    assert set(statuses.values()) == {"ready"}, statuses
    # Nothing ran twice because of the restart: validate starts, less its retries after a
    # failure (concurrent source fetches of one commit race, see docs/benchmarks.md), are 20.
    stats = state.stats(h.redis)
    retried = stats.get("retried:validate", 0)
    assert stats.get("stage_started:validate", 0) - retried == RUNS, stats
    namespaces = set(h.namespaces())
    assert {f"hello-pr-{pr}" for pr in range(1, RUNS + 1)} <= namespaces
    record_figures(
        "redis_restart_with_queued_runs",
        {
            "queued": RUNS,
            "ready": RUNS,
            "lost": 0,
            "validate_retries": retried,
            "drain_seconds": round(drained, 1),
        },
    )
