"""The ASGI application of ``k8see api`` (Starlette) and its server (uvicorn).

Routes: ``POST /github/webhooks`` (``webhooks``), ``POST /v1/enqueue`` and
``GET /v1/runs/{run_id}`` (``workflow``), ``GET /healthz`` (the process answers),
``GET /readyz`` (Redis answers: a pod that cannot accept deliveries leaves the Service),
``GET /metrics`` (Prometheus). The lifespan starts the inbox drainer and stops it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import redis
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from k8see.api import inbox, webhooks, workflow
from k8see.api.connection import connect
from k8see.api.identity import Verifier
from k8see.settings import PlatformSettings

__all__ = ["create_api", "serve"]

log = logging.getLogger(__name__)


def create_api(settings: PlatformSettings, *, drain: bool = True) -> Starlette:
    """The application for ``settings``; ``drain=False`` leaves the inbox to other processes."""
    client = connect(settings)
    verifier = Verifier(settings.api)
    drainer = inbox.Drainer(
        client,
        partial(webhooks.handle_entry, settings=settings, client=client),
        claim_idle_seconds=settings.api.inbox_claim_idle_seconds,
        # A blocking read must end well before the client's own timeout.
        block_seconds=min(1.0, settings.api.redis_timeout_seconds / 2),
    )

    async def github_webhooks(request: Request) -> Any:
        return await webhooks.receive(request, settings=settings, client=client)

    async def enqueue(request: Request) -> Any:
        return await workflow.enqueue(request, settings=settings, client=client, verifier=verifier)

    async def run_status(request: Request) -> Any:
        return await workflow.run_status(request, client=client, verifier=verifier)

    async def healthz(request: Request) -> Any:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Any:
        try:
            await run_in_threadpool(client.ping)
        except redis.RedisError as exc:
            return JSONResponse({"status": "unavailable", "redis": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics(request: Request) -> Any:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if drain:
            drainer.start()
        try:
            yield
        finally:
            drainer.stop()
            client.close()

    routes = [
        Route("/github/webhooks", github_webhooks, methods=["POST"]),
        Route("/v1/enqueue", enqueue, methods=["POST"]),
        Route("/v1/runs/{run_id:str}", run_status, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def serve(settings: PlatformSettings, *, address: str, port: int, log_level: str) -> None:
    """Run the API on uvicorn until SIGTERM/SIGINT (uvicorn's graceful shutdown)."""
    import uvicorn

    app = create_api(settings)
    if not settings.api.webhook_secrets:
        log.warning(
            "No webhook secret is set (K8SEE_API__WEBHOOK_SECRETS): every webhook gets 401."
        )
    config = uvicorn.Config(
        app,
        host=address,
        port=port,
        log_level=log_level.lower(),
        log_config=None,  # k8see's own logging (plain, full or json, with redaction)
        access_log=False,  # the endpoints log each outcome themselves, without payloads
        proxy_headers=True,
        timeout_graceful_shutdown=20,
    )
    uvicorn.Server(config).run()
