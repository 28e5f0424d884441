"""REST semantics over the store: create, get, list, update, patch, delete.

This is where the sandbox behaves like an API server rather than a key-value store: metadata
(uid, resourceVersion, creationTimestamp, generation), optimistic concurrency, defaulting,
validation, admission, dry runs, finalizers and deletion propagation. The HTTP layer
(``server.py``) only parses requests and writes responses; the controllers write through
``Api.write`` so their changes produce events like any client's.
"""

from __future__ import annotations

import copy
import random
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from k8see.sandbox.kubeapi import admission, defaults, patching, validation
from k8see.sandbox.kubeapi.apierrors import (
    already_exists,
    bad_request,
    conflict,
    not_found,
    unsupported_media_type,
)
from k8see.sandbox.kubeapi.resources import ResourceRegistry, ResourceType
from k8see.sandbox.kubeapi.selectors import field_matcher, label_matcher
from k8see.sandbox.kubeapi.store import Store

Obj = dict[str, Any]
#: Kinds whose DELETE answers with the object instead of a Status (as the typed client expects).
RETURNS_OBJECT = {"Pod", "Service", "PersistentVolumeClaim", "Namespace"}
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(_NAME_CHARS) for _ in range(n))


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


class Api:
    """The sandbox's API semantics; every method raises ``ApiError`` on refusal."""

    def __init__(self, *, store: Store, registry: ResourceRegistry) -> None:
        self.store = store
        self.registry = registry
        self._applied: dict[tuple[Any, ...], Obj] = {}
        self._lock = threading.RLock()

    # -- reads ---------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.store.get(rt.key, namespace if rt.namespaced else "", name)
        if obj is None:
            raise not_found(rt, name)
        return self._versioned(rt, obj)

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Obj:
        labels = label_matcher(label_selector)
        fields = field_matcher(field_selector, kind=rt.kind)
        with self.store.locked():
            rv = self.store.resource_version
            items = [
                self._versioned(rt, o)
                for o in self.store.list(rt.key, namespace if rt.namespaced else None)
                if labels(o) and fields(o)
            ]
        for item in items:
            item.pop("apiVersion", None)
            item.pop("kind", None)
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.group_version,
            "metadata": {"resourceVersion": str(rv)},
            "items": items,
        }

    @staticmethod
    def _versioned(rt: ResourceType, obj: Obj) -> Obj:
        obj["apiVersion"] = rt.group_version
        obj["kind"] = rt.kind
        return obj

    # -- writes --------------------------------------------------------------------------

    def _check_body(self, rt: ResourceType, namespace: str, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("the object provided is unrecognized (must be of type Object)")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if kind and kind != rt.kind:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the "
                f"expected API version ({rt.group_version})"
                if api_version != rt.group_version
                else f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
            )
        if api_version and rt.group and api_version.split("/")[0] != rt.group:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the "
                f"expected API version ({rt.group_version})"
            )
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        obj["apiVersion"], obj["kind"] = rt.group_version, rt.kind
        return obj

    def create(self, rt: ResourceType, namespace: str, body: Any, *, dry_run: bool = False) -> Obj:
        obj = self._check_body(rt, namespace, body)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{random_suffix()}"
        for field in ("resourceVersion", "uid", "deletionTimestamp", "selfLink"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        if rt.has_generation:
            meta["generation"] = 1
        defaults.reset_status(rt, obj)
        defaults.apply(rt, obj)
        validation.validate(rt, obj)
        with self.store.locked():
            if self.store.get(rt.key, meta.get("namespace", ""), meta["name"]) is not None:
                raise already_exists(rt, meta["name"])
            admission.admit_create(self, rt, obj)
            self._on_create(rt, obj)
            if dry_run:
                return obj
            stored = self.store.put(rt.key, obj)
            if rt.kind == "CustomResourceDefinition":
                self.registry.register_crd(stored)
            return stored

    def _on_create(self, rt: ResourceType, obj: Obj) -> None:
        if rt.kind == "CustomResourceDefinition":
            names = obj["spec"].get("names", {})
            obj["status"] = {
                "acceptedNames": {k: v for k, v in names.items()},
                "storedVersions": [
                    v["name"] for v in obj["spec"].get("versions", []) if v.get("storage")
                ],
                "conditions": [
                    {
                        "type": t,
                        "status": "True",
                        "reason": r,
                        "message": m,
                        "lastTransitionTime": now(),
                    }
                    for t, r, m in (
                        ("NamesAccepted", "NoConflicts", "no conflicts found"),
                        (
                            "Established",
                            "InitialNamesAccepted",
                            "the initial names have been accepted",
                        ),
                    )
                ],
            }

    def replace(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        obj = self._check_body(rt, namespace, body)
        if obj["metadata"].get("name") != name:
            raise bad_request(
                f"the name of the object ({obj['metadata'].get('name')}) does not "
                f"match the name on the URL ({name})"
            )
        with self.store.locked():
            current = self.store.get(rt.key, namespace if rt.namespaced else "", name)
            if current is None:
                raise not_found(rt, name)
            sent_rv = obj["metadata"].get("resourceVersion")
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            return self._update(rt, current, obj, subresource=subresource, dry_run=dry_run)

    def _update(
        self, rt: ResourceType, current: Obj, obj: Obj, *, subresource: str | None, dry_run: bool
    ) -> Obj:
        """Merge ``obj`` into ``current`` by the subresource rules and store it."""
        if subresource == "status":
            new = copy.deepcopy(current)
            new["status"] = obj.get("status", {})
        else:
            new = obj
            if "status" in rt.subresources and "status" in current:
                new["status"] = current["status"]
            elif "status" in rt.subresources:
                new.pop("status", None)
            meta, old_meta = new["metadata"], current["metadata"]
            for field in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "namespace",
                "deletionGracePeriodSeconds",
            ):
                if field in old_meta:
                    meta[field] = old_meta[field]
                else:
                    meta.pop(field, None)
            if rt.has_generation:
                meta["generation"] = old_meta.get("generation", 1)
                if _spec_part(new) != _spec_part(current):
                    defaults.apply(rt, new)
                    if _spec_part(new) != _spec_part(current):
                        meta["generation"] += 1
            defaults.apply(rt, new)
            validation.validate(rt, new, old=current)
        if dry_run:
            return new
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            from k8see.sandbox.kubeapi import lifecycle

            return lifecycle.finalize(self, rt, new)
        stored = self.store.put(rt.key, new)
        if rt.kind == "CustomResourceDefinition":
            self.registry.register_crd(stored)
        return stored

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        *,
        content_type: str,
        patch: Any,
        subresource: str | None = None,
        dry_run: bool = False,
        field_manager: str | None = None,
    ) -> tuple[Obj, bool]:
        """Apply a patch; return the object and whether it was created (apply only)."""
        ns = namespace if rt.namespaced else ""
        with self.store.locked():
            current = self.store.get(rt.key, ns, name)
            if content_type == "application/apply-patch+yaml":
                return self._apply(rt, namespace, name, current, patch, field_manager, dry_run)
            if current is None:
                raise not_found(rt, name)
            if content_type == "application/merge-patch+json":
                new = patching.json_merge(current, patch)
            elif content_type == "application/json-patch+json":
                new = patching.json_patch(current, patch)
            elif content_type == "application/strategic-merge-patch+json":
                if rt.custom:
                    raise unsupported_media_type(
                        "the body of the request was in an unknown "
                        "format - accepted media types include: "
                        "application/json-patch+json, "
                        "application/merge-patch+json, "
                        "application/apply-patch+yaml"
                    )
                new = patching.strategic_merge(current, patch, kind=rt.kind)
            else:
                raise unsupported_media_type(
                    "the body of the request was in an unknown format - "
                    "accepted media types include: "
                    "application/json-patch+json, "
                    "application/merge-patch+json, "
                    "application/apply-patch+yaml, "
                    "application/strategic-merge-patch+json"
                )
            if not isinstance(new, dict):
                raise bad_request("the patch produced something that is not an object")
            sent_rv = (new.get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
            new = self._check_body(rt, namespace, new)
            return self._update(rt, current, new, subresource=subresource, dry_run=dry_run), False

    def _apply(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        current: Obj | None,
        applied: Any,
        manager: str | None,
        dry_run: bool,
    ) -> tuple[Obj, bool]:
        if not manager:
            raise bad_request("PATCH, application/apply-patch+yaml requests require fieldManager")
        applied = self._check_body(rt, namespace, applied)
        if applied["metadata"].get("name") != name:
            raise bad_request(
                f"the name of the object ({applied['metadata'].get('name')}) does "
                f"not match the name on the URL ({name})"
            )
        key = (rt.key, namespace, name, manager)
        if current is None:
            created = self.create(rt, namespace, applied, dry_run=dry_run)
            if not dry_run:
                self._applied[key] = applied
            return created, True
        last = self._applied.get(key)
        new = patching.three_way(
            last_applied=last, applied=applied, live=current, kind="" if rt.custom else rt.kind
        )
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        result = self._update(rt, current, new, subresource=None, dry_run=dry_run)
        if not dry_run:
            self._applied[key] = applied
        return result, False

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        *,
        propagation: str | None = None,
        dry_run: bool = False,
        precondition_rv: str | None = None,
        precondition_uid: str | None = None,
    ) -> Obj:
        from k8see.sandbox.kubeapi import lifecycle

        with self.store.locked():
            current = self.store.get(rt.key, namespace if rt.namespaced else "", name)
            if current is None:
                raise not_found(rt, name)
            meta = current["metadata"]
            if precondition_rv and precondition_rv != meta["resourceVersion"]:
                raise conflict(rt, name)
            if precondition_uid and precondition_uid != meta["uid"]:
                raise conflict(rt, name)
            if dry_run:
                return self._deleted_response(rt, current)
            result = lifecycle.delete(self, rt, current, propagation=propagation)
            if result is not None:
                return self._versioned(rt, result)
            return self._deleted_response(rt, current)

    def _deleted_response(self, rt: ResourceType, obj: Obj) -> Obj:
        if rt.kind in RETURNS_OBJECT:
            return self._versioned(rt, obj)
        details = {
            "name": obj["metadata"]["name"],
            "kind": rt.plural,
            "uid": obj["metadata"]["uid"],
        }
        if rt.group:
            details["group"] = rt.group
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        label_selector: str | None,
        field_selector: str | None,
    ) -> Obj:
        listed = self.list(
            rt, namespace, label_selector=label_selector, field_selector=field_selector
        )
        for item in listed["items"]:
            meta = item["metadata"]
            try:
                self.delete(rt, meta.get("namespace", ""), meta["name"])
            except Exception:  # noqa: BLE001 - already gone is fine in a collection delete
                continue
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    # -- for controllers -----------------------------------------------------------------

    def write(self, rt: ResourceType, obj: Obj) -> Obj:
        """Store an object a controller changed (no validation, no concurrency check)."""
        return self._versioned(rt, self.store.put(rt.key, obj))

    def create_internal(self, rt: ResourceType, obj: Obj) -> Obj:
        """Create as a controller does: same admission as clients, so quotas apply."""
        return self.create(rt, obj["metadata"].get("namespace", ""), obj)
