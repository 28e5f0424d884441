"""The four PATCH content types through the kubernetes client.

Covers: strategic merge patch merging containers, env, ports and volumes by their merge keys,
``$patch: delete`` removing one list entry, ``$setElementOrder`` ordering, ``$retainKeys``;
JSON merge patch replacing lists wholesale; JSON patch add/replace/remove and a failing
``test`` op (422); server-side apply creating (201) and then dropping fields its manager no
longer sets; strategic merge refused for custom resources (415); a patch carrying a stale
resourceVersion (409).
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.fixtures.kube import TEST_IMAGE
from tests.sandbox.test_kube_crud_and_errors import deployment

pytestmark = pytest.mark.timeout(60)
SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSONPATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


def containers(apps: client.AppsV1Api, ns: str, name: str) -> list[Any]:
    return list(apps.read_namespaced_deployment(name, ns).spec.template.spec.containers)


def test_strategic_merge_uses_merge_keys(kube_api_client: Any, kube_namespace: str) -> None:
    apps, ns = client.AppsV1Api(kube_api_client), kube_namespace
    apps.create_namespaced_deployment(
        ns, deployment("smp", image=TEST_IMAGE, env={"A": "1", "B": "2"})
    )
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                            "ports": [{"containerPort": 8080}],
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        },
                        {"name": "sidecar", "image": "side:1"},
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                }
            }
        }
    }
    apps.patch_namespaced_deployment("smp", ns, patch, _content_type=SMP)
    app, sidecar = containers(apps, ns, "smp")
    assert app.image == TEST_IMAGE and sidecar.image == "side:1"
    assert [(e.name, e.value) for e in app.env] == [("A", "1"), ("B", "20"), ("C", "3")]
    assert app.ports[0].container_port == 8080 and app.volume_mounts[0].mount_path == "/tmp"

    delete_b = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "env": [{"name": "B", "$patch": "delete"}]},
                    ]
                }
            }
        }
    }
    apps.patch_namespaced_deployment("smp", ns, delete_b, _content_type=SMP)
    assert [e.name for e in containers(apps, ns, "smp")[0].env] == ["A", "C"]

    reorder = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                    "containers": [{"name": "sidecar", "image": "side:2"}],
                }
            }
        }
    }
    apps.patch_namespaced_deployment("smp", ns, reorder, _content_type=SMP)
    assert [(c.name, c.image) for c in containers(apps, ns, "smp")] == [
        ("sidecar", "side:2"),
        ("app", TEST_IMAGE),
    ]


def test_strategic_merge_retain_keys(kube_api_client: Any, kube_namespace: str) -> None:
    apps, ns = client.AppsV1Api(kube_api_client), kube_namespace
    apps.create_namespaced_deployment(ns, deployment("retain", image=TEST_IMAGE))
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    apps.patch_namespaced_deployment("retain", ns, patch, _content_type=SMP)
    strategy = apps.read_namespaced_deployment("retain", ns).spec.strategy
    assert strategy.type == "Recreate" and strategy.rolling_update is None


def test_json_merge_patch_replaces_lists(kube_api_client: Any, kube_namespace: str) -> None:
    apps, ns = client.AppsV1Api(kube_api_client), kube_namespace
    apps.create_namespaced_deployment(ns, deployment("merge", image=TEST_IMAGE, env={"A": "1"}))
    patch = {
        "metadata": {"labels": {"team": "x"}},
        "spec": {"template": {"spec": {"containers": [{"name": "only", "image": "other:1"}]}}},
    }
    apps.patch_namespaced_deployment("merge", ns, patch, _content_type=MERGE)
    live = apps.read_namespaced_deployment("merge", ns)
    assert [(c.name, c.image) for c in live.spec.template.spec.containers] == [("only", "other:1")]
    assert live.metadata.labels == {"app": "merge", "team": "x"}
    client.CoreV1Api(kube_api_client).create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="m"), data={"a": "1", "b": "2"})
    )
    client.CoreV1Api(kube_api_client).patch_namespaced_config_map(
        "m", ns, {"data": {"a": None}}, _content_type=MERGE
    )
    assert client.CoreV1Api(kube_api_client).read_namespaced_config_map("m", ns).data == {"b": "2"}


def test_json_patch_operations(kube_api_client: Any, kube_namespace: str) -> None:
    core, ns = client.CoreV1Api(kube_api_client), kube_namespace
    core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="j"), data={"a": "1"})
    )
    ops = [
        {"op": "add", "path": "/data/b", "value": "2"},
        {"op": "replace", "path": "/data/a", "value": "10"},
        {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}},
    ]
    core.patch_namespaced_config_map("j", ns, ops, _content_type=JSONPATCH)
    live = core.read_namespaced_config_map("j", ns)
    assert live.data == {"a": "10", "b": "2"} and live.metadata.labels == {"x": "y"}
    core.patch_namespaced_config_map(
        "j", ns, [{"op": "remove", "path": "/data/b"}], _content_type=JSONPATCH
    )
    assert core.read_namespaced_config_map("j", ns).data == {"a": "10"}
    with pytest.raises(client.ApiException) as failed:
        core.patch_namespaced_config_map(
            "j", ns, [{"op": "test", "path": "/data/a", "value": "1"}], _content_type=JSONPATCH
        )
    assert failed.value.status == 422


def test_server_side_apply_creates_then_drops_unowned_fields(
    kube_api_client: Any, kube_namespace: str
) -> None:
    core, ns = client.CoreV1Api(kube_api_client), kube_namespace
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "applied"},
        "data": {"a": "1", "b": "2"},
    }
    created = core.patch_namespaced_config_map(
        "applied", ns, body, field_manager="k8see", _content_type=APPLY
    )
    assert created.data == {"a": "1", "b": "2"}
    body["data"] = {"a": "1"}
    core.patch_namespaced_config_map(
        "applied", ns, body, field_manager="k8see", _content_type=APPLY
    )
    assert core.read_namespaced_config_map("applied", ns).data == {"a": "1"}


def test_strategic_merge_is_refused_for_custom_resources(
    kube_api_client: Any, kube_namespace: str
) -> None:
    ext = client.ApiextensionsV1Api(kube_api_client)
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.sandbox.k8see.io"},
        "spec": {
            "group": "sandbox.k8see.io",
            "scope": "Namespaced",
            "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    try:
        ext.create_custom_resource_definition(crd)
    except client.ApiException as exc:
        assert exc.status == 409
    custom = client.CustomObjectsApi(kube_api_client)
    obj = {
        "apiVersion": "sandbox.k8see.io/v1",
        "kind": "Gadget",
        "metadata": {"name": "g"},
        "spec": {"n": 1},
    }
    _create_when_served(custom, kube_namespace, obj)
    with pytest.raises(client.ApiException) as refused:
        custom.api_client.call_api(
            f"/apis/sandbox.k8see.io/v1/namespaces/{kube_namespace}/gadgets/g",
            "PATCH",
            header_params={"Content-Type": SMP, "Accept": "application/json"},
            body={"spec": {"n": 2}},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )
    assert refused.value.status == 415
    custom.patch_namespaced_custom_object(
        "sandbox.k8see.io", "v1", kube_namespace, "gadgets", "g", {"spec": {"n": 2}}
    )
    got = custom.get_namespaced_custom_object(
        "sandbox.k8see.io", "v1", kube_namespace, "gadgets", "g"
    )
    assert got["spec"] == {"n": 2}


def _create_when_served(custom: client.CustomObjectsApi, ns: str, obj: dict[str, Any]) -> None:
    """A new CRD is served once Established; retry the create on 404 until then."""
    import time

    for _ in range(100):
        try:
            custom.create_namespaced_custom_object("sandbox.k8see.io", "v1", ns, "gadgets", obj)
            return
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            time.sleep(0.1)
    raise AssertionError("the Gadget kind was never served")


def test_patch_with_stale_resource_version_conflicts(
    kube_api_client: Any, kube_namespace: str
) -> None:
    core, ns = client.CoreV1Api(kube_api_client), kube_namespace
    made = core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="rv"))
    )
    core.patch_namespaced_config_map("rv", ns, {"data": {"a": "1"}})
    stale = {"metadata": {"resourceVersion": made.metadata.resource_version}, "data": {"a": "2"}}
    with pytest.raises(client.ApiException) as conflict:
        core.patch_namespaced_config_map("rv", ns, stale, _content_type=MERGE)
    assert conflict.value.status == 409
