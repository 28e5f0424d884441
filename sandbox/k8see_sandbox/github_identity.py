"""The GitHub stand-in's two identity roles: webhook sender and Actions OIDC issuer.

**Webhooks.** ``WebhookSender.deliver`` POSTs an event to a URL the way GitHub's hookshot
does: the JSON body, ``X-GitHub-Event``, ``X-GitHub-Delivery`` (a fresh GUID, or the same
one for a redelivery), ``X-GitHub-Hook-ID``, ``X-GitHub-Hook-Installation-Target-*``,
``X-Hub-Signature`` (HMAC-SHA1) and ``X-Hub-Signature-256`` (HMAC-SHA256), with GitHub's
``User-Agent``; a 5xx answer or a refused connection is retried a few times with backoff.
The ``pull_request`` and ``issue_comment`` payloads come from ``github_webhooks`` (built from
the stand-in's own pulls and comments, held to ``@octokit/webhooks-schemas`` in tests);
``installation_event`` builds ``installation`` payloads.

**OIDC.** ``OidcIssuer`` holds RS256 keys (``rotate`` adds one and signs with it from then
on; ``retire`` stops publishing the oldest), serves ``/.well-known/openid-configuration``
and ``/.well-known/jwks``, and mints tokens with GitHub Actions' claim set. A job's step
fetches its token from ``ACTIONS_ID_TOKEN_REQUEST_URL`` with ``ACTIONS_ID_TOKEN_REQUEST_TOKEN``
(``job_environment`` gives both for a repository), as on a runner.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "Delivery",
    "OidcIssuer",
    "WebhookSender",
    "installation_event",
]

USER_AGENT = "GitHub-Hookshot/k8see-sandbox"
CLAIMS = ["sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "repository", "repository_id",
          "repository_owner", "run_id", "actor", "workflow", "event_name", "sha"]  # fmt: skip
#: GitHub's Actions tokens live a few minutes; the issuer's default, in seconds.
TOKEN_TTL_SECONDS = 300


@dataclass(frozen=True)
class Delivery:
    """One delivery as sent: its GUID, the final status, and how many attempts it took."""

    delivery: str
    status: int
    attempts: int
    body: dict[str, Any]


@dataclass
class WebhookSender:
    """Signs and POSTs deliveries for one App (``app_id``) with its webhook ``secret``."""

    secret: str
    app_id: str = "1"
    hook_id: str = "100"
    attempts: int = 3
    backoff_seconds: float = 0.2
    timeout_seconds: float = 15.0
    #: Every delivery sent, oldest first.
    sent: list[Delivery] = field(default_factory=list)

    def deliver(
        self,
        url: str,
        event: str,
        payload: dict[str, Any],
        *,
        delivery: str | None = None,
        secret: str | None = None,
        body: bytes | None = None,
    ) -> Delivery:
        """POST one delivery; ``delivery`` reuses a GUID (a redelivery), ``body`` sends bytes
        other than ``payload``'s JSON (hostile-input tests)."""
        guid = delivery or str(uuid.uuid4())
        raw = body if body is not None else json.dumps(payload).encode()
        key = (secret if secret is not None else self.secret).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": guid,
            "X-GitHub-Hook-ID": self.hook_id,
            "X-GitHub-Hook-Installation-Target-ID": self.app_id,
            "X-GitHub-Hook-Installation-Target-Type": "integration",
            "X-Hub-Signature": "sha1=" + hmac.new(key, raw, hashlib.sha1).hexdigest(),
            "X-Hub-Signature-256": "sha256=" + hmac.new(key, raw, hashlib.sha256).hexdigest(),
        }
        status, attempt = 0, 0
        answer: dict[str, Any] = {}
        for attempt in range(1, self.attempts + 1):
            status, answer = _post(url, raw, headers, timeout=self.timeout_seconds)
            if status and status < 500:
                break
            time.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        result = Delivery(delivery=guid, status=status, attempts=attempt, body=answer)
        self.sent.append(result)
        return result


