"""What every maintenance job shares: its Redis client and job lock, GitHub, the PR states
cache, and the destroy chain a job sends (the same one a close event sends)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from k8see import coordination, metrics
from k8see.client import enqueue
from k8see.errors import GitHubError
from k8see.events import Decision
from k8see.integrations import github as gh
from k8see.run import Action
from k8see.settings import PlatformSettings
from k8see.stages import cleanup

__all__ = ["destroy_now", "exclusive", "github_client", "pr_states_of", "redis_client"]

log = logging.getLogger("k8see.maintenance")


def redis_client(settings: PlatformSettings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis.url, health_check_interval=30)


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
    try:
        return gh.make_client(settings, log=log)
    except GitHubError as exc:
        log.warning("Maintenance runs without GitHub: %s", exc.message)
        return None


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
