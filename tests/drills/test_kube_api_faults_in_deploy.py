"""Drills: the Kubernetes API server fails the deploy pool, through the fault proxy in front of
the real API server (``tests/fixtures/kubefaults.py``; only the deploy pool goes through it,
as itself, so validate and the test's own checks see a healthy cluster).

Covers:

- the API server unreachable for 60 s (every connection refused, discovery included) while a
  deploy's helm upgrade runs: the run reaches a terminal status, ready, or failed with the
  real reason (the API server could not be reached), never stuck; no lease or helm process is
  left; and the next push of the PR deploys ready (no release is left pending).
- every request of the deploy pool answered 500, for longer than the stage's retries last: the
  deploy is retried exactly ``queues.max_retries`` times (5, the default, more than Celery's
  3), then the run fails with the API server's own message on the environment record, on the
  PR comment, and in ``k8see enqueue --wait``'s output with exit code 1; nothing is deployed
  after it and no lease or helm process is left.

The workers use the production retry backoff (2 s, doubled per retry, with full jitter), so
the retries are spread the way they are in production.
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
    settled,
    wait_for_helm_upgrade,
)
from tests.e2e.harness import Harness, running_platform, slow_start

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
OUTAGE_SECONDS = 60
MAX_RETRIES = 5
INJECTED = "injected by the k8see test proxy"


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_platform(
        tmp_path_factory.mktemp("drill-kubedown"),
        extra_env={
            "K8SEE_QUEUES__RETRY_BACKOFF_SECONDS": "2.0",
            "K8SEE_QUEUES__MAX_RETRIES": str(MAX_RETRIES),
            "K8SEE_DEPLOY__HELM_TIMEOUT_SECONDS": "90",
            "K8SEE_SCAN__ENABLED": "false",
        },
        fault_proxy_pools=("deploy",),
    ) as h:
        yield h


def _stat(h: Harness, name: str) -> int:
    from k8see import state

    return int(state.stats(h.redis).get(name, 0))


def test_a_deploy_outlives_the_api_server_unreachable_for_a_minute(harness: Harness) -> None:
    from k8see import coordination

    h = harness
    assert h.proxy is not None
    repo, path, sha = h.repo("kubedown", slow_start(5))
    h.platform.github.add_repo(repo)
    # Given a deploy whose helm upgrade runs
    open_pr(h, repo, path, sha, 1)
    wait_for_helm_upgrade(h.platform.processes["worker-deploy"].pid, timeout=300)
    retried_before = _stat(h, "retried:deploy")

    # When the API server cannot be reached for a minute
    h.proxy.faults.outage = True
    try:
        time.sleep(OUTAGE_SECONDS)
    finally:
        h.proxy.faults.outage = False

    # Then the run ends: ready, or failed saying the API server could not be reached
    h.wait_for(lambda: settled(h, repo, 1), timeout=600)
    record = h.record(repo, 1)
    if record["status"] == "failed":
        message = str(record["error"]["message"]).lower()
        assert any(w in message for w in ("connect", "unreachable", "refused", "reach")), record
        assert record["error"]["stage"] == "deploy", record
    else:
        assert record["status"] == "ready", record
        assert app_objects(h, "hello-pr-1") == {"deployments": 1, "services": 1, "releases": 1}
    h.wait_for(lambda: coordination.lease_holder(h.redis, repo=repo, pr=1) is None, timeout=60)
    assert helm_processes(h) == []
    first = record["status"]
    retries = _stat(h, "retried:deploy") - retried_before

    # And nothing is stuck: the PR's next push deploys ready
    sha2 = h.commit(path, "again")
    h.platform.github.add_pull(repo, 1, head_sha=sha2, head_ref="feature")
    again = h.enqueue("--repo", repo, "--pr", "1", "--action", "synchronize", "--sha", sha2,
                      "--ref", "feature", "--source", str(path))  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert h.record(repo, 1)["status"] == "ready"
    assert app_objects(h, "hello-pr-1") == {"deployments": 1, "services": 1, "releases": 1}
    record_figures(
        "kube_api_unreachable_60s_mid_deploy",
        {"outage_seconds": OUTAGE_SECONDS, "first_run": first, "deploy_retries": retries,
         "next_push": "ready"},
    )  # fmt: skip


def test_a_deploy_failing_past_its_retries_fails_with_the_real_error(harness: Harness) -> None:
    from k8see import coordination

    h = harness
    assert h.proxy is not None
    repo, path, sha = h.repo("kube500")
    h.platform.github.add_repo(repo)
    h.platform.github.add_pull(repo, 2, head_sha=sha, head_ref="feature")
    retried_before = _stat(h, "retried:deploy")
    # Given an API server that answers every request of the deploy pool with 500
    h.proxy.faults.reset()
    h.proxy.faults.statuses = (500,)
    h.proxy.faults.error_rate = 1.0
    try:
        # When the PR is opened and followed with --wait
        done = h.enqueue("--repo", repo, "--pr", "2", "--action", "opened", "--sha", sha,
                         "--ref", "feature", "--source", str(path))  # fmt: skip
    finally:
        h.proxy.faults.error_rate = 0.0

    # Then enqueue --wait says why, and exits 1
    assert done.returncode == 1, done.stdout + done.stderr
    assert INJECTED in done.stderr, done.stderr
    assert "Hint:" in done.stderr
    # And the record holds the real error, after exactly max_retries retries of the deploy
    record = h.record(repo, 2)
    assert record["status"] == "failed"
    assert record["error"]["stage"] == "deploy"
    assert INJECTED in record["error"]["message"], record["error"]
    assert _stat(h, "retried:deploy") - retried_before == MAX_RETRIES
    # And the PR comment says it
    h.wait_for(lambda: h.record(repo, 2).get("commented") == "failed", timeout=120)
    comments = h.platform.github.comments(repo, 2)
    assert len(comments) == 1 and INJECTED in comments[0]["body"], comments
    # And nothing is left: no release, no lease, no helm process
    assert "hello-pr-2" not in h.namespaces() or app_objects(h, "hello-pr-2")["releases"] == 0
    assert coordination.lease_holder(h.redis, repo=repo, pr=2) is None
    assert helm_processes(h) == []
    record_figures(
        "kube_api_500_past_max_retries",
        {"max_retries": MAX_RETRIES, "deploy_retries": MAX_RETRIES, "status": "failed",
         "injected": h.proxy.faults.injected},
    )  # fmt: skip
