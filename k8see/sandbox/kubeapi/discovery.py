"""Discovery documents: /version, /api, /api/v1, /apis, /apis/{group}, /apis/{group}/{version}.

kubectl 1.31 and Helm 3.17 ask for aggregated discovery first (``Accept:
application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,...,application/json``).
Their Accept lists plain ``application/json`` as the last choice, and client-go decides by the
response Content-Type, so answering the legacy documents as ``application/json`` is what an
older server does and what the clients fall back to. Sending one format keeps this module
small.
"""

from __future__ import annotations

from typing import Any

from k8see.sandbox.kubeapi.resources import ResourceRegistry, ResourceType

Obj = dict[str, Any]

KUBE_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.4",
    "gitCommit": "k8see-sandbox",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22.10",
    "compiler": "gc",
    "platform": "linux/amd64",
}
#: Kinds ``kubectl get all`` lists.
CATEGORY_ALL = {"Pod", "Service", "Deployment", "ReplicaSet", "StatefulSet", "Job", "CronJob"}
_SUB_VERBS = {
    "status": ["get", "patch", "update"],
    "scale": ["get", "patch", "update"],
    "log": ["get"],
    "proxy": ["create", "delete", "get", "patch", "update"],
}
_SUB_KIND = {"scale": ("Scale", "autoscaling", "v1"), "proxy": ("ServiceProxyOptions", "", "v1")}


def api_versions(server_address: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group(name: str, versions: list[str]) -> Obj:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(registry: ResourceRegistry) -> Obj:
    groups = [_group(g, vs) for g, vs in registry.group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: ResourceRegistry, group: str) -> Obj | None:
    versions = registry.group_versions().get(group)
    if not versions or not group:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, versions)}


def _resource(rt: ResourceType) -> list[Obj]:
    main: Obj = {
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": list(rt.verbs),
    }
    if rt.short_names:
        main["shortNames"] = list(rt.short_names)
    categories = list(rt.categories) + (["all"] if rt.kind in CATEGORY_ALL else [])
    if categories:
        main["categories"] = categories
    out = [main]
    for sub in rt.subresources:
        entry: Obj = {
            "name": f"{rt.plural}/{sub}",
            "singularName": "",
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": _SUB_VERBS.get(sub, ["get"]),
        }
        if sub in _SUB_KIND:
            kind, group, version = _SUB_KIND[sub]
            entry.update(kind=kind, group=group, version=version)
        out.append(entry)
    return out


def api_resource_list(registry: ResourceRegistry, group: str, version: str) -> Obj | None:
    served = [rt for rt in registry.all() if rt.group == group and rt.version == version]
    if not served:
        return None
    gv = f"{group}/{version}" if group else version
    resources = [entry for rt in served for entry in _resource(rt)]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }
