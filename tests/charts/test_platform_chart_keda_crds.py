"""The platform chart's KEDA objects against KEDA's real CRDs, on the real API server.

Covers: KEDA's ``ScaledObject`` and ``TriggerAuthentication`` CRDs, taken by bootstrap from
KEDA's Go module (``tools/operator-crds.txt``), install and are served with their structural
schemas; the platform chart with ``autoscaling.keda`` on, plain Redis and Sentinel, renders
objects the API server accepts under strict field validation (a server-side dry run: an
unknown field would be refused, not silently pruned), with no pool Deployment setting
``replicas`` and each ScaledObject naming its pool's Deployment and queue list; a
ScaledObject the real schema forbids is refused with the field named; with KEDA's kinds served,
``helm install`` prints NOTES that give each pool's range instead of a replica count.

The CRDs are installed for this module and removed after it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from k8see.cli import POOLS
from k8see_sandbox import crds
from tests.charts.test_platform_chart_values import CHART, FULLNAME, VALUES, helm, render
from tests.conftest import require_tool
from tests.fixtures.databases import require_crds

#: Where KEDA's kinds are served (group, version, plural).
SERVED = {
    "ScaledObject": ("keda.sh", "v1alpha1", "scaledobjects"),
    "TriggerAuthentication": ("keda.sh", "v1alpha1", "triggerauthentications"),
}
SCENARIOS = {
    "redis": ("autoscaling.keda.enabled=true",),
    "sentinel": (
        "autoscaling.keda.enabled=true",
        "redis.sentinel.enabled=true",
        "autoscaling.keda.pools.build.minReplicaCount=0",
    ),
}


@pytest.fixture(scope="module")
def keda_crds(kube_api_client: Any) -> Iterator[None]:
    require_crds(crds.KEDA_CRDS)
    created = crds.install(kube_api_client, crds.KEDA_CRDS)
    yield
    crds.uninstall(kube_api_client, created)


def create_dry_run(api: Any, namespace: str, obj: dict[str, Any]) -> None:
    group, version, plural = SERVED[obj["kind"]]
    body = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        group, version, namespace, plural, body, dry_run="All", field_validation="Strict"
    )


def test_kedas_crds_are_served_with_their_schemas(kube_api_client: Any, keda_crds: None) -> None:
    ext = client.ApiextensionsV1Api(kube_api_client)
    for group, version, plural in SERVED.values():
        crd = ext.read_custom_resource_definition(f"{plural}.{group}")
        served = next(v for v in crd.spec.versions if v.name == version)
        schema = served.schema.open_apiv3_schema
        assert "controller-gen.kubebuilder.io/version" in (crd.metadata.annotations or {})
        assert "spec" in schema.properties and not schema.x_kubernetes_preserve_unknown_fields


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_charts_keda_objects_pass_kedas_schemas(
    kube_api_client: Any, keda_crds: None, kube_namespace: str, scenario: str
) -> None:
    require_tool("helm")
    docs = render(*SCENARIOS[scenario])
    deployments = {
        d["metadata"]["name"]: d
        for d in docs
        if d["kind"] == "Deployment" and "-worker-" in d["metadata"]["name"]
    }
    assert len(deployments) == 4
    assert not [name for name, d in deployments.items() if "replicas" in d["spec"]]
    objects = [d for d in docs if d["kind"] in SERVED]
    scaled = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ScaledObject"}
    assert sorted(o["kind"] for o in objects) == ["ScaledObject"] * 4 + ["TriggerAuthentication"]
    for name, obj in scaled.items():
        pool = name.removeprefix(f"{FULLNAME}-worker-")
        assert obj["spec"]["scaleTargetRef"]["name"] == name and name in deployments
        lists = [t["metadata"]["listName"] for t in obj["spec"]["triggers"]]
        assert lists == list(POOLS[pool])
    for obj in objects:
        create_dry_run(kube_api_client, kube_namespace, obj)


def test_a_field_kedas_schema_lacks_is_refused(
    kube_api_client: Any, keda_crds: None, kube_namespace: str
) -> None:
    require_tool("helm")
    docs = render("autoscaling.keda.enabled=true")
    scaled = copy.deepcopy(next(d for d in docs if d["kind"] == "ScaledObject"))
    scaled["spec"]["maxReplicas"] = 4  # HPA's name, not KEDA's maxReplicaCount
    with pytest.raises(ApiException) as refused:
        create_dry_run(kube_api_client, kube_namespace, scaled)
    assert refused.value.status == 400 and "maxReplicas" in (refused.value.body or "")


def test_notes_say_keda_sizes_the_pools(keda_crds: None, kube_env: dict[str, str]) -> None:
    argv = ["install", "k8see", str(CHART), "-f", str(VALUES), "--dry-run=client"]
    out = helm(*argv, "--set", "autoscaling.keda.enabled=true", env=kube_env)
    assert out.returncode == 0, out.stderr
    notes = out.stdout.split("NOTES:", 1)[1]
    assert "worker-build: 1-5 replica(s) by KEDA (about 2 queued per replica)" in notes
