"""``k8see enqueue --api URL``: the workflow side of the API's identity door.

A GitHub-hosted runner cannot reach the platform's Redis, and should hold no credential for
it. Instead the step asks GitHub Actions for an OIDC token naming its job (the job needs
``permissions: id-token: write``, which sets ``ACTIONS_ID_TOKEN_REQUEST_URL`` and
``ACTIONS_ID_TOKEN_REQUEST_TOKEN``) and sends the event to ``k8see api`` with it; the API
accepts events of the token's own repository only. Standard library HTTP only: the client
install stays light.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from k8see.errors import IntegrationError, K8seeError, PolicyError

__all__ = ["ApiClient", "actions_token"]

#: How long one HTTP call to the API or to GitHub Actions may take, in seconds.
TIMEOUT_SECONDS = 30.0
#: Attempts of a call answered 502/503/504 or not answered (the API restarting).
ATTEMPTS = 4
_NO_TOKEN_HINT = (
    "Give the job `permissions: id-token: write` (GitHub then sets "
    "ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN), or enqueue straight "
    "to Redis from a self-hosted runner inside the cluster (without --api)."
)


def actions_token(audience: str, *, env: Mapping[str, str]) -> str:
    """A fresh GitHub Actions OIDC token for ``audience``.

    Raises:
        PolicyError: not in a job allowed to request one.
        IntegrationError: GitHub Actions did not hand one out.
    """
    url, secret = env.get("ACTIONS_ID_TOKEN_REQUEST_URL"), env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not url or not secret:
        raise PolicyError(
            "This job cannot request a GitHub Actions OIDC token.", hint=_NO_TOKEN_HINT
        )
    separator = "&" if urllib.parse.urlsplit(url).query else "?"
    target = f"{url}{separator}{urllib.parse.urlencode({'audience': audience})}"
    answer = _call(
        "GET", target, headers={"Authorization": f"bearer {secret}"}, what="GitHub Actions"
    )
    value = answer.get("value")
    if not isinstance(value, str) or not value:
        raise IntegrationError("GitHub Actions answered without a token.", hint=_NO_TOKEN_HINT)
    return value


class ApiClient:
    """Calls ``k8see api`` with a workflow token, fetching a fresh one when it expires."""

    def __init__(self, url: str, *, audience: str, env: Mapping[str, str]) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise PolicyError(
                f"--api {url!r} is not an http(s) URL.",
                hint="Pass the platform's API address, e.g. --api https://k8see.example.com.",
            )
        self._url = url.rstrip("/")
        self._audience = audience
        self._env = env
        self._token = ""

    def enqueue(self, request: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/enqueue``; the API's summary (run id, generation, ...)."""
        return self._authorized("POST", "/v1/enqueue", request)

    def look(self, run_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The PR's environment record and the run's refusal, if any (``GET /v1/runs``)."""
        answer = self._authorized("GET", f"/v1/runs/{urllib.parse.quote(run_id, safe='')}", None)
        record = answer.get("record")
        refusal = answer.get("refusal")
        return (record if isinstance(record, dict) else {}), (
            refusal if isinstance(refusal, dict) else None
        )

    def _authorized(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        for fresh in (False, True):
            if fresh or not self._token:
                self._token = actions_token(self._audience, env=self._env)
            try:
                return _call(
                    method,
                    self._url + path,
                    headers={"Authorization": f"Bearer {self._token}"},
                    body=body,
                    what="the k8see API",
                )
            except _Expired:
                if fresh:
                    raise PolicyError("The k8see API refused a fresh token as expired.") from None
        raise AssertionError("unreachable")


class _Expired(Exception):
    """401 for an expired token: fetch a new one once."""


def _call(
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    body: dict[str, Any] | None = None,
    what: str,
) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request_headers = {"Accept": "application/json", **headers}
    if data is not None:
        request_headers["Content-Type"] = "application/json"
    last: K8seeError | None = None
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(min(2.0**attempt, 10.0))
        request = urllib.request.Request(url, data=data, method=method, headers=request_headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                return _json(response.read())
        except urllib.error.HTTPError as exc:
            answer = _json(exc.read())
            message = str(answer.get("message") or f"{what} answered {exc.code}.")
            hint = str(answer.get("hint") or "")
            if exc.code in (502, 503, 504):
                last = IntegrationError(f"{what} is unavailable: {message}", hint=hint or None)
                continue
            if exc.code == 401 and "expired" in message:
                raise _Expired() from None
            raise PolicyError(f"{what} refused: {message}", hint=hint or None) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            last = IntegrationError(
                f"cannot reach {what} at {urllib.parse.urlsplit(url).netloc} ({reason}).",
                hint="Check --api, and that the platform's API is exposed (its Ingress).",
            )
    assert last is not None
    raise last


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
