"""In-memory state of the sandbox GitHub server: repositories, pulls, comments and the rest.

Kept apart from the HTTP layer (``github.py``) so tests can seed and inspect it directly while
k8see's real client talks to it over HTTP. Every public method takes the lock; the objects it
returns are copies, so a test never races the server thread.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from k8see_sandbox import github_shapes as shapes

#: Reaction contents GitHub accepts (others get 422).
REACTIONS = frozenset({"+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"})
DEPLOYMENT_STATES = frozenset(
    {"error", "failure", "inactive", "in_progress", "queued", "pending", "success"}
)
COMMIT_STATES = frozenset({"error", "failure", "pending", "success"})
PERMISSIONS = ("admin", "maintain", "write", "triage", "read", "none")


def iso(ts: float | None = None) -> str:
    """GitHub's timestamp form, ``2026-03-14T12:34:56Z``."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Faults:
    """Failures the sandbox injects, so retry and backoff paths run against real HTTP.

    Attributes:
        fail_comment_writes_until: Unix time; until then POST/PATCH of comments answer 502.
        fail_comment_writes_count: The next N comment writes answer 502 (a count, for tests
            that must not depend on the clock).
        secondary_rate_limit_next: The next N authenticated requests answer 403 with GitHub's
            secondary-rate-limit body and ``Retry-After``.
        primary_rate_limit_next: The next N requests answer 403 with ``x-ratelimit-remaining:
            0`` and ``x-ratelimit-reset`` set ``retry_after_seconds`` ahead.
        lose_comment_write_responses: The next N comment writes are applied, then answered
            502, like a response lost on the way back: a blind retry would duplicate.
        retry_after_seconds: The wait the rate-limit answers ask for.
        omit_retry_after: Send secondary-limit answers without ``Retry-After`` (GitHub does
            this too; clients must then wait at least a minute).
    """

    fail_comment_writes_until: float = 0.0
    fail_comment_writes_count: int = 0
    secondary_rate_limit_next: int = 0
    primary_rate_limit_next: int = 0
    lose_comment_write_responses: int = 0
    retry_after_seconds: int = 1
    omit_retry_after: bool = False


@dataclass
class RepoState:
    full_name: str
    id: int
    private: bool
    collaborators: dict[str, str]
    default_branch: str = "main"
    created_at: str = field(default_factory=lambda: iso())
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: pull number → sequence of its last change: orders pulls updated within the same second
    #: (``updated_at`` has GitHub's one-second resolution) the way GitHub's finer clock would.
    pull_changes: dict[int, int] = field(default_factory=dict)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    commit_statuses: list[dict[str, Any]] = field(default_factory=list)
    source: Path | None = None
    #: (sha → tar.gz bytes) served instead of ``git archive``; lets tests serve hostile archives.
    tarballs: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Actor:
    """Who a credential authenticates as."""

    login: str
    type: str = "User"
    #: For installation tokens: the repositories the token may touch (None: all).
    repos: frozenset[str] | None = None
    expires_at: float | None = None


