"""Attack 5: a synchronize naming an older commit is not deployed.

Covers: validate stops a run whose commit is not the PR's head on GitHub (``Stale``, with a
reason naming both commits), before any commit status or Deployment is written; the build
stage refuses the same message sent to it directly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from k8see.errors import Stale
from k8see.run import Action, Run
from k8see.stages import build, validate
from k8see_sandbox.github import GitHubSandbox
from tests.security.common import REPO, commit, platform_settings, source_repo, stage_ctx


def test_an_older_commit_is_skipped_with_a_reason(
    github: GitHubSandbox, redis_url: str, tmp_path: Path
) -> None:
    settings = platform_settings(tmp_path, redis_url=redis_url, github_url=github.url)
    old = source_repo(tmp_path)
    head = commit(tmp_path / "sources" / REPO, "newer")
    github.add_repo(REPO)
    github.add_source(REPO, tmp_path / "sources" / REPO)  # GitHub serves it too
    github.add_pull(REPO, 3, head_sha=head, head_ref="feature")
    old_push = Run(
        repo=REPO, pr=3, sha=old, generation=1, action=Action.DEPLOY,
        trigger="pull_request:synchronize",
    )  # fmt: skip
    ctx = stage_ctx(settings, tmp_path)
    with pytest.raises(Stale) as skipped:
        validate.run(old_push, ctx)
    assert old[:12] in skipped.value.message and head[:12] in skipped.value.message
    assert github.deployments(REPO) == [] and github.commit_statuses(REPO) == []
    with pytest.raises(Stale):
        build.run(old_push, ctx)
