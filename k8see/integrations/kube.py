"""The Kubernetes API, as k8see uses it: namespaces and the objects k8see applies itself.

Every call goes through ``kubeapi.call()`` (retries, and errors as the ``KubeError`` family
without API bodies). What a deploy reads back from the cluster (health check, pod
diagnostics) is in ``health``; deleting a namespace, stuck finalizers included, is in
``namespace_removal``. The pools' rights inside a PR namespace come from RoleBindings that
``ensure_namespace`` writes there, so no pool needs those rights in every namespace
(docs/operations.md).

Ownership (docs/environments.md "1. The namespace"): a namespace is k8see's to touch only when
it is labelled ``app.kubernetes.io/managed-by`` ``k8see`` (or the reference's
``github-actions``, adopted) and its ``k8s-ee/repository`` annotation, if set, names the
calling repository.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient

from k8see import names
from k8see.errors import (
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    PolicyError,
    RetryLater,
)
from k8see.integrations.kubeapi import call, load_configuration
from k8see.settings import PlatformSettings, ServiceAccountRef

__all__ = [
    "ApiServerEndpoint",
    "api_server_addresses",
    "api_server_endpoint",
    "apply_objects",
    "ensure_bindings",
    "ensure_namespace",
    "find_namespaces",
    "make_api",
    "namespace_state",
    "now_iso",
    "role_binding_manifest",
]

OWNERS = (names.MANAGED_BY, names.LEGACY_MANAGED_BY)
#: Annotations written once at creation and never overwritten by a later deploy.
CREATE_ONLY_ANNOTATIONS = (names.ANN_CREATED_AT, names.ANN_CREATED_BY)


def now_iso() -> str:
    """UTC now as the reference writes it: ``%Y-%m-%dT%H:%M:%SZ``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_api(settings: PlatformSettings) -> ApiClient:
    """An API client from ``deploy.kubeconfig``, or the pod's service account when empty."""
    return ApiClient(load_configuration(settings))


def _meta(obj: Any) -> tuple[dict[str, str], dict[str, str]]:
    meta = obj.metadata
    return dict(meta.labels or {}), dict(meta.annotations or {})


def check_owner(
    *, name: str, labels: Mapping[str, str], annotations: Mapping[str, str], repo: str
) -> None:
    """Refuse a namespace k8see does not own (docs/environments.md "1. The namespace"), saying
    whose it is."""
    manager = labels.get(names.LABEL_MANAGED_BY, "")
    if manager not in OWNERS:
        raise PolicyError(
            f"Namespace {name} exists and is not managed by k8see "
            f"(managed-by: {manager or 'unset'}); k8see will not touch it.",
            hint="Pick another projectId in k8s-ee.yaml, or ask the cluster admin to remove "
            "or relabel that namespace.",
        )
    owner = annotations.get(names.ANN_REPOSITORY, "")
    if owner and owner != repo:
        raise PolicyError(
            f"Namespace {name} belongs to repository {owner}, not {repo}.",
            hint="Two repositories use the same projectId; pick a unique projectId in k8s-ee.yaml.",
        )


def ensure_namespace(
    *,
    api: ApiClient,
    name: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    repo: str,
    bindings: Mapping[str, ServiceAccountRef] | None = None,
) -> bool:
    """Create the PR namespace, or check ownership and relabel an existing one; then bind.

    ``bindings`` (``deploy.namespace_bindings``) are written on every call, not only at
    creation: a namespace made by an older k8see has none, and helm runs right after.

    Returns:
        True when the namespace was created, False when it existed.

    Raises:
        PolicyError: the namespace belongs to someone else; it is left untouched.
        RetryLater: the namespace is still being deleted (a destroy just ran).
        KubeConflict: a RoleBinding of a bound ClusterRole's name refers to another role.
    """
    core = client.CoreV1Api(api)
    for _ in range(2):
        try:
            existing = call(core.read_namespace, name, what=f"read namespace {name}")
        except KubeNotFound:
            body = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "labels": dict(labels),
                    "annotations": {names.ANN_CREATED_AT: now_iso(), **annotations},
                },
            }
            try:
                call(core.create_namespace, body, what=f"create namespace {name}")
            except KubeConflict:
                continue  # created concurrently: treat as existing
            ensure_bindings(api=api, namespace=name, bindings=bindings or {})
            return True
        current_labels, current_annotations = _meta(existing)
        check_owner(name=name, labels=current_labels, annotations=current_annotations, repo=repo)
        if existing.status is not None and existing.status.phase == "Terminating":
            raise RetryLater(f"Namespace {name} is still being deleted.", delay_seconds=10)
        new_annotations = {
            k: v
            for k, v in annotations.items()
            if k not in CREATE_ONLY_ANNOTATIONS or k not in current_annotations
        }
        patch = {"metadata": {"labels": dict(labels), "annotations": new_annotations}}
        call(
            core.patch_namespace,
            name,
            patch,
            what=f"relabel namespace {name}",
            _content_type="application/merge-patch+json",
        )
        ensure_bindings(api=api, namespace=name, bindings=bindings or {})
        return False
    raise KubeConflict(f"Namespace {name} kept appearing and disappearing.", status=409)


