"""The simulated cluster: workload controllers, kubelet, services, claims, jobs, operators.

Covers: Deployment → ReplicaSet (pod-template-hash, ownerReferences) → Pods that become Ready;
a rolling update replacing the old ReplicaSet's pods; StatefulSet pods and claims; Services
getting a clusterIP and Endpoints of the ready pods; PVCs bound; Jobs complete; the
CloudNativePG, MongoDB Community and MinIO objects our charts read; crash-loop and pull-failure
injection by image name; pods saying they are simulated. The failure injection and the
operator simulation are sandbox-only; the rest is what a real cluster does.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from kubernetes import client

from tests.fixtures.kube import TEST_IMAGE, TEST_IMAGE_2
from tests.sandbox.test_kube_crud_and_errors import deployment
from tests.sandbox.test_namespace_and_deletion import eventually

pytestmark = pytest.mark.timeout(90)


def ready_pods(core: client.CoreV1Api, ns: str, selector: str) -> list[Any]:
    pods = core.list_namespaced_pod(ns, label_selector=selector).items
    return [
        p
        for p in pods
        if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


def test_deployment_owns_replicaset_owns_ready_pods(
    kube_api_client: Any, kube_namespace: str
) -> None:
    apps, core, ns = (
        client.AppsV1Api(kube_api_client),
        client.CoreV1Api(kube_api_client),
        kube_namespace,
    )
    dep = apps.create_namespaced_deployment(ns, deployment("web", image=TEST_IMAGE, replicas=2))
    eventually(lambda: len(ready_pods(core, ns, "app=web")) == 2, what="two ready pods")
    (rs,) = apps.list_namespaced_replica_set(ns, label_selector="app=web").items
    assert (
        rs.metadata.owner_references[0].uid == dep.metadata.uid
        and rs.metadata.owner_references[0].controller
    )
    phash = rs.metadata.labels["pod-template-hash"]
    for pod in ready_pods(core, ns, "app=web"):
        assert pod.metadata.owner_references[0].uid == rs.metadata.uid
        assert pod.metadata.labels["pod-template-hash"] == phash
    eventually(
        lambda: (
            (
                getattr(apps.read_namespaced_deployment("web", ns).status, "available_replicas", 0)
                or 0
            )
            == 2
        ),
        what="available",
    )
    status = apps.read_namespaced_deployment("web", ns).status
    conditions = {c.type: c for c in status.conditions}
    assert conditions["Available"].status == "True"
    assert conditions["Progressing"].reason == "NewReplicaSetAvailable"
    assert status.observed_generation == 1 and status.updated_replicas == 2


def test_rolling_update_replaces_old_pods(kube_api_client: Any, kube_namespace: str) -> None:
    apps, core, ns = (
        client.AppsV1Api(kube_api_client),
        client.CoreV1Api(kube_api_client),
        kube_namespace,
    )
    apps.create_namespaced_deployment(ns, deployment("roll", image=TEST_IMAGE))
    eventually(lambda: len(ready_pods(core, ns, "app=roll")) == 1, what="first pod ready")
    apps.patch_namespaced_deployment(
        "roll",
        ns,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": TEST_IMAGE_2}]}}}},
    )

    def rolled() -> bool:
        pods = ready_pods(core, ns, "app=roll")
        return (
            len(pods) == 1
            and pods[0].spec.containers[0].image == TEST_IMAGE_2
            and not pods[0].metadata.deletion_timestamp
        )

    eventually(rolled, what="new pod replaced the old one")
    sets = {
        rs.spec.template.spec.containers[0].image: rs.spec.replicas
        for rs in apps.list_namespaced_replica_set(ns).items
    }
    assert sets == {TEST_IMAGE: 0, TEST_IMAGE_2: 1}


def test_statefulset_pods_and_claims(kube_api_client: Any, kube_namespace: str) -> None:
    apps, core, ns = (
        client.AppsV1Api(kube_api_client),
        client.CoreV1Api(kube_api_client),
        kube_namespace,
    )
    body = deployment("db", image=TEST_IMAGE, replicas=2)
    body["kind"] = "StatefulSet"
    body["spec"]["serviceName"] = "db"
    body["spec"]["volumeClaimTemplates"] = [
        {
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    ]
    apps.create_namespaced_stateful_set(ns, body)
    eventually(
        lambda: (
            (getattr(apps.read_namespaced_stateful_set("db", ns).status, "ready_replicas", 0) or 0)
            == 2
        ),
        what="sts ready",
    )
    assert sorted(p.metadata.name for p in ready_pods(core, ns, "app=db")) == ["db-0", "db-1"]
    claims = {
        c.metadata.name: c.status.phase
        for c in core.list_namespaced_persistent_volume_claim(ns).items
    }
    assert claims == {"data-db-0": "Bound", "data-db-1": "Bound"}


def test_service_gets_cluster_ip_and_endpoints(kube_api_client: Any, kube_namespace: str) -> None:
    apps, core, ns = (
        client.AppsV1Api(kube_api_client),
        client.CoreV1Api(kube_api_client),
        kube_namespace,
    )
    apps.create_namespaced_deployment(ns, deployment("api", image=TEST_IMAGE))
    svc = client.V1Service(
        metadata=client.V1ObjectMeta(name="api"),
        spec=client.V1ServiceSpec(
            selector={"app": "api"}, ports=[client.V1ServicePort(port=80, target_port=8080)]
        ),
    )
    created = core.create_namespaced_service(ns, svc)
    assert created.spec.cluster_ip and created.spec.ports[0].protocol == "TCP"

    def has_endpoint() -> bool:
        try:
            ep = core.read_namespaced_endpoints("api", ns)
        except client.ApiException:
            return False
        return bool(ep.subsets and ep.subsets[0].addresses)

    eventually(has_endpoint, what="endpoint for the ready pod")
    assert core.read_namespaced_endpoints("api", ns).subsets[0].ports[0].port == 8080


@pytest.mark.sandbox_only  # a claim binds at once and a job ends with no process
def test_pvc_binds_and_job_completes(kube_api_client: Any, kube_namespace: str) -> None:
    core, batch, ns = (
        client.CoreV1Api(kube_api_client),
        client.BatchV1Api(kube_api_client),
        kube_namespace,
    )
    pvc = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    core.create_namespaced_persistent_volume_claim(ns, pvc)
    eventually(
        lambda: (
            getattr(core.read_namespaced_persistent_volume_claim("data", ns).status, "phase", None)
            == "Bound"
        ),
        what="bound",
    )
    job = {
        "metadata": {"name": "migrate"},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "m", "image": TEST_IMAGE}],
                }
            }
        },
    }
    batch.create_namespaced_job(ns, job)
    eventually(
        lambda: getattr(batch.read_namespaced_job("migrate", ns).status, "succeeded", None) == 1,
        what="job succeeded",
    )
    conditions = {
        c.type: c.status for c in batch.read_namespaced_job("migrate", ns).status.conditions
    }
    assert conditions["Complete"] == "True"


@pytest.mark.sandbox_only
def test_crash_and_pull_failures_by_image_name(kube_api_client: Any, kube_namespace: str) -> None:
    apps, core, ns = (
        client.AppsV1Api(kube_api_client),
        client.CoreV1Api(kube_api_client),
        kube_namespace,
    )
    apps.create_namespaced_deployment(ns, deployment("crash", image="registry.local/crashloop:1"))
    apps.create_namespaced_deployment(
        ns, deployment("nopull", image="registry.local/does-not-exist:1")
    )

    def waiting(selector: str) -> Any:
        pods = core.list_namespaced_pod(ns, label_selector=selector).items
        statuses = pods[0].status.container_statuses if pods else None
        return statuses[0] if statuses and statuses[0].state.waiting else None

    eventually(
        lambda: (
            waiting("app=crash") is not None
            and waiting("app=crash").state.waiting.reason == "CrashLoopBackOff"
        ),
        what="crash loop",
    )
    eventually(lambda: waiting("app=crash").restart_count >= 2, what="restarts growing")
    eventually(
        lambda: (
            waiting("app=nopull") is not None
            and waiting("app=nopull").state.waiting.reason == "ImagePullBackOff"
        ),
        what="pull failure",
    )
    assert not ready_pods(core, ns, "app=crash")
    assert "simulated by the k8see sandbox" in waiting("app=crash").state.waiting.message
    assert (apps.read_namespaced_deployment("crash", ns).status.available_replicas or 0) == 0


@pytest.mark.sandbox_only
def test_simulated_pods_say_so(kube_api_client: Any, kube_namespace: str) -> None:
    apps, core, ns = (
        client.AppsV1Api(kube_api_client),
        client.CoreV1Api(kube_api_client),
        kube_namespace,
    )
    apps.create_namespaced_deployment(ns, deployment("said", image=TEST_IMAGE))
    eventually(lambda: len(ready_pods(core, ns, "app=said")) == 1, what="ready")
    (pod,) = ready_pods(core, ns, "app=said")
    assert any("simulated by the k8see sandbox" in (c.message or "") for c in pod.status.conditions)
    assert "simulated" in core.read_namespaced_pod_log(pod.metadata.name, ns)


def crd(group: str, kind: str, plural: str, version: str = "v1") -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
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


def ensure_crd(api: Any, body: dict[str, Any]) -> None:
    try:
        client.ApiextensionsV1Api(api).create_custom_resource_definition(body)
    except client.ApiException as exc:
        if exc.status != 409:
            raise


def secret_data(core: client.CoreV1Api, ns: str, name: str) -> dict[str, str]:
    return {
        k: base64.b64decode(v).decode()
        for k, v in core.read_namespaced_secret(name, ns).data.items()
    }


@pytest.mark.sandbox_only
def test_database_operators_create_what_charts_read(
    kube_api_client: Any, kube_namespace: str
) -> None:
    core, custom, ns = (
        client.CoreV1Api(kube_api_client),
        client.CustomObjectsApi(kube_api_client),
        kube_namespace,
    )
    ensure_crd(kube_api_client, crd("postgresql.cnpg.io", "Cluster", "clusters"))
    ensure_crd(
        kube_api_client, crd("mongodbcommunity.mongodb.com", "MongoDBCommunity", "mongodbcommunity")
    )
    ensure_crd(kube_api_client, crd("minio.min.io", "Tenant", "tenants", "v2"))
    core.create_namespaced_secret(
        ns, {"metadata": {"name": "app-mongodb-password"}, "stringData": {"password": "pw123"}}
    )
    custom.create_namespaced_custom_object(
        "postgresql.cnpg.io",
        "v1",
        ns,
        "clusters",
        {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {"name": "app-postgresql"},
            "spec": {"instances": 1, "bootstrap": {"initdb": {"database": "app", "owner": "app"}}},
        },
    )
    custom.create_namespaced_custom_object(
        "mongodbcommunity.mongodb.com",
        "v1",
        ns,
        "mongodbcommunity",
        {
            "apiVersion": "mongodbcommunity.mongodb.com/v1",
            "kind": "MongoDBCommunity",
            "metadata": {"name": "app-mongodb"},
            "spec": {
                "members": 1,
                "type": "ReplicaSet",
                "version": "7.0.5",
                "users": [
                    {
                        "name": "app",
                        "db": "admin",
                        "passwordSecretRef": {"name": "app-mongodb-password"},
                    }
                ],
            },
        },
    )
    custom.create_namespaced_custom_object(
        "minio.min.io",
        "v2",
        ns,
        "tenants",
        {
            "apiVersion": "minio.min.io/v2",
            "kind": "Tenant",
            "metadata": {"name": "app-minio"},
            "spec": {"pools": [{"name": "pool-0", "servers": 1, "volumesPerServer": 1}]},
        },
    )

    def status(group: str, version: str, plural: str, name: str) -> dict[str, Any]:
        return (
            custom.get_namespaced_custom_object(group, version, ns, plural, name).get("status")
            or {}
        )

    eventually(
        lambda: (
            status("postgresql.cnpg.io", "v1", "clusters", "app-postgresql").get("phase")
            == "Cluster in healthy state"
        ),
        what="cnpg",
    )
    eventually(
        lambda: (
            status("mongodbcommunity.mongodb.com", "v1", "mongodbcommunity", "app-mongodb").get(
                "phase"
            )
            == "Running"
        ),
        what="mongo",
    )
    eventually(
        lambda: (
            status("minio.min.io", "v2", "tenants", "app-minio").get("currentState")
            == "Initialized"
        ),
        what="minio",
    )
    assert status("postgresql.cnpg.io", "v1", "clusters", "app-postgresql")["readyInstances"] == 1
    assert status("minio.min.io", "v2", "tenants", "app-minio")["healthStatus"] == "green"
    services = {s.metadata.name for s in core.list_namespaced_service(ns).items}
    assert {
        "app-postgresql-rw",
        "app-postgresql-ro",
        "app-postgresql-r",
        "app-mongodb-svc",
        "app-minio-hl",
    } <= services
    pg = secret_data(core, ns, "app-postgresql-app")
    assert {"uri", "host", "port", "dbname", "user", "username", "password"} <= set(pg)
    assert (
        pg["host"] == "app-postgresql-rw"
        and pg["dbname"] == "app"
        and pg["uri"].startswith("postgresql://app:")
    )
    mongo = secret_data(core, ns, "app-mongodb-admin-app")
    assert mongo["connectionString.standard"].startswith(
        "mongodb://app:pw123@app-mongodb-0.app-mongodb-svc."
    )
