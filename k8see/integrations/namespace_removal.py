"""Deleting a PR namespace so that it is really gone, stuck finalizers included.

A namespace is deleted by the namespace controller, which deletes what it holds and waits for
every object's finalizers. An object whose finalizer nobody removes (its operator is not
installed, or crashed) keeps the namespace in Terminating forever. Clearing the namespace's
own finalizers then "works", but only in appearance: the objects stay in etcd, orphaned, and
reappear the day a namespace of the same name (``{projectId}-pr-N``) is created again.

So the order is: strip PVC finalizers (their storage driver may be gone), delete, wait
``timeout_seconds``; then remove the finalizers of every leftover object of every namespaced
resource discovery finds (custom resources included) and wait again. Only when the
namespace controller reports no content left (the namespace's ``NamespaceContentRemaining``
and ``NamespaceFinalizersRemaining`` conditions) are the namespace's own finalizers cleared,
for a namespace blocked by something other than its content (an aggregated API that is down).
When content remains that k8see could not unblock, nothing is forced: a ``KubeError`` names
it and the destroy is retried.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient

from k8see.errors import KubeConflict, KubeError, KubeNotFound
from k8see.integrations import discovery
from k8see.integrations.kube import namespace_state
from k8see.integrations.kubeapi import call

__all__ = ["UNBLOCKED_WAIT_SECONDS", "NamespaceRemoval", "delete_namespace"]

#: How long the namespace controller gets to finish once leftover finalizers are removed
#: (it looks again about 8 s after it last found content), and once the namespace is forced.
UNBLOCKED_WAIT_SECONDS = 60.0
#: Namespace conditions that mean objects are still there (the controller's own report).
CONTENT_CONDITIONS = ("NamespaceContentRemaining", "NamespaceFinalizersRemaining")


@dataclass(frozen=True)
class NamespaceRemoval:
    """What ``delete_namespace`` did.

    Attributes:
        deleted: The namespace is gone (or going) because of this call.
        skipped: Why nothing was deleted: ``not-found``, ``not-managed``, ``different-repo``
            or ``preserved``; empty when deleted.
        removed: ``kind/name`` of what was removed, PVCs whose finalizers were stripped first.
        unblocked: ``Kind/name`` of leftover objects whose finalizers were removed so the
            namespace could go (custom resources whose controller never finished them).
        forced: The namespace's own finalizers were cleared (nothing was left inside it).
        preserve_until: The preserve deadline, when skipped as preserved.
    """

    deleted: bool
    skipped: str = ""
    removed: list[str] = field(default_factory=list)
    unblocked: list[str] = field(default_factory=list)
    forced: bool = False
    preserve_until: str = ""


def delete_namespace(
    *,
    api: ApiClient,
    name: str,
    repo: str,
    timeout_seconds: float,
    poll_seconds: float = 1.0,
    on_poll: Callable[[], None] | None = None,
) -> NamespaceRemoval:
    """Delete a PR namespace k8see owns, unless preserved (docs/environments.md "Destroy"), leaving
    nothing.

    A namespace that is not there is done, not an error; one already terminating (an
    earlier destroy that gave up) is finished. ``on_poll`` runs while waiting (to renew the
    lease).

    Raises:
        KubeError: objects the controller still reports could not be unblocked (RBAC, an API
            that does not answer); the namespace is left terminating, never forced.
    """
    core = client.CoreV1Api(api)
    state, until = namespace_state(api=api, name=name, repo=repo)
    if state:
        return NamespaceRemoval(deleted=False, skipped=state, preserve_until=until)
    removed: list[str] = []
    try:
        pvcs = call(core.list_namespaced_persistent_volume_claim, name, what=f"list PVCs in {name}")
        for pvc in pvcs.items or []:
            pvc_name = str(pvc.metadata.name)
            if pvc.metadata.finalizers:
                call(
                    core.patch_namespaced_persistent_volume_claim,
                    pvc_name,
                    name,
                    {"metadata": {"finalizers": None}},
                    what=f"unblock PVC {name}/{pvc_name}",
                    _content_type="application/merge-patch+json",
                )
            removed.append(f"PersistentVolumeClaim/{pvc_name}")
        with contextlib.suppress(KubeConflict):  # already terminating: a destroy started it
            call(core.delete_namespace, name, what=f"delete namespace {name}")
    except KubeNotFound:
        return NamespaceRemoval(deleted=True, removed=[*removed, f"Namespace/{name}"])
    removed.append(f"Namespace/{name}")
    wait = _Waiter(core, name, poll_seconds, on_poll)
    if wait.gone(timeout_seconds):
        return NamespaceRemoval(deleted=True, removed=removed)
    unblocked, unreadable = discovery.remove_finalizers(
        api, namespace=name, resources=discovery.namespaced_resources(api)
    )
    if wait.gone(UNBLOCKED_WAIT_SECONDS):
        return NamespaceRemoval(deleted=True, removed=removed, unblocked=unblocked)
    remaining = _content_remaining(core, name)
    if remaining is None:
        return NamespaceRemoval(deleted=True, removed=removed, unblocked=unblocked)
    if remaining:
        cannot = f" k8see may not list or patch: {', '.join(unreadable)}." if unreadable else ""
        raise KubeError(
            f"Namespace {name} is still terminating: {'; '.join(remaining)}.{cannot}",
            hint=f"See `kubectl get namespace {name} -o yaml` (status.conditions). k8see does "
            "not force a namespace that still holds objects: they would come back when the "
            "PR is deployed again. The destroy is retried.",
        )
    _force(core, name)
    if not wait.gone(UNBLOCKED_WAIT_SECONDS):
        raise KubeError(
            f"Namespace {name} is still terminating after its finalizers were cleared.",
            hint=f"Inspect it with `kubectl get namespace {name} -o yaml`; an API service "
            "that is down can block namespace deletion.",
        )
    return NamespaceRemoval(deleted=True, removed=removed, unblocked=unblocked, forced=True)


def _content_remaining(core: Any, name: str) -> list[str] | None:
    """What the namespace controller says is left in ``name``; None when it is gone."""
    try:
        ns = call(core.read_namespace, name, what=f"read namespace {name}")
    except KubeNotFound:
        return None
    conditions = (ns.status.conditions if ns.status else None) or []
    return [
        str(c.message or c.type)
        for c in conditions
        if c.type in CONTENT_CONDITIONS and c.status == "True"
    ]


def _force(core: Any, name: str) -> None:
    """Clear the namespace's own finalizers (``kubernetes``): it holds nothing any more."""
    body = {"metadata": {"name": name}, "spec": {"finalizers": []}}
    with contextlib.suppress(KubeNotFound):
        call(
            core.patch_namespace,
            name,
            {"metadata": {"finalizers": None}},
            what=f"clear finalizers of namespace {name}",
            _content_type="application/merge-patch+json",
        )
        call(core.replace_namespace_finalize, name, body, what=f"finalize namespace {name}")


@dataclass
class _Waiter:
    core: Any
    name: str
    poll_seconds: float
    on_poll: Callable[[], None] | None

    def gone(self, timeout_seconds: float) -> bool:
        """True once the namespace is gone; False after ``timeout_seconds``."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                call(self.core.read_namespace, self.name, what=f"read namespace {self.name}")
            except KubeNotFound:
                return True
            if time.monotonic() >= deadline:
                return False
            if self.on_poll is not None:
                self.on_poll()
            time.sleep(self.poll_seconds)
