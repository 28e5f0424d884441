"""Who may make k8see act on a pull request, and which fork commits a maintainer approved.

Two rules the reference lacks (its gap 9):

- **Commands need write access.** ``/deploy-preview``, ``/destroy-preview``, ``/preserve`` and
  ``/unpreserve`` count only from users whose repository permission is ``write`` or ``admin``
  (GitHub's collaborator permission API, asked by the worker: the enqueue client has no GitHub
  credential; the maintain role and custom roles based on write read as ``write`` there).
  Anyone else gets one polite reply and nothing else happens.
- **Forks run nothing unapproved.** A PR whose head lives in another repository is never built
  automatically. A maintainer's ``/deploy-preview`` approves exactly the head commit of that
  moment; the approval is stored here (Redis, per PR, one SHA) and a later push needs a new one.

Replies are found again by a hidden marker per command comment, so a redelivered task does not
answer twice. Nothing secret is stored: the approval is a SHA and a login.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

from k8see.errors import Refused
from k8see.integrations.github import GitHubClient

__all__ = [
    "FORK_MARKER",
    "WRITE_PERMISSIONS",
    "approve",
    "approved_sha",
    "authorize",
    "refuse_fork",
    "reply",
    "reply_marker",
]

#: Repository permissions that may run commands (GitHub's legacy ``permission`` values, where
#: maintain reads as write; ``maintain`` itself stays accepted should a server answer with the
#: role). ``triage``/``read`` may not.
WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})
#: The single comment that tells a fork PR's people how to get a preview (updated, not repeated).
FORK_MARKER = "<!-- k8see-fork-approval -->"
#: Approvals outlive any sane PR review; the PR's own record expires on the same scale.
APPROVAL_TTL_SECONDS = 30 * 86400
FOOTER = "---\n<sub>🤖 Managed by k8see</sub>"

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


def _key(repo: str, pr: int) -> str:
    return f"k8see:pr:{repo.lower()}:{int(pr)}:approval"


def approve(client: redis.Redis, *, repo: str, pr: int, sha: str, by: str) -> None:
    """Record that ``by`` approved ``sha`` of a fork PR; replaces any earlier approval."""
    value = json.dumps({"sha": sha, "by": by, "at": time.time()})
    client.set(_key(repo, pr), value, ex=APPROVAL_TTL_SECONDS)


def approved_sha(client: redis.Redis, *, repo: str, pr: int) -> str | None:
    """The one commit of this PR a maintainer approved, if any."""
    raw: Any = client.get(_key(repo, pr))
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    sha = data.get("sha") if isinstance(data, dict) else None
    return sha if isinstance(sha, str) else None


def reply_marker(comment_id: int) -> str:
    return f"<!-- k8see-reply:{int(comment_id)} -->"


def reply(github: GitHubClient, *, repo: str, pr: int, comment_id: int, text: str) -> int:
    """Answer one command comment with a separate comment (never the sticky one).

    The marker names the command comment, so answering twice updates the first answer.
    """
    marker = reply_marker(comment_id)
    body = f"{marker}\n{text}\n\n{FOOTER}"
    return github.upsert_comment(repo, pr, body, marker=marker)


def authorize(
    github: GitHubClient,
    *,
    repo: str,
    pr: int,
    commenter: str,
    command: str,
    comment_id: int,
    log: Log,
) -> str:
    """Return the commenter's permission if it allows ``command``; otherwise refuse.

    Raises:
        Refused: the commenter is unknown or lacks write access; a reply says so.
    """
    permission = github.get_permission(repo, commenter) if commenter else "none"
    if permission in WRITE_PERMISSIONS:
        return permission
    who = f"@{commenter}" if commenter else "The author of this comment"
    log.info("/%s from %r refused: permission %s.", command, commenter, permission)
    text = (
        f"{who}, thanks for the suggestion! `/{command}` can only be used by people with write "
        "access to this repository, so nothing was changed.\n\n"
        "A maintainer can run it for you: ask one to comment the command on this pull request."
    )
    if comment_id:
        reply(github, repo=repo, pr=pr, comment_id=comment_id, text=text)
    raise Refused(
        f"/{command} from {commenter or 'an unknown user'} was refused: write access is needed.",
        hint="Ask a maintainer of the repository to comment the command.",
    )


def refuse_fork(
    github: GitHubClient, *, repo: str, pr: int, sha: str, approved: str | None
) -> None:
    """Tell the PR a maintainer must approve this fork commit, then stop the run.

    Raises:
        Refused: always.
    """
    again = (
        f" The approved commit was `{approved[:12]}`; a new push needs a new approval."
        if approved
        else ""
    )
    text = (
        "## 🔐 Preview Environment Waiting for Approval\n\n"
        f"This pull request comes from a fork, so k8see does not build or deploy commit "
        f"`{sha[:12]}` on its own.{again}\n\n"
        "A maintainer (write access) can review the changes and comment `/deploy-preview` to "
        "deploy exactly the commit at the head of the pull request at that moment."
    )
    github.upsert_comment(repo, pr, f"{FORK_MARKER}\n{text}\n\n{FOOTER}", marker=FORK_MARKER)
    raise Refused(
        f"PR #{pr} comes from a fork and commit {sha[:12]} is not approved.",
        hint="A maintainer must comment /deploy-preview to approve the PR's current head.",
    )