class GitHubState:
    """Everything the sandbox knows, behind one lock."""

    def __init__(self, *, token: str, base_url: str = "") -> None:
        self.lock = threading.RLock()
        self.base_url = base_url
        self.static_token = token
        self.faults = Faults()
        self.calls: list[tuple[str, str]] = []
        #: Conditional GETs answered 304 (GitHub does not count them against the rate limit).
        self.not_modified = 0
        #: Requests counted against the primary rate limit, per credential (GitHub does not
        #: count a 304 answer to a conditional request).
        self.rate_used: dict[str, int] = {}
        self.repos: dict[str, RepoState] = {}
        self.comments: dict[int, dict[str, Any]] = {}
        self.reactions_by_comment: dict[int, list[dict[str, Any]]] = {}
        self.tokens: dict[str, Actor] = {}
        #: app_id → (public key PEM, {repo: installation id})
        self.apps: dict[str, tuple[bytes, dict[str, int]]] = {}
        self.installation_token_ttl_seconds = 3600
        self.codeload_tokens: set[str] = set()
        #: ("org"|"user", owner, package name) → container package versions, newest first.
        self.packages: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        #: repository → uploaded SARIF analyses (decoded), oldest first.
        self.sarifs: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1001)
        self.reset()

    def reset(self) -> None:
        """Forget every repository, comment, fault and call; keep the static token."""
        with self.lock:
            self.faults = Faults()
            self.calls.clear()
            self.not_modified = 0
            self.rate_used.clear()
            self.repos.clear()
            self.comments.clear()
            self.reactions_by_comment.clear()
            self.tokens = {self.static_token: Actor(login="k8see-bot")}
            self.apps.clear()
            self.installation_token_ttl_seconds = 3600
            self.codeload_tokens.clear()
            self.packages.clear()
            self.sarifs.clear()

    def next_id(self) -> int:
        return next(self._ids)

    def repo(self, full_name: str) -> RepoState | None:
        return self.repos.get(full_name.lower())

    def actor(self, token: str) -> Actor | None:
        actor = self.tokens.get(token)
        if actor is None or (actor.expires_at is not None and actor.expires_at <= time.time()):
            return None
        return actor

    # -- seeding -------------------------------------------------------------------------------

    def add_repo(self, full_name: str, *, private: bool, collaborators: dict[str, str]) -> None:
        bad = {p for p in collaborators.values() if p not in PERMISSIONS}
        if bad:
            raise ValueError(f"unknown permissions {sorted(bad)}; use one of {PERMISSIONS}")
        with self.lock:
            self.repos[full_name.lower()] = RepoState(
                full_name=full_name,
                id=self.next_id(),
                private=private,
                collaborators={k.lower(): v for k, v in collaborators.items()},
            )

    def add_pull(self, full_name: str, number: int, **fields: Any) -> dict[str, Any]:
        with self.lock:
            repo = self._need(full_name)
            owner = full_name.split("/")[0]
            name = full_name.split("/")[1]
            head_repo = f"contributor/{name}" if fields["fork"] else full_name
            now = iso()
            api = self.base_url

            def side(repo_name: str, ref: str, sha: str, *, fork: bool) -> dict[str, Any]:
                owner_login = repo_name.split("/")[0]
                return {
                    "label": f"{owner_login}:{ref}",
                    "ref": ref,
                    "sha": sha,
                    "user": shapes.user(api, owner_login),
                    "repo": shapes.repository(
                        api, repo_name, id=shapes.stable_id(repo_name) if fork else repo.id,
                        private=repo.private, fork=fork, pushed_at=iso(fields.get("pushed_at")),
                        created_at=repo.created_at, default_branch=repo.default_branch,
                    ),
                }  # fmt: skip

            base_sha = hashlib.sha1(f"{full_name}:{fields['base_ref']}".encode()).hexdigest()
            pull = shapes.pull(
                api, full_name, id=self.next_id(), number=number, state=fields["state"],
                author=fields.get("author") or owner,
                head=side(head_repo, fields["head_ref"], fields["head_sha"], fork=fields["fork"]),
                base=side(full_name, fields["base_ref"], base_sha, fork=False),
                merged_at=now if fields["merged"] else None,
                closed_at=now if fields["state"] == "closed" else None,
                created_at=now,
            )  # fmt: skip
            repo.pulls[number] = pull
            repo.pull_changes[number] = self.next_id()
            return copy.deepcopy(pull)

    def set_pull_state(self, full_name: str, number: int, **changes: Any) -> None:
        """Change a pull; closing sets ``closed_at``, merging also closes it, as on GitHub."""
        with self.lock:
            repo = self._need(full_name)
            pull = repo.pulls[number]
            if changes.get("merged"):
                changes["state"] = "closed"
                pull["merged_at"] = iso()
            if changes.get("state") not in (None, pull["state"]):
                pull["closed_at"] = iso() if changes["state"] == "closed" else None
            for key in ("state", "merged"):
                if changes.get(key) is not None:
                    pull[key] = changes[key]
            if changes.get("head_sha") not in (None, pull["head"]["sha"]):
                pull["_before"] = pull["head"]["sha"]  # a synchronize event's ``before``
            for key in ("sha", "ref"):
                if changes.get(f"head_{key}") is not None:
                    pull["head"][key] = changes[f"head_{key}"]
            if changes.get("head_ref") is not None:
                pull["head"]["label"] = f"{pull['head']['user']['login']}:{changes['head_ref']}"
            if changes.get("head_sha") is not None:
                statuses = f"{self.base_url}/repos/{full_name}/statuses/{changes['head_sha']}"
                pull["statuses_url"] = statuses
                pull["_links"]["statuses"]["href"] = statuses
            if changes.get("head_sha") is not None or changes.get("pushed_at") is not None:
                # A push: GitHub sets the head repository's pushed_at itself.
                pull["head"]["repo"]["pushed_at"] = iso(changes.get("pushed_at"))
            pull["updated_at"] = iso()
            repo.pull_changes[number] = self.next_id()

    def add_comment(
        self, full_name: str, number: int, body: str, *, actor: Actor, at: float | None = None
    ) -> dict[str, Any]:
        with self.lock:
            self._need(full_name)
            cid = self.next_id()
            now = iso(at)
            comment = {
                "id": cid,
                "node_id": f"IC_sandbox{cid}",
                "url": f"{self.base_url}/repos/{full_name}/issues/comments/{cid}",
                "html_url": f"https://github.com/{full_name}/pull/{number}#issuecomment-{cid}",
                "issue_url": f"{self.base_url}/repos/{full_name}/issues/{number}",
                "body": body,
                "user": shapes.user(self.base_url, actor.login, type=actor.type),
                "created_at": now,
                "updated_at": now,
                "author_association": "NONE",
                "_repo": full_name.lower(),
                "_issue": number,
            }
            self.comments[cid] = comment
            return public(comment)

    def add_package_version(
        self,
        owner: str,
        package: str,
        tags: list[str],
        *,
        org: bool = True,
        updated_at: float | None = None,
    ) -> int:
        """A GHCR container package version (an image) of org or user ``owner``.

        ``updated_at`` (Unix time, default now) is when GitHub last changed the version, as
        its API reports it; ``created_at`` is the same moment.
        """
        with self.lock:
            vid = self.next_id()
            key = ("org" if org else "user", owner.lower(), package)
            versions = self.packages.setdefault(key, [])
            when = iso(updated_at)
            scope = f"orgs/{owner}" if org else "user"
            html = f"{shapes.HTML}/{'orgs/' if org else 'users/'}{owner}/packages/container"
            versions.insert(0, {
                "id": vid, "name": f"sha256:{vid:064x}",
                "url": f"{self.base_url}/{scope}/packages/container/{package}/versions/{vid}",
                "package_html_url": f"{html}/package/{package}",
                "html_url": f"{html}/{package}/{vid}",
                "created_at": when, "updated_at": when,
                "metadata": {"package_type": "container", "container": {"tags": list(tags)}},
            })  # fmt: skip
            return vid

    def _need(self, full_name: str) -> RepoState:
        repo = self.repo(full_name)
        if repo is None:
            raise KeyError(f"sandbox has no repository {full_name!r}; call add_repo first")
        return repo

    # -- inspection ----------------------------------------------------------------------------

    def issue_comments(self, full_name: str, number: int) -> list[dict[str, Any]]:
        with self.lock:
            key = full_name.lower()
            found = [c for c in self.comments.values() if c["_repo"] == key]
            return [
                public(c) for c in sorted(found, key=lambda c: c["id"]) if c["_issue"] == number
            ]

    def reactions(self, comment_id: int) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.reactions_by_comment.get(comment_id, []))


def public(item: dict[str, Any]) -> dict[str, Any]:
    """A deep copy without the sandbox's private ``_`` keys (GitHub's own ``_links`` stays)."""
    return {k: copy.deepcopy(v) for k, v in item.items() if not k.startswith("_") or k == "_links"}
