"""The smallest OpenAPI answers that keep kubectl and Helm validation on.

What the clients do (client-go and cli-runtime as vendored by kubectl 1.31 and Helm 3.17):

- Validation (``kubectl apply``, ``helm install/upgrade``) first asks ``/openapi/v3`` whether the
  server supports server-side field validation: it looks, in the group-version's document, for
  a PATCH operation tagged with the kind's ``x-kubernetes-group-version-kind`` that takes a
  ``fieldValidation`` query parameter. When it does, the client skips client-side schema
  validation and leaves validation to the server. So every served kind gets such a path here.
- ``kubectl apply`` may also load ``/openapi/v2``, which client-go only requests as protobuf
  (``application/com.github.proto-openapi.spec.v2@v1.0+protobuf``) and decodes with
  gnostic's ``openapi_v2.Document``. A document with no definitions makes every lookup miss, and
  kubectl then builds strategic merge patches from its compiled-in types (and JSON merge
  patches for custom resources), which is what it would do anyway. The PATCH operations above
  have no request body on purpose: with one, kubectl would prefer a v3 schema we do not serve.

The sandbox accepts ``fieldValidation`` but does not check fields against schemas
(documented in docs/sandbox.md).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from k8see.sandbox.kubeapi.discovery import KUBE_VERSION
from k8see.sandbox.kubeapi.resources import ResourceRegistry, ResourceType

Obj = dict[str, Any]
V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2)."""
    length, out = len(payload), bytearray([(number << 3) | 2])
    while True:
        byte = length & 0x7F
        length >>= 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes(out) + payload


def openapi_v2_protobuf() -> bytes:
    """``openapi_v2.Document{swagger: "2.0", info: {title, version}, paths: {}}``."""
    info = _field(1, b"Kubernetes") + _field(2, KUBE_VERSION["gitVersion"].encode())
    return _field(1, b"2.0") + _field(2, info) + _field(8, b"")


def openapi_v2_json() -> Obj:
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBE_VERSION["gitVersion"]},
        "paths": {},
        "definitions": {},
    }


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def v3_root(registry: ResourceRegistry) -> Obj:
    paths = {}
    for group, versions in registry.group_versions().items():
        for version in versions:
            doc = json.dumps(v3_document(registry, group, version), sort_keys=True)
            digest = hashlib.sha512(doc.encode()).hexdigest()[:64].upper()
            path = _gv_path(group, version)
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}


def _operation(rt: ResourceType) -> Obj:
    return {
        "x-kubernetes-group-version-kind": {
            "group": rt.group,
            "version": rt.version,
            "kind": rt.kind,
        },
        "x-kubernetes-action": "patch",
        "parameters": [
            {"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
            for p in ("dryRun", "fieldManager", "fieldValidation", "force")
        ],
        "responses": {"200": {"description": "OK"}},
    }


def v3_document(registry: ResourceRegistry, group: str, version: str) -> Obj | None:
    served = [rt for rt in registry.all() if rt.group == group and rt.version == version]
    if not served:
        return None
    prefix = "/" + _gv_path(group, version)
    paths = {}
    for rt in served:
        scope = f"{prefix}/namespaces/{{namespace}}" if rt.namespaced else prefix
        paths[f"{scope}/{rt.plural}/{{name}}"] = {"patch": _operation(rt)}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBE_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": {}},
    }
