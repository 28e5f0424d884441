"""The kubernetes client's typed API against the cluster: CRUD, metadata, selectors, errors.

Covers: /version and discovery through the client; create/read/replace/delete with uid,
increasing resourceVersion, creationTimestamp and generation; 409 on a stale resourceVersion
and on a duplicate name; label selectors (=, ==, !=, in, notin, exists, !exists) and field
selectors (metadata.name, status.phase); list across namespaces; dryRun=All; generateName;
Status errors (404 NotFound, 422 Invalid with field causes, 400 BadRequest, 404 for a missing
namespace). Every assertion here is behaviour a real API server has.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

pytestmark = pytest.mark.timeout(60)


def cm(name: str, labels: dict[str, str] | None = None, **data: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels), data=data)


def status_of(exc: client.ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


def test_version_and_discovery(kube_api_client: Any) -> None:
    version = client.VersionApi(kube_api_client).get_code()
    assert version.major == "1" and version.git_version.startswith("v1.")
    groups = {g.name for g in client.ApisApi(kube_api_client).get_api_versions().groups}
    assert {"apps", "batch", "networking.k8s.io", "apiextensions.k8s.io"} <= groups
    core = client.CoreV1Api(kube_api_client).get_api_resources()
    names = {r.name: r for r in core.resources}
    assert names["pods"].namespaced and not names["namespaces"].namespaced
    assert "pods/log" in names and "cm" in (names["configmaps"].short_names or [])


def test_create_read_replace_delete_with_real_metadata(
    kube_api_client: Any, kube_namespace: str
) -> None:
    core = client.CoreV1Api(kube_api_client)
    created = core.create_namespaced_config_map(kube_namespace, cm("settings", a="1"))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert created.metadata.namespace == kube_namespace

    read = core.read_namespaced_config_map("settings", kube_namespace)
    read.data["a"] = "2"
    replaced = core.replace_namespaced_config_map("settings", kube_namespace, read)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    assert replaced.metadata.uid == created.metadata.uid
    assert replaced.data == {"a": "2"}

    core.delete_namespaced_config_map("settings", kube_namespace)
    with pytest.raises(client.ApiException) as gone:
        core.read_namespaced_config_map("settings", kube_namespace)
    assert gone.value.status == 404
    assert status_of(gone.value)["reason"] == "NotFound"
    assert status_of(gone.value)["message"] == 'configmaps "settings" not found'


def test_stale_resource_version_is_a_conflict(kube_api_client: Any, kube_namespace: str) -> None:
    core = client.CoreV1Api(kube_api_client)
    core.create_namespaced_config_map(kube_namespace, cm("c", a="1"))
    first = core.read_namespaced_config_map("c", kube_namespace)
    second = core.read_namespaced_config_map("c", kube_namespace)
    first.data["a"] = "first"
    core.replace_namespaced_config_map("c", kube_namespace, first)
    second.data["a"] = "second"
    with pytest.raises(client.ApiException) as conflict:
        core.replace_namespaced_config_map("c", kube_namespace, second)
    assert conflict.value.status == 409
    assert status_of(conflict.value)["reason"] == "Conflict"
    with pytest.raises(client.ApiException) as dup:
        core.create_namespaced_config_map(kube_namespace, cm("c"))
    assert (dup.value.status, status_of(dup.value)["reason"]) == (409, "AlreadyExists")


def test_create_answers_with_the_kinds_zero_status(
    kube_api_client: Any, kube_namespace: str
) -> None:
    """A status sent on create is dropped, and the answer carries the empty status, never
    none: a client may read ``.status.conditions`` straight after creating."""
    apps, core = client.AppsV1Api(kube_api_client), client.CoreV1Api(kube_api_client)
    body = deployment("fresh", image="nginx:1.25")
    body["status"] = {"replicas": 5, "readyReplicas": 5}
    created = apps.create_namespaced_deployment(kube_namespace, body)
    assert created.status is not None
    assert (created.status.replicas, created.status.ready_replicas) == (None, None)
    assert created.status.conditions is None
    service = core.create_namespaced_service(
        kube_namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="fresh"),
            spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)]),
        ),
    )
    assert service.status.load_balancer is not None


def test_generation_moves_with_spec_only(kube_api_client: Any, kube_namespace: str) -> None:
    apps = client.AppsV1Api(kube_api_client)
    body = deployment("gen", image="nginx:1.25")
    created = apps.create_namespaced_deployment(kube_namespace, body)
    assert created.metadata.generation == 1
    apps.patch_namespaced_deployment("gen", kube_namespace, {"metadata": {"labels": {"x": "y"}}})
    assert apps.read_namespaced_deployment("gen", kube_namespace).metadata.generation == 1
    apps.patch_namespaced_deployment("gen", kube_namespace, {"spec": {"replicas": 2}})
    assert apps.read_namespaced_deployment("gen", kube_namespace).metadata.generation == 2


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("tier=web", {"a", "b"}),
        ("tier==web", {"a", "b"}),
        ("tier!=web", {"c", "d"}),
        ("tier in (web,db)", {"a", "b", "c"}),
        ("tier notin (web)", {"c", "d"}),
        ("tier", {"a", "b", "c"}),
        ("!tier", {"d"}),
        ("tier=web,env=prod", {"a"}),
    ],
)
def test_label_selectors(
    kube_api_client: Any, kube_namespace: str, selector: str, expected: set[str]
) -> None:
    core = client.CoreV1Api(kube_api_client)
    for name, labels in {
        "a": {"tier": "web", "env": "prod"},
        "b": {"tier": "web"},
        "c": {"tier": "db"},
        "d": {"other": "x"},
    }.items():
        core.create_namespaced_config_map(kube_namespace, cm(name, labels))
    listed = core.list_namespaced_config_map(kube_namespace, label_selector=selector)
    assert {i.metadata.name for i in listed.items} == expected


def test_field_selectors_and_all_namespaces(kube_api_client: Any, kube_namespace: str) -> None:
    core = client.CoreV1Api(kube_api_client)
    for name in ("one", "two"):
        core.create_namespaced_config_map(kube_namespace, cm(name))
    by_name = core.list_namespaced_config_map(kube_namespace, field_selector="metadata.name=two")
    assert [i.metadata.name for i in by_name.items] == ["two"]
    not_one = core.list_namespaced_config_map(kube_namespace, field_selector="metadata.name!=one")
    assert "one" not in {i.metadata.name for i in not_one.items}
    everywhere = core.list_config_map_for_all_namespaces(
        field_selector=f"metadata.namespace={kube_namespace}"
    )
    assert {i.metadata.name for i in everywhere.items} >= {"one", "two"}
    with pytest.raises(client.ApiException) as bad:
        core.list_namespaced_config_map(kube_namespace, field_selector="data.x=1")
    assert bad.value.status == 400


def test_dry_run_does_not_store(kube_api_client: Any, kube_namespace: str) -> None:
    core = client.CoreV1Api(kube_api_client)
    preview = core.create_namespaced_config_map(kube_namespace, cm("dry", a="1"), dry_run="All")
    assert preview.metadata.name == "dry"
    with pytest.raises(client.ApiException) as missing:
        core.read_namespaced_config_map("dry", kube_namespace)
    assert missing.value.status == 404


def test_generate_name(kube_api_client: Any, kube_namespace: str) -> None:
    core = client.CoreV1Api(kube_api_client)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="gen-"))
    made = core.create_namespaced_config_map(kube_namespace, body)
    assert made.metadata.name.startswith("gen-") and len(made.metadata.name) > 4


def test_invalid_name_is_422_with_cause(kube_api_client: Any, kube_namespace: str) -> None:
    core = client.CoreV1Api(kube_api_client)
    with pytest.raises(client.ApiException) as bad:
        core.create_namespaced_config_map(kube_namespace, cm("Bad_Name"))
    status = status_of(bad.value)
    assert bad.value.status == 422 and status["reason"] == "Invalid"
    assert status["details"]["causes"][0]["field"] == "metadata.name"
    assert status["message"].startswith(
        'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value'
    )


def test_missing_required_field_is_422(kube_api_client: Any, kube_namespace: str) -> None:
    apps = client.AppsV1Api(kube_api_client)
    body = deployment("noimage", image="")
    with pytest.raises(client.ApiException) as bad:
        apps.create_namespaced_deployment(kube_namespace, body)
    status = status_of(bad.value)
    assert bad.value.status == 422
    assert "spec.template.spec.containers[0].image" in {
        c["field"] for c in status["details"]["causes"]
    }


def test_create_in_missing_namespace_is_404(kube_api_client: Any) -> None:
    core = client.CoreV1Api(kube_api_client)
    with pytest.raises(client.ApiException) as missing:
        core.create_namespaced_config_map("no-such-namespace-here", cm("x"))
    assert missing.value.status == 404
    assert status_of(missing.value)["message"] == 'namespaces "no-such-namespace-here" not found'


def test_label_value_too_long_is_422(kube_api_client: Any, kube_namespace: str) -> None:
    core = client.CoreV1Api(kube_api_client)
    with pytest.raises(client.ApiException) as bad:
        core.create_namespaced_config_map(kube_namespace, cm("long", {"branch": "x" * 64}))
    assert bad.value.status == 422
    assert status_of(bad.value)["details"]["causes"][0]["field"] == "metadata.labels"


def deployment(
    name: str, *, image: str, replicas: int = 1, env: dict[str, str] | None = None
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": image}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            },
        },
    }


def test_api_service_and_endpoints_exist(kube_api_client: Any) -> None:
    """NetworkPolicy egress to the API is built from these (reference §3.4)."""
    core = client.CoreV1Api(kube_api_client)
    assert core.read_namespaced_service("kubernetes", "default").spec.cluster_ip
    endpoints = core.read_namespaced_endpoints("kubernetes", "default")
    assert endpoints.subsets[0].addresses[0].ip
