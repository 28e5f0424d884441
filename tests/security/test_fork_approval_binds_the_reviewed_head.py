"""Attack 3: a maintainer's approval covers the head they saw, not a push that raced it.

Calls the validate stage directly with the Run a ``/deploy-preview`` produces.

Covers: a fork pushed after the maintainer's comment was written is not approved (the PR
says why), and the same comment approves when the fork's last push came before it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from k8see import approvals
from k8see.errors import Refused
from k8see.run import Action, Run
from k8see.stages import validate
from k8see.stages.trust import REFUSAL_MARKER
from k8see_sandbox.github import GitHubSandbox
from tests.security.common import REPO, commit, platform_settings, source_repo, stage_ctx


def _approval_run(comment_id: int) -> Run:
    return Run(
        repo=REPO, pr=4, sha="", generation=1, action=Action.DEPLOY,
        trigger="issue_comment:/deploy-preview", comment_id=comment_id, commenter="maint",
    )  # fmt: skip


def test_a_push_after_the_approving_comment_is_not_approved(
    github: GitHubSandbox, redis_url: str, tmp_path: Path
) -> None:
    settings = platform_settings(tmp_path, redis_url=redis_url, github_url=github.url)
    store = redis.Redis.from_url(redis_url)
    reviewed = source_repo(tmp_path)
    now = time.time()
    github.add_repo(REPO, collaborators={"maint": "maintain"})
    github.add_source(REPO, tmp_path / "sources" / REPO)  # GitHub serves it too
    github.add_pull(REPO, 4, head_sha=reviewed, head_ref="p", fork=True, pushed_at=now - 60)
    # Given a maintainer approved the head they reviewed
    comment = github.add_comment(REPO, 4, "/deploy-preview", login="maint", at=now - 30)
    # When the fork pushes before the command is processed
    raced = commit(tmp_path / "sources" / REPO, "sneaky")
    github.set_pull_state(REPO, 4, head_sha=raced, pushed_at=now - 10)
    with pytest.raises(Refused) as refused:
        validate.run(_approval_run(comment["id"]), stage_ctx(settings, tmp_path))
    # Then the raced commit is not approved, and the PR is told to review it
    assert "after @maint's /deploy-preview" in refused.value.message
    assert approvals.approved_sha(store, repo=REPO, pr=4) is None
    (notice,) = [c["body"] for c in github.comments(REPO, 4) if REFUSAL_MARKER in c["body"]]
    assert raced[:12] in notice


def test_a_comment_after_the_last_push_approves_the_head(
    github: GitHubSandbox, redis_url: str, tmp_path: Path
) -> None:
    settings = platform_settings(tmp_path, redis_url=redis_url, github_url=github.url)
    store = redis.Redis.from_url(redis_url)
    sha = source_repo(tmp_path)
    now = time.time()
    github.add_repo(REPO, collaborators={"maint": "maintain"})
    github.add_source(REPO, tmp_path / "sources" / REPO)  # GitHub serves it too
    github.add_pull(REPO, 4, head_sha=sha, head_ref="p", fork=True, pushed_at=now - 60)
    comment = github.add_comment(REPO, 4, "/deploy-preview", login="maint", at=now - 30)
    out = validate.run(_approval_run(comment["id"]), stage_ctx(settings, tmp_path))
    assert out.sha == sha
    assert approvals.approved_sha(store, repo=REPO, pr=4) == sha
