"""One registry's HTTP: retries, basic auth or the bearer-token exchange, errors without bodies.

Why apart from the client (``k8see.integrations.registry``, which says *what* to ask): this
is *how* every request goes, the same for each of them. A request that met a connection
error, a timeout or a 429/5xx answer is sent again by urllib3 (never a ``POST``: starting an
upload twice leaves an orphaned upload session behind). A ``401`` with a ``Bearer``
challenge is answered by the token exchange GHCR and Docker Hub use, once, and the request
sent again. Every ``requests`` error stops here as a ``RegistryError``, and no error carries
the response body: it can echo credentials.
"""

from __future__ import annotations

import contextlib
import re
from typing import BinaryIO

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from k8see.errors import RegistryError

__all__ = ["RegistrySession"]

#: Answers worth asking again: throttling and a struggling registry or proxy in front of it.
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Never POST: starting an upload twice leaves an orphaned upload session behind.
_RETRY_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})


class RegistrySession:
    """The HTTP session of one registry, its credentials and its bearer tokens.

    Args:
        host: ``host[:port]`` of the registry.
        insecure: Plain HTTP (the local test/demo registry only).
        username: For basic auth or the token exchange; empty for anonymous.
        password: The password or token; never logged or put into messages.
        timeout_seconds: Per-request timeout.
        retries: How often a request that met a connection error, a timeout or a
            429/5xx answer is sent again (exponential backoff with jitter, honouring
            ``Retry-After``); file bodies are rewound by urllib3 before each attempt.
    """

    def __init__(
        self,
        *,
        host: str,
        insecure: bool = False,
        username: str = "",
        password: str | None = None,
        timeout_seconds: float = 30.0,
        retries: int = 3,
    ) -> None:
        self.host = host
        self.url = f"{'http' if insecure else 'https'}://{host}"
        self._auth = (username, password) if username and password else None
        self._timeout = timeout_seconds
        self._session = requests.Session()
        policy = Retry(
            total=retries,
            backoff_factor=0.5,
            backoff_jitter=0.25,
            backoff_max=10.0,
            status_forcelist=_RETRY_STATUSES,
            allowed_methods=_RETRY_METHODS,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=policy)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._tokens: dict[str, str] = {}

    def close(self) -> None:
        self._session.close()

    def request(
        self,
        method: str,
        repository: str,
        path: str,
        *,
        accept: str | None = None,
        data: bytes | None = None,
        content_type: str | None = None,
    ) -> requests.Response:
        """``method`` on ``/v2/<repository>/<path>``."""
        url = f"{self.url}/v2/{repository}/{path}"
        return self.send(
            method, url, repository, accept=accept, data=data, content_type=content_type
        )

    def send(
        self,
        method: str,
        url: str,
        repository: str,
        *,
        accept: str | None = None,
        data: bytes | BinaryIO | None = None,
        content_type: str | None = None,
    ) -> requests.Response:
        """``method`` on ``url`` (an upload location, say), authorized for ``repository``."""
        headers = {}
        if accept:
            headers["Accept"] = accept
        if content_type:
            headers["Content-Type"] = content_type
        for _attempt in range(2):
            token = self._tokens.get(repository)
            auth = None
            if token:
                headers["Authorization"] = f"Bearer {token}"
            elif self._auth:
                auth = self._auth
            if not isinstance(data, bytes | None):
                data.seek(0)  # a file body is sent again after the token exchange
            try:
                resp = self._session.request(
                    method, url, headers=headers, data=data, auth=auth, timeout=self._timeout
                )
            except requests.RequestException as exc:
                raise RegistryError(
                    f"Registry {self.host} is not reachable ({type(exc).__name__}).",
                    hint="Check registry.host and that the registry is running.",
                ) from exc
            challenge = resp.headers.get("WWW-Authenticate", "")
            if resp.status_code != 401 or not challenge.lower().startswith("bearer"):
                return resp
            # No token yet, or the one we hold expired (tokens live minutes): exchange once.
            self._tokens[repository] = self._fetch_token(challenge, repository)
        return resp

    def check(self, resp: requests.Response, what: str) -> None:
        """Raise a ``RegistryError`` saying the registry could not ``what``, unless 2xx."""
        if resp.status_code < 300:
            return
        # Only the structured error codes, never the raw body: it may echo credentials.
        codes = []
        with contextlib.suppress(ValueError, AttributeError):
            codes = [e.get("code", "") for e in resp.json().get("errors", [])]
        detail = f" ({', '.join(c for c in codes if c)})" if any(codes) else ""
        hint = None
        if resp.status_code in (401, 403):
            hint = "Check the registry credentials and that they may push to this repository."
        raise RegistryError(
            f"Registry {self.host} could not {what}: HTTP {resp.status_code}{detail}.", hint=hint
        )

    def _fetch_token(self, challenge: str, repository: str) -> str:
        """The bearer-token exchange GHCR and Docker Hub use (``WWW-Authenticate: Bearer``)."""
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        params.setdefault("scope", f"repository:{repository}:pull,push,delete")
        try:
            resp = self._session.get(realm, params=params, auth=self._auth, timeout=self._timeout)
        except requests.RequestException as exc:
            raise RegistryError(f"Registry {self.host} token service is not reachable.") from exc
        if resp.status_code != 200:
            raise RegistryError(
                f"Registry {self.host} refused the credentials (HTTP {resp.status_code}).",
                hint="Check registry.username and registry.password.",
            )
        body = resp.json()
        return str(body.get("token") or body.get("access_token") or "")
