"""``k8see api`` (serve the front doors) and ``k8see enqueue --api`` (send through them).

Registered on the CLI's group. Serving imports Starlette and uvicorn (the ``worker`` extra);
sending uses the standard library only, so the light client install can do it.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from k8see.errors import IntegrationError
from k8see.remote import ApiClient

__all__ = ["Sent", "api", "send"]

#: How often ``--wait --api`` asks the API how the run is going, in seconds.
API_POLL_SECONDS = 2.0

Look = Callable[[], tuple[dict[str, Any], "dict[str, Any] | None"]]


@dataclass(frozen=True)
class Sent:
    """What an enqueue did, straight to Redis or through the API, and how to follow it."""

    run_id: str
    generation: int
    authorizing: bool = False
    duplicate_of: str | None = None
    #: How to read the run's progress; None: from Redis.
    look: Look | None = None
    poll_seconds: float = 0.0
    #: A submission's progress token (the enqueue credential; ``k8see.submission``).
    progress: str = ""

    @classmethod
    def of(cls, enqueued: Any) -> Sent:
        """From ``k8see.client.Enqueued``."""
        return cls(
            run_id=enqueued.run_id,
            generation=enqueued.run.generation,
            authorizing=enqueued.authorizing,
            duplicate_of=enqueued.duplicate_of,
            progress=enqueued.progress,
        )


def send(url: str, *, audience: str, request: dict[str, Any]) -> Sent:
    """Send the event to the API with this job's OIDC token.

    Raises:
        PolicyError: the API or GitHub Actions refused (no token, wrong repository, ...).
        IntegrationError: the API or GitHub Actions cannot be reached or is unavailable.
    """
    client = ApiClient(url, audience=audience, env=os.environ)
    host = urllib.parse.urlsplit(url).hostname or ""
    if url.startswith("http://") and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            "Warning: --api is plain http: the job's token travels unencrypted; use https.",
            err=True,
        )
    answer = client.enqueue(request)
    run_id = answer.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        raise IntegrationError("The k8see API answered without a run id.")
    duplicate = answer.get("duplicate_of")
    return Sent(
        run_id=run_id,
        generation=int(answer.get("generation") or 0),
        authorizing=bool(answer.get("authorizing")),
        duplicate_of=duplicate if isinstance(duplicate, str) else None,
        look=lambda: client.look(run_id),
        poll_seconds=API_POLL_SECONDS,
    )


@click.command("api")
@click.option("--address", help="Listen address (default: api.address, 127.0.0.1).")
@click.option("--port", type=int, help="Listen port (default: api.port, 8080).")
def api(address: str | None, port: int | None) -> None:
    """Serve the front doors: GitHub App webhooks and workflow enqueue by OIDC token."""
    from k8see.api.server import serve
    from k8see.logs import configure, secret_values
    from k8see.settings import load_settings

    settings = load_settings(os.environ.get("K8SEE_SETTINGS_FILE") or None)
    params = click.get_current_context().find_root().params
    level = str(params.get("log_level") or "INFO").upper()
    # Again, now with the secrets to mask (the webhook secrets among them).
    configure(fmt=str(params.get("log_format") or "plain"), level=level,
              secrets=secret_values(settings))  # fmt: skip
    serve(
        settings,
        address=address or settings.api.address,
        port=settings.api.port if port is None else port,
        log_level=level,
    )
