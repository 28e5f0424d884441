"""Preview secrets: Secrets the platform team keeps per project, copied into each PR namespace.

A PR namespace is created by k8see, so nobody can put a Secret there beforehand, and a PR's
own code must never be the source of one. The platform team keeps them instead in a source
namespace per project, named by ``deploy.preview_secrets_namespace`` (default
``{projectId}-preview-secrets``), and opts each Secret in with the label
``k8see.dev/preview-secret: "true"``. On every deploy the labelled Secrets are copied into the
PR namespace under the same names, copies the source no longer has are deleted, and the
namespace's deletion on close removes the rest. ``envFrom: [{secretRef: {name: ...}}]`` in
``k8s-ee.yaml`` then refers to them; a name the source does not provide fails the deploy
before helm, naming the Secret and where the platform team should create it.

Trust: ``projectId`` is the repository's to choose, so the source namespace must carry the
annotation ``k8s-ee/repository: <owner>/<repo>`` naming the PR's repository (as the PR
namespaces do); another repository that picks the same ``projectId`` gets nothing. Only
``Opaque``, ``kubernetes.io/basic-auth``, ``kubernetes.io/ssh-auth``, ``kubernetes.io/tls``
and ``kubernetes.io/dockerconfigjson`` Secrets are copied, never a service-account token.
The deploy pool needs ``get``/``list`` on Secrets in the source namespaces: a Role and
RoleBinding there, which the platform chart renders for ``previewSecrets.namespaces``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient

from k8see import names
from k8see.errors import DeployFailed, KubeForbidden, KubeNotFound, Where
from k8see.integrations.kube import apply_objects
from k8see.integrations.kubeapi import call

__all__ = ["LABEL_COPIED_FROM", "LABEL_PREVIEW_SECRET", "SecretSync", "sync", "wanted_secrets"]

#: The opt-in label on a Secret of the source namespace.
LABEL_PREVIEW_SECRET = "k8see.dev/preview-secret"
#: On each copy: the namespace it came from (how stale copies are found).
LABEL_COPIED_FROM = "k8see.dev/copied-from"
COPIED_TYPES = frozenset(
    {
        "Opaque",
        "kubernetes.io/basic-auth",
        "kubernetes.io/ssh-auth",
        "kubernetes.io/tls",
        "kubernetes.io/dockerconfigjson",
    }
)


@dataclass(frozen=True)
class SecretSync:
    """What one deploy did: the source namespace, and the Secrets copied and removed."""

    source: str
    copied: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)


def wanted_secrets(config: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """``(name, optional)`` of every Secret the config's ``envFrom`` refers to."""
    out = []
    for item in config.get("envFrom") or []:
        ref = item.get("secretRef") if isinstance(item, Mapping) else None
        if isinstance(ref, Mapping) and ref.get("name"):
            out.append((str(ref["name"]), bool(ref.get("optional"))))
    return out


def source_namespace(template: str, *, project_id: str) -> str:
    return template.replace("{projectId}", project_id) if template else ""


def sync(
    *,
    api: ApiClient,
    template: str,
    repo: str,
    project_id: str,
    namespace: str,
    config: Mapping[str, Any],
    config_file: str,
) -> SecretSync:
    """Copy the project's preview secrets into ``namespace`` and check ``envFrom`` against them.

    Raises:
        DeployFailed: ``envFrom`` names a Secret the platform does not provide for this
            repository (the message says which, and where it would come from).
        KubeError: the API refused or failed (e.g. the deploy pool may not read the source).
    """
    source = source_namespace(template, project_id=project_id)
    wanted = wanted_secrets(config)
    available = _available(api, source=source, repo=repo) if source else {}
    copies = {
        name: _copy(secret, source=source)
        for name, secret in available.items()
        if (secret.type or "Opaque") in COPIED_TYPES
    }
    skipped = {
        name: f"type {secret.type} is never copied"
        for name, secret in available.items()
        if name not in copies
    }
    missing = [name for name, optional in wanted if name not in copies and not optional]
    if missing:
        raise DeployFailed(
            f"envFrom names Secret {', '.join(repr(n) for n in missing)}, which the platform "
            f"does not provide for {repo}.",
            hint=_missing_hint(source, repo=repo),
            where=Where(file=config_file, field="envFrom"),
        )
    copied = apply_objects(api=api, namespace=namespace, manifests=copies.values())
    removed = _remove_stale(api, namespace=namespace, keep=copies)
    return SecretSync(
        source=source,
        copied=tuple(c.split("/", 1)[1] for c in copied),
        removed=tuple(removed),
        skipped=skipped,
    )


def _missing_hint(source: str, *, repo: str) -> str:
    if not source:
        return (
            "This platform copies no preview secrets (deploy.preview_secrets_namespace is "
            "empty); remove the secretRef, or ask the platform team to set it up."
        )
    return (
        f"Ask the platform team to create it in namespace {source} (annotated "
        f"{names.ANN_REPOSITORY}={repo}) with the label {LABEL_PREVIEW_SECRET}=true, or mark "
        "the secretRef optional: true. A PR's own files never become Secrets."
    )


def _available(api: ApiClient, *, source: str, repo: str) -> dict[str, Any]:
    """The opted-in Secrets of ``source``, if that namespace belongs to ``repo``."""
    core = client.CoreV1Api(api)
    try:
        ns = call(core.read_namespace, source, what=f"read namespace {source}")
    except KubeNotFound:
        return {}
    owner = (ns.metadata.annotations or {}).get(names.ANN_REPOSITORY, "")
    if owner != repo:
        return {}  # someone else's project, or not bound to a repository: nothing is shared
    try:
        found = call(
            core.list_namespaced_secret,
            source,
            label_selector=f"{LABEL_PREVIEW_SECRET}=true",
            what=f"list the preview secrets of {source}",
        )
    except KubeForbidden as exc:
        raise KubeForbidden(
            f"The deploy pool may not read Secrets in {source}.",
            hint="Give it get/list there: the platform chart's previewSecrets.namespaces.",
            status=403,
        ) from exc
    return {item.metadata.name: item for item in found.items}


def _copy(secret: Any, *, source: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret.metadata.name,
            "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY, LABEL_COPIED_FROM: source},
        },
        "type": secret.type or "Opaque",
        "data": dict(secret.data or {}),
    }


def _remove_stale(api: ApiClient, *, namespace: str, keep: Mapping[str, Any]) -> Iterable[str]:
    core = client.CoreV1Api(api)
    found = call(
        core.list_namespaced_secret,
        namespace,
        label_selector=LABEL_COPIED_FROM,
        what=f"list the copied secrets of {namespace}",
    )
    removed = []
    for item in found.items:
        name = item.metadata.name
        if name in keep:
            continue
        with contextlib.suppress(KubeNotFound):
            call(core.delete_namespaced_secret, name, namespace, what=f"delete secret {name}")
        removed.append(name)
    return removed
