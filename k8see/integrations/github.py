"""GitHub REST client for the workers: comments, reactions, permissions, deployments, tarballs.

Sync, on ``requests`` (a worker dependency: the enqueue client never imports this module).
Credentials come from ``github_auth`` (a static token, or GitHub App installation tokens minted
per repository and cached in memory). Every method is idempotent, so a redelivered stage
converges.

Failures: 5xx answers and network errors are retried with exponential backoff and jitter, and
rate-limit answers (secondary: 403/429 with ``Retry-After``; primary: ``x-ratelimit-remaining:
0``) wait as long as GitHub asks, all bounded by ``max_retries``. A wait longer than
``max_wait_seconds`` is not slept: it raises ``GitHubError(retry_after_seconds=…)`` for the task
layer to reschedule. Any other 4xx is ``GitHubError(status=…)``. No ``requests`` exception
leaves this module, and the token never appears in a message or a log record. The exchange
itself is ``github_http``; what k8see reads of the answers, ``github_models``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import redis
import requests

from k8see.errors import GitHubError
from k8see.integrations.github_auth import (
    AppInstallationTokens,
    StaticToken,
    TokenProvider,
    provider_from_settings,
)
from k8see.integrations.github_etags import SharedETags
from k8see.integrations.github_http import Log, Transport, path_of, replay
from k8see.integrations.github_models import IssueComment, Pull, json_of, pull_of, timestamp
from k8see.names import check_repo, check_sha
from k8see.redis_connect import connect
from k8see.settings import PlatformSettings

__all__ = [
    "REACTIONS",
    "AppInstallationTokens",
    "GitHubClient",
    "IssueComment",
    "Pull",
    "StaticToken",
    "TokenProvider",
    "make_client",
]

REACTIONS = frozenset({"+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"})
#: List pages a client keeps for conditional requests (a cleanup pass reads about ten).
MAX_ETAG_PAGES = 256


class GitHubClient:
    """The GitHub calls k8see makes, each idempotent.

    Args:
        api_url: ``https://api.github.com`` or a GHES ``https://host/api/v3``.
        token_provider: Where credentials come from (``StaticToken``, ``AppInstallationTokens``).
        timeout_seconds: Per-request connect and read timeout.
        max_retries: Retries of one call on 5xx, network errors and rate limits.
        backoff_seconds: The first backoff; doubled per retry, with jitter.
        log: Logger; gets method and path, never headers or the token.
        max_wait_seconds: The longest rate-limit wait slept here; longer raises.
        sleep: How to wait between retries (tests pass one that records the delays).
        etags: ETags shared by every worker through Redis: a GET another process already made
            with the same credential is sent conditionally, and a ``304`` (free of GitHub's
            primary rate limit) is answered from the body GitHub sent then.
    """

    def __init__(
        self,
        *,
        api_url: str,
        token_provider: TokenProvider,
        timeout_seconds: float,
        max_retries: int,
        backoff_seconds: float,
        log: Log,
        max_wait_seconds: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        etags: SharedETags | None = None,
    ) -> None:
        self.tokens = token_provider
        self.etags = etags
        self.http = Transport(
            api_url=api_url,
            timeout_seconds=timeout_seconds,
            max_retries=max_retries,
            backoff_seconds=backoff_seconds,
            max_wait_seconds=max_wait_seconds,
            log=log,
            sleep=sleep,
        )
        if isinstance(token_provider, AppInstallationTokens):
            token_provider.transport = self.http
        self.log = log
        #: url → (etag, JSON), least recently used first: conditional GETs answered 304 cost
        #: no rate limit. At most ``MAX_ETAG_PAGES`` pages (up to 100 items each) are kept.
        self._etags: dict[str, tuple[str, Any]] = {}

    def _call(self, method: str, repo: str, path: str, **kw: Any) -> requests.Response:
        check_repo(repo)
        url = kw.pop("url", None) or self.http.url(f"/repos/{repo}{path}")
        # A caller's own headers (an If-None-Match of its own) win over the shared ETags.
        if method == "GET" and self.etags and not kw.get("stream") and not kw.get("headers"):
            kw.pop("headers", None)
            return self._conditional_get(repo, url, **kw)
        return self.http.send(
            method,
            url,
            token=lambda: self.tokens.token_for(repo),
            on_unauthorized=lambda: self.tokens.forget(repo),
            **kw,
        )

    def _conditional_get(self, repo: str, url: str, **kw: Any) -> requests.Response:
        """GET ``url`` with the ETag any worker kept for this credential; a 304 is answered
        with the body GitHub sent for that ETag, as a 200."""
        assert self.etags is not None
        minted = [self.tokens.token_for(repo)]  # used for the first attempt: no second mint
        secret = SharedETags.secret(minted[0])
        cached = self.etags.lookup(secret, url)
        response = self.http.send(
            "GET",
            url,
            token=lambda: minted.pop() if minted else self.tokens.token_for(repo),
            on_unauthorized=lambda: self.tokens.forget(repo),
            headers={"If-None-Match": cached.etag} if cached else None,
            **kw,
        )
        if response.status_code == 304 and cached is not None:
            self.log.debug("GitHub GET %s: not modified (no rate limit)", path_of(url))
            return replay(response, cached)
        if response.status_code == 200 and "ETag" in response.headers:
            self.etags.remember(
                secret,
                url,
                etag=response.headers["ETag"],
                link=response.headers.get("Link", ""),
                body=response.content,
            )
        return response

    def _pages(self, repo: str, path: str) -> Iterator[list[Any]]:
        """Every page of a list endpoint, following ``Link: rel="next"``, using ETags."""
        query = "&" if "?" in path else "?"
        url: str | None = self.http.url(f"/repos/{check_repo(repo)}{path}{query}per_page=100")
        while url:
            cached = self._etags.get(url)
            headers = {"If-None-Match": cached[0]} if cached else None
            response = self._call("GET", repo, path, url=url, headers=headers)
            if response.status_code == 304 and cached:
                page = cached[1]
                self._etags[url] = self._etags.pop(url)  # most recently used last
            else:
                page = json_of(response, f"GET {path}")
                if response.headers.get("ETag"):
                    self._etags[url] = (response.headers["ETag"], page)
                    if len(self._etags) > MAX_ETAG_PAGES:
                        del self._etags[next(iter(self._etags))]  # the least recently used
            if not isinstance(page, list):
                raise GitHubError(f"GitHub answered GET {path} with a non-list page.")
            yield page
            url = response.links.get("next", {}).get("url")

    # -- pulls and permissions -----------------------------------------------------------------

    def get_pull(self, repo: str, number: int) -> Pull:
        data = json_of(self._call("GET", repo, f"/pulls/{int(number)}"), "GET pull")
        return pull_of(repo, data, f"{repo}#{number}")

    def list_pulls(
        self, repo: str, *, state: str, sort: str = "created", direction: str = "desc"
    ) -> Iterator[list[Pull]]:
        """The repository's pulls, one list per page of 100: one request per page, made only
        when the caller asks for the page, so it can count requests and stop early.

        Args:
            state: ``open``, ``closed`` or ``all``.
            sort: ``created`` or ``updated``.
            direction: ``desc`` (newest first) or ``asc``.
        """
        query = urlencode({"state": state, "sort": sort, "direction": direction})
        for page in self._pages(repo, f"/pulls?{query}"):
            yield [pull_of(repo, item, f"a pull of {repo}") for item in page]

    def get_permission(self, repo: str, user: str) -> str:
        """``admin``, ``write``, ``read`` or ``none``: GitHub's ``permission`` field, where the
        maintain role reads as ``write``, triage as ``read``, and a custom role as its base
        role (``role_name`` would name a custom role k8see cannot rank)."""
        response = self._call(
            "GET", repo, f"/collaborators/{quote(user, safe='')}/permission", accept=(404,)
        )
        if response.status_code == 404:
            return "none"  # not a collaborator, or no such user: no access either way
        return str(json_of(response, "GET permission").get("permission") or "none")

    # -- comments ------------------------------------------------------------------------------

    def get_comment(self, repo: str, comment_id: int) -> IssueComment:
        """One issue comment of ``repo``; a 404 is ``GitHubError(status=404)``."""
        data = json_of(
            self._call("GET", repo, f"/issues/comments/{int(comment_id)}"), "GET comment"
        )
        try:
            issue = int(str(data["issue_url"]).rstrip("/").rsplit("/", 1)[1])
            return IssueComment(
                id=int(data["id"]),
                issue=issue,
                body=str(data.get("body") or ""),
                author=str((data.get("user") or {}).get("login") or ""),
                created_at=timestamp(data.get("created_at")),
            )
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            raise GitHubError(
                f"GitHub's answer for comment {comment_id} lacks its issue."
            ) from None

    def find_comment(self, repo: str, number: int, *, marker: str) -> dict[str, Any] | None:
        """The first comment whose body starts with ``marker``, searching every page."""
        for page in self._pages(repo, f"/issues/{int(number)}/comments"):
            for comment in page:
                if str(comment.get("body") or "").lstrip().startswith(marker):
                    return dict(comment)
        return None

    def create_comment(self, repo: str, number: int, body: str) -> int:
        response = self._call(
            "POST", repo, f"/issues/{int(number)}/comments", body={"body": body}, unsafe_retry=False
        )
        return int(json_of(response, "POST comment")["id"])

    def update_comment(self, repo: str, comment_id: int, body: str) -> None:
        self._call("PATCH", repo, f"/issues/comments/{int(comment_id)}", body={"body": body})

    def upsert_comment(self, repo: str, number: int, body: str, *, marker: str) -> int:
        """Create the sticky comment or update it in place; never a second one.

        A create that fails with a 5xx or a dropped connection may still have landed, so it is
        not blindly re-sent: the comments are searched again first.
        """
        if not body.startswith(marker):
            body = f"{marker}\n{body}"
        attempt = 0
        while True:
            existing = self.find_comment(repo, number, marker=marker)
            if existing is not None:
                if existing.get("body") != body:
                    self.update_comment(repo, int(existing["id"]), body)
                return int(existing["id"])
            try:
                return self.create_comment(repo, number, body)
            except GitHubError as exc:
                transient = exc.status is None or exc.status >= 500
                if not transient or attempt >= self.http.max_retries:
                    raise
                attempt += 1
                delay = self.http._backoff(attempt - 1)
                self.log.warning(
                    "creating the comment on %s#%s failed (%s); re-checking in %.2fs",
                    repo,
                    number,
                    exc.message,
                    delay,
                )
                self.http.sleep(delay)

    def add_reaction(self, repo: str, comment_id: int, content: str) -> None:
        """React to a comment; GitHub answers 200 for a reaction that already exists."""
        if content not in REACTIONS:
            raise GitHubError(f"{content!r} is not a GitHub reaction.", hint=str(sorted(REACTIONS)))
        self._call(
            "POST", repo, f"/issues/comments/{int(comment_id)}/reactions", body={"content": content}
        )

    # -- deployments and statuses --------------------------------------------------------------

    def create_deployment(
        self, repo: str, *, sha: str, environment: str, description: str = "", reuse: bool = True
    ) -> int:
        """The deployment of ``sha`` to ``environment``.

        Args:
            reuse: Look for one that exists first (one request). False when the caller knows
                none was asked for yet (validate's first attempt for this commit).
        """
        check_sha(sha)
        if reuse:
            path = f"/deployments?sha={sha}&environment={quote(environment, safe='')}"
            existing = json_of(self._call("GET", repo, path), "GET deployments")
            if isinstance(existing, list) and existing:
                return int(existing[0]["id"])
        body = {
            "ref": sha,
            "environment": environment,
            "description": description[:140],
            "auto_merge": False,
            "required_contexts": [],
            # Not transient, so GitHub's auto_inactive retires the previous deployment of
            # this PR's environment when a new one succeeds.
            "transient_environment": False,
            "production_environment": False,
        }
        return int(json_of(self._call("POST", repo, "/deployments", body=body), "POST")["id"])

    def latest_deployment(self, repo: str, *, environment: str) -> int | None:
        """The newest deployment to ``environment``, if any (to retire it on destroy)."""
        path = f"/deployments?environment={quote(environment, safe='')}&per_page=1"
        found = json_of(self._call("GET", repo, path), "GET deployments")
        return int(found[0]["id"]) if isinstance(found, list) and found else None

    def set_deployment_status(
        self,
        repo: str,
        deployment_id: int,
        state: str,
        *,
        environment_url: str = "",
        log_url: str = "",
        description: str = "",
    ) -> None:
        """``in_progress``, ``success`` (with the URL), ``failure``, ``inactive`` on destroy."""
        body = {"state": state, "description": description[:140], "auto_inactive": True}
        if environment_url:
            body["environment_url"] = environment_url
        if log_url:
            body["log_url"] = log_url
        self._call("POST", repo, f"/deployments/{int(deployment_id)}/statuses", body=body)

    def set_commit_status(
        self,
        repo: str,
        sha: str,
        state: str,
        *,
        context: str,
        description: str = "",
        target_url: str = "",
    ) -> None:
        body = {"state": state, "context": context, "description": description[:140]}
        if target_url:
            body["target_url"] = target_url
        self._call("POST", repo, f"/statuses/{check_sha(sha)}", body=body)

    # -- source --------------------------------------------------------------------------------

    def download_tarball(
        self, repo: str, sha: str, dest: Path, *, max_bytes: int = 512 * 1024 * 1024
    ) -> Path:
        """Save the repository at ``sha`` as a tar.gz at ``dest`` (written atomically)."""
        response = self._call("GET", repo, f"/tarball/{check_sha(sha)}", stream=True)
        partial = dest.with_name(dest.name + ".partial")
        size = 0
        try:
            with response, partial.open("wb") as out:
                for chunk in response.iter_content(chunk_size=1 << 16):
                    size += len(chunk)
                    if size > max_bytes:
                        raise GitHubError(
                            f"The tarball of {repo} at {sha[:12]} is over {max_bytes} bytes.",
                            hint="Keep large files out of the repository (use Git LFS).",
                        )
                    out.write(chunk)
        except requests.RequestException as exc:
            partial.unlink(missing_ok=True)
            raise GitHubError(
                f"Downloading the tarball of {repo} failed ({type(exc).__name__})."
            ) from None
        except GitHubError:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(dest)
        return dest


def make_client(settings: PlatformSettings, *, log: Log) -> GitHubClient:
    """The client for these settings: the token if set, else the GitHub App."""
    gh = settings.github
    etags = None
    if gh.shared_etags:
        # Short timeouts: a Redis that does not answer turns the cache off, not the call.
        store: redis.Redis = connect(settings.redis, socket_timeout=2.0, socket_connect_timeout=2.0)
        etags = SharedETags(store, log=log)
    return GitHubClient(
        api_url=gh.api_url,
        token_provider=provider_from_settings(settings),
        timeout_seconds=gh.timeout_seconds,
        max_retries=settings.queues.max_retries,
        backoff_seconds=settings.queues.retry_backoff_seconds,
        log=log,
        etags=etags,
    )
