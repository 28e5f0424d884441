"""What the API server serves, and generic access to namespaced objects of any kind.

The typed kubernetes client knows only the built-in kinds. A PR namespace may also hold
custom resources (the database operators', a user's own), which a deploy must know are
served before helm runs, and which a destroy must be able to find and unblock. Both go
through API discovery (``/api/v1``, ``/apis/<group>/<version>``) and plain REST paths. Every
request goes through ``kubeapi.call``, so no kubernetes exception leaves this module either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient

from k8see.errors import KubeForbidden, KubeNotFound
from k8see.integrations import kubeapi

__all__ = [
    "Resource",
    "list_objects",
    "namespaced_resources",
    "remove_finalizers",
    "served_kinds",
    "unserved",
]


@dataclass(frozen=True)
class Resource:
    """A namespaced resource type the API server serves (one per group, preferred version)."""

    group_version: str
    plural: str
    kind: str

    def path(self, namespace: str, name: str = "") -> str:
        """The REST path of the collection in ``namespace``, or of object ``name``."""
        root = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        tail = f"/{name}" if name else ""
        return f"{root}/namespaces/{namespace}/{self.plural}{tail}"


def _get(api: ApiClient, path: str, *, what: str, **params: Any) -> dict[str, Any]:
    answer = kubeapi.call(
        api.call_api,
        path,
        "GET",
        query_params=list(params.items()),
        header_params={"Accept": "application/json"},
        response_types_map={200: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
        what=what,
    )
    return answer if isinstance(answer, dict) else {}


def _resources_of(api: ApiClient, group_version: str) -> list[dict[str, Any]]:
    """The resource list of one group version; empty when it is not served."""
    path = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    try:
        found = _get(api, path, what=f"discover {group_version}")
    except KubeNotFound:
        return []
    return [r for r in found.get("resources") or [] if isinstance(r, dict)]


def served_kinds(api: ApiClient, group_version: str) -> set[str]:
    """The kinds ``group_version`` (``v1``, ``apps/v1``, ``monitoring.coreos.com/v1``) serves."""
    return {str(r.get("kind")) for r in _resources_of(api, group_version) if "/" not in r["name"]}


def unserved(api: ApiClient, wanted: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``(apiVersion, kind)`` pairs of ``wanted`` this API server does not serve.

    One discovery request per group version, however many kinds share it.
    """
    pairs = sorted(set(wanted))
    served = {gv: served_kinds(api, gv) for gv in {gv for gv, _ in pairs}}
    return [(gv, kind) for gv, kind in pairs if kind not in served[gv]]


def namespaced_resources(api: ApiClient) -> list[Resource]:
    """Every namespaced resource that can be listed and deleted, custom resources included.

    Subresources (``pods/log``) are left out, and each group is read at its preferred
    version only: an object is the same object in every version of its group.
    """
    group_versions = ["v1"]
    groups = kubeapi.call(client.ApisApi(api).get_api_versions, what="list API groups")
    for group in groups.groups or []:
        if group.preferred_version is not None:
            group_versions.append(str(group.preferred_version.group_version))
    out: list[Resource] = []
    for gv in group_versions:
        for r in _resources_of(api, gv):
            verbs = set(r.get("verbs") or [])
            if r.get("namespaced") and "/" not in r["name"] and {"list", "delete"} <= verbs:
                out.append(Resource(gv, str(r["name"]), str(r.get("kind"))))
    return out


def list_objects(api: ApiClient, resource: Resource, namespace: str) -> list[dict[str, Any]]:
    """The objects of ``resource`` in ``namespace`` (their metadata is what callers read)."""
    found = _get(
        api,
        resource.path(namespace),
        what=f"list {resource.plural} in {namespace}",
    )
    return [o for o in found.get("items") or [] if isinstance(o, dict)]


def remove_finalizers(
    api: ApiClient, *, namespace: str, resources: Iterable[Resource]
) -> tuple[list[str], list[str]]:
    """Clear the finalizers of every object of ``resources`` in ``namespace`` that has some.

    Only for a namespace that is being deleted: an object whose finalizer nobody will ever
    remove (its controller is gone) otherwise holds the namespace in Terminating forever.

    Returns:
        ``(unblocked, unreadable)``: ``Kind/name`` of each object whose finalizers were
        removed, and the resources this identity may not list or patch (RBAC), whose objects
        are left as they are.
    """
    unblocked: list[str] = []
    unreadable: list[str] = []
    for resource in resources:
        try:
            objects = list_objects(api, resource, namespace)
            for obj in objects:
                meta = obj.get("metadata") or {}
                if not meta.get("finalizers"):
                    continue
                name = str(meta.get("name"))
                try:
                    kubeapi.call(
                        api.call_api,
                        resource.path(namespace, name),
                        "PATCH",
                        header_params={
                            "Accept": "application/json",
                            "Content-Type": "application/merge-patch+json",
                        },
                        body={"metadata": {"finalizers": None}},
                        response_types_map={200: "object"},
                        auth_settings=["BearerToken"],
                        _return_http_data_only=True,
                        what=f"remove the finalizers of {resource.kind} {namespace}/{name}",
                    )
                except KubeNotFound:
                    continue  # gone meanwhile: nothing left to unblock
                unblocked.append(f"{resource.kind}/{name}")
        except KubeForbidden:
            unreadable.append(f"{resource.plural}.{resource.group_version}")
        except KubeNotFound:
            continue  # the resource type went away (a CRD deleted meanwhile)
    return unblocked, unreadable
