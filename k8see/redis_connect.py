"""Connecting to Redis: the one place that knows whether it is one server or a Sentinel group.

Every k8see process reaches Redis through ``connect(settings.redis)``, and Celery through
``celery_redis(settings.redis)``. With ``redis.sentinels`` empty that is ``redis.url`` as it
stands. With Sentinels, the client asks them for the master of ``redis.sentinel_master_name``
and, after a failover, asks again: redis-py's ``SentinelConnectionPool`` drops a connection
that meets a replica (``READONLY``) or a dead master and looks the master up anew, so a caller
sees one ``ConnectionError`` (which it already treats as "Redis did not answer") and then the
new master. ``redis.url`` still gives the credentials, the database number and TLS
(``rediss://``; the server's certificate is verified unless ``ssl_cert_reqs=none`` says not).

``NotReplicated`` is what an admission raises when fewer replicas than
``redis.min_replica_acks`` confirmed it (``WAIT``, see ``k8see.intake.admit``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import redis
from redis.connection import SSLConnection, parse_url
from redis.sentinel import Sentinel

from k8see.settings import RedisSettings, sentinel_addresses

#: Options for the Sentinels' own connections, taken from the caller's options.
_SENTINEL_OPTIONS = ("socket_timeout", "socket_connect_timeout", "socket_keepalive")


class NotReplicated(redis.exceptions.ConnectionError):
    """The master took a write but too few replicas confirmed it in time.

    A ``ConnectionError`` on purpose: for a caller it is "Redis could not keep its promise
    now", handled where an unreachable Redis is (``k8see enqueue`` exits 3).
    """

    def __init__(self, *, wanted: int, confirmed: int, timeout_seconds: float) -> None:
        self.wanted = wanted
        self.confirmed = confirmed
        super().__init__(
            f"{confirmed} of the {wanted} Redis replica(s) required confirmed the event "
            f"within {timeout_seconds:g}s"
        )


def connect(settings: RedisSettings, **options: Any) -> redis.Redis:
    """A client of the current Redis master.

    Args:
        settings: The ``redis`` settings group (``url``, and ``sentinels`` for HA).
        options: ``redis.Redis`` connection options (``socket_timeout``,
            ``health_check_interval``, ...), for the master's connections; the socket
            timeouts also apply to the Sentinels'.

    Returns:
        A client that connects lazily: nothing is contacted until its first command.
    """
    if not settings.sentinels:
        return redis.Redis.from_url(settings.url, **options)
    sentinel_kwargs = {k: options[k] for k in _SENTINEL_OPTIONS if k in options}
    if settings.sentinel_password is not None:
        sentinel_kwargs["password"] = settings.sentinel_password.get_secret_value()
    group = Sentinel(sentinel_addresses(settings.sentinels), sentinel_kwargs=sentinel_kwargs)
    params = {**master_params(settings.url), **options}
    master: redis.Redis = group.master_for(settings.sentinel_master_name, **params)
    return master


def master_params(url: str) -> dict[str, Any]:
    """What ``url`` says about the master besides where it is: user, password, db, TLS."""
    params: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    for key in ("host", "port", "path"):
        params.pop(key, None)
    if params.pop("connection_class", None) is SSLConnection:
        params["ssl"] = True
    return params


def celery_redis(settings: RedisSettings) -> tuple[str, dict[str, Any]]:
    """The URL Celery's broker and result backend use, and the transport options it needs.

    One server: ``redis.url`` and no options. Sentinels: one ``sentinel://`` URL per Sentinel
    (``;``-separated, kombu's and Celery's form), each carrying ``url``'s credentials and
    database (they are the master's), and ``master_name`` plus the Sentinels' own password
    as transport options. TLS to the master: see ``celery_ssl``.
    """
    if not settings.sentinels:
        return settings.url, {}
    parsed = master_params(settings.url)
    userinfo = ""
    if parsed.get("password") is not None or parsed.get("username"):
        user = quote(str(parsed.get("username") or ""), safe="")
        password = quote(str(parsed.get("password") or ""), safe="")
        userinfo = f"{user}:{password}@"
    db = int(parsed.get("db") or 0)
    urls = ";".join(
        f"sentinel://{userinfo}{_host(host)}:{port}/{db}"
        for host, port in sentinel_addresses(settings.sentinels)
    )
    options: dict[str, Any] = {"master_name": settings.sentinel_master_name}
    if settings.sentinel_password is not None:
        options["sentinel_kwargs"] = {"password": settings.sentinel_password.get_secret_value()}
    return urls, options


def celery_ssl(settings: RedisSettings) -> dict[str, Any] | None:
    """Celery's ``broker_use_ssl``/``redis_backend_use_ssl`` for a ``rediss://`` master; None
    for plain ``redis://``.

    The ``ssl_*`` query parameters of ``url`` carry over (``ssl_ca_certs``, ``ssl_certfile``,
    ...), and certificates are verified unless ``ssl_cert_reqs`` says otherwise: without it
    Celery's result backend refuses a ``rediss://`` URL outright, and behind Sentinels the
    ``sentinel://`` URLs cannot say TLS at all. ``ssl_cert_reqs=none`` turns verification
    off (docs/operations.md, "Redis over TLS": unsafe outside a test).
    """
    params = master_params(settings.url)
    if not params.get("ssl"):
        return None
    options = {k: v for k, v in params.items() if k.startswith("ssl_")}
    options.setdefault("ssl_cert_reqs", "required")
    return options


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
