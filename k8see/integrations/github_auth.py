"""Where the GitHub client's credential comes from: a static token or GitHub App tokens.

Split from ``github.py`` so the credential code (the only code that handles secrets) can be read
on its own. Two modes:

- ``StaticToken``: a personal access or workflow token, the same for every repository (simple).
- ``AppInstallationTokens``: a GitHub App (recommended). A short RS256 JWT, signed by PyJWT,
  buys an installation token per repository; tokens live in this process's memory only (never
  Redis, never a log) and are renewed five minutes before GitHub says they expire, or at once
  after a 401.

Nothing here logs or formats a credential; ``repr`` of every provider hides it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from k8see.errors import GitHubError
from k8see.settings import PlatformSettings

__all__ = [
    "TOKEN_RENEW_MARGIN_SECONDS",
    "AppInstallationTokens",
    "StaticToken",
    "TokenProvider",
    "provider_from_settings",
]

#: Installation tokens are renewed this long before GitHub says they expire.
TOKEN_RENEW_MARGIN_SECONDS = 300.0


class TokenProvider(Protocol):
    """Where the client's credential comes from, per repository."""

    def token_for(self, repo: str) -> str: ...

    def forget(self, repo: str) -> None:
        """Drop a cached credential GitHub rejected (401), so the next call mints a new one."""


class Sender(Protocol):
    """The part of the client's transport the App provider needs to mint tokens."""

    def url(self, path: str) -> str: ...

    def send(self, method: str, url: str, *, token: Callable[[], str]) -> Any: ...


class StaticToken:
    """A personal access token or a workflow token: the same credential for every repo."""

    def __init__(self, token: str) -> None:
        if not token:
            raise GitHubError(
                "The GitHub token is empty.", hint="Set K8SEE_GITHUB__TOKEN to a token."
            )
        self._token = token

    def token_for(self, repo: str) -> str:
        return self._token

    def forget(self, repo: str) -> None:
        return None

    def __repr__(self) -> str:
        return "StaticToken(***)"


class AppInstallationTokens:
    """GitHub App auth: a short JWT (RS256, signed by PyJWT) buys a per-installation token, cached.

    Args:
        app_id: The App's id (the JWT's ``iss``).
        private_key_pem: The App's private key, PEM.
        clock: Unix time source, for the cache.

    ``transport`` is attached by ``GitHubClient``, so minting goes through the same retries,
    rate-limit handling and error mapping as every other call.
    """

    def __init__(
        self,
        *,
        app_id: str,
        private_key_pem: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
            from jwt.algorithms import RSAAlgorithm
            from jwt.exceptions import InvalidKeyError
        except ImportError:  # pragma: no cover - PyJWT[crypto] ships with the worker image
            raise GitHubError(
                "GitHub App authentication needs PyJWT with its crypto extra.",
                hint="pip install 'k8see[worker]', or use a token (K8SEE_GITHUB__TOKEN).",
            ) from None
        hint = "Download a new private key from the App's settings page."
        unreadable = GitHubError(
            "The GitHub App private key is not a readable RSA key in PEM.", hint=hint
        )
        try:
            key = RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(private_key_pem)
        except (InvalidKeyError, ValueError, TypeError):
            raise unreadable from None
        if isinstance(key, RSAPublicKey):
            raise GitHubError("The GitHub App key is a public key, not the private key.", hint=hint)
        if not isinstance(key, RSAPrivateKey):  # older PyJWT hands other key types back
            raise unreadable
        self._key = key
        self.app_id = str(app_id)
        self.clock = clock
        self.transport: Sender | None = None
        self._lock = threading.Lock()
        self._installations: dict[str, int] = {}
        self._tokens: dict[int, tuple[str, float]] = {}

    def __repr__(self) -> str:
        return f"AppInstallationTokens(app_id={self.app_id!r})"

    def jwt(self) -> str:
        """The App's JWT: ``iss`` the App id, valid 10 minutes, the most GitHub allows."""
        import jwt

        now = int(self.clock())
        # iat 60 s in the past absorbs clock drift; GitHub allows at most 10 minutes in all.
        claims = {"iat": now - 60, "exp": now + 540, "iss": self.app_id}
        return jwt.encode(claims, self._key, algorithm="RS256")

    def token_for(self, repo: str) -> str:
        if self.transport is None:
            raise GitHubError("AppInstallationTokens is not attached to a GitHubClient.")
        with self._lock:
            installation = self._installations.get(repo.lower())
            if installation is None:
                response = self.transport.send(
                    "GET", self.transport.url(f"/repos/{repo}/installation"), token=self.jwt
                )
                installation = int(response.json()["id"])
                self._installations[repo.lower()] = installation
            cached = self._tokens.get(installation)
            if cached and cached[1] - TOKEN_RENEW_MARGIN_SECONDS > self.clock():
                return cached[0]
            response = self.transport.send(
                "POST",
                self.transport.url(f"/app/installations/{installation}/access_tokens"),
                token=self.jwt,
            )
            data = response.json()
            expires = _parse_time(str(data.get("expires_at", "")))
            self._tokens[installation] = (str(data["token"]), expires)
            return str(data["token"])

    def forget(self, repo: str) -> None:
        with self._lock:
            installation = self._installations.pop(repo.lower(), None)
            if installation is not None:
                self._tokens.pop(installation, None)


def provider_from_settings(settings: PlatformSettings) -> TokenProvider:
    """The token if set (simple mode), else the GitHub App (recommended).

    Raises:
        GitHubError: neither is configured, or the App's key cannot be read.
    """
    gh = settings.github
    if gh.token is not None and gh.token.get_secret_value():
        return StaticToken(gh.token.get_secret_value())
    if gh.app_id and gh.app_private_key_path:
        try:
            pem = Path(gh.app_private_key_path).read_bytes()
        except OSError as exc:
            raise GitHubError(
                f"The GitHub App private key at {gh.app_private_key_path} cannot be read "
                f"({exc.strerror}).",
                hint="Mount the App's key and point K8SEE_GITHUB__APP_PRIVATE_KEY_PATH at it.",
            ) from None
        return AppInstallationTokens(app_id=gh.app_id, private_key_pem=pem)
    raise GitHubError(
        "No GitHub credentials are configured.",
        hint="Set K8SEE_GITHUB__APP_ID and K8SEE_GITHUB__APP_PRIVATE_KEY_PATH (a GitHub "
        "App, recommended) or K8SEE_GITHUB__TOKEN.",
    )


def _parse_time(value: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time() + 600  # unknown expiry: keep it briefly, then mint again
