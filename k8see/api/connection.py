"""The one place ``k8see api`` connects to Redis.

Every Redis client the API uses (the webhook inbox, workflow enqueues, following runs) comes
from ``connect``; the Celery producer the enqueue client builds uses the same
``settings.redis``. When the API gets a Redis ACL user of its own, it is set here and in the
settings passed to ``k8see.client``, nowhere else.
"""

from __future__ import annotations

import redis

from k8see import redis_connect
from k8see.settings import PlatformSettings

__all__ = ["connect"]


def connect(settings: PlatformSettings) -> redis.Redis:
    """A Redis client whose every call gives up after ``api.redis_timeout_seconds``.

    The short timeout is what lets a webhook be answered (503) within GitHub's 10 seconds
    while Redis stalls; the connection pool is shared by the request threads.
    """
    timeout = settings.api.redis_timeout_seconds
    return redis_connect.connect(
        settings.redis,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
    )