def _post(
    url: str, raw: bytes, headers: dict[str, str], *, timeout: float
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=raw, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _json(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _json(exc.read())
    except OSError:
        return 0, {}


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# -- payloads ---------------------------------------------------------------------------------


def installation_event(
    action: str, installation_id: int, repos: list[str], *, account: str = "acme"
) -> dict[str, Any]:
    """An ``installation`` payload (``created``, ``deleted``, ...) listing ``repos``."""
    return {
        "action": action,
        "installation": {"id": installation_id, "account": {"login": account}},
        "repositories": [{"full_name": r, "name": r.split("/")[1]} for r in repos],
        "sender": {"login": account},
    }


# -- OIDC issuer ------------------------------------------------------------------------------


class OidcIssuer:
    """An OIDC issuer with GitHub Actions' documents and claims; ``url`` is its ``iss``."""

    def __init__(self, url: str = "") -> None:
        self.url = url
        self._lock = threading.Lock()
        self._keys: list[tuple[str, rsa.RSAPrivateKey]] = []
        #: request token → the job's claims (``job_environment``)
        self._jobs: dict[str, dict[str, Any]] = {}
        self.rotate()

    def rotate(self) -> str:
        """Add a key and sign with it from now on; its ``kid``."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = secrets.token_hex(8)
        with self._lock:
            self._keys.append((kid, key))
        return kid

    def retire(self) -> None:
        """Stop publishing the oldest key (tokens it signed no longer verify)."""
        with self._lock:
            if len(self._keys) > 1:
                self._keys.pop(0)

    def configuration(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.url}/.well-known/jwks",
            "subject_types_supported": ["public", "pairwise"],
            "response_types_supported": ["id_token"],
            "claims_supported": CLAIMS,
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid"],
        }

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            keys = list(self._keys)
        published = []
        for kid, key in keys:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            published.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return {"keys": published}

    def token(
        self,
        repository: str,
        *,
        audience: str = "k8see",
        event_name: str = "pull_request",
        actor: str = "octocat",
        ttl_seconds: int = TOKEN_TTL_SECONDS,
        issued_at: float | None = None,
        issuer: str | None = None,
        **claims: Any,
    ) -> str:
        """A token of a job in ``repository`` (``owner/name``), signed with the current key."""
        now = int(issued_at if issued_at is not None else time.time())
        owner = repository.split("/")[0]
        body = {
            "jti": str(uuid.uuid4()),
            "sub": f"repo:{repository}:{event_name}",
            "aud": audience,
            "ref": "refs/pull/1/merge",
            "sha": "0" * 40,
            "repository": repository,
            "repository_owner": owner,
            "repository_owner_id": "1",
            "repository_id": "1",
            "repository_visibility": "public",
            "run_id": str(int(time.time() * 1000) % 10**10),
            "run_number": "1",
            "run_attempt": "1",
            "actor": actor,
            "actor_id": "1",
            "workflow": "preview",
            "event_name": event_name,
            "ref_type": "branch",
            "runner_environment": "github-hosted",
            "iss": issuer if issuer is not None else self.url,
            "nbf": now - 5,
            "iat": now,
            "exp": now + ttl_seconds,
            **claims,
        }
        with self._lock:
            kid, key = self._keys[-1]
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})

    def job_environment(self, repository: str, **claims: Any) -> dict[str, str]:
        """``ACTIONS_ID_TOKEN_REQUEST_URL`` and ``_TOKEN`` of a job in ``repository``."""
        secret = secrets.token_urlsafe(24)
        with self._lock:
            self._jobs[secret] = {"repository": repository, **claims}
        return {
            "ACTIONS_ID_TOKEN_REQUEST_URL": f"{self.url}/_actions/idtoken?api-version=2.0",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": secret,
        }

    def request_token(self, request_token: str, audience: str) -> str | None:
        """The token the runner hands a job for ``audience``; None for an unknown job."""
        with self._lock:
            job = self._jobs.get(request_token)
        if job is None:
            return None
        claims = dict(job)
        repository = claims.pop("repository")
        # Without an audience, GitHub's default is the repository owner's URL.
        default = f"https://github.com/{repository.split('/')[0]}"
        return self.token(repository, audience=audience or default, **claims)
