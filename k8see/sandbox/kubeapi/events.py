"""Core/v1 Events the simulated controllers emit, so ``kubectl get events`` explains failures.

Like the real event recorder (client-go's ``EventCorrelator``), a repeat of the same reason
and message for the same object bumps ``count`` and ``lastTimestamp`` instead of adding an
Event, and once ``AGGREGATE_MAX`` Events of one reason about one object differ only in their
message (a refused pod creation names a new pod each time), the next ones bump a single
Event whose message starts ``(combined from similar events): ``. (The real aggregator also
forgets after 10 minutes; the sandbox never does.)
"""

from __future__ import annotations

import hashlib
from typing import Any

from k8see.sandbox.kubeapi.api import Api, now

Obj = dict[str, Any]
EVENTS = ("", "events")
#: client-go's ``defaultAggregateMaxEvents``.
AGGREGATE_MAX = 10
COMBINED = "(combined from similar events): "


def record(api: Api, *, involved: Obj, reason: str, message: str, kind: str = "Warning") -> None:
    """Record (or bump) an Event about ``involved`` in its namespace."""
    meta = involved["metadata"]
    namespace = meta.get("namespace") or "default"
    rt = api.registry.by_key(EVENTS)
    assert rt is not None
    stamp = now()
    name = _name(meta, reason, message)
    existing = api.store.get(EVENTS, namespace, name)
    if existing is None and _similar(api, namespace, meta, reason):
        name, message = _name(meta, reason, COMBINED), COMBINED + message
        existing = api.store.get(EVENTS, namespace, name)
    if existing is not None:
        existing["count"] = int(existing.get("count", 1)) + 1
        existing["lastTimestamp"] = stamp
        existing["message"] = message
        api.write(rt, existing)
        return
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion", ""),
            "kind": involved.get("kind", ""),
            "name": meta["name"],
            "namespace": namespace,
            "uid": meta["uid"],
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "source": {"component": "k8see-sandbox"},
        "reportingComponent": "k8see-sandbox",
    }
    try:
        api.create(rt, namespace, event)
    except Exception:  # noqa: BLE001 - an event must never break the controller that emits it
        return


def _name(meta: Obj, reason: str, message: str) -> str:
    digest = hashlib.sha256(f"{meta['uid']}/{reason}/{message}".encode()).hexdigest()[:16]
    return f"{meta['name']}.{digest}"


def _similar(api: Api, namespace: str, meta: Obj, reason: str) -> bool:
    """Whether ``AGGREGATE_MAX`` Events of ``reason`` about this object exist already."""
    similar = sum(
        1
        for e in api.store.list(EVENTS, namespace)
        if e.get("reason") == reason and (e.get("involvedObject") or {}).get("uid") == meta["uid"]
    )
    return similar >= AGGREGATE_MAX
