"""Who may make k8see act, and fork approvals: the real client against the sandbox GitHub,
approvals in a real Redis.

Covers: write, maintain and admin may run commands, triage, read and strangers may not (one
polite reply, no reaction, ``Refused``); an unknown commenter is refused without asking GitHub;
a redelivered refusal updates its reply instead of adding one; an approval is one SHA per PR,
replaced by the next; the fork notice is one comment, updated in place.
"""

from __future__ import annotations

import logging

import pytest
import redis

from k8see import approvals
from k8see.errors import Refused
from k8see.integrations.github import GitHubClient
from k8see_sandbox.github import GitHubSandbox

SHA = "a" * 40
LOG = logging.getLogger("k8see.test.approvals")


@pytest.fixture
def shop(github: GitHubSandbox) -> GitHubSandbox:
    github.add_repo(
        "acme/shop",
        collaborators={"w": "write", "m": "maintain", "a": "admin", "t": "triage", "r": "read"},
    )
    github.add_pull("acme/shop", 7, head_sha=SHA, head_ref="feature")
    return github


# GitHub's permission field is the legacy one: the maintain role reads as write (role_name
# says maintain), and a custom role reads as the base role it extends.
@pytest.mark.parametrize(("login", "permission"), [("w", "write"), ("m", "write"), ("a", "admin")])
def test_write_access_may_run_commands(
    shop: GitHubSandbox, github_client: GitHubClient, login: str, permission: str
) -> None:
    got = approvals.authorize(
        github_client, repo="acme/shop", pr=7, commenter=login, command="deploy-preview",
        comment_id=1, log=LOG,
    )  # fmt: skip
    assert got == permission
    assert shop.comments("acme/shop", 7) == []


@pytest.mark.parametrize("login", ["t", "r", "stranger"])
def test_others_get_one_polite_reply(
    shop: GitHubSandbox, github_client: GitHubClient, login: str
) -> None:
    command = shop.add_comment("acme/shop", 7, "/destroy-preview", login=login)
    for _ in range(2):  # a redelivered task answers once
        with pytest.raises(Refused) as refused:
            approvals.authorize(
                github_client, repo="acme/shop", pr=7, commenter=login,
                command="destroy-preview", comment_id=command["id"], log=LOG,
            )  # fmt: skip
        assert "write access" in refused.value.message and refused.value.hint
    replies = [c for c in shop.comments("acme/shop", 7) if c["id"] != command["id"]]
    assert len(replies) == 1
    assert replies[0]["body"].startswith(approvals.reply_marker(command["id"]))
    assert f"@{login}" in replies[0]["body"] and "`/destroy-preview`" in replies[0]["body"]
    assert shop.reactions(command["id"]) == []


def test_an_unknown_commenter_is_refused_without_asking(
    shop: GitHubSandbox, github_client: GitHubClient
) -> None:
    with pytest.raises(Refused):
        approvals.authorize(
            github_client, repo="acme/shop", pr=7, commenter="", command="deploy-preview",
            comment_id=0, log=LOG,
        )  # fmt: skip
    assert not any("permission" in path for _, path in shop.calls)


def test_an_approval_is_one_sha_replaced_by_the_next(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert approvals.approved_sha(client, repo="Acme/Shop", pr=7) is None
    approvals.approve(client, repo="Acme/Shop", pr=7, sha=SHA, by="m")
    assert approvals.approved_sha(client, repo="acme/shop", pr=7) == SHA
    approvals.approve(client, repo="acme/shop", pr=7, sha="b" * 40, by="m")
    assert approvals.approved_sha(client, repo="acme/shop", pr=7) == "b" * 40
    assert approvals.approved_sha(client, repo="acme/shop", pr=8) is None


def test_the_fork_notice_is_one_comment_updated_in_place(
    shop: GitHubSandbox, github_client: GitHubClient
) -> None:
    with pytest.raises(Refused):
        approvals.refuse_fork(github_client, repo="acme/shop", pr=7, sha=SHA, approved=None)
    with pytest.raises(Refused) as again:
        approvals.refuse_fork(github_client, repo="acme/shop", pr=7, sha="c" * 40, approved=SHA)
    (notice,) = shop.comments("acme/shop", 7)
    assert notice["body"].startswith(approvals.FORK_MARKER)
    assert "cccccccccccc" in notice["body"] and "new approval" in notice["body"]
    assert "/deploy-preview" in (again.value.hint or "")
