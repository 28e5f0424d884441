"""Admission on create: the namespace must exist and not be terminating; pods meet quotas.

Runs after validation and before the write, as the real admission chain does
(NamespaceLifecycle, LimitRanger, ResourceQuota).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from k8see.sandbox.kubeapi import quota
from k8see.sandbox.kubeapi.apierrors import ApiError, forbidden
from k8see.sandbox.kubeapi.resources import ResourceType

if TYPE_CHECKING:
    from k8see.sandbox.kubeapi.api import Api

Obj = dict[str, Any]
NAMESPACES = ("", "namespaces")


def admit_create(api: Api, rt: ResourceType, obj: Obj) -> None:
    """Refuse a create the real admission chain refuses; may add defaults (LimitRange)."""
    if not rt.namespaced:
        return
    meta = obj["metadata"]
    namespace, name = meta["namespace"], meta.get("name", "")
    ns = api.store.get(NAMESPACES, "", namespace)
    if ns is None:
        raise ApiError(
            code=404,
            reason="NotFound",
            message=f'namespaces "{namespace}" not found',
            details={"name": namespace, "kind": "namespaces"},
        )
    if (
        ns["metadata"].get("deletionTimestamp")
        or ns.get("status", {}).get("phase") == "Terminating"
    ):
        why = (
            f"unable to create new content in namespace {namespace} because it is being terminated"
        )
        raise forbidden(rt, name, why, cause="NamespaceTerminating")
    if rt.kind == "Pod":
        quota.apply_limit_ranges(api.store, obj)
    quota.admit(api.store, rt, obj)
