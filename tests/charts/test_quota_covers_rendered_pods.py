"""The namespace quota covers the pods the rendered chart will actually run.

``k8see/manifests/quota.py`` computes ``pr-quota`` from the config; these tests check that number
against the chart's real output. For each config, the chart is rendered through ``helm_values``;
every pod it leads to is summed with Kubernetes' rules: per pod, the larger of its biggest init
container and the sum of its regular containers; a container without resources gets the LimitRange
defaults of ``pr-limits``. One extra app pod is added for the rolling update. The total must fit
``spec.hard`` (CPU, memory, storage, PVCs, pods).

Deployments give their pod templates directly. The operators' custom objects are expanded into
the pods the operators create from them, as their documentation describes:

- CloudNativePG ``Cluster``: ``instances`` pods (postgres plus a bootstrap-controller init
  container with the cluster's resources) and a data PVC per instance. Its initdb job pod
  has the same resources and finishes before the first instance starts (a finished pod no
  longer counts against a quota), so it never adds to the instances' total.
- ``MongoDBCommunity``: ``members`` pods (mongod and mongodb-agent with the given resources,
  two operator init containers at 500m/1 CPU), a data and a 2Gi logs PVC per member.
- MinIO ``Tenant``: ``servers`` pods (minio with the given resources, a sidecar and an init
  container with no resources, so LimitRange defaults), ``volumesPerServer`` PVCs each.
"""

from __future__ import annotations

from typing import Any

import pytest

from k8see.manifests import quota
from tests.charts.test_database_subcharts import DATABASES, render, values_for

Container = dict[str, Any]
#: Operator init containers of MongoDB pods (version upgrade hook, readiness probe installer).
MONGO_INIT = {"requests": {"cpu": "500m"}, "limits": {"cpu": "1"}}
MONGO_LOGS_MIB = 2 * 1024


def _limits_range_defaults(objects: list[dict[str, Any]]) -> dict[str, Any]:
    limits = quota.limit_range(namespace="x", project_id="shop", pr=42)["spec"]["limits"][0]
    return {"requests": limits["defaultRequest"], "limits": limits["default"]}


def _amount(resources: dict[str, Any] | None, defaults: dict[str, Any]) -> tuple[int, ...]:
    """(req cpu m, lim cpu m, req mem MiB, lim mem MiB) with LimitRange defaulting."""
    resources = resources or {}
    req = {**defaults["requests"], **(resources.get("requests") or {})}
    lim = {**defaults["limits"], **(resources.get("limits") or {})}
    return (
        quota.cpu_millicores(req["cpu"]),
        quota.cpu_millicores(lim["cpu"]),
        quota.memory_mib(req["memory"]),
        quota.memory_mib(lim["memory"]),
    )


def pod_amount(
    containers: list[Container], init: list[Container], defaults: dict[str, Any]
) -> tuple[int, ...]:
    """Kubernetes' effective pod request/limit: max(biggest init container, sum of regular)."""
    regular = [_amount(c.get("resources"), defaults) for c in containers]
    summed = tuple(sum(column) for column in zip(*regular, strict=True))
    inits = [_amount(c.get("resources"), defaults) for c in init]
    return tuple(max([summed[i], *(one[i] for one in inits)]) for i in range(len(summed)))


