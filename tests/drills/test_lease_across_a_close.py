"""Drill: runs of one PR compete for its lease across a close, and the close wins.

Covers: PR 1's deploy holds the PR's lease, its ``helm upgrade --wait`` running (the app is
slow to start); a push arrives (a second run, whose deploy would need the same lease) and,
right after it, the close (a destroy, which needs the lease too). Asserted end state: the
record says ``destroyed`` for the close's run; the namespace is gone and stays gone (checked
again after the pushed run had time to reach its deploy); the pushed run never started a
deploy (the first one, already holding the lease, may finish before the destroy takes it);
no lease or helm process is left; the PR's comment reports the destroy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.drills.common import (
    helm_processes,
    open_pr,
    record_figures,
    wait_for_helm_upgrade,
)
from tests.e2e.harness import Harness, running_platform, slow_start

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_platform(
        tmp_path_factory.mktemp("drill-lease"), extra_env={"K8SEE_SCAN__ENABLED": "false"}
    ) as h:
        yield h


def test_a_close_wins_the_lease_over_a_deploy_and_a_push(harness: Harness) -> None:
    from k8see import coordination, state

    h = harness
    repo, path, sha = h.repo("racing", slow_start(20))
    h.platform.github.add_repo(repo)
    before = state.stats(h.redis)
    # Given a deploy holding the PR's lease, its helm upgrade waiting for the slow app
    open_pr(h, repo, path, sha, 1)
    wait_for_helm_upgrade(h.platform.processes["worker-deploy"].pid, timeout=300)
    assert coordination.lease_holder(h.redis, repo=repo, pr=1) is not None

    # When a push and then the close arrive, both needing the lease
    sha2 = h.commit(path, "push")
    h.platform.github.add_pull(repo, 1, head_sha=sha2, head_ref="feature")
    pushed = h.enqueue("--repo", repo, "--pr", "1", "--action", "synchronize", "--sha", sha2,
                       "--ref", "feature", "--source", str(path), wait=False)  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    h.platform.github.set_pull_state(repo, 1, state="closed")
    closed = h.enqueue("--repo", repo, "--pr", "1", "--action", "closed", "--sha", sha2)

    # Then the close's destroy ran, and nothing is deployed
    assert closed.returncode == 0, closed.stdout + closed.stderr
    record = h.record(repo, 1)
    assert record["status"] == "destroyed", record
    assert "racing-pr-1" not in h.namespaces() and "hello-pr-1" not in h.namespaces()
    # And it stays so once the pushed run had time to reach its deploy (a build is ~20 s)
    time.sleep(45)
    assert "hello-pr-1" not in h.namespaces()
    after = state.stats(h.redis)

    def delta(name: str) -> int:
        return after.get(name, 0) - before.get(name, 0)

    # (The first deploy, holding the lease, may finish its helm upgrade before the destroy
    # gets the lease: a deploy is not cut mid-helm. The pushed run never deploys.)
    assert delta("stage_started:deploy") == 1, after
    assert delta("stage_finished:destroy") == 1, after
    assert h.record(repo, 1)["status"] == "destroyed"
    assert coordination.lease_holder(h.redis, repo=repo, pr=1) is None
    assert helm_processes(h) == []
    h.wait_for(lambda: h.record(repo, 1).get("commented") == "destroyed", timeout=120)
    stopped = {k: v - before.get(k, 0) for k, v in after.items() if k.startswith("stopped")}
    record_figures(
        "lease_race_across_a_close",
        {"destroyed": True, "deploys_finished": 0, "stopped": stopped},
    )
