"""What every ``k8see`` command shares: the exit codes, the error guard and the settings.

A ``K8seeError`` prints ``Error: …``, ``Where: …`` and ``Hint: …`` on stderr, never a traceback;
with ``--json`` the error is also one JSON object on stdout. This module imports no other
module of ``k8see.cli`` (the import contracts hold it at the bottom of the package).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from k8see.errors import IntegrationError, K8seeError, UserError

__all__ = [
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "EXIT_USER_ERROR",
    "EXIT_WAIT_TIMEOUT",
    "fail",
    "guard",
    "platform_settings",
]

#: Exit codes, listed in ``--help`` and docs/operations.md (a test keeps the three in step).
EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
#: ``enqueue --wait`` stopped following before the run ended; the run itself goes on.
EXIT_WAIT_TIMEOUT = 4

REDIS_HINT = "check K8SEE_REDIS__URL, or start the sandbox with `k8see sandbox up`."
SETTINGS_HINT = (
    "check the K8SEE_* variables (and K8SEE_SETTINGS_FILE); every setting is listed in "
    "docs/configuration.md."
)
REPLICA_HINT = (
    "run the same enqueue again: a retry of one event is queued exactly once. If no replica "
    "is up, see docs/operations.md, High availability (K8SEE_REDIS__MIN_REPLICA_ACKS=0 "
    "accepts events without a replica)."
)


def fail(error: K8seeError, *, code: int = EXIT_USER_ERROR, as_json: bool = False) -> NoReturn:
    """Print the error for people on stderr (and, with ``--json``, for machines on stdout)."""
    click.echo(f"Error: {error.message}", err=True)
    if error.where:
        click.echo(f"Where: {error.where}", err=True)
    if error.hint:
        click.echo(f"Hint: {error.hint}", err=True)
    if as_json:
        click.echo(json.dumps({"error": error.to_dict(), "exit_code": code}))
    sys.exit(code)


def platform_settings() -> Any:
    from k8see.settings import load_settings

    return load_settings(os.environ.get("K8SEE_SETTINGS_FILE") or None)


#: Redis's TLS certificate was refused (a CA not given, another CA, a name not in it).
TLS_VERIFY_HINT = (
    "Redis's TLS certificate could not be verified. Give the CA that signed it in the URL: "
    "rediss://...?ssl_ca_certs=/path/to/ca.crt, and reach Redis by a name the certificate "
    'holds (docs/operations.md, "Redis over TLS").'
)
#: A server that drops a plain connection at once is often one that speaks TLS only.
TLS_PLAIN_HINT = (
    f"{REDIS_HINT} Redis closed the connection at once: if it listens with TLS only, the URL "
    'must start with rediss:// (docs/operations.md, "Redis over TLS").'
)


def redis_hint(exc: BaseException) -> str:
    """The hint for a Redis connection error: a TLS one says what to change in the URL."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "Hostname mismatch" in text:
        return TLS_VERIFY_HINT
    if "Connection reset by peer" in text or "Connection closed by server" in text:
        return TLS_PLAIN_HINT
    return REDIS_HINT


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn k8see and connection errors into one readable message and an exit code.

    A command called with ``--json`` also gets the error as one JSON object on stdout, so a
    script that parses stdout never reads nothing.
    """

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import redis
        from kombu.exceptions import OperationalError
        from pydantic import ValidationError

        from k8see.redis_connect import NotReplicated

        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except K8seeError as exc:
            fail(exc, as_json=as_json)
        except redis.exceptions.NoPermissionError as exc:
            refused = UserError(
                f"Redis refused this credential ({exc}).",
                hint="Each Redis user may do only what its role needs: the enqueue credential "
                "submits events and reads the progress of its own submissions (`k8see status "
                "--progress TOKEN`, the token `k8see enqueue` printed). Listing records needs "
                "the admin credential; docs/security.md lists who may do what.",
            )
            fail(refused, as_json=as_json)
        except ValidationError as exc:
            # Settings from the environment or K8SEE_SETTINGS_FILE; the input is left out,
            # because it can be a URL with a password in it.
            where = ", ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3]
            )
            error = IntegrationError(
                f"The platform settings are invalid ({where}).", hint=SETTINGS_HINT
            )
            fail(error, code=EXIT_USAGE, as_json=as_json)
        except NotReplicated as exc:
            error = IntegrationError(
                f"Redis took the event, but {exc}; a failover now could lose it.",
                hint=REPLICA_HINT,
            )
            fail(error, code=EXIT_UNREACHABLE, as_json=as_json)
        except (redis.exceptions.ConnectionError, OperationalError) as exc:
            error = IntegrationError(f"cannot reach Redis ({exc}).", hint=redis_hint(exc))
            fail(error, code=EXIT_UNREACHABLE, as_json=as_json)
        except redis.exceptions.TimeoutError as exc:
            # Something accepted the connection but never answered: a wrong port, a proxy
            # whose backend is gone, or a Redis stuck loading. As unreachable as a refusal.
            hint = f"{REDIS_HINT} Check that it is Redis listening there."
            error = IntegrationError(f"Redis did not answer in time ({exc}).", hint=hint)
            fail(error, code=EXIT_UNREACHABLE, as_json=as_json)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper
