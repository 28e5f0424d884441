"""GitHub webhook signatures: ``X-Hub-Signature-256: sha256=<hex HMAC of the body>``.

Checked against every configured secret in constant time (``hmac.compare_digest``), so a
secret is rotated by adding the new one beside the old (``api.webhook_secrets``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

__all__ = ["sign", "verify"]

_PREFIX = "sha256="


def sign(body: bytes, secret: str) -> str:
    """The header value GitHub sends for ``body`` under ``secret``."""
    return _PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secrets: Iterable[str]) -> bool:
    """Whether ``header`` is ``body``'s signature under one of ``secrets``.

    Every secret is compared (no early exit), so the time taken says nothing about which
    secret, if any, matched. An absent, malformed or empty header, or no secret, is False.
    """
    if not header or not header.startswith(_PREFIX):
        return False
    given = header[len(_PREFIX) :].strip().lower().encode("ascii", "replace")
    matched = False
    for secret in secrets:
        if not secret:
            continue
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
        matched |= hmac.compare_digest(expected, given)
    return matched
