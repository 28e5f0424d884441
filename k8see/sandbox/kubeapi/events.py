"""Core/v1 Events the simulated controllers emit, so ``kubectl get events`` explains failures.

Like the real event recorder, a repeat of the same reason and message for the same object
bumps ``count`` and ``lastTimestamp`` instead of adding an Event.
"""

from __future__ import annotations

import hashlib
from typing import Any

from k8see.sandbox.kubeapi.api import Api, now

Obj = dict[str, Any]
EVENTS = ("", "events")


def record(api: Api, *, involved: Obj, reason: str, message: str, kind: str = "Warning") -> None:
    """Record (or bump) an Event about ``involved`` in its namespace."""
    meta = involved["metadata"]
    namespace = meta.get("namespace") or "default"
    digest = hashlib.sha256(f"{meta['uid']}/{reason}/{message}".encode()).hexdigest()[:16]
    name = f"{meta['name']}.{digest}"
    rt = api.registry.by_key(EVENTS)
    assert rt is not None
    stamp = now()
    existing = api.store.get(EVENTS, namespace, name)
    if existing is not None:
        existing["count"] = int(existing.get("count", 1)) + 1
        existing["lastTimestamp"] = stamp
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