def expected_pods(objects: list[dict[str, Any]]) -> tuple[list[tuple[int, ...]], int, int]:
    """(pod amounts, storage MiB, PVCs) the objects lead to, rolling-update pod included."""
    defaults = _limits_range_defaults(objects)
    pods: list[tuple[int, ...]] = []
    storage = pvcs = 0
    for obj in objects:
        kind, spec = obj["kind"], obj.get("spec") or {}
        if kind == "Deployment":
            pod = spec["template"]["spec"]
            amount = pod_amount(pod["containers"], pod.get("initContainers") or [], defaults)
            pods += [amount] * int(spec.get("replicas", 1))
            if obj["metadata"]["name"].endswith("-app"):
                pods.append(amount)  # the rolling update's surge pod
        elif kind == "PersistentVolumeClaim":
            storage += quota.memory_mib(spec["resources"]["requests"]["storage"])
            pvcs += 1
        elif kind == "Cluster":
            res = spec["resources"]
            one = pod_amount([{"resources": res}], [{"resources": res}], defaults)
            pods += [one] * int(spec["instances"])
            storage += quota.memory_mib(spec["storage"]["size"]) * int(spec["instances"])
            pvcs += int(spec["instances"])
        elif kind == "MongoDBCommunity":
            template = spec["statefulSet"]["spec"]["template"]["spec"]
            one = pod_amount(template["containers"], [{"resources": MONGO_INIT}] * 2, defaults)
            members = int(spec["members"])
            pods += [one] * members
            claim = spec["statefulSet"]["spec"]["volumeClaimTemplates"][0]
            data = quota.memory_mib(claim["spec"]["resources"]["requests"]["storage"])
            storage += (data + MONGO_LOGS_MIB) * members
            pvcs += 2 * members
        elif kind == "Tenant":
            for pool in spec["pools"]:
                one = pod_amount([{"resources": pool["resources"]}, {}], [{}], defaults)
                pods += [one] * int(pool["servers"])
                size = pool["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"]
                count = int(pool["servers"]) * int(pool["volumesPerServer"])
                storage += quota.memory_mib(size) * count
                pvcs += count
    return pods, storage, pvcs


def check_fits(databases: dict[str, Any], **config: Any) -> dict[str, str]:
    objects = render(databases, **config)
    values = values_for(databases, **config)
    options = {db: values[db] for db in DATABASES if values[db]["enabled"]}
    hard = quota.quota_hard(databases=options, resources=config.get("resources"))
    pods, storage, pvcs = expected_pods(objects)
    totals = [sum(p[i] for p in pods) for i in range(4)]
    assert totals[0] <= quota.cpu_millicores(hard["requests.cpu"]), (totals, hard)
    assert totals[1] <= quota.cpu_millicores(hard["limits.cpu"]), (totals, hard)
    assert totals[2] <= quota.memory_mib(hard["requests.memory"]), (totals, hard)
    assert totals[3] <= quota.memory_mib(hard["limits.memory"]), (totals, hard)
    # The app's own volume allowance (1Gi, 1 PVC) stays in the quota, unused by the chart.
    assert storage <= quota.memory_mib(hard["requests.storage"]), (storage, hard)
    assert pvcs <= int(hard["persistentvolumeclaims"])
    assert len(pods) <= int(hard["pods"]), (len(pods), hard)
    return hard


@pytest.mark.parametrize("db", [None, *DATABASES])
def test_quota_covers_each_database_alone(db: str | None) -> None:
    check_fits({db: True} if db else {})


def test_quota_covers_all_five_and_is_the_reference_row() -> None:
    hard = check_fits(dict.fromkeys(DATABASES, True))
    # The reference table is the floor and, for default sizes, exactly the number.
    assert hard["requests.cpu"] == "1400m"
    assert hard["limits.cpu"] == "4140m"
    assert hard["requests.storage"] == "10Gi"


def test_quota_grows_with_larger_storage_resources_and_instances() -> None:
    # Given sizes beyond every default
    hard = check_fits(
        {
            "postgresql": {
                "storage": "4Gi",
                "instances": 2,
                "resources": {"requests": {"cpu": "300m", "memory": "512Mi"}},
            },
            "mongodb": {"storage": "3Gi"},
            "minio": {"storage": "5Gi", "servers": 2},
            "mariadb": {"storage": "3Gi", "resources": {"limits": {"memory": "512Mi"}}},
            "redis": True,
        },
        resources={
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
    )
    # Then the quota is above the default all-five row instead of refusing the pods
    assert quota.cpu_millicores(hard["requests.cpu"]) > 1400
    assert quota.memory_mib(hard["requests.storage"]) > 10 * 1024