def role_binding_manifest(
    *, namespace: str, cluster_role: str, account: ServiceAccountRef
) -> dict[str, Any]:
    """The RoleBinding that gives ``account`` the rules of ``cluster_role`` in ``namespace``.

    It is named after the ClusterRole, so there is one per role and a rerun finds it.
    """
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": cluster_role,
            "namespace": namespace,
            "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY},
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role,
        },
        "subjects": [_subject(account)],
    }


def _subject(account: ServiceAccountRef) -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": account.name, "namespace": account.namespace}


def ensure_bindings(
    *, api: ApiClient, namespace: str, bindings: Mapping[str, ServiceAccountRef]
) -> list[str]:
    """Bind each ServiceAccount to its ClusterRole inside ``namespace``; idempotent.

    A missing RoleBinding is created (one created concurrently, a 409, counts as there); one
    that lacks its ServiceAccount gets it added, keeping other subjects. Writing a binding to
    a ClusterRole needs the ``bind`` verb on that role: the platform chart grants it for
    exactly these roles.

    Returns:
        Names of the RoleBindings created or changed; empty when all were in place.

    Raises:
        KubeConflict: a RoleBinding of that name refers to another role (roleRef is fixed).
    """
    rbac = client.RbacAuthorizationV1Api(api)
    changed: list[str] = []
    for role, account in sorted(bindings.items()):
        what = f"bind {account.namespace}/{account.name} to {role} in {namespace}"
        body = role_binding_manifest(namespace=namespace, cluster_role=role, account=account)
        try:
            current = call(rbac.read_namespaced_role_binding, role, namespace, what=what)
        except KubeNotFound:
            try:
                call(rbac.create_namespaced_role_binding, namespace, body, what=what)
                changed.append(role)
                continue
            except KubeConflict:
                current = call(rbac.read_namespaced_role_binding, role, namespace, what=what)
        ref = current.role_ref
        if (ref.kind, ref.name) != ("ClusterRole", role):
            raise KubeConflict(
                f"RoleBinding {namespace}/{role} refers to {ref.kind} {ref.name}, not to the "
                f"ClusterRole {role}.",
                status=409,
                hint=f"Delete it (`kubectl -n {namespace} delete rolebinding {role}`); the next "
                "deploy writes the right one.",
            )
        # Every field of the other subjects is kept (a User's apiGroup, say).
        subjects = [api.sanitize_for_serialization(s) for s in current.subjects or []]
        mine = _subject(account)
        if not any({k: s.get(k) for k in mine} == mine for s in subjects):
            call(
                rbac.patch_namespaced_role_binding,
                role,
                namespace,
                {"subjects": [*subjects, mine]},
                what=what,
                _content_type="application/merge-patch+json",
            )
            changed.append(role)
    return changed


@dataclass(frozen=True)
class _Kind:
    api: Callable[[ApiClient], Any]
    suffix: str


_KINDS = {
    ("v1", "ResourceQuota"): _Kind(client.CoreV1Api, "resource_quota"),
    ("v1", "LimitRange"): _Kind(client.CoreV1Api, "limit_range"),
    ("v1", "Secret"): _Kind(client.CoreV1Api, "secret"),
    ("v1", "ConfigMap"): _Kind(client.CoreV1Api, "config_map"),
    ("v1", "ServiceAccount"): _Kind(client.CoreV1Api, "service_account"),
    ("networking.k8s.io/v1", "NetworkPolicy"): _Kind(client.NetworkingV1Api, "network_policy"),
}


def apply_objects(
    *, api: ApiClient, namespace: str, manifests: Iterable[Mapping[str, Any]]
) -> list[str]:
    """Create each object, or replace it when it exists; running it twice changes nothing.

    Returns:
        ``kind/name`` of each object applied, in order.
    """
    applied: list[str] = []
    for manifest in manifests:
        key = (str(manifest.get("apiVersion")), str(manifest.get("kind")))
        kind = _KINDS.get(key)
        if kind is None:
            raise KubeError(f"k8see cannot apply {key[1]} ({key[0]}) objects.")
        body = json.loads(json.dumps(manifest))  # a private copy we may annotate
        body.setdefault("metadata", {})["namespace"] = namespace
        name = body["metadata"]["name"]
        what = f"apply {key[1]} {namespace}/{name}"
        api_obj = kind.api(api)
        try:
            call(getattr(api_obj, f"create_namespaced_{kind.suffix}"), namespace, body, what=what)
        except KubeConflict:
            for attempt in range(3):
                current = call(
                    getattr(api_obj, f"read_namespaced_{kind.suffix}"), name, namespace, what=what
                )
                body["metadata"]["resourceVersion"] = current.metadata.resource_version
                try:
                    call(
                        getattr(api_obj, f"replace_namespaced_{kind.suffix}"),
                        name,
                        namespace,
                        body,
                        what=what,
                    )
                    break
                except KubeConflict:
                    if attempt == 2:
                        raise
        applied.append(f"{key[1]}/{name}")
    return applied


