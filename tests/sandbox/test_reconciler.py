"""The reconciler standing in for the database operators, against the real API server.

Covers: for the app chart's CloudNativePG ``Cluster`` (on the operator's real CRD), it
creates the ``<name>-app`` basic-auth Secret with CloudNativePG's keys, the ``-rw``/``-ro``/
``-r`` Services and a pod listening on 5432 that becomes Ready behind ``-rw`` (and ``-ro``
has no endpoint: there is no replica), then reports ``readyInstances`` and the healthy phase;
for ``MongoDBCommunity`` the ``<name>-<db>-<user>`` connection Secret carries the password of
the user's own Secret, the headless ``-svc`` Service and status ``Running``; for a MinIO
``Tenant`` the ``-hl`` Service and ``currentState``; a Secret's password is kept when the
resource changes; deleting the resource lets the garbage collector remove everything made
for it (ownerReferences).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from k8see_sandbox import crds
from k8see_sandbox.reconciler import STANDIN_LABEL, OperatorStandIn
from tests.charts.test_database_subcharts import render
from tests.fixtures.databases import require_crds
from tests.fixtures.kube import TESTAPP_IMAGE

CNPG_KEYS = {
    "username",
    "user",
    "password",
    "dbname",
    "host",
    "port",
    "pgpass",
    "uri",
    "jdbc-uri",
    "fqdn-uri",
    "fqdn-jdbc-uri",
}


@pytest.fixture(scope="module")
def standin(kube_api_client: Any) -> Iterator[OperatorStandIn]:
    require_crds()
    created = crds.install(kube_api_client, crds.DATABASE_CRDS)
    reconciler = OperatorStandIn(kube_api_client, image=TESTAPP_IMAGE).start()
    yield reconciler
    reconciler.stop()
    crds.uninstall(kube_api_client, created)


def eventually(check: Callable[[], Any], what: str, timeout_seconds: float = 90) -> Any:
    """Poll ``check`` until it returns something truthy (the deadline only guards a hang)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            found = check()
        except ApiException as exc:
            if exc.status != 404:
                raise
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout_seconds}s"
        time.sleep(0.3)


def apply_chart(api: Any, namespace: str, db: str) -> dict[str, Any]:
    """Create what the app chart renders for ``db`` that the operator reads (its custom
    resource, and the chart's Secrets); returns the custom resource."""
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    resource: dict[str, Any] = {}
    for obj in render({db: True}):
        obj["metadata"]["namespace"] = namespace
        if obj["kind"] == "Secret":
            core.create_namespaced_secret(namespace, obj)
        elif obj["kind"] in ("Cluster", "MongoDBCommunity", "Tenant"):
            group, version = obj["apiVersion"].split("/")
            plural = {"Cluster": "clusters", "Tenant": "tenants"}.get(
                obj["kind"], "mongodbcommunity"
            )
            resource = custom.create_namespaced_custom_object(
                group, version, namespace, plural, obj
            )
    return resource


def secret(api: Any, namespace: str, name: str) -> dict[str, str]:
    data = client.CoreV1Api(api).read_namespaced_secret(name, namespace).data or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def ready_addresses(api: Any, namespace: str, service: str) -> list[str]:
    endpoints = client.CoreV1Api(api).read_namespaced_endpoints(service, namespace)
    return [a.ip for s in endpoints.subsets or [] for a in s.addresses or []]


def status(api: Any, namespace: str, group: str, plural: str, name: str) -> dict[str, Any]:
    version = "v2" if plural == "tenants" else "v1"
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
        group, version, namespace, plural, name
    )
    return dict(obj.get("status") or {})


