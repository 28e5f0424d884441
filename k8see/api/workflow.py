"""``POST /v1/enqueue`` and ``GET /v1/runs/{run_id}``: a workflow step, admitted by identity.

The step sends the event as ``k8see enqueue`` would decide it (the webhook payload, or the
flags) with its GitHub Actions OIDC token as ``Authorization: Bearer``. The token is verified
(``identity``) and the event is accepted only for the repository in its ``repository`` claim:
a token of repository A naming repository B is refused (403) and nothing is queued. The run
is admitted by the same enqueue client as everywhere else, and only that repository may
follow it.

Request body (JSON)::

    {"event_name": "pull_request", "payload": {...}}                 # or
    {"repo": "o/r", "pr": 7, "action": "opened", "sha": "...", "ref": "..."}  # or
    {"repo": "o/r", "pr": 7, "comment": "/deploy-preview", "commenter": "alice"}
    # optional with each: "mode", "config_path", "platforms"
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from k8see import client as enqueue_client
from k8see import intake, state
from k8see.api.http import error, peer, read_limited
from k8see.api.identity import Claims, IssuerUnavailable, TokenRefused, Verifier
from k8see.api.metrics import ENQUEUES
from k8see.errors import K8seeError
from k8see.events import decide_labelled
from k8see.settings import PlatformSettings

__all__ = ["enqueue", "run_status"]

log = logging.getLogger(__name__)

_FLAGS = ("repo", "pr", "action", "sha", "ref", "comment", "commenter", "mode")


async def enqueue(
    request: Request, *, settings: PlatformSettings, client: redis.Redis, verifier: Verifier
) -> JSONResponse:
    claims = await _authenticate(request, verifier)
    if isinstance(claims, JSONResponse):
        ENQUEUES.labels("refused").inc()
        return claims
    raw = await read_limited(request, settings.api.webhook_max_bytes)
    if raw is None:
        ENQUEUES.labels("refused").inc()
        return error(413, "The event is larger than the platform accepts.", "")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        ENQUEUES.labels("refused").inc()
        return error(400, "The request body is not a JSON object.", "Use k8see enqueue --api.")
    try:
        decision, trigger = decide_labelled(
            event_name=str(body.get("event_name") or ""),
            payload=body.get("payload"),
            **{k: body.get(k) for k in _FLAGS},
        )
    except K8seeError as exc:
        ENQUEUES.labels("refused").inc()
        return error(400, exc.message, exc.hint or "")
    if decision.repo.lower() != claims.repository.lower():
        ENQUEUES.labels("refused").inc()
        log.warning(
            "Enqueue refused: a token of %s named %s#%d.",
            claims.repository,
            decision.repo,
            decision.pr,
        )
        return error(
            403,
            f"This workflow's token is for {claims.repository}, not {decision.repo}.",
            "A workflow may enqueue events of its own repository only.",
        )
    summary: dict[str, Any] = {
        "action": decision.action.value,
        "repo": decision.repo,
        "pr": decision.pr,
        "sha": decision.sha,
        "reason": decision.reason,
    }
    if decision.action.value == "skip":
        ENQUEUES.labels("skipped").inc()
        return JSONResponse(summary)
    try:
        sent = await run_in_threadpool(
            enqueue_client.enqueue,
            decision,
            settings=settings,
            trigger=trigger,
            config_path=str(body.get("config_path") or ""),
            platforms=str(body.get("platforms") or ""),
            client=client,
        )
    except K8seeError as exc:
        ENQUEUES.labels("refused").inc()
        return error(400, exc.message, exc.hint or "")
    except (redis.RedisError, OSError) as exc:
        ENQUEUES.labels("unavailable").inc()
        log.error("Enqueue of %s#%d failed: Redis (%s).", decision.repo, decision.pr, exc)
        return error(503, "The platform cannot queue runs right now.", "Retry the step later.")
    ENQUEUES.labels("duplicate" if sent.duplicate_of else "queued").inc()
    log.info(
        "Enqueue by %s (run %s): %s %s#%d as %s.",
        claims.repository,
        claims.run_id or "?",
        decision.action.value,
        decision.repo,
        decision.pr,
        sent.run_id,
    )
    summary.update(
        run_id=sent.run_id,
        generation=sent.run.generation,
        authorizing=sent.authorizing,
        duplicate_of=sent.duplicate_of,
    )
    return JSONResponse(summary, status_code=202)


async def run_status(request: Request, *, client: redis.Redis, verifier: Verifier) -> JSONResponse:
    """The environment record of a run's PR, and its refusal if any, for its own repo."""
    claims = await _authenticate(request, verifier)
    if isinstance(claims, JSONResponse):
        return claims
    run_id = request.path_params["run_id"]
    try:
        found = await run_in_threadpool(_look, client, run_id)
    except redis.RedisError as exc:
        log.error("Run status of %s failed: Redis (%s).", run_id, exc)
        return error(503, "The platform cannot read runs right now.", "Retry later.")
    if found is None or found[0].lower() != claims.repository.lower():
        return error(404, f"No run {run_id} of {claims.repository}.", "")
    _repo, record, refusal = found
    return JSONResponse({"record": record, "refusal": refusal})


def _look(
    client: redis.Redis, run_id: str
) -> tuple[str, dict[str, Any], dict[str, Any] | None] | None:
    stored = intake.stored(client, run_id=run_id)
    if stored is None:
        return None
    run = stored.run
    record = state.get(client, repo=run.repo, pr=run.pr) or {}
    return run.repo, record, state.run_outcome(client, run_id=run_id)


async def _authenticate(request: Request, verifier: Verifier) -> Claims | JSONResponse:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return error(
            401,
            "A GitHub Actions OIDC token is required (Authorization: Bearer).",
            "Give the job `permissions: id-token: write` and use k8see enqueue --api.",
        )
    try:
        return await run_in_threadpool(verifier.verify, token.strip())
    except TokenRefused as exc:
        log.warning("Token refused from %s: %s", peer(request), exc.message)
        return error(exc.status, exc.message, exc.hint)
    except IssuerUnavailable as exc:
        log.error("Token not checked: the issuer is unavailable (%s).", exc)
        return error(503, "The platform cannot verify tokens right now.", "Retry the step later.")
