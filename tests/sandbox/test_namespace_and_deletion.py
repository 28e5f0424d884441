"""Deletion semantics: namespaces, finalizers and ownerReference garbage collection.

Covers: deleting a namespace marks it Terminating (phase and deletionTimestamp) while a
finalizer holds an object in it; creating into it is 403 Forbidden with the real message;
removing the finalizer lets the namespace go; an object with a finalizer stays with a
deletionTimestamp until the finalizer is removed; Background deletion removes dependents;
Orphan keeps them and strips the reference.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from tests.fixtures.kube import TEST_IMAGE

pytestmark = pytest.mark.timeout(90)


def eventually(check: Callable[[], bool], *, what: str, attempts: int = 300) -> None:
    """Poll ``check`` (every 0.1 s) until it holds; the pytest timeout guards against hangs."""
    for _ in range(attempts):
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def gone(read: Callable[[], Any]) -> bool:
    try:
        read()
    except client.ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def test_namespace_terminates_after_finalizers(kube_api_client: Any) -> None:
    core = client.CoreV1Api(kube_api_client)
    ns = f"doomed-{int(time.time() * 1000) % 10**8}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    held = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="held", finalizers=["k8see.io/hold"])
    )
    core.create_namespaced_config_map(ns, held)
    core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="free"))
    )

    # When the namespace is deleted while a finalizer holds an object in it,
    core.delete_namespace(ns)
    terminating = core.read_namespace(ns)
    assert terminating.status.phase == "Terminating" and terminating.metadata.deletion_timestamp
    eventually(
        lambda: gone(lambda: core.read_namespaced_config_map("free", ns)),
        what="free configmap deleted",
    )
    assert core.read_namespaced_config_map("held", ns).metadata.deletion_timestamp
    # then new content is refused as the real server refuses it,
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_config_map(
            ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="late"))
        )
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert (
        f"unable to create new content in namespace {ns} because it is being terminated" in message
    )
    # and once the finalizer is removed, the object and the namespace go.
    core.patch_namespaced_config_map("held", ns, {"metadata": {"finalizers": None}})
    eventually(lambda: gone(lambda: core.read_namespace(ns)), what="namespace removed")


def test_finalizer_keeps_object_until_removed(kube_api_client: Any, kube_namespace: str) -> None:
    core, ns = client.CoreV1Api(kube_api_client), kube_namespace
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="fin", finalizers=["k8see.io/keep"])
    )
    core.create_namespaced_config_map(ns, body)
    core.delete_namespaced_config_map("fin", ns)
    assert core.read_namespaced_config_map("fin", ns).metadata.deletion_timestamp
    core.patch_namespaced_config_map(
        "fin",
        ns,
        [{"op": "remove", "path": "/metadata/finalizers"}],
        _content_type="application/json-patch+json",
    )
    assert gone(lambda: core.read_namespaced_config_map("fin", ns))


def owned(core: client.CoreV1Api, ns: str) -> None:
    owner = core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core.create_namespaced_config_map(
        ns,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dependent", owner_references=[ref])),
    )


def test_background_deletion_collects_dependents(kube_api_client: Any, kube_namespace: str) -> None:
    core, ns = client.CoreV1Api(kube_api_client), kube_namespace
    owned(core, ns)
    core.delete_namespaced_config_map("owner", ns, propagation_policy="Background")
    eventually(
        lambda: gone(lambda: core.read_namespaced_config_map("dependent", ns)),
        what="dependent collected",
    )


def test_orphan_deletion_keeps_dependents(kube_api_client: Any, kube_namespace: str) -> None:
    core, ns = client.CoreV1Api(kube_api_client), kube_namespace
    owned(core, ns)
    core.delete_namespaced_config_map("owner", ns, propagation_policy="Orphan")
    eventually(
        lambda: not core.read_namespaced_config_map("dependent", ns).metadata.owner_references,
        what="ownerReference stripped",
    )
    assert gone(lambda: core.read_namespaced_config_map("owner", ns))


def test_deleting_a_deployment_removes_its_replicasets_and_pods(
    kube_api_client: Any, kube_namespace: str
) -> None:
    from tests.sandbox.test_kube_crud_and_errors import deployment

    apps, core, ns = (
        client.AppsV1Api(kube_api_client),
        client.CoreV1Api(kube_api_client),
        kube_namespace,
    )
    apps.create_namespaced_deployment(ns, deployment("gc", image=TEST_IMAGE, replicas=2))
    eventually(
        lambda: len(core.list_namespaced_pod(ns, label_selector="app=gc").items) == 2,
        what="two pods",
    )
    apps.delete_namespaced_deployment("gc", ns)
    eventually(
        lambda: not apps.list_namespaced_replica_set(ns, label_selector="app=gc").items,
        what="replicasets gone",
    )
    eventually(
        lambda: not core.list_namespaced_pod(ns, label_selector="app=gc").items, what="pods gone"
    )