def test_a_cluster_gets_cnpgs_secret_services_and_a_ready_pod(
    kube_api_client: Any, standin: OperatorStandIn, kube_namespace: str
) -> None:
    ns, api = kube_namespace, kube_api_client
    # Given the app chart's Cluster
    cluster = apply_chart(api, ns, "postgresql")
    assert cluster["metadata"]["name"] == "app-postgresql"
    # Then the app Secret has CloudNativePG's keys, pointing at the -rw Service
    app = eventually(lambda: secret(api, ns, "app-postgresql-app"), "the -app Secret")
    assert set(app) == CNPG_KEYS
    assert (app["host"], app["port"], app["dbname"], app["user"]) == (
        "app-postgresql-rw",
        "5432",
        "app",
        "app",
    )
    assert app["uri"] == f"postgresql://app:{app['password']}@app-postgresql-rw.{ns}:5432/app"
    assert (
        client.CoreV1Api(api).read_namespaced_secret("app-postgresql-app", ns).type
        == "kubernetes.io/basic-auth"
    )
    # And a pod listening on 5432 is Ready behind -rw and -r; -ro has no replica to select
    rw = eventually(lambda: ready_addresses(api, ns, "app-postgresql-rw"), "a ready -rw pod")
    # (each Service's endpoints are written on their own: -r may follow -rw a moment later)
    eventually(lambda: ready_addresses(api, ns, "app-postgresql-r") == rw, "the -r endpoints")
    assert ready_addresses(api, ns, "app-postgresql-ro") == []
    # And the status says so, as CloudNativePG's does
    healthy = eventually(
        lambda: (
            status(api, ns, "postgresql.cnpg.io", "clusters", "app-postgresql").get(
                "readyInstances"
            )
            == 1
        ),
        "readyInstances 1",
    )
    assert healthy
    st = status(api, ns, "postgresql.cnpg.io", "clusters", "app-postgresql")
    assert st["phase"] == "Cluster in healthy state"
    assert st["writeService"] == "app-postgresql-rw"

    # When the Cluster changes, the password stays
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        "postgresql.cnpg.io", "v1", ns, "clusters", "app-postgresql", {"spec": {"instances": 2}}
    )
    time.sleep(1)
    assert secret(api, ns, "app-postgresql-app")["password"] == app["password"]

    # When the Cluster is deleted, the garbage collector removes what was made for it
    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        "postgresql.cnpg.io", "v1", ns, "clusters", "app-postgresql"
    )
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)

    def all_gone() -> bool:
        left = (
            core.list_namespaced_secret(ns, label_selector=STANDIN_LABEL).items
            + core.list_namespaced_service(ns, label_selector=STANDIN_LABEL).items
            + apps.list_namespaced_stateful_set(ns, label_selector=STANDIN_LABEL).items
        )
        return not left

    eventually(all_gone, "the garbage collection of the Cluster's objects")


def test_mongodb_gets_its_connection_secret_from_the_users_password(
    kube_api_client: Any, standin: OperatorStandIn, kube_namespace: str
) -> None:
    ns, api = kube_namespace, kube_api_client
    apply_chart(api, ns, "mongodb")
    password = secret(api, ns, "app-mongodb-password")["password"]
    # Then the operator's connection Secret carries that password and the members' hosts
    conn = eventually(lambda: secret(api, ns, "app-mongodb-admin-app"), "the connection Secret")
    assert conn["username"] == "app" and conn["password"] == password
    assert conn["connectionString.standard"] == (
        f"mongodb://app:{password}@app-mongodb-0.app-mongodb-svc.{ns}.svc.cluster.local:27017"
        "/admin?replicaSet=app-mongodb&ssl=false"
    )
    # (the stand-in writes the Secret before the Services, as the operator may: wait for it)
    svc = eventually(
        lambda: client.CoreV1Api(api).read_namespaced_service("app-mongodb-svc", ns),
        "the headless Service",
    )
    assert svc.spec.cluster_ip == "None"  # headless, as the operator's
    eventually(lambda: ready_addresses(api, ns, "app-mongodb-svc"), "a ready mongod stand-in")
    eventually(
        lambda: (
            status(api, ns, "mongodbcommunity.mongodb.com", "mongodbcommunity", "app-mongodb").get(
                "phase"
            )
            == "Running"
        ),
        "phase Running",
    )


def test_a_tenant_gets_its_headless_service_and_state(
    kube_api_client: Any, standin: OperatorStandIn, kube_namespace: str
) -> None:
    ns, api = kube_namespace, kube_api_client
    apply_chart(api, ns, "minio")
    eventually(lambda: ready_addresses(api, ns, "app-minio-hl"), "a ready MinIO stand-in")
    eventually(
        lambda: (
            status(api, ns, "minio.min.io", "tenants", "app-minio").get("currentState")
            == "Initialized"
        ),
        "currentState Initialized",
    )


def test_mongodb_waits_for_a_password_secret_that_comes_later(
    kube_api_client: Any, standin: OperatorStandIn, kube_namespace: str
) -> None:
    ns, api = kube_namespace, kube_api_client
    objects = render({"mongodb": True})
    resource = next(o for o in objects if o["kind"] == "MongoDBCommunity")
    password = next(o for o in objects if o["metadata"]["name"] == "app-mongodb-password")
    for obj in (resource, password):
        obj["metadata"]["namespace"] = ns
    # Given the resource, and no password Secret yet: no connection Secret can be written
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "mongodbcommunity.mongodb.com", "v1", ns, "mongodbcommunity", resource
    )
    eventually(lambda: ready_addresses(api, ns, "app-mongodb-svc"), "a ready mongod stand-in")
    with pytest.raises(ApiException):
        secret(api, ns, "app-mongodb-admin-app")
    # When the password Secret appears, the next resync writes the connection Secret
    client.CoreV1Api(api).create_namespaced_secret(ns, password)
    conn = eventually(lambda: secret(api, ns, "app-mongodb-admin-app"), "the connection Secret")
    assert conn["password"] == secret(api, ns, "app-mongodb-password")["password"]
