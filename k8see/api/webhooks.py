"""``POST /github/webhooks``: a GitHub App's deliveries, signed, deduplicated, accepted fast.

The request does the cheap, pure part (size, signature, headers, JSON, the decision from
``k8see.events``) and one Redis call (``inbox.accept``); the answer goes out then. The
inbox's drainer later turns each entry into the same run ``k8see enqueue`` makes
(``handle_entry``). Answers:

======================================  ====  ==========================================
the delivery                            code  queued
======================================  ====  ==========================================
body over ``api.webhook_max_bytes``     413   nothing
unsigned or wrongly signed              401   nothing
no event or delivery id, malformed JSON 400   nothing
``ping``                                200   nothing
an event k8see does not handle          202   nothing (``ignored``)
an event that changes nothing           202   nothing (``ignored``, with the reason)
a delivery id seen before (a replay)    202   nothing (``duplicate``)
Redis failing or slower than allowed    503   nothing (GitHub's redelivery is accepted)
anything else                           202   one inbox entry (``queued``)
======================================  ====  ==========================================

No line logged here holds the payload: only the delivery id, the event, the repository and
PR, and the outcome.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from k8see import client as enqueue_client
from k8see.api import inbox, signatures
from k8see.api.http import error_body, peer, read_limited
from k8see.api.metrics import WEBHOOK_SECONDS, WEBHOOKS
from k8see.coordination import PREFIX
from k8see.errors import PolicyError
from k8see.events import Decision, decide_labelled
from k8see.names import check_repo
from k8see.run import Action
from k8see.settings import PlatformSettings

__all__ = ["HANDLED_EVENTS", "INSTALLATIONS_KEY", "handle_entry", "receive"]

HANDLED_EVENTS = frozenset(
    {"pull_request", "issue_comment", "installation", "installation_repositories"}
)
#: Repository → the App installation id that covers it, kept from installation events.
INSTALLATIONS_KEY = f"{PREFIX}:api:installations"
_DELIVERY_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_EVENT_RE = re.compile(r"^[a-z_]{1,64}$")
_SIGNING_HINT = (
    "Set the GitHub App's webhook secret to one of the platform's api.webhook_secrets "
    "(K8SEE_API__WEBHOOK_SECRETS)."
)

log = logging.getLogger(__name__)


async def receive(request: Request, *, settings: PlatformSettings, client: redis.Redis) -> Any:
    """Answer one delivery (see the module's table)."""
    started = time.perf_counter()
    event = request.headers.get("x-github-event", "")
    try:
        status, outcome, body = await _receive(request, settings=settings, client=client)
    finally:
        WEBHOOK_SECONDS.observe(time.perf_counter() - started)
    WEBHOOKS.labels(event if event in HANDLED_EVENTS else "other", outcome).inc()
    headers = {"Retry-After": "10"} if status == 503 else None
    return JSONResponse(body, status_code=status, headers=headers)


async def _receive(
    request: Request, *, settings: PlatformSettings, client: redis.Redis
) -> tuple[int, str, dict[str, Any]]:
    api = settings.api
    raw = await read_limited(request, api.webhook_max_bytes)
    if raw is None:
        log.warning("Webhook refused: its body is over %d bytes.", api.webhook_max_bytes)
        return (
            413,
            "refused",
            error_body(
                f"The delivery is larger than {api.webhook_max_bytes} bytes.",
                "GitHub caps webhook payloads at 25 MB; this did not come from GitHub.",
            ),
        )
    secrets = [s.get_secret_value() for s in api.webhook_secrets]
    if not signatures.verify(raw, request.headers.get("x-hub-signature-256"), secrets):
        reason = "no webhook secret is configured" if not secrets else "bad or missing signature"
        log.warning("Webhook refused from %s: %s.", peer(request), reason)
        return (
            401,
            "refused",
            error_body(
                "The delivery's X-Hub-Signature-256 does not match a configured webhook secret.",
                _SIGNING_HINT,
            ),
        )
    event = request.headers.get("x-github-event", "")
    delivery = request.headers.get("x-github-delivery", "")
    if not _EVENT_RE.fullmatch(event) or not _DELIVERY_RE.fullmatch(delivery):
        log.warning("Webhook refused: missing or malformed X-GitHub-Event/X-GitHub-Delivery.")
        return (
            400,
            "refused",
            error_body(
                "X-GitHub-Event and X-GitHub-Delivery are required.",
                "Send the delivery exactly as GitHub does, headers included.",
            ),
        )
    if event == "ping":
        return 200, "ignored", {"status": "pong", "delivery": delivery}
    if event not in HANDLED_EVENTS:
        log.info("Webhook %s: %s events are not handled; ignored.", delivery, event)
        return 202, "ignored", {"status": "ignored", "delivery": delivery,
                                "reason": f"k8see does not handle {event} events."}  # fmt: skip
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        log.warning("Webhook %s (%s) refused: the body is not JSON.", delivery, event)
        return (
            400,
            "refused",
            error_body(
                "The delivery's body is not valid JSON.", "GitHub sends application/json bodies."
            ),
        )
    try:
        entry = _entry(event, delivery, payload)
    except PolicyError as exc:
        log.warning("Webhook %s (%s) refused: %s", delivery, event, exc.message)
        return 400, "refused", error_body(exc.message, exc.hint or "")
    if isinstance(entry, str):
        log.info("Webhook %s (%s): %s", delivery, event, entry)
        return 202, "ignored", {"status": "ignored", "delivery": delivery, "reason": entry}
    try:
        stream_id = await run_in_threadpool(
            inbox.accept, client, entry, ttl_seconds=api.delivery_ttl_seconds
        )
    except redis.RedisError as exc:
        log.error("Webhook %s (%s) not accepted: Redis failed (%s).", delivery, event, exc)
        return (
            503,
            "unavailable",
            error_body(
                "The platform cannot store deliveries right now.",
                "Nothing was queued; redeliver it from the App's settings (Advanced) later.",
            ),
        )
    if stream_id is None:
        log.info("Webhook %s (%s): a delivery seen before; nothing queued.", delivery, event)
        return 202, "duplicate", {"status": "duplicate", "delivery": delivery}
    log.info("Webhook %s (%s) accepted as %s.", delivery, event, stream_id)
    return 202, "queued", {"status": "queued", "delivery": delivery}


def _entry(event: str, delivery: str, payload: Any) -> inbox.Entry | str:
    """The inbox entry for a delivery, or why it changes nothing."""
    if not isinstance(payload, Mapping):
        raise PolicyError("The delivery's body is not a JSON object.")
    if event in ("pull_request", "issue_comment"):
        decision, trigger = decide_labelled(event_name=event, payload=payload)
        if decision.action is Action.SKIP:
            return decision.reason
        run = {"decision": decision.to_dict(), "trigger": trigger}
        return inbox.Entry(delivery=delivery, event=event, kind="run", data=run)
    action = payload.get("action")
    installation = payload.get("installation")
    if not isinstance(action, str) or not isinstance(installation, Mapping):
        raise PolicyError(f"The {event} event has no action or installation.")
    installation_id = installation.get("id")
    if isinstance(installation_id, bool) or not isinstance(installation_id, int):
        raise PolicyError(f"The {event} event's installation has no numeric id.")
    if event == "installation":
        listed = _repos(payload.get("repositories"))
        added = listed if action in ("created", "unsuspend", "new_permissions_accepted") else []
        removed = listed if action in ("deleted", "suspend") else []
    else:
        added = _repos(payload.get("repositories_added"))
        removed = _repos(payload.get("repositories_removed"))
    if not added and not removed and action not in ("deleted", "suspend"):
        return f"installation {installation_id} {action[:40]!r} names no repository."
    data: dict[str, Any] = {
        "action": action[:40],
        "installation_id": installation_id,
        "added": added,
        "removed": removed,
        "all": action in ("deleted", "suspend"),
    }
    return inbox.Entry(delivery=delivery, event=event, kind="installation", data=data)


def _repos(items: Any) -> list[str]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise PolicyError("The event's repository list is not a list.")
    names = []
    for item in items:
        name = item.get("full_name") if isinstance(item, Mapping) else None
        if not isinstance(name, str):
            raise PolicyError("A repository in the event has no full_name.")
        names.append(check_repo(name))
    return names


def handle_entry(entry: inbox.Entry, *, settings: PlatformSettings, client: redis.Redis) -> None:
    """Do what an accepted delivery asks: enqueue its run, or record an installation change.

    Idempotent: a run is deduplicated by the enqueue client's delivery mark, and the
    installation map converges to the same state.
    """
    if entry.kind == "installation":
        _record_installation(entry, client)
        return
    if entry.kind != "run":
        log.error("Delivery %s has an unknown inbox kind %r; dropped.", entry.delivery, entry.kind)
        return
    decision = decision_from(entry.data["decision"])
    sent = enqueue_client.enqueue(
        decision, settings=settings, trigger=str(entry.data["trigger"]), client=client
    )
    what = f"duplicate of {sent.duplicate_of}" if sent.duplicate_of else f"run {sent.run_id}"
    log.info(
        "Delivery %s: %s %s#%d queued as %s.",
        entry.delivery,
        decision.action.value,
        decision.repo,
        decision.pr,
        what,
    )


def decision_from(data: Mapping[str, Any]) -> Decision:
    """A ``Decision`` back from ``Decision.to_dict()``."""
    fields = dict(data)
    fields["action"] = Action(fields["action"])
    fields["command_args"] = tuple(fields.get("command_args") or ())
    return Decision(**fields)


def _record_installation(entry: inbox.Entry, client: redis.Redis) -> None:
    data = entry.data
    installation = str(data["installation_id"])
    with client.pipeline(transaction=True) as pipe:
        if data.get("all"):
            for repo, owner in client.hgetall(INSTALLATIONS_KEY).items():
                if _text(owner) == installation:
                    pipe.hdel(INSTALLATIONS_KEY, repo)
        for repo in data.get("removed") or []:
            pipe.hdel(INSTALLATIONS_KEY, repo.lower())
        for repo in data.get("added") or []:
            pipe.hset(INSTALLATIONS_KEY, repo.lower(), installation)
        pipe.execute()
    log.info(
        "Installation %s %s: %d repositories added, %d removed.",
        installation,
        data.get("action"),
        len(data.get("added") or []),
        len(data.get("removed") or []),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
