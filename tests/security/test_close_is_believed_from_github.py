"""Attack 4: a "closed" event for an open PR destroys nothing.

Calls the destroy stage directly against the local cluster and the GitHub stand-in.

Covers: a destroy run from ``k8see enqueue --action closed`` for a PR GitHub reports open is
refused (the namespace stays, the PR says why); the same run destroys once GitHub says the PR
is closed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from k8see.errors import Refused
from k8see.run import Action, Run
from k8see.stages import destroy
from k8see.stages.trust import REFUSAL_MARKER
from k8see_sandbox.github import GitHubSandbox
from tests.fixtures.kube import RUN_ID
from tests.jobs.test_cleanup import add_namespace
from tests.security.common import REPO, platform_settings, stage_ctx

pytestmark = pytest.mark.timeout(300)
#: The PR's namespace, unique to the run: another run on the same cluster may still be
#: deleting its own.
NAMESPACE = f"shop{RUN_ID}-pr-11"


def _namespaces(api: Any) -> set[str]:
    from kubernetes import client

    items = client.CoreV1Api(api).list_namespace().items
    return {ns.metadata.name for ns in items if not ns.metadata.deletion_timestamp}


def test_a_close_for_an_open_pr_is_refused(
    github: GitHubSandbox, redis_url: str, kubeconfig: str, kube_api_client: Any, tmp_path: Path
) -> None:
    settings = platform_settings(
        tmp_path, redis_url=redis_url, github_url=github.url, deploy={"kubeconfig": kubeconfig}
    )
    github.add_repo(REPO)
    github.add_pull(REPO, 11, head_sha="a" * 40, head_ref="feature")
    add_namespace(kube_api_client, NAMESPACE, repo=REPO, pr=11, last_updated=time.time())
    forged = Run(repo=REPO, pr=11, sha="", generation=1, action=Action.DESTROY,
                 trigger="pull_request:closed")  # fmt: skip
    ctx = stage_ctx(settings, tmp_path)
    # When a close arrives while GitHub says the PR is open
    with pytest.raises(Refused) as refused:
        destroy.run(forged, ctx)
    # Then the environment stays and the PR is told
    assert "open on GitHub" in refused.value.message
    assert NAMESPACE in _namespaces(kube_api_client)
    assert any(REFUSAL_MARKER in c["body"] for c in github.comments(REPO, 11))
    # And once GitHub says it is closed, the same request destroys it
    github.set_pull_state(REPO, 11, state="closed")
    assert destroy.run(forged, ctx).result("destroy")["deleted"] is True
