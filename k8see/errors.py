"""The k8see error tree, split by who has to act.

::

    K8seeError                      message (a sentence), hint (next step), where (file, line)
    ├── UserError                   the PR author or repository owner acts
    │   ├── ConfigError             k8s-ee.yaml is missing or invalid
    │   ├── PolicyError             the platform refuses (allowlist, limits, authorization)
    │   ├── BuildFailed             the Dockerfile did not build
    │   ├── ScanBlocked             the scan policy blocked the image
    │   └── DeployFailed            the app did not become healthy
    ├── PlatformError               the operators act
    │   └── IntegrationError        an external system failed (status, retry_after_seconds)
    │       ├── KubeError           (NotFound, Conflict, Forbidden, TooManyRequests below it)
    │       ├── HelmError
    │       ├── RegistryError
    │       ├── GitHubError
    │       └── ToolMissing         a binary the worker needs is not installed
    ├── RetryLater                  transient: try the same stage again after delay_seconds
    └── Stopped                     expected end of a chain, not a failure
        ├── Superseded              a newer event for the PR exists
        ├── Closed                  the PR was closed; close wins over deploys
        ├── Stale                   the run's commit is not the PR's head on GitHub
        └── Refused                 not authorized (commenter, unapproved fork); already answered

Users see ``message`` and ``hint``; operators get tracebacks in worker logs. Library
exceptions are wrapped at the integration edge (``raise KubeError(...) from exc``) and never
cross a module boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "BuildFailed",
    "Closed",
    "ConfigError",
    "DeployFailed",
    "GitHubError",
    "HelmError",
    "IntegrationError",
    "K8seeError",
    "KubeConflict",
    "KubeError",
    "KubeForbidden",
    "KubeNotFound",
    "KubeTooManyRequests",
    "PlatformError",
    "PolicyError",
    "Refused",
    "RegistryError",
    "RetryLater",
    "ScanBlocked",
    "Stale",
    "Stopped",
    "Superseded",
    "ToolMissing",
    "UserError",
    "Where",
]


@dataclass(frozen=True)
class Where:
    """Where a user error points: a file, a dotted field path and a 1-based line."""

    file: str | None = None
    field: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file if self.line is None else f"{self.file}:{self.line}")
        elif self.line is not None:
            parts.append(f"line {self.line}")
        if self.field:
            parts.append(f"field '{self.field}'")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "field": self.field, "line": self.line}


class K8seeError(Exception):
    """Base of every error k8see raises on purpose.

    Args:
        message: One full sentence saying what went wrong.
        hint: The next step that fixes it, if one is known.
        where: The file, field and line the error points at, for user input.
    """

    #: A short machine-readable reason, used in metrics labels and the environment record.
    reason = "error"

    def __init__(self, message: str, *, hint: str | None = None, where: Where | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.where = where

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape kept in the environment record and shown by ``--json``."""
        return {
            "type": type(self).__name__,
            "reason": self.reason,
            "message": self.message,
            "hint": self.hint,
            "where": self.where.to_dict() if self.where else None,
        }


class UserError(K8seeError):
    """The PR author or repository owner has to act; never retried."""

    reason = "user"


class ConfigError(UserError):
    reason = "config"


class PolicyError(UserError):
    reason = "policy"


class BuildFailed(UserError):
    reason = "build"


class ScanBlocked(UserError):
    reason = "scan-blocked"


class DeployFailed(UserError):
    reason = "deploy"


class PlatformError(K8seeError):
    """The platform's operators have to act; retried within limits, then reported."""

    reason = "platform"


class IntegrationError(PlatformError):
    """An outside system failed or refused.

    Args:
        status: The HTTP status the system answered with, if it answered one.
        retry_after_seconds: The wait it asked for (``Retry-After``), if it asked.
    """

    reason = "integration"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        where: Where | None = None,
        status: int | None = None,
        retry_after_seconds: float | None = None,
    ):
        super().__init__(message, hint=hint, where=where)
        self.status = status
        self.retry_after_seconds = retry_after_seconds


class KubeError(IntegrationError):
    reason = "kube"


class KubeNotFound(KubeError):
    reason = "kube-not-found"


class KubeConflict(KubeError):
    reason = "kube-conflict"


class KubeForbidden(KubeError):
    reason = "kube-forbidden"


class KubeTooManyRequests(KubeError):
    reason = "kube-throttled"

    def __init__(self, message: str, **kw: Any):
        super().__init__(message, status=429, **kw)


class HelmError(IntegrationError):
    reason = "helm"


class RegistryError(IntegrationError):
    reason = "registry"


class GitHubError(IntegrationError):
    reason = "github"


class ToolMissing(IntegrationError):
    reason = "tool-missing"


class RetryLater(K8seeError):
    """A transient condition: run the same stage again after ``delay_seconds``."""

    reason = "retry"

    def __init__(self, message: str, *, delay_seconds: float, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.delay_seconds = delay_seconds


class Stopped(K8seeError):
    """The chain ends here on purpose; nothing failed."""

    reason = "stopped"


class Superseded(Stopped):
    reason = "superseded"


class Closed(Stopped):
    reason = "closed"


class Stale(Stopped):
    """The run names a commit that is not the PR's head on GitHub: only the head is deployed."""

    reason = "stale"


class Refused(Stopped):
    """The event is not authorized: a commenter without write access, or an unapproved fork.

    A stop, not a failure: the PR already got a reply saying why, and the environment keeps
    the status it had, so a stranger's comment cannot mark a live preview failed.
    """

    reason = "refused"
