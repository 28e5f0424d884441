"""A deploy worker killed with SIGKILL in the middle of a Helm upgrade: the message is
redelivered (acks_late + reject_on_worker_lost), the same run takes its lease over, and the
run ends ready with no duplicate resources and no lease left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Harness, running_platform, slow_start

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def slow_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with running_platform(
        tmp_path_factory.mktemp("e2e-slow"),
        extra_env={"K8SEE_QUEUES__DEPLOY_CONCURRENCY": "1"},
    ) as h:
        yield h


def _pool_children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_sigkill_mid_deploy_ends_ready_after_redelivery(slow_harness: Harness) -> None:
    from k8see import coordination

    h = slow_harness
    # The app listens only after 6 s, so helm --wait is still running when the worker dies.
    repo, path, sha = h.repo("killed", slow_start(6))
    h.platform.github.add_repo(repo)
    h.platform.github.add_pull(repo, 7, head_sha=sha, head_ref="feature")
    deploy_worker = h.platform.processes["worker-deploy"]

    # Given a deploy under way
    h.enqueue(
        "--repo",
        repo,
        "--pr",
        "7",
        "--action",
        "opened",
        "--sha",
        sha,
        "--source",
        str(path),
        wait=False,
    )
    h.wait_for(lambda: h.record(repo, 7).get("status") == "deploying", timeout=300)
    time.sleep(1.5)  # inside helm upgrade --wait
    # When the pool process running it is killed
    children = _pool_children(deploy_worker.pid)
    assert children, "the deploy worker has no pool process"
    for child in children:
        os.kill(child, signal.SIGKILL)

    # Then the run is redelivered and ends ready
    h.wait_for(lambda: h.record(repo, 7).get("status") in ("ready", "failed"), timeout=300)
    record = h.record(repo, 7)
    assert record["status"] == "ready", record.get("error")
    assert coordination.lease_holder(h.redis, repo=repo, pr=7) is None
    from kubernetes import client, config

    apps = client.AppsV1Api(config.new_client_from_config(str(h.platform.kubeconfig)))
    assert len(apps.list_namespaced_deployment("hello-pr-7").items) == 1
    assert Path(h.platform.kubeconfig).exists()
