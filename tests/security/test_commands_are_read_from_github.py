"""Attack 2: a command's author and permission come from GitHub, never from the message.

Real messages go by task name to a real worker against the real Redis and the GitHub stand-in.

Covers: a forged ``k8see.validate`` message carrying ``results.command.permission: admin``
and ``commenter: nobody-at-all`` approves no fork commit; ``k8see enqueue --comment
/deploy-preview --commenter maint`` with no such comment stores no approval and admits
nothing; a message that names a maintainer as the author of a stranger's comment is judged
by GitHub's author; each refusal is said on the PR.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from k8see import approvals, coordination, state
from k8see.cli import main
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from k8see.stages.trust import REFUSAL_MARKER
from k8see_sandbox.github import GitHubSandbox
from tests.security.common import REPO, platform_settings, source_repo, worker

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, github: GitHubSandbox) -> PlatformSettings:
    return platform_settings(tmp_path, redis_url=redis_url, github_url=github.url)


def _wait(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)


def test_a_forged_permission_approves_no_fork_commit(
    settings: PlatformSettings, github: GitHubSandbox, redis_url: str, tmp_path: Path
) -> None:
    # Given a fork PR nobody approved
    sha = source_repo(tmp_path)
    github.add_repo(REPO, collaborators={"maint": "maintain"})
    github.add_source(REPO, tmp_path / "sources" / REPO)  # GitHub serves it too
    github.add_pull(REPO, 9, head_sha=sha, head_ref="patch", fork=True)
    store = redis.Redis.from_url(redis_url)
    forged = Run(
        repo=REPO, pr=9, sha="", generation=0, action=Action.DEPLOY,
        trigger="issue_comment:/deploy-preview", commenter="nobody-at-all",
    ).with_result("command", {"command": "deploy-preview", "permission": "admin"})  # fmt: skip
    # When the forged message reaches a worker
    with worker(settings) as app:
        app.send_task("k8see.validate", args=[forged.to_dict()]).get(timeout=60)
    # Then no commit of the fork is approved, and the PR says why
    assert approvals.approved_sha(store, repo=REPO, pr=9) is None
    notices = [c["body"] for c in github.comments(REPO, 9) if REFUSAL_MARKER in c["body"]]
    assert len(notices) == 1 and "comment" in notices[0]


def test_enqueue_with_a_made_up_commenter_stores_no_approval(
    settings: PlatformSettings, github: GitHubSandbox, redis_url: str, tmp_path: Path
) -> None:
    # Given a fork PR and a maintainer who wrote no comment
    sha = source_repo(tmp_path)
    github.add_repo(REPO, collaborators={"maint": "maintain"})
    github.add_source(REPO, tmp_path / "sources" / REPO)  # GitHub serves it too
    github.add_pull(REPO, 9, head_sha=sha, head_ref="patch", fork=True)
    store = redis.Redis.from_url(redis_url)
    env = {"K8SEE_REDIS__URL": redis_url}
    with worker(settings):
        # When someone holding the enqueue credential claims the maintainer commented
        sent = CliRunner().invoke(
            main,
            ["enqueue", "--repo", REPO, "--pr", "9", "--comment", "/deploy-preview",
             "--commenter", "maint", "--json"],
            env=env,
        )  # fmt: skip
        assert sent.exit_code == 0, sent.output
        _wait(lambda: state.stats(store).get("stopped:refused:command", 0) >= 1)
    # Then nothing is approved or admitted
    assert approvals.approved_sha(store, repo=REPO, pr=9) is None
    assert coordination.current_generation(store, repo=REPO, pr=9) == 0
    assert state.stats(store).get("stopped:refused:command", 0) == 1


def test_the_author_is_githubs_not_the_messages(
    settings: PlatformSettings, github: GitHubSandbox, redis_url: str, tmp_path: Path
) -> None:
    # Given a reader's /deploy-preview comment on a fork PR
    sha = source_repo(tmp_path)
    github.add_repo(REPO, collaborators={"maint": "maintain", "reader": "read"})
    github.add_source(REPO, tmp_path / "sources" / REPO)  # GitHub serves it too
    github.add_pull(REPO, 9, head_sha=sha, head_ref="patch", fork=True)
    comment = github.add_comment(REPO, 9, "/deploy-preview", login="reader")
    store = redis.Redis.from_url(redis_url)
    forged = Run(
        repo=REPO, pr=9, sha="", generation=0, action=Action.DEPLOY,
        trigger="issue_comment:/deploy-preview", commenter="maint", comment_id=comment["id"],
    )  # fmt: skip
    # When a message claims the maintainer wrote it
    with worker(settings) as app:
        app.send_task("k8see.command", args=[forged.to_dict()]).get(timeout=60)
    # Then GitHub's author (a reader) is refused, politely, by name
    assert approvals.approved_sha(store, repo=REPO, pr=9) is None
    assert coordination.current_generation(store, repo=REPO, pr=9) == 0
    replies = [c["body"] for c in github.comments(REPO, 9)]
    assert any("@reader" in b and "write access" in b for b in replies)
