"""ResourceQuota and LimitRange admission, with the real messages.

Covers: status.hard mirroring spec.hard and status.used counting pods, requests/limits and
object counts; a pod exceeding the quota refused with 403 "exceeded quota: ..., requested: ...,
used: ..., limited: ..."; a pod without requests/limits refused when the quota constrains them
("must specify ..."), unless a LimitRange supplies defaults (which are then visible on the
pod); a Deployment whose pods are refused showing condition ReplicaFailure (FailedCreate).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client

from tests.fixtures.kube import TEST_IMAGE
from tests.sandbox.test_kube_crud_and_errors import deployment
from tests.sandbox.test_namespace_and_deletion import eventually

pytestmark = pytest.mark.timeout(60)


def quota(core: client.CoreV1Api, ns: str, **hard: str) -> None:
    core.create_namespaced_resource_quota(
        ns, {"metadata": {"name": "pr-quota"}, "spec": {"hard": hard}}
    )


def pod(
    name: str, *, requests: dict[str, str] | None = None, limits: dict[str, str] | None = None
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": TEST_IMAGE, "resources": resources}]},
    }


def message(exc: client.ApiException) -> str:
    return str(json.loads(exc.body)["message"])


def test_quota_status_and_exceeding_pod(kube_api_client: Any, kube_namespace: str) -> None:
    core, ns = client.CoreV1Api(kube_api_client), kube_namespace
    quota(
        core,
        ns,
        **{
            "requests.cpu": "200m",
            "limits.cpu": "300m",
            "requests.memory": "256Mi",
            "limits.memory": "512Mi",
            "pods": "5",
            "configmaps": "15",
        },
    )
    small = {"cpu": "100m", "memory": "128Mi"}
    core.create_namespaced_pod(
        ns, pod("first", requests=small, limits={"cpu": "200m", "memory": "256Mi"})
    )

    def used() -> dict[str, str]:
        status = core.read_namespaced_resource_quota("pr-quota", ns).status
        return dict(status.used or {}) if status else {}

    eventually(lambda: used().get("requests.cpu") == "100m", what="quota usage updated")
    status = core.read_namespaced_resource_quota("pr-quota", ns).status
    assert status.hard["limits.memory"] == "512Mi"
    assert used()["pods"] == "1" and used()["limits.memory"] == "256Mi"
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(
            ns, pod("second", requests=small, limits={"cpu": "200m", "memory": "256Mi"})
        )
    assert refused.value.status == 403
    assert message(refused.value) == (
        'pods "second" is forbidden: exceeded quota: pr-quota, requested: limits.cpu=200m, '
        "used: limits.cpu=200m, limited: limits.cpu=300m"
    )


def test_pod_without_resources_needs_limit_range_defaults(
    kube_api_client: Any, kube_namespace: str
) -> None:
    core, ns = client.CoreV1Api(kube_api_client), kube_namespace
    quota(
        core,
        ns,
        **{
            "requests.cpu": "1",
            "limits.cpu": "2",
            "requests.memory": "1Gi",
            "limits.memory": "2Gi",
        },
    )
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(ns, pod("bare"))
    assert refused.value.status == 403
    assert message(refused.value) == (
        'pods "bare" is forbidden: failed quota: pr-quota: must specify limits.cpu for: app; '
        "limits.memory for: app; requests.cpu for: app; requests.memory for: app"
    )
    limits = {
        "type": "Container",
        "default": {"cpu": "500m", "memory": "512Mi"},
        "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
    }
    core.create_namespaced_limit_range(
        ns, {"metadata": {"name": "pr-limits"}, "spec": {"limits": [limits]}}
    )
    made = core.create_namespaced_pod(ns, pod("bare"))
    resources = made.spec.containers[0].resources
    assert resources.requests == {"cpu": "100m", "memory": "128Mi"}
    assert resources.limits == {"cpu": "500m", "memory": "512Mi"}


def test_refused_pods_show_as_replica_failure(kube_api_client: Any, kube_namespace: str) -> None:
    apps, core, ns = (
        client.AppsV1Api(kube_api_client),
        client.CoreV1Api(kube_api_client),
        kube_namespace,
    )
    quota(core, ns, pods="1")
    apps.create_namespaced_deployment(ns, deployment("big", image=TEST_IMAGE, replicas=2))

    def failure() -> Any:
        conditions = apps.read_namespaced_deployment("big", ns).status.conditions or []
        return next((c for c in conditions if c.type == "ReplicaFailure"), None)

    eventually(lambda: failure() is not None, what="ReplicaFailure condition")
    assert failure().reason == "FailedCreate"
    assert (
        "exceeded quota: pr-quota, requested: pods=1, used: pods=1, limited: pods=1"
        in failure().message
    )
    events = core.list_namespaced_event(ns, field_selector="reason=FailedCreate").items
    assert events and events[0].involved_object.kind == "ReplicaSet"
    assert "exceeded quota: pr-quota" in events[0].message


@pytest.mark.sandbox_only
def test_refused_creations_back_off_and_their_events_are_combined(
    kube_api_client: Any, kube_namespace: str
) -> None:
    # Given a Deployment whose second pod the quota refuses, for three seconds
    apps, core, ns = (
        client.AppsV1Api(kube_api_client),
        client.CoreV1Api(kube_api_client),
        kube_namespace,
    )
    quota(core, ns, pods="1")
    apps.create_namespaced_deployment(ns, deployment("big", image=TEST_IMAGE, replicas=2))
    time.sleep(3)
    # Then the ReplicaSet retried with backoff (5 ms doubling, 2 s apart at most here), not
    # on every controller pass (which was about 50 refused creations a second)
    events = core.list_namespaced_event(ns, field_selector="reason=FailedCreate").items
    attempts = sum(e.count for e in events)
    assert 5 <= attempts <= 30, attempts

    # And, each refusal naming a new pod, after ten Events the next go into one combined one
    def combined() -> list[Any]:
        return [
            e
            for e in core.list_namespaced_event(ns, field_selector="reason=FailedCreate").items
            if e.message.startswith("(combined from similar events): ")
        ]

    eventually(lambda: bool(combined()), what="a combined FailedCreate event", attempts=600)
    events = core.list_namespaced_event(ns, field_selector="reason=FailedCreate").items
    assert len(events) == 11 and len(combined()) == 1
    assert all("exceeded quota: pr-quota" in e.message for e in events)
    # And once the quota allows it, the pod is created within the backoff's cap
    core.patch_namespaced_resource_quota("pr-quota", ns, {"spec": {"hard": {"pods": "2"}}})
    eventually(
        lambda: (apps.read_namespaced_deployment("big", ns).status.replicas or 0) == 2,
        what="the second pod",
    )
