"""One HTTP exchange with GitHub: the transport ``GitHubClient`` and the App's token minting
share (retries, backoff, rate-limit waits, error mapping), and the answer a ``304`` is
replayed as from the shared ETags (``github_etags``).

Sync, on ``requests``; no ``requests`` exception leaves it, and the token never appears in a
message or a log record (see ``k8see.integrations.github``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.structures import CaseInsensitiveDict

from k8see.errors import GitHubError
from k8see.integrations.github_etags import Cached

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]
#: A single backoff never sleeps longer than this, whatever the attempt number.
MAX_BACKOFF_SECONDS = 30.0
_HEADERS = {
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
    "User-Agent": "k8see",
}


class Transport:
    """One HTTP exchange with GitHub, with retries, backoff and error mapping."""

    def __init__(
        self,
        *,
        api_url: str,
        timeout_seconds: float,
        max_retries: int,
        backoff_seconds: float,
        max_wait_seconds: float,
        log: Log,
        sleep: Callable[[float], None],
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.origin = urlsplit(self.api_url)[:2]
        self.session = requests.Session()
        self.session.trust_env = False  # no ~/.netrc credentials sent to GitHub by accident
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_wait_seconds = max_wait_seconds
        self.log = log
        self.sleep = sleep

    def url(self, path: str) -> str:
        return f"{self.api_url}{path}"

    def send(
        self,
        method: str,
        url: str,
        *,
        token: Callable[[], str],
        on_unauthorized: Callable[[], None] = lambda: None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        unsafe_retry: bool = True,
        accept: tuple[int, ...] = (),
    ) -> requests.Response:
        """Send and return a 2xx/3xx (or ``accept``-listed) response, or raise ``GitHubError``.

        Args:
            unsafe_retry: Whether a 5xx or network failure may be retried. False for writes
                that are not idempotent (creating a comment): the caller re-checks instead.
            accept: Error statuses returned to the caller instead of raised (e.g. 404).
        """
        if urlsplit(url)[:2] != self.origin:
            raise GitHubError(
                f"Refusing to send GitHub credentials to {path_of(url)}.",
                hint="A pagination link pointed outside the configured api_url.",
            )
        where = f"{method} {path_of(url)}"
        attempt = 0
        reauthorized = False
        while True:
            secret = token()
            try:
                response = self.session.request(
                    method,
                    url,
                    json=body,
                    headers={**_HEADERS, "Authorization": f"Bearer {secret}", **(headers or {})},
                    timeout=self.timeout_seconds,
                    stream=stream,
                )
            except requests.RequestException as exc:
                failure = GitHubError(
                    f"GitHub could not be reached for {where} ({type(exc).__name__}).",
                    hint="Check the network and K8SEE_GITHUB__API_URL; the call is retried.",
                )
                if not unsafe_retry or attempt >= self.max_retries:
                    raise failure from None
                delay = self._backoff(attempt)
            else:
                status = response.status_code
                self.log.debug("GitHub %s answered %s", where, status)
                if status < 400 or status in accept:
                    return response
                failure = error_of(response, where, secret)
                response.close()
                if status == 401 and not reauthorized:
                    reauthorized = True  # an installation token may have been revoked: re-mint
                    on_unauthorized()
                    continue
                wait = rate_limit_wait(response, failure.message)
                if wait is not None:
                    if wait > self.max_wait_seconds or attempt >= self.max_retries:
                        failure.retry_after_seconds = wait
                        raise failure
                    delay = max(wait, self._backoff(attempt))
                elif status >= 500 and unsafe_retry and attempt < self.max_retries:
                    delay = self._backoff(attempt)
                else:
                    raise failure
            attempt += 1
            self.log.warning(
                "GitHub %s failed (%s); retry %d/%d in %.2fs",
                where,
                failure.message,
                attempt,
                self.max_retries,
                delay,
            )
            self.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        base = min(MAX_BACKOFF_SECONDS, self.backoff_seconds * 2.0**attempt)
        return base / 2 + random.uniform(0, base / 2)


def path_of(url: str) -> str:
    """The URL's path only: queries can carry signed tokens (codeload redirects)."""
    parts = urlsplit(url)
    return parts.path or "/"


def error_of(response: requests.Response, where: str, secret: str) -> GitHubError:
    status = response.status_code
    detail = ""
    if response.headers.get("Content-Type", "").startswith("application/json"):
        try:
            payload = response.json()
            detail = str(payload.get("message", ""))[:300] if isinstance(payload, dict) else ""
        except ValueError:
            detail = ""
    if secret:
        detail = detail.replace(secret, "***")
    hints = {
        401: "The GitHub credential was rejected: check K8SEE_GITHUB__TOKEN or the App's key.",
        403: "The GitHub credential lacks a permission (pull-requests/issues write, "
        "deployments, statuses, contents read), or a rate limit was hit.",
        404: "Check the repository, PR or comment exists and the credential can see it "
        "(an App must be installed on the repository).",
        422: "GitHub rejected the request's content; see the message.",
    }
    message = f"GitHub answered {status} to {where}" + (f": {detail}" if detail else ".")
    if not message.endswith("."):
        message += "."
    hint = hints.get(status, "GitHub failed; retry later or check githubstatus.com.")
    return GitHubError(message, status=status, hint=hint)


def rate_limit_wait(response: requests.Response, message: str) -> float | None:
    """Seconds GitHub asks us to wait, if this is a rate-limit answer; else None."""
    if response.status_code not in (403, 429):
        return None
    retry_after = response.headers.get("Retry-After")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            return 60.0
    if response.headers.get("x-ratelimit-remaining") == "0":
        try:
            return max(0.0, float(response.headers["x-ratelimit-reset"]) - time.time())
        except (KeyError, ValueError):
            return 60.0
    if response.status_code == 429 or "secondary rate limit" in message.lower():
        return 60.0  # GitHub's advice for a secondary limit without Retry-After: a minute
    return None


def replay(not_modified: requests.Response, cached: Cached) -> requests.Response:
    """A 200 carrying the kept body, for a 304 answer to a conditional GET."""
    response = requests.Response()
    response.status_code = 200
    response.url = not_modified.url
    response.encoding = "utf-8"
    response.headers = CaseInsensitiveDict(
        {"Content-Type": "application/json; charset=utf-8", "ETag": cached.etag}
    )
    if cached.link:
        response.headers["Link"] = cached.link
    response._content = cached.body
    not_modified.close()
    return response
