"""Conditional-request validators shared by every worker process through k8see's Redis.

A push's stages run in separate worker processes, and each re-reads the PR from GitHub (the
head SHA is checked again before build and before deploy). GitHub does not count a
conditional request answered ``304 Not Modified`` against the primary rate limit, so the
second and third reads are free when every process knows the first read's ``ETag`` and body.

What is kept, per GET URL and credential: the ``ETag``, the ``Link`` header (list pages) and
the body bytes exactly as GitHub sent them, for ``TTL_SECONDS``. Never a token: the Redis key
and a MAC over the entry are keyed by a SHA-256 of the token, which is not stored. GitHub's
ETags are specific to the token that read them, so a different token (another installation,
or the same one's next hourly token) looks up another key and cannot read this entry; an
entry changed in Redis (a body swapped) fails its MAC and is dropped, and the request is sent
plain. Bounded: an entry over ``MAX_BODY_BYTES`` or an ``ETag`` over ``MAX_ETAG_CHARS`` is not
kept, and every entry expires. If Redis does not answer, the client sends plain requests and
logs one warning; the cache never fails a call.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from typing import Any

import redis

__all__ = ["KEY_PREFIX", "MAX_BODY_BYTES", "MAX_ETAG_CHARS", "TTL_SECONDS", "Cached", "SharedETags"]

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]
KEY_PREFIX = "k8see:github-etag:"
#: A PR's JSON is 20-40 KB; a list page of 100 comments can reach a few hundred.
MAX_BODY_BYTES = 512 * 1024
#: GitHub's ETags are ``W/"`` + 64 hex digits + ``"``; anything far longer is not kept.
MAX_ETAG_CHARS = 256
#: An hour: an App's installation token (and so its ETags) lasts at most that long.
TTL_SECONDS = 3600


class Cached:
    """One kept answer: the validator and what GitHub sent with it."""

    __slots__ = ("body", "etag", "link")

    def __init__(self, etag: str, link: str, body: bytes) -> None:
        self.etag = etag
        self.link = link
        self.body = body


class SharedETags:
    """ETags and bodies of GET answers in Redis, for conditional requests from any worker.

    Args:
        store: The Redis client (workers' own credential); ``None`` turns the cache off.
        log: Logger for the one warning when Redis does not answer.
        ttl_seconds: How long an entry lives.
    """

    def __init__(self, store: redis.Redis | None, *, log: Log, ttl_seconds: int = TTL_SECONDS):
        self.store = store
        self.log = log
        self.ttl_seconds = ttl_seconds

    @staticmethod
    def secret(token: str) -> bytes:
        """The key material of one credential: a one-way digest, never the token."""
        return hashlib.sha256(b"k8see-github-etag\0" + token.encode()).digest()

    @staticmethod
    def key(secret: bytes, url: str) -> str:
        return KEY_PREFIX + hmac.new(secret, url.encode(), hashlib.sha256).hexdigest()

    def lookup(self, secret: bytes, url: str) -> Cached | None:
        """The kept answer for ``url`` under this credential, if intact; else None."""
        if self.store is None:
            return None
        key = self.key(secret, url)
        try:
            raw = self.store.get(key)
        except (redis.RedisError, OSError) as exc:
            self._off(exc)
            return None
        if raw is None:
            return None
        entry = _decode(raw, secret)
        if entry is None:
            self.log.warning("A shared GitHub ETag entry failed its check; it is dropped.")
            try:
                self.store.delete(key)
            except (redis.RedisError, OSError) as exc:
                self._off(exc)
        return entry

    def remember(self, secret: bytes, url: str, *, etag: str, link: str, body: bytes) -> None:
        """Keep GitHub's answer for the next conditional request (if it is small enough)."""
        if self.store is None or not etag:
            return
        if not _header_safe(etag, MAX_ETAG_CHARS) or not _header_safe(link, 4096):
            return
        if len(body) > MAX_BODY_BYTES:
            return
        value = json.dumps(
            {
                "etag": etag,
                "link": link,
                "body": base64.b64encode(body).decode("ascii"),
                "mac": _mac(secret, etag, link, body),
            }
        )
        try:
            self.store.set(self.key(secret, url), value, ex=self.ttl_seconds)
        except (redis.RedisError, OSError) as exc:
            self._off(exc)

    def _off(self, exc: BaseException) -> None:
        """Redis did not answer: plain requests from now on, for this client."""
        self.log.warning(
            "The shared GitHub ETag cache is off for this stage (%s); requests are sent plain.",
            type(exc).__name__,
        )
        self.store = None


def _header_safe(value: str, limit: int) -> bool:
    """Short printable ASCII, so it can go back in a header as it came."""
    return len(value) <= limit and value.isascii() and value.isprintable()


def _mac(secret: bytes, etag: str, link: str, body: bytes) -> str:
    message = etag.encode() + b"\0" + link.encode() + b"\0" + body
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _decode(raw: Any, secret: bytes) -> Cached | None:
    try:
        data = json.loads(raw)
        etag, link, mac = str(data["etag"]), str(data["link"]), str(data["mac"])
        body = base64.b64decode(str(data["body"]), validate=True)
    except (ValueError, TypeError, KeyError):
        return None
    if not _header_safe(etag, MAX_ETAG_CHARS) or len(body) > MAX_BODY_BYTES:
        return None
    if not hmac.compare_digest(mac, _mac(secret, etag, link, body)):
        return None
    return Cached(etag, link, body)
