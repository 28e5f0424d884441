"""The app chart's custom resources against the operators' real CRDs, on the real API server.

Covers: the CRDs bootstrap takes from the operators' Go modules (``tools/operator-crds.txt``)
install and are served with their structural schemas; every custom object the app chart
renders (each database with its defaults, all five with pass-through options, metrics on) is
accepted by the API server under strict field validation (a server-side dry run: an unknown
field would be refused, not silently pruned); an object the real schema forbids is refused
with the field named, which the stand-in CRDs of before accepted.

The CRDs are installed for this module and removed after it, so the tests that need a
cluster without them (the deploy gate's, ``k8see doctor``'s) see it as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from k8see_sandbox import crds
from tests.charts.test_database_subcharts import DATABASES, render
from tests.conftest import ROOT, require_tool
from tests.fixtures.databases import require_crds

#: The kinds the app chart renders and where they are served (group, version, plural).
SERVED = {
    "Cluster": ("postgresql.cnpg.io", "v1", "clusters"),
    "MongoDBCommunity": ("mongodbcommunity.mongodb.com", "v1", "mongodbcommunity"),
    "Tenant": ("minio.min.io", "v2", "tenants"),
    "ServiceMonitor": ("monitoring.coreos.com", "v1", "servicemonitors"),
}
#: Options from k8s-ee.yaml that reach the operators' objects.
RICH = {
    "postgresql": {
        "version": "16",
        "instances": 2,
        "storage": "2Gi",
        "postgresql": {
            "parameters": {"max_connections": "40"},
            "pg_hba": ["host all all 10.0.0.0/8 scram-sha-256"],
        },
        "bootstrap": {
            "initSQL": ["CREATE EXTENSION IF NOT EXISTS pg_stat_statements"],
            "postInitApplicationSQL": ["CREATE TABLE t (id int)"],
        },
    },
    "mongodb": {"members": 3, "version": "7.0.12", "storage": "2Gi"},
    "redis": True,
    "minio": {"bucket": "uploads", "storage": "3Gi"},
    "mariadb": True,
}


@pytest.fixture(scope="module")
def operator_crds(kube_api_client: Any) -> Iterator[None]:
    require_crds()
    created = crds.install(kube_api_client, crds.DATABASE_CRDS + crds.METRICS_CRDS)
    yield
    crds.uninstall(kube_api_client, created)


def custom_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in SERVED]


def create_dry_run(api: Any, namespace: str, obj: dict[str, Any]) -> None:
    group, version, plural = SERVED[obj["kind"]]
    body = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        group, version, namespace, plural, body, dry_run="All", field_validation="Strict"
    )


def test_the_pinned_crds_are_the_operators_with_their_schemas(
    kube_api_client: Any, operator_crds: None
) -> None:
    ext = client.ApiextensionsV1Api(kube_api_client)
    pins = (ROOT / "tools" / "operator-crds.txt").read_text()
    for kind, (group, version, plural) in SERVED.items():
        crd = ext.read_custom_resource_definition(f"{plural}.{group}")
        served = next(v for v in crd.spec.versions if v.name == version)
        schema = served.schema.open_apiv3_schema
        if kind == "Tenant":  # the MinIO operator's module is not served: our stand-in
            assert schema.x_kubernetes_preserve_unknown_fields is True
            continue
        # The operators' controller-gen output: a structural schema of the spec
        assert "controller-gen.kubebuilder.io/version" in (crd.metadata.annotations or {})
        assert "spec" in schema.properties and not schema.x_kubernetes_preserve_unknown_fields
        assert crds.CRD_DIR.joinpath(f"{group}_{plural}.yaml").resolve().parent.name in (
            "_".join(line.split()[0].split("/")) + "@" + line.split()[1]
            for line in pins.splitlines()
            if line and not line.startswith("#")
        )


@pytest.mark.parametrize("db", ("postgresql", "mongodb", "minio"))
def test_each_database_alone_passes_the_real_schema(
    kube_api_client: Any, operator_crds: None, kube_namespace: str, db: str
) -> None:
    require_tool("helm")
    objects = custom_objects(render({db: True}))
    assert [o["kind"] for o in objects] == [
        {"postgresql": "Cluster", "mongodb": "MongoDBCommunity", "minio": "Tenant"}[db]
    ]
    for obj in objects:
        create_dry_run(kube_api_client, kube_namespace, obj)


def test_all_five_with_options_and_metrics_pass_the_real_schemas(
    kube_api_client: Any, operator_crds: None, kube_namespace: str
) -> None:
    require_tool("helm")
    objects = custom_objects(render(RICH, metrics={"enabled": True}))
    assert sorted(o["kind"] for o in objects) == sorted(SERVED)
    assert set(RICH) == set(DATABASES)
    for obj in objects:
        create_dry_run(kube_api_client, kube_namespace, obj)


@pytest.mark.parametrize(
    ("field", "value", "status", "named"),
    [
        ("instances", "two", 422, "spec.instances"),  # a wrong type
        ("replicas", 2, 400, 'unknown field \\"spec.replicas\\"'),  # not CloudNativePG's
    ],
)
def test_what_the_real_schema_forbids_is_refused_with_the_field_named(
    kube_api_client: Any,
    operator_crds: None,
    kube_namespace: str,
    field: str,
    value: Any,
    status: int,
    named: str,
) -> None:
    require_tool("helm")
    # Given the chart's Cluster with one field the operator's schema refuses
    cluster = next(o for o in render({"postgresql": True}) if o["kind"] == "Cluster")
    cluster["spec"][field] = value
    # When it is created, then the API server refuses it and names the field
    with pytest.raises(ApiException) as refused:
        create_dry_run(kube_api_client, kube_namespace, cluster)
    assert refused.value.status == status
    assert named in refused.value.body