@dataclass(frozen=True)
class ApiServerEndpoint:
    """Where PR pods reach the API server: the ``default/kubernetes`` Service and endpoints.

    Attributes:
        cidrs: The Service IP and the endpoint IPs as ``/32`` (``/128``) blocks.
        ports: The Service's port (443 on most clusters) and the endpoints' ports (where the
            API server really listens: 6443 on kubeadm, 443 on EKS, anything elsewhere).
    """

    cidrs: list[str]
    ports: list[int]


def api_server_endpoint(*, api: ApiClient) -> ApiServerEndpoint:
    """The API server's addresses and ports, for the egress policy (docs/environments.md "2.
    Guardrails").

    Both the Service's and the endpoints' are needed because some CNIs evaluate policy after
    kube-proxy's DNAT. Endpoints, not EndpointSlices: the deploy pool may ``get`` this one
    object, while listing EndpointSlices would need ``list`` in every namespace. Nothing
    readable gives empty lists, which leave the API rule out rather than failing the deploy.
    """
    core = client.CoreV1Api(api)
    found: list[str] = []
    ports: list[int] = []
    try:
        svc = call(
            core.read_namespaced_service,
            "kubernetes",
            "default",
            what="read the kubernetes Service",
        )
        if svc.spec and svc.spec.cluster_ip and svc.spec.cluster_ip != "None":
            found.append(str(svc.spec.cluster_ip))
        ports.extend(int(p.port) for p in (svc.spec.ports if svc.spec else None) or [])
        endpoints = call(
            core.read_namespaced_endpoints,
            "kubernetes",
            "default",
            what="read the kubernetes endpoints",
        )
        for subset in endpoints.subsets or []:
            found.extend(str(a.ip) for a in subset.addresses or [] if a.ip)
            ports.extend(int(p.port) for p in subset.ports or [] if p.port)
    except (KubeNotFound, KubeForbidden):
        pass
    cidrs = [f"{ip}/32" if ":" not in ip else f"{ip}/128" for ip in dict.fromkeys(found)]
    return ApiServerEndpoint(cidrs=cidrs, ports=sorted(set(ports)))


def api_server_addresses(*, api: ApiClient) -> list[str]:
    """The API server's Service IP and endpoint IPs (``api_server_endpoint().cidrs``)."""
    return api_server_endpoint(api=api).cidrs


def find_namespaces(*, api: ApiClient, repo: str, pr: int) -> list[str]:
    """Namespaces k8see (or the reference) made for this repository's PR ``pr``."""
    core = client.CoreV1Api(api)
    found = call(
        core.list_namespace,
        label_selector=f"{names.LABEL_PR}={int(pr)}",
        what=f"list namespaces of PR {pr}",
    )
    out = []
    for ns in found.items or []:
        labels, annotations = _meta(ns)
        if labels.get(names.LABEL_MANAGED_BY) not in OWNERS:
            continue
        if labels.get(names.LABEL_PR) != str(pr):
            continue  # a server that ignores the selector must not widen the match
        if annotations.get(names.ANN_REPOSITORY) == repo:
            out.append(str(ns.metadata.name))
    return sorted(out)


def namespace_state(*, api: ApiClient, name: str, repo: str) -> tuple[str, str]:
    """Why k8see must not delete namespace ``name`` now, or "" when it may.

    Returns:
        ``(state, preserve_until)``; state is ``not-found``, ``not-managed``,
        ``different-repo``, ``preserved`` or "" (ours, deletable).
    """
    try:
        ns = call(client.CoreV1Api(api).read_namespace, name, what=f"read namespace {name}")
    except KubeNotFound:
        return "not-found", ""
    labels, annotations = _meta(ns)
    if labels.get(names.LABEL_MANAGED_BY) not in OWNERS:
        return "not-managed", ""
    if annotations.get(names.ANN_REPOSITORY, "") not in ("", repo):
        return "different-repo", ""
    if labels.get(names.LABEL_PRESERVE) == "true":
        return "preserved", annotations.get(names.ANN_PRESERVE_UNTIL, "")
    return "", ""
