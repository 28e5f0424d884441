"""The connections a job opens: its Redis client, and the GitHub client kept between runs."""

from __future__ import annotations

import logging
import os

import redis

from k8see.errors import GitHubError
from k8see.integrations import github as gh
from k8see.redis_connect import connect
from k8see.settings import PlatformSettings

__all__ = ["github_client", "redis_client"]

log = logging.getLogger(__name__)
_GITHUB_CLIENTS: dict[tuple[int, str], gh.GitHubClient] = {}


def redis_client(settings: PlatformSettings) -> redis.Redis:
    return connect(settings.redis, health_check_interval=30)


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
