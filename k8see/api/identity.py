"""Workflow identity: a GitHub Actions OIDC token, verified against its issuer's keys.

A token is accepted only if it is an RS256 JWT from ``api.oidc_issuer``, signed by a key the
issuer publishes (found through ``/.well-known/openid-configuration``, then ``jwks_uri``),
for ``api.oidc_audience``, and within its lifetime (``api.oidc_leeway_seconds`` of skew). The
keys are cached for ``api.jwks_cache_seconds``; a token signed with a key the cache does not
hold fetches them again, so the issuer may rotate keys at any time. What a verified token
may do is decided by its caller from its ``repository`` claim.

Refusals: a token that is not one, unsigned, expired, from another issuer or badly signed is
``TokenRefused(401)``; one for another audience is ``TokenRefused(403)``; an issuer whose
documents cannot be fetched is ``IssuerUnavailable`` (503).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import jwt

from k8see.errors import PolicyError
from k8see.names import check_repo
from k8see.settings import ApiSettings

__all__ = ["Claims", "IssuerUnavailable", "TokenRefused", "Verifier"]

#: GitHub signs its Actions tokens with RS256 only; anything else ("none" above all) is refused.
ALGORITHMS = ["RS256"]
_DISCOVERY = "/.well-known/openid-configuration"


class TokenRefused(Exception):
    """The token does not prove who is asking (401) or is not for this service (403)."""

    def __init__(self, status: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint


class IssuerUnavailable(Exception):
    """The issuer's discovery document or keys could not be fetched (503)."""


@dataclass(frozen=True)
class Claims:
    """What a verified token says about the job that holds it."""

    repository: str
    actor: str
    ref: str
    run_id: str
    subject: str


class Verifier:
    """Verifies workflow tokens for one issuer and audience; safe to share across threads."""

    def __init__(self, settings: ApiSettings) -> None:
        self._issuer = settings.oidc_issuer.rstrip("/")
        self._audience = settings.oidc_audience
        self._leeway = settings.oidc_leeway_seconds
        self._cache_seconds = settings.jwks_cache_seconds
        self._refetch_seconds = settings.jwks_refetch_seconds
        self._timeout = settings.http_timeout_seconds
        self._lock = threading.Lock()
        self._keys: jwt.PyJWKClient | None = None
        self._discovered_at = 0.0

    def verify(self, token: str) -> Claims:
        """The claims of a valid token.

        Raises:
            TokenRefused: see the module docs (401 or 403).
            IssuerUnavailable: the issuer's keys cannot be fetched.
        """
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenRefused(401, "The bearer token is not a JWT.", _TOKEN_HINT) from None
        if header.get("alg") not in ALGORITHMS:
            raise TokenRefused(401, "The token is not signed with RS256.", _TOKEN_HINT)
        if str(unverified.get("iss", "")).rstrip("/") != self._issuer:
            raise TokenRefused(401, "The token was not issued by GitHub Actions.", _TOKEN_HINT)
        key = self._signing_key(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "iss", "aud", "repository"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused(401, "The token has expired.", _TOKEN_HINT) from None
        except jwt.InvalidAudienceError:
            raise TokenRefused(
                403,
                "The token was minted for another audience.",
                f"Request it with audience {self._audience!r} (k8see enqueue --audience).",
            ) from None
        except jwt.PyJWTError as exc:
            raise TokenRefused(401, f"The token is not valid: {exc}.", _TOKEN_HINT) from None
        try:
            repository = check_repo(str(claims["repository"]))
        except PolicyError:
            raise TokenRefused(401, "The token's repository claim is malformed.") from None
        return Claims(
            repository=repository,
            actor=str(claims.get("actor", "")),
            ref=str(claims.get("ref", "")),
            run_id=str(claims.get("run_id", "")),
            subject=str(claims.get("sub", "")),
        )

    def _signing_key(self, token: str) -> Any:
        for again in (False, True):
            keys = self._key_client(refetch=again)
            try:
                return keys.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientConnectionError as exc:
                raise IssuerUnavailable(f"cannot fetch the issuer's keys ({exc})") from None
            except jwt.PyJWKClientError:
                # An unknown key id: the issuer may have rotated. Fetch the keys once more,
                # at most every ``jwks_refetch_seconds``.
                if not again and time.monotonic() - self._discovered_at >= self._refetch_seconds:
                    continue
                break
        raise TokenRefused(
            401, "The token is signed with a key its issuer does not publish.", _TOKEN_HINT
        )

    def _key_client(self, *, refetch: bool = False) -> jwt.PyJWKClient:
        with self._lock:
            fresh = time.monotonic() - self._discovered_at < self._cache_seconds
            if self._keys is not None and fresh and not refetch:
                return self._keys
            document = _fetch_json(self._issuer + _DISCOVERY, timeout=self._timeout)
            jwks_uri = document.get("jwks_uri")
            if str(document.get("issuer", "")).rstrip("/") != self._issuer:
                raise IssuerUnavailable("the discovery document names another issuer")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
                raise IssuerUnavailable("the discovery document has no jwks_uri")
            self._keys = jwt.PyJWKClient(
                jwks_uri,
                cache_jwk_set=True,
                lifespan=max(self._cache_seconds, 1),
                timeout=int(max(self._timeout, 1)),
            )
            self._discovered_at = time.monotonic()
            return self._keys


_TOKEN_HINT = (
    "Give the job `permissions: id-token: write` and run `k8see enqueue --api URL`, which "
    "requests a fresh token from GitHub Actions."
)


def _fetch_json(url: str, *, timeout: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = json.loads(response.read(1_000_000))
    except (OSError, ValueError) as exc:
        raise IssuerUnavailable(f"cannot fetch {url} ({exc})") from None
    if not isinstance(data, dict):
        raise IssuerUnavailable(f"{url} is not a JSON object")
    return data
