"""Server-side printing: ``meta.k8s.io/v1 Table`` answers for ``kubectl get``.

kubectl asks for ``application/json;as=Table;v=v1;g=meta.k8s.io`` and prints the columns the
server chose. A few kinds get their familiar columns (pods: Ready, Status, Restarts;
deployments: Ready, Up-to-date, Available); every kind gets Name and Age.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]


def _age(obj: Obj) -> str:
    created = obj.get("metadata", {}).get("creationTimestamp")
    if not created:
        return "<unknown>"
    seconds = int(
        (
            datetime.now(UTC) - datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        ).total_seconds()
    )
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _pod(obj: Obj) -> list[Any]:
    statuses = obj.get("status", {}).get("containerStatuses") or []
    total = len(obj.get("spec", {}).get("containers") or [])
    ready = sum(1 for s in statuses if s.get("ready"))
    waiting = [
        s["state"]["waiting"].get("reason") for s in statuses if "waiting" in s.get("state", {})
    ]
    phase = (
        "Terminating"
        if obj["metadata"].get("deletionTimestamp")
        else obj.get("status", {}).get("phase", "")
    )
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    return [f"{ready}/{total}", waiting[0] if waiting else phase, restarts]


def _deployment(obj: Obj) -> list[Any]:
    status, spec = obj.get("status", {}), obj.get("spec", {})
    return [
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
    ]


def _namespace(obj: Obj) -> list[Any]:
    return [obj.get("status", {}).get("phase", "")]


COLUMNS: dict[str, tuple[list[tuple[str, str]], Callable[[Obj], list[Any]]]] = {
    "Pod": ([("Ready", "string"), ("Status", "string"), ("Restarts", "integer")], _pod),
    "Deployment": (
        [("Ready", "string"), ("Up-to-date", "integer"), ("Available", "integer")],
        _deployment,
    ),
    "Namespace": ([("Status", "string")], _namespace),
}


def to_table(obj: Obj, *, include_object: str) -> Obj:
    """A Table for an object or a list, with partial object metadata per row."""
    is_list = "items" in obj
    items = obj["items"] if is_list else [obj]
    kind = obj.get("kind", "")
    kind = kind[: -len("List")] if is_list and kind.endswith("List") else kind
    extra, cells = COLUMNS.get(kind, ([], lambda o: []))
    columns = [("Name", "string"), *extra, ("Age", "string")]
    rows = []
    for item in items:
        row: Obj = {"cells": [item["metadata"]["name"], *cells(item), _age(item)]}
        if include_object == "Object":
            row["object"] = item
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": item["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": obj.get("metadata", {}).get("resourceVersion", "")},
        "columnDefinitions": [
            {
                "name": n,
                "type": t,
                "format": "name" if n == "Name" else "",
                "description": "",
                "priority": 0,
            }
            for n, t in columns
        ],
        "rows": rows,
    }
