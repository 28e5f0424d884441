"""What every maintenance job shares: its Redis client and job lock, GitHub, the PR states
cache, and the destroy chain a job sends (the same one a close event sends)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from k8see import coordination, metrics
from k8see.client import enqueue
from k8see.errors import GitHubError
from k8see.events import Decision
from k8see.integrations import github as gh
from k8see.redis_connect import connect
from k8see.run import Action
from k8see.settings import PlatformSettings
from k8see.stages import cleanup

__all__ = ["destroy_now", "exclusive", "github_client", "pr_states_of", "redis_client"]

log = logging.getLogger("k8see.maintenance")
_GITHUB_CLIENTS: dict[tuple[int, str], gh.GitHubClient] = {}


def redis_client(settings: PlatformSettings) -> redis.Redis:
    return connect(settings.redis, health_check_interval=30)


@contextmanager
def exclusive(client: redis.Redis, name: str, *, ttl_seconds: float) -> Iterator[bool]:
    """Hold ``k8see:lock:job:<name>`` while the body runs; yields False if another holds it."""
    lock = client.lock(f"k8see:lock:job:{name}", timeout=max(ttl_seconds, 1.0), blocking=False)
    acquired = bool(lock.acquire())
    try:
        yield acquired
    finally:
        if acquired:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("The %s job outlived its lock; another run may have overlapped.", name)


def github_client(settings: PlatformSettings) -> gh.GitHubClient | None:
    """The process's GitHub client for these settings, kept from one job run to the next.

    Kept so its ETags survive: the next cleanup pass asks for the same pages of pulls, and
    GitHub answers an unchanged one 304, which does not count against the rate limit. Its
    tokens renew themselves (``github_auth``). Keyed by the process id, so a forked child never
    shares its parent's connections.
    """
    key = (os.getpid(), settings.model_dump_json())
    if key not in _GITHUB_CLIENTS:
        try:
            client = gh.make_client(settings, log=log)
        except GitHubError as exc:
            log.warning("Maintenance runs without GitHub: %s", exc.message)
            return None
        if len(_GITHUB_CLIENTS) >= 4:  # a worker has one settings; tests have many
            _GITHUB_CLIENTS.clear()
        _GITHUB_CLIENTS[key] = client
    return _GITHUB_CLIENTS[key]


def pr_states_of(settings: PlatformSettings, client: redis.Redis) -> cleanup.PrStates:
    return cleanup.PrStates(
        github=github_client(settings),
        redis_client=client,
        cache_seconds=settings.cleanup.pr_state_cache_seconds,
        max_calls=settings.cleanup.max_github_calls,
        is_closed=lambda repo, pr: coordination.is_closed(client, repo=repo, pr=pr),
    )


def destroy_now(
    *, settings: PlatformSettings, client: redis.Redis, repo: str, pr: int, reason: str
) -> str:
    """Send the PR's destroy chain the way a close event does; returns the run id."""
    decision = Decision(
        action=Action.DESTROY,
        repo=repo,
        pr=pr,
        sha="",
        ref="",
        reason=f"k8see maintenance: {reason}.",
        merged=reason == "merged",
    )
    sent = enqueue(decision, settings=settings, trigger=f"maintenance:{reason}", client=client)
    metrics.cleanup_action(reason)
    return sent.run_id
