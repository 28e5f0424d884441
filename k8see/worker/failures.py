"""Which failures are worth another try, how long to wait, and what the record keeps.

Shared by ``StageTask`` and the command task so a failure is classified one way everywhere.
"""

from __future__ import annotations

import random

import redis
from kombu.exceptions import OperationalError

from k8see.errors import (
    GitHubError,
    K8seeError,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    PlatformError,
    RetryLater,
    Stopped,
    ToolMissing,
    UserError,
)
from k8see.logs import redactor
from k8see.run import Run
from k8see.settings import PlatformSettings
from k8see.stage_table import StageSpec

BACKOFF_CAP_SECONDS = 120.0

#: Errors of systems that may answer on the next try without anyone acting.
_TRANSIENT_LIBRARY_ERRORS = (
    ConnectionError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OperationalError,
)
#: Statuses of an HTTP API worth asking again: timeout, conflict, throttled, server errors.
_TRANSIENT_STATUSES = frozenset({408, 409, 429})


def is_transient(exc: BaseException) -> bool:
    """Whether running the same stage again may succeed without anyone acting.

    Transient: ``RetryLater``; a platform error, unless it says what will not change on its
    own (a missing tool, a 403 or 404 from Kubernetes, a 4xx from GitHub); a connection or
    timeout error. Not transient: user errors and stops (expected outcomes), and anything
    else, which is a bug: the same code on the same input fails the same way again.
    """
    if isinstance(exc, UserError | Stopped):
        return False
    if isinstance(exc, RetryLater):
        return True
    if isinstance(exc, ToolMissing | KubeForbidden | KubeNotFound):
        return False
    if isinstance(exc, KubeError | GitHubError):
        status = exc.status
        return status is None or status >= 500 or status in _TRANSIENT_STATUSES
    if isinstance(exc, PlatformError):
        return True
    return isinstance(exc, _TRANSIENT_LIBRARY_ERRORS)


def backoff(base: float, retries: int) -> float:
    """Exponential backoff with full jitter, capped."""
    return random.uniform(0, min(BACKOFF_CAP_SECONDS, base * 2**retries))


def backoff_with_jitter(base: float, attempt: int, cap: float) -> float:
    """Exponential backoff with equal jitter: never less than half the step, so a wait for a
    lease does not spin, and never more than ``cap``."""
    step = min(cap, base * 2.0 ** min(attempt, 30))
    return step / 2 + random.uniform(0, step / 2)


def retry_delay(exc: BaseException, base: float, retries: int) -> float:
    """The delay the failure asks for (``RetryLater``, ``Retry-After``), else the backoff."""
    asked = getattr(exc, "delay_seconds", None) or getattr(exc, "retry_after_seconds", None)
    return float(asked) if asked else float(backoff(base, retries))


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def platform_error(
    exc: BaseException, *, stage: str, run: Run, settings: PlatformSettings
) -> PlatformError:
    """The error the environment record keeps: the real one, not a generic sentence."""
    retry = (
        f"Push again or comment /deploy-preview to retry; if it persists, give the platform "
        f"team run id {run.run_id}."
    )
    if isinstance(exc, K8seeError):
        message, hint = exc.message, f"{exc.hint} {retry}" if exc.hint else retry
    else:
        # Library text can carry a token or URL with credentials: redact, and keep it short.
        detail = redactor(settings)(describe(exc))
        message, hint = f"The {stage} stage failed: {detail}", retry
    error = PlatformError(message, hint=hint)
    error.reason = exc.reason if isinstance(exc, PlatformError) else error.reason
    return error


def limit_hint(spec: StageSpec) -> str:
    """What to do about a stage that hit its time limit."""
    if spec.limit_setting:
        return (
            f"Make the {spec.name} faster, or ask the platform team to raise {spec.limit_setting}."
        )
    return "Retry; if it happens again, ask the platform team to look at the worker logs."
