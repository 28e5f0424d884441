"""Drill: the deploy worker's pool process is SIGKILLed in the middle of ``helm upgrade``,
ten times in a row.

Covers, for every kill: the message is redelivered (acks_late + reject_on_worker_lost) and the
deploy stage really runs a second time; the run ends ready; the namespace holds one app
Deployment, one Service and one Helm release (no duplicates); no lease is left behind.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Iterator

import pytest

from tests.drills.common import (
    app_objects,
    cmdline,
    descendants,
    open_pr,
    record_figures,
    settled,
)
from tests.e2e.harness import Harness, running_platform, slow_start

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]
KILLS = 10


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_platform(
        tmp_path_factory.mktemp("drill-kill"),
        extra_env={"K8SEE_QUEUES__DEPLOY_CONCURRENCY": "1"},
    ) as h:
        yield h


def _wait_for_helm_upgrade(pid: int, *, timeout: float) -> int:
    """The pool process of worker ``pid`` once a ``helm upgrade`` runs below it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pool in _children(pid):
            for proc in descendants(pool):
                argv = cmdline(proc)
                if argv and argv[0].endswith("helm") and "upgrade" in argv:
                    return pool
        time.sleep(0.05)
    raise AssertionError(f"no helm upgrade ran below worker {pid} within {timeout}s")


def _children(pid: int) -> list[int]:
    return [p for p in descendants(pid) if _parent(p) == pid]


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def test_sigkill_during_helm_upgrade_ten_times(harness: Harness) -> None:
    from k8see import coordination, state

    h = harness
    # The app listens only after 5 s, so `helm upgrade --wait` is still running when killed.
    repo, path, sha = h.repo("killed", slow_start(5))
    h.platform.github.add_repo(repo)
    worker = h.platform.processes["worker-deploy"]
    recoveries: list[float] = []

    for i in range(KILLS):
        pr = 100 + i
        deploys_before = state.stats(h.redis).get("stage_started:deploy", 0)
        # Given a deploy whose helm upgrade is running
        open_pr(h, repo, path, sha, pr)
        pool = _wait_for_helm_upgrade(worker.pid, timeout=300)
        assert h.record(repo, pr)["status"] == "deploying"

        # When the pool process running it is killed
        os.kill(pool, signal.SIGKILL)
        killed_at = time.monotonic()

        # Then the deploy runs again and the environment ends ready, once
        h.wait_for(lambda pr=pr: settled(h, repo, pr), timeout=300)
        recoveries.append(time.monotonic() - killed_at)
        record = h.record(repo, pr)
        assert record["status"] == "ready", record.get("error")
        assert state.stats(h.redis)["stage_started:deploy"] - deploys_before >= 2
        assert coordination.lease_holder(h.redis, repo=repo, pr=pr) is None
        assert app_objects(h, f"hello-pr-{pr}") == {
            "deployments": 1,
            "services": 1,
            "releases": 1,
        }

    record_figures(
        "sigkill_mid_helm_upgrade",
        {
            "kills": KILLS,
            "ready_after_kill": KILLS,
            "recovery_seconds_median": round(statistics.median(recoveries), 2),
            "recovery_seconds_max": round(max(recoveries), 2),
            "unit": "s",
        },
    )
