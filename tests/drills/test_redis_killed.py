"""Drill: redis-server is SIGKILLed (a crash, not a clean shutdown) while runs are in flight.

Covers: three PRs are opened at once; while their stages run (builds, a deploy, runs still
queued) Redis is SIGKILLed and started again on the same port and data directory (its
append-only file, ``appendfsync everysec``, as the platform chart and docker-compose.yml run
it: ``k8see_sandbox.platform.REDIS_PERSISTENCE``). Workers lose their connections mid-stage,
the messages they were working on sit unacknowledged in the restored Redis, and the runs'
records are what the append-only file kept.

Asserted end state: every run ends ready, with its namespace holding one Deployment, one
Service and one Helm release; once the visibility timeout (45 s here) has passed and no
message of the runs is left in the broker, each run's deploy and comment finished exactly
once and each PR has one comment; no lease and no helm process is left.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.drills.common import (
    app_objects,
    helm_processes,
    open_pr,
    record_figures,
    release_revisions,
    settled,
)
from tests.e2e.harness import Harness, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
RUNS = 3
VISIBILITY_SECONDS = 45
EXTRA_ENV = {
    "K8SEE_QUEUES__VISIBILITY_TIMEOUT_SECONDS": str(VISIBILITY_SECONDS),
    # The drill is about Redis; Trivy would only add time (it runs in other e2e tests).
    "K8SEE_SCAN__ENABLED": "false",
}
IN_FLIGHT = ("validating", "building", "deploying")


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_platform(tmp_path_factory.mktemp("drill-rkill"), extra_env=EXTRA_ENV) as h:
        yield h


def _messages_of(h: Harness, run_ids: list[str]) -> set[str]:
    from k8see import intake
    from k8see.app import QUEUES

    pending = intake.pending_task_ids(h.redis, queues=QUEUES)
    return {t for t in pending if any(t.startswith(r) for r in run_ids)}


def test_runs_in_flight_survive_redis_killed_and_restarted(harness: Harness) -> None:
    from k8see import coordination, state

    h = harness
    repo, path, sha = h.repo("rkill")
    h.platform.github.add_repo(repo)
    prs = range(1, RUNS + 1)
    # Given three runs in flight: building (two build slots) and one waiting behind them
    for pr in prs:
        open_pr(h, repo, path, sha, pr)
    run_ids = [str(h.record(repo, pr)["run_id"]) for pr in prs]
    h.wait_for(
        lambda: sum(h.record(repo, pr).get("status") == "building" for pr in prs) >= 2, timeout=300
    )
    statuses_at_kill = {pr: h.record(repo, pr).get("status") for pr in prs}

    # When redis-server is SIGKILLed and started again on its port and append-only file
    h.platform.restart_redis(kill=True)
    killed_at = time.monotonic()
    h.redis.connection_pool.disconnect()
    assert {pr: h.record(repo, pr).get("status") for pr in prs} == statuses_at_kill, (
        "the append-only file lost acknowledged writes"
    )

    # Then every run ends ready
    h.wait_for(lambda: all(settled(h, repo, pr) for pr in prs), timeout=VISIBILITY_SECONDS + 300)
    recovered = time.monotonic() - killed_at
    records = {pr: h.record(repo, pr) for pr in prs}
    assert {pr: r["status"] for pr, r in records.items()} == dict.fromkeys(prs, "ready"), {
        pr: r.get("error") for pr, r in records.items()
    }
    # And once nothing of the runs is left in the broker (after the visibility timeout, when
    # a message left unacknowledged by the cut connections would come back) every deploy and
    # comment finished once
    h.wait_for(lambda: time.monotonic() - killed_at > VISIBILITY_SECONDS + 15, timeout=120)
    h.wait_for(lambda: not _messages_of(h, run_ids), timeout=VISIBILITY_SECONDS + 120)
    h.wait_for(lambda: all(h.record(repo, pr).get("commented") for pr in prs), timeout=120)
    time.sleep(5)
    stats = state.stats(h.redis)
    assert stats.get("stage_finished:deploy") == RUNS, stats
    assert stats.get("stage_finished:comment") == RUNS, stats
    for pr in prs:
        namespace = f"hello-pr-{pr}"
        assert app_objects(h, namespace) == {"deployments": 1, "services": 1, "releases": 1}
        history = [r["status"] for r in release_revisions(h, namespace)]
        assert [s for s in history if s in ("deployed", "superseded")] == ["deployed"], history
        assert len(h.platform.github.comments(repo, pr)) == 1
        assert coordination.lease_holder(h.redis, repo=repo, pr=pr) is None
    assert helm_processes(h) == []
    record_figures(
        "redis_sigkill_with_runs_in_flight",
        {
            "runs": RUNS,
            "statuses_at_kill": statuses_at_kill,
            "ready": RUNS,
            "ready_after_kill_seconds": round(recovered, 1),
            "stage_started": {k: v for k, v in stats.items() if k.startswith("stage_started")},
            "stage_retries": {k: v for k, v in stats.items() if k.startswith("retried")},
        },
    )
