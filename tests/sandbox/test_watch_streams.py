"""Watches through the kubernetes client's ``watch.Watch().stream`` and the dynamic client.

Covers: a watch from a list's resourceVersion seeing ADDED, MODIFIED and DELETED in order;
a label-selector watch seeing an object leave the selection as DELETED; a watch without a
resourceVersion starting with the current objects as ADDED; ``timeoutSeconds`` ending the
stream; the dynamic client's watch on Deployments.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes import client, dynamic, watch

from tests.fixtures.kube import TEST_IMAGE

pytestmark = pytest.mark.timeout(60)


def cm(name: str, labels: dict[str, str] | None = None) -> client.V1ConfigMap:
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels=labels), data={"v": "0"}
    )


def collect(core: client.CoreV1Api, ns: str, *, count: int, **kwargs: Any) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, ns, timeout_seconds=20, **kwargs):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == count:
            w.stop()
    return seen


def test_watch_from_resource_version_sees_every_change(
    kube_api_client: Any, kube_namespace: str
) -> None:
    core, ns = client.CoreV1Api(kube_api_client), kube_namespace
    rv = core.list_namespaced_config_map(ns).metadata.resource_version

    def writer() -> None:
        core.create_namespaced_config_map(ns, cm("w"))
        core.patch_namespaced_config_map("w", ns, {"data": {"v": "1"}})
        core.delete_namespaced_config_map("w", ns)

    thread = threading.Thread(target=writer)
    thread.start()
    seen = collect(core, ns, count=3, resource_version=rv)
    thread.join()
    assert seen == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


def test_selector_watch_reports_leaving_as_deleted(
    kube_api_client: Any, kube_namespace: str
) -> None:
    core, ns = client.CoreV1Api(kube_api_client), kube_namespace
    core.create_namespaced_config_map(ns, cm("mover", {"tier": "web"}))
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.patch_namespaced_config_map("mover", ns, {"metadata": {"labels": {"tier": "db"}}})
    seen = collect(core, ns, count=1, resource_version=rv, label_selector="tier=web")
    assert seen == [("DELETED", "mover")]


def test_watch_without_resource_version_starts_with_current_objects(
    kube_api_client: Any, kube_namespace: str
) -> None:
    core, ns = client.CoreV1Api(kube_api_client), kube_namespace
    for name in ("one", "two"):
        core.create_namespaced_config_map(ns, cm(name))
    seen = collect(core, ns, count=2)
    assert sorted(seen) == [("ADDED", "one"), ("ADDED", "two")]


def test_timeout_seconds_ends_the_stream(kube_api_client: Any, kube_namespace: str) -> None:
    core = client.CoreV1Api(kube_api_client)
    rv = core.list_namespaced_config_map(kube_namespace).metadata.resource_version
    events = list(
        watch.Watch().stream(
            core.list_namespaced_config_map, kube_namespace, resource_version=rv, timeout_seconds=1
        )
    )
    assert events == []


def test_dynamic_client_watch(kube_api_client: Any, kube_namespace: str) -> None:
    dyn = dynamic.DynamicClient(kube_api_client)
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    rv = deployments.get(namespace=kube_namespace).metadata.resourceVersion
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "dyn"},
        "spec": {
            "selector": {"matchLabels": {"app": "dyn"}},
            "template": {
                "metadata": {"labels": {"app": "dyn"}},
                "spec": {"containers": [{"name": "c", "image": TEST_IMAGE}]},
            },
        },
    }
    deployments.create(body=body, namespace=kube_namespace)
    for event in deployments.watch(namespace=kube_namespace, resource_version=rv, timeout=20):
        status = event["raw_object"].get("status") or {}
        if event["type"] == "MODIFIED" and status.get("availableReplicas") == 1:
            break
    else:
        raise AssertionError("the Deployment never became available in the watch")
