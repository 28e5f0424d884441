"""Deletion: finalizers, propagation (garbage collection by ownerReferences), namespaces, CRDs.

Rules copied from the real server:

- An object with finalizers is not removed: it gets ``deletionTimestamp`` and stays until an
  update empties ``metadata.finalizers``.
- ``propagationPolicy`` Background (the default) and Foreground delete the dependents whose
  ownerReferences point at the object; Orphan strips those references instead.
- Deleting a Namespace marks it Terminating; the namespace controller (``controllers.py``)
  then deletes everything in it and removes the namespace once nothing is left.
- Deleting a CustomResourceDefinition deletes its custom objects and stops serving the kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from k8see.sandbox.kubeapi.resources import ResourceType

if TYPE_CHECKING:
    from k8see.sandbox.kubeapi.api import Api

Obj = dict[str, Any]


def delete(api: Api, rt: ResourceType, obj: Obj, *, propagation: str | None) -> Obj | None:
    """Delete ``obj``; return it if it stays (terminating), or None once it is gone."""
    from k8see.sandbox.kubeapi.api import now

    meta = obj["metadata"]
    if rt.kind == "Namespace":
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = now()
            meta["deletionGracePeriodSeconds"] = 0
            obj.setdefault("status", {})["phase"] = "Terminating"
            return api.store.put(rt.key, obj)
        return obj
    if propagation == "Foreground" and "foregroundDeletion" not in meta.get("finalizers", []):
        meta.setdefault("finalizers", []).append("foregroundDeletion")
    if meta.get("finalizers"):
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = now()
            meta["deletionGracePeriodSeconds"] = 0
            obj = api.store.put(rt.key, obj)
        if "foregroundDeletion" in meta.get("finalizers", []):
            collect_dependents(api, meta["uid"], orphan=False)
        return obj
    finalize(api, rt, obj, orphan=propagation == "Orphan")
    return None


def finalize(api: Api, rt: ResourceType, obj: Obj, *, orphan: bool = False) -> Obj:
    """Remove ``obj`` for good and deal with what depended on it."""
    meta = obj["metadata"]
    gone = api.store.remove(rt.key, meta.get("namespace", ""), meta["name"]) or obj
    if rt.kind == "CustomResourceDefinition":
        _drop_custom_objects(api, obj)
    collect_dependents(api, meta["uid"], orphan=orphan)
    return gone


def collect_dependents(api: Api, owner_uid: str, *, orphan: bool) -> None:
    """Delete (or orphan) every object whose ownerReferences name ``owner_uid``."""
    for key, dep in api.store.owned_by(owner_uid):
        dep_rt = api.registry.by_key(key)
        if dep_rt is None:
            continue
        refs = dep["metadata"].get("ownerReferences") or []
        if orphan or len(refs) > 1:
            dep["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != owner_uid]
            if not dep["metadata"]["ownerReferences"]:
                del dep["metadata"]["ownerReferences"]
            api.store.put(key, dep)
        elif not dep["metadata"].get("deletionTimestamp"):
            delete(api, dep_rt, dep, propagation="Background")


def _drop_custom_objects(api: Api, crd: Obj) -> None:
    spec = crd.get("spec") or {}
    key = (str(spec.get("group")), str((spec.get("names") or {}).get("plural")))
    for obj in api.store.list(key):
        api.store.remove(key, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
    api.registry.unregister_crd(crd)


def sweep_namespace(api: Api, ns: Obj) -> None:
    """One pass of the namespace controller over a Terminating namespace."""
    name = ns["metadata"]["name"]
    remaining = 0
    for key in api.store.kinds():
        rt = api.registry.by_key(key)
        if rt is None or not rt.namespaced:
            continue
        for obj in api.store.list(key, name):
            remaining += 1
            if not obj["metadata"].get("deletionTimestamp"):
                delete(api, rt, obj, propagation="Background")
    if remaining == 0:
        api.store.remove(("", "namespaces"), "", name)
