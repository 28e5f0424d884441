"""The front doors end to end: ``k8see api`` as a process, GitHub's stand-in as the App that
sends signed webhooks and as the Actions OIDC issuer, real workers and a real cluster.

Covers:
- a PR opened through a signed webhook, with no workflow and no enqueue step, becomes ready
  with its PR comment;
- a fork PR opened by webhook is not deployed: it waits for a maintainer's approval;
- a workflow enqueue with an OIDC token of repository A naming repository B is refused, and
  nothing is queued for B;
- replaying a delivery queues nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from k8see import coordination
from k8see.approvals import FORK_MARKER
from tests.conftest import free_port
from tests.e2e.harness import ROOT, Harness, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SECRET = "e2e-webhook-secret-0123456789"


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Harness, str]]:
    with running_platform(tmp_path_factory.mktemp("front-doors")) as h:
        url = h.platform.start_api(port=free_port(), webhook_secret=SECRET)
        yield h, url


def _config(name: str) -> dict[str, str]:
    text = (ROOT / "examples" / "hello" / "k8s-ee.yaml").read_text()
    return {"k8s-ee.yaml": text.replace("projectId: hello", f"projectId: {name}")}


def _bodies(h: Harness, repo: str, pr: int) -> list[str]:
    return [str(c["body"]) for c in h.platform.github.comments(repo, pr)]


def _settled(h: Harness, repo: str, pr: int, timeout: float = 600) -> dict[str, Any]:
    """The PR's record once its run ended and the comment says so."""
    deadline = time.monotonic() + timeout
    record: dict[str, Any] = {}
    while time.monotonic() < deadline:
        record = h.record(repo, pr)
        status = record.get("status")
        if status in ("ready", "failed", "skipped") and record.get("commented") == status:
            return record
        time.sleep(1)
    raise AssertionError(f"the run did not settle: {record}")


def test_a_pr_opened_by_webhook_alone_becomes_ready_with_its_comment(
    front: tuple[Harness, str],
) -> None:
    h, api = front
    gh = h.platform.github
    repo, _path, sha = h.repo("apphook", _config("apphook"))
    gh.add_repo(repo, collaborators={"maintainer": "maintain"})
    gh.add_pull(repo, 1, head_sha=sha, head_ref="feature")

    # When GitHub delivers pull_request.opened to the App's webhook (no workflow runs)
    sent = gh.webhook_sender(SECRET).deliver(
        f"{api}/github/webhooks", "pull_request", gh.pull_request_event(repo, 1, "opened")
    )
    assert (sent.status, sent.body.get("status")) == (202, "queued"), sent
    # Then the PR gets its environment and its comment
    record = _settled(h, repo, 1)
    assert record["status"] == "ready", record.get("error")
    assert record["sha"] == sha and record["trigger"] == "pull_request:opened"
    assert "apphook-pr-1" in h.namespaces()
    assert any(record["preview_url"] in body for body in _bodies(h, repo, 1))

    # When the same delivery is replayed
    generation = coordination.current_generation(h.redis, repo=repo, pr=1)
    replay = gh.webhook_sender(SECRET).deliver(
        f"{api}/github/webhooks",
        "pull_request",
        gh.pull_request_event(repo, 1, "opened"),
        delivery=sent.delivery,
    )
    # Then nothing is queued: same generation, the record untouched
    assert (replay.status, replay.body.get("status")) == (202, "duplicate")
    time.sleep(3)
    assert coordination.current_generation(h.redis, repo=repo, pr=1) == generation
    assert h.record(repo, 1)["run_id"] == record["run_id"]


def test_a_fork_pr_opened_by_webhook_waits_for_approval(front: tuple[Harness, str]) -> None:
    h, api = front
    gh = h.platform.github
    repo, _path, sha = h.repo("appfork", _config("appfork"))
    gh.add_repo(repo, collaborators={"maintainer": "maintain"})
    gh.add_pull(repo, 2, head_sha=sha, head_ref="patch-1", fork=True)

    sent = gh.webhook_sender(SECRET).deliver(
        f"{api}/github/webhooks", "pull_request", gh.pull_request_event(repo, 2, "opened")
    )
    assert sent.status == 202, sent
    h.wait_for(lambda: any(b.startswith(FORK_MARKER) for b in _bodies(h, repo, 2)), 300)
    (waiting,) = [b for b in _bodies(h, repo, 2) if b.startswith(FORK_MARKER)]
    assert "/deploy-preview" in waiting and sha[:12] in waiting
    assert "appfork-pr-2" not in h.namespaces()


def test_a_token_of_one_repository_cannot_enqueue_for_another(
    front: tuple[Harness, str],
) -> None:
    h, api = front
    gh = h.platform.github
    job = gh.oidc.job_environment(f"{'k8see-demo'}/repo-a")
    env = {**h.platform.process_env(), **job}
    env.pop("K8SEE_REDIS__URL")  # a hosted runner has no Redis; only the API
    done = subprocess.run(
        [sys.executable, "-m", "k8see", "enqueue", "--api", api, "--repo", "k8see-demo/repo-b",
         "--pr", "3", "--action", "opened", "--sha", "b" * 40, "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    error = json.loads(done.stdout)["error"]
    assert "k8see-demo/repo-a, not k8see-demo/repo-b" in error["message"]
    assert coordination.current_generation(h.redis, repo="k8see-demo/repo-b", pr=3) == 0
