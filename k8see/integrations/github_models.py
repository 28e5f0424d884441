"""What k8see reads of GitHub's answers: a pull request and an issue comment, parsed strictly
(an answer without what a decision needs is a ``GitHubError``, never a ``KeyError``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests

from k8see.errors import GitHubError


@dataclass(frozen=True)
class Pull:
    """The parts of a pull request k8see decides on."""

    repo: str
    number: int
    state: str
    merged: bool
    head_sha: str
    head_ref: str
    head_repo: str
    base_ref: str
    author: str
    #: Unix time of the last push to the head repository (GitHub's ``head.repo.pushed_at``,
    #: set by GitHub, not by the pusher); 0.0 when GitHub did not say.
    head_pushed_at: float = 0.0

    @property
    def fork(self) -> bool:
        """A PR from another repository: never built without a maintainer's approval."""
        return self.head_repo.lower() != self.repo.lower()


@dataclass(frozen=True)
class IssueComment:
    """A PR (issue) comment as GitHub reports it: who wrote what, where and when."""

    id: int
    issue: int
    body: str
    author: str
    created_at: float


def pull_of(repo: str, data: Any, what: str) -> Pull:
    """A ``Pull`` from a full pull or a list item; list items have no ``merged``, only
    ``merged_at``."""
    try:
        return Pull(
            repo=repo,
            number=int(data["number"]),
            state=str(data["state"]),
            merged=bool(data.get("merged")) or data.get("merged_at") is not None,
            head_sha=str(data["head"]["sha"]),
            head_ref=str(data["head"]["ref"]),
            head_repo=str((data["head"].get("repo") or {}).get("full_name") or ""),
            base_ref=str(data["base"]["ref"]),
            author=str((data.get("user") or {}).get("login") or ""),
            head_pushed_at=timestamp((data["head"].get("repo") or {}).get("pushed_at")),
        )
    except (AttributeError, KeyError, TypeError, ValueError):
        raise GitHubError(f"GitHub's answer for {what} lacks head or base.") from None


def timestamp(value: Any) -> float:
    """GitHub's ``2026-03-14T12:34:56Z`` as Unix time; 0.0 when absent."""
    if not isinstance(value, str) or not value:
        return 0.0
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def json_of(response: requests.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise GitHubError(f"GitHub answered {what} with a body that is not JSON.") from None
