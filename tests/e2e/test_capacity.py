"""Capacity admission end to end: a full platform makes a new PR wait its turn, then deploys it.

Covers, with ``K8SEE_CAPACITY__MAX_ENVIRONMENTS=2`` on real workers and a real cluster: two
PRs deploy; a third waits (record ``waiting``, position 1, and its PR comment says "Waiting
for capacity: position 1") without a namespace; when one of the first two closes, its destroy
releases the place and the third deploys to ready; a redeploy of a running PR is not blocked
while the platform is full; ``k8see status`` shows the waiting position.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.e2e.harness import Harness, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    workdir = tmp_path_factory.mktemp("capacity")
    env = {"K8SEE_CAPACITY__MAX_ENVIRONMENTS": "2", "K8SEE_METRICS__ENABLED": "false"}
    with running_platform(workdir, extra_env=env) as h:
        yield h


def comments(h: Harness, repo: str, pr: int) -> list[str]:
    return [str(c["body"]) for c in h.platform.github.comments(repo, pr)]


def test_a_third_pr_waits_with_its_position_and_deploys_when_one_closes(harness: Harness) -> None:
    h = harness
    repo, _path, sha = h.repo("full")
    h.platform.github.add_repo(repo)
    for pr in (1, 2, 3):
        h.platform.github.add_pull(repo, pr, head_sha=sha, head_ref="feature")

    def enqueue(pr: int, action: str, *, wait: bool = True) -> None:
        done = h.enqueue("--repo", repo, "--pr", str(pr), "--action", action, "--sha", sha,
                         "--ref", "feature", wait=wait)  # fmt: skip
        assert done.returncode == 0, done.stderr + done.stdout

    # Given two PRs deployed: the platform is full
    enqueue(1, "opened")
    enqueue(2, "opened")
    assert h.record(repo, 1)["status"] == "ready" and h.record(repo, 2)["status"] == "ready"

    # When a third PR opens
    enqueue(3, "opened", wait=False)
    # Then it waits, first in line, and its PR comment says so
    h.wait_for(lambda: h.record(repo, 3).get("status") == "waiting", timeout=300)
    assert h.record(repo, 3)["capacity_position"] == 1
    h.wait_for(
        lambda: any("Waiting for capacity: position 1" in c for c in comments(h, repo, 3)),
        timeout=60,
    )
    assert "hello-pr-3" not in h.namespaces()
    listed = subprocess.run(
        [sys.executable, "-m", "k8see", "status", "--repo", repo, "--pr", "3"],
        env=h.platform.process_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "waiting (position 1)" in listed.stdout, listed.stderr

    # And a redeploy of a running PR is not blocked by the full platform
    enqueue(2, "synchronize")
    assert h.record(repo, 2)["status"] == "ready"
    assert h.record(repo, 3)["status"] == "waiting"

    # When PR 1 closes
    h.platform.github.set_pull_state(repo, 1, state="closed")
    enqueue(1, "closed")
    assert h.record(repo, 1)["status"] == "destroyed"
    # Then the waiting PR is admitted and deploys to ready
    h.wait_for(lambda: h.record(repo, 3).get("status") == "ready", timeout=300)
    assert "hello-pr-3" in h.namespaces()
    # (the comment stage follows the deploy, so the comment says so a moment later)
    h.wait_for(lambda: any("Deployed" in c for c in comments(h, repo, 3)), timeout=60)
