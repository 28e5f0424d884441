"""How k8see calls the Kubernetes API: the worker's credentials, retries, errors.

Every call goes through ``call()``, which retries throttling (429, honouring Retry-After) and
server errors (5xx, connection failures) with backoff, and turns ``ApiException`` into the
``KubeError`` family, keeping only the structured ``Status`` fields, cut short: API bodies can
be large and must not end up in PR comments. No kubernetes exception leaves a module that
calls through here. What k8see does with the API (its namespaces, the objects it applies) is
in ``kube``; helm's calls get the same retries through ``kubeproxy``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from k8see.errors import (
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeTooManyRequests,
    RetryLater,
)
from k8see.settings import PlatformSettings

__all__ = [
    "MAX_MESSAGE_CHARS",
    "RETRY_ATTEMPTS",
    "call",
    "load_configuration",
    "status_fields",
    "wrap",
]

T = TypeVar("T")
#: Cut structured Status messages to this many characters.
MAX_MESSAGE_CHARS = 300
#: Retries of a throttled or failed call, and the first backoff (doubled, with jitter).
RETRY_ATTEMPTS = 4
RETRY_BACKOFF_SECONDS = 0.5
#: Longest Retry-After we sleep for inside one call; beyond it the stage is rescheduled.
MAX_INLINE_RETRY_AFTER_SECONDS = 10.0


def load_configuration(settings: PlatformSettings) -> client.Configuration:
    """The API server's address and the worker's credentials (kubeconfig or service account).

    Raises:
        KubeError: the kubeconfig or the service account cannot be read.
    """
    # Not ``client.Configuration()``: that returns a copy of the process-wide default, whose
    # dicts (api_key, ...) it shares; the kubernetes client's own loaders do the same.
    configuration = type.__call__(client.Configuration)
    try:
        if settings.deploy.kubeconfig:
            config.load_kube_config(
                config_file=settings.deploy.kubeconfig, client_configuration=configuration
            )
        else:
            config.load_incluster_config(client_configuration=configuration)
        return configuration
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        where = settings.deploy.kubeconfig or "the in-cluster service account"
        raise KubeError(
            f"Cannot load Kubernetes credentials from {where}: {type(exc).__name__}.",
            hint="Set K8SEE_DEPLOY__KUBECONFIG to a readable kubeconfig, or run the worker "
            "in a pod with a service account.",
        ) from exc


def status_fields(exc: ApiException) -> tuple[str, str]:
    """The ``Status`` reason and message of an API error, cut short; never the raw body."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        reason = str(body.get("reason") or exc.reason or "")
        message = str(body.get("message") or "")
    else:
        reason, message = str(exc.reason or ""), ""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return reason, message


def _retry_after(exc: ApiException) -> float | None:
    headers = exc.headers or {}
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def wrap(exc: ApiException, *, what: str) -> KubeError:
    """The ``KubeError`` for an ``ApiException`` of the call described by ``what``."""
    status = int(exc.status or 0)
    reason, message = status_fields(exc)
    text = f"Kubernetes refused to {what}: {status} {reason}".rstrip()
    if message:
        text += f": {message}"
    text = text.rstrip(".") + "."
    if status == 404:
        return KubeNotFound(text, status=status)
    if status == 409:
        return KubeConflict(text, status=status)
    if status in (401, 403):
        return KubeForbidden(
            text,
            status=status,
            hint="Check the worker's RBAC (docs/operations.md, Permissions): in a PR namespace "
            "its rights come from the RoleBindings of K8SEE_DEPLOY__NAMESPACE_BINDINGS.",
        )
    if status == 429:
        return KubeTooManyRequests(text, retry_after_seconds=_retry_after(exc))
    return KubeError(text, status=status or None)


def call(fn: Callable[..., T], *args: Any, what: str, **kwargs: Any) -> T:
    """Call a kubernetes client method, retrying 429/5xx/connection errors with backoff.

    Raises:
        KubeError: or a subclass, for every failure (after the retries for transient ones).
    """
    delay = RETRY_BACKOFF_SECONDS
    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            error = wrap(exc, what=what)
            transient = error.status == 429 or (error.status or 0) >= 500 or not exc.status
            if not transient or attempt == RETRY_ATTEMPTS:
                raise error from exc
            wait = delay * (1 + random.random())
            if isinstance(error, KubeTooManyRequests) and error.retry_after_seconds is not None:
                if error.retry_after_seconds > MAX_INLINE_RETRY_AFTER_SECONDS:
                    raise RetryLater(
                        error.message, delay_seconds=error.retry_after_seconds
                    ) from exc
                wait = error.retry_after_seconds
        except urllib3.exceptions.HTTPError as exc:
            if attempt == RETRY_ATTEMPTS:
                raise KubeError(
                    f"Cannot reach the Kubernetes API to {what}: {type(exc).__name__}.",
                    hint="Check that the API server is up and the kubeconfig points at it.",
                ) from exc
            wait = delay * (1 + random.random())
        time.sleep(wait)
        delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover
