"""Subresources with their own shapes: ``pods/log`` (text) and ``*/scale`` (autoscaling/v1 Scale).

``status`` needs no module: it is an update that only takes ``status`` (see ``Api._update``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from k8see.sandbox.kubeapi import patching
from k8see.sandbox.kubeapi.api import Api
from k8see.sandbox.kubeapi.apierrors import bad_request, method_not_allowed
from k8see.sandbox.kubeapi.routes import Route

if TYPE_CHECKING:
    from k8see.sandbox.kubeapi.server import Handler

Obj = dict[str, Any]


def pod_log(handler: Handler, *, api: Api, route: Route, query: dict[str, str]) -> None:
    pod = api.get(route.rt, route.namespace or "", route.name or "")
    container = query.get("container") or (pod["spec"].get("containers") or [{}])[0].get("name", "")
    text = (
        f"simulated by the k8see sandbox: no process runs for container {container} "
        f"of pod {pod['metadata']['name']}\n"
    )
    handler.send_bytes(200, text.encode(), content_type="text/plain")


def _scale_of(obj: Obj) -> Obj:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    meta = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": spec.get("replicas", 0)},
        "status": {
            "replicas": status.get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        },
    }


def scale(handler: Handler, *, api: Api, route: Route, method: str, body: Any) -> None:
    ns, name = route.namespace or "", route.name or ""
    current = api.get(route.rt, ns, name)
    if method == "GET":
        handler.send_json(200, _scale_of(current))
        return
    if method == "PUT":
        wanted = body
    elif method == "PATCH":
        ctype = (handler.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype == "application/json-patch+json":
            wanted = patching.json_patch(_scale_of(current), body)
        else:
            wanted = patching.json_merge(_scale_of(current), body)
    else:
        raise method_not_allowed(
            f"the server does not allow this method on the requested resource ({method})"
        )
    replicas = ((wanted or {}).get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        raise bad_request("spec.replicas must be a non-negative integer")
    current["spec"]["replicas"] = replicas
    updated = api.replace(route.rt, ns, name, current)
    handler.send_json(200, _scale_of(updated))
