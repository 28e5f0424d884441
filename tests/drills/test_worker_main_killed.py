"""Drill: a deploy worker's MAIN process is SIGKILLed while its pool process runs helm.

The pool process is what the other kill drills kill; here it is the process that holds the
broker connection and acknowledges messages (``acks_late``). Its unacknowledged message can
only come back through Redis's visibility timeout (``queues.visibility_timeout_seconds``, 45 s
here so the drill stays short; 20 minutes by default), and the pool is started again, as a
restarted container would be.

Covers two ways the main process dies:

- alone (a process manager that kills only the main process): its pool process is orphaned
  and finishes the helm upgrade it was running;
- with everything below it (a container whose PID 1 dies): helm is killed mid-upgrade.

Asserted end state, after the visibility timeout has passed so a stale redelivery would
show: the run is ready; its deploy finished once (the release's history, the record's
deploy count), its comment was written once; no message of the run is queued or
unacknowledged; no lease, helm process or pool process of the dead worker is left.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.drills.common import (
    WORKER_ENV,
    alive,
    app_objects,
    descendants,
    helm_processes,
    open_pr,
    record_figures,
    release_revisions,
    settled,
    wait_for_helm_upgrade,
)
from tests.e2e.harness import Harness, running_platform, slow_start

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
VISIBILITY_SECONDS = 45
EXTRA_ENV = {
    "K8SEE_QUEUES__VISIBILITY_TIMEOUT_SECONDS": str(VISIBILITY_SECONDS),
    "K8SEE_QUEUES__DEPLOY_CONCURRENCY": "1",
    # The drill is about the deploy; Trivy would only add time (it runs in other e2e tests).
    "K8SEE_SCAN__ENABLED": "false",
}


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_platform(tmp_path_factory.mktemp("drill-main"), extra_env=EXTRA_ENV) as h:
        yield h


def _messages_of(h: Harness, run_id: str) -> set[str]:
    from k8see import intake
    from k8see.app import QUEUES

    return {t for t in intake.pending_task_ids(h.redis, queues=QUEUES) if t.startswith(run_id)}


def _kill_main_mid_helm(h: Harness, pr: int, *, whole_group: bool) -> dict[str, object]:
    from k8see import coordination, state

    repo, path, sha = h.repo(f"main{pr}", slow_start(6))
    h.platform.github.add_repo(repo)
    before = state.stats(h.redis)
    worker = h.platform.processes["worker-deploy"]
    # Given a deploy whose helm upgrade runs in the deploy worker's pool process
    open_pr(h, repo, path, sha, pr)
    wait_for_helm_upgrade(worker.pid, timeout=300)
    below = descendants(worker.pid)
    run_id = str(h.record(repo, pr)["run_id"])

    # When the worker's main process is SIGKILLed (alone, or with everything below it)
    if whole_group:
        os.killpg(worker.pid, signal.SIGKILL)
    else:
        os.kill(worker.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    worker.wait()
    # ... and the pool comes back, as a restarted container does
    h.platform.stop_process("worker-deploy")
    h.platform.start_workers(pools=("deploy",), extra_env={**WORKER_ENV, **EXTRA_ENV})

    # Then the run ends ready
    h.wait_for(lambda: settled(h, repo, pr), timeout=VISIBILITY_SECONDS + 240)
    ready_after = time.monotonic() - killed_at
    record = h.record(repo, pr)
    assert record["status"] == "ready", record.get("error")
    # And once the visibility timeout has passed and nothing of the run is left in the
    # broker, nothing ran again: the deploy finished once and the comment was written once
    h.wait_for(lambda: time.monotonic() - killed_at > VISIBILITY_SECONDS + 15, timeout=120)
    h.wait_for(lambda: not _messages_of(h, run_id), timeout=VISIBILITY_SECONDS + 120)
    h.wait_for(lambda: h.record(repo, pr).get("commented") == "ready", timeout=120)
    time.sleep(5)  # a stale redelivery would start now
    after = state.stats(h.redis)
    # (a revision that was deployed once is "deployed", or "superseded" by a later one)
    history = release_revisions(h, f"hello-pr-{pr}")
    assert [r["status"] for r in history if r["status"] in ("deployed", "superseded")] == [
        "deployed"
    ], history
    finished = after.get("stage_finished:deploy", 0) - before.get("stage_finished:deploy", 0)
    assert finished == 1, (before, after)
    comments = after.get("stage_finished:comment", 0) - before.get("stage_finished:comment", 0)
    assert comments == 1, (before, after)
    assert len(h.platform.github.comments(repo, pr)) == 1
    assert app_objects(h, f"hello-pr-{pr}") == {"deployments": 1, "services": 1, "releases": 1}
    # And nothing of the dead worker is left
    assert coordination.lease_holder(h.redis, repo=repo, pr=pr) is None
    assert not [p for p in below if alive(p)], "processes of the killed worker still run"
    assert helm_processes(h) == []
    return {
        "ready_after_kill_seconds": round(ready_after, 1),
        "deploy_started": after.get("stage_started:deploy", 0)
        - before.get("stage_started:deploy", 0),
    }


def test_the_main_process_killed_alone_its_deploy_finishes_once(harness: Harness) -> None:
    figures = _kill_main_mid_helm(harness, 1, whole_group=False)
    record_figures("sigkill_worker_main_process_alone", figures)


def test_the_main_process_killed_with_its_pool_the_deploy_is_redone_once(
    harness: Harness,
) -> None:
    figures = _kill_main_mid_helm(harness, 2, whole_group=True)
    # The killed deploy never finished; the broker handed its message out again.
    assert figures["deploy_started"] == 2, figures
    record_figures("sigkill_worker_main_process_and_pool", figures)
