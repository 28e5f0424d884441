"""The namespace guardrails as pure manifests (docs/environments.md "2. Guardrails").

Covers: every row of the reference's "Computed results" quota table for default sizes; the
fixed counts; growth (never shrinkage) with larger app resources, database resources,
storage sizes and instance counts; quantity parsing and its errors; the LimitRange numbers
and its raised maxima; the five NetworkPolicies with configurable ingress controller and API
server addresses.
"""

from __future__ import annotations

from typing import Any

import pytest

from k8see.errors import ConfigError
from k8see.manifests import guardrails, network, quota

# config, req.cpu, lim.cpu, req.mem, lim.mem, storage, PVC, pods, svc (the reference's table)
TABLE = [
    ((), "200m", "690m", "512Mi", "1177Mi", "1Gi", "1", "5", "3"),
    (("postgresql",), "450m", "1265m", "768Mi", "1766Mi", "3Gi", "2", "7", "6"),
    (("mariadb",), "350m", "1035m", "640Mi", "1472Mi", "3Gi", "2", "6", "4"),
    (("redis",), "300m", "920m", "576Mi", "1324Mi", "1Gi", "1", "6", "4"),
    (("mongodb",), "700m", "1840m", "832Mi", "1913Mi", "4Gi", "3", "7", "4"),
    (("minio",), "400m", "1840m", "896Mi", "2355Mi", "3Gi", "2", "7", "5"),
    (("postgresql", "redis"), "550m", "1495m", "832Mi", "1913Mi", "3Gi", "2", "8", "7"),
    (("postgresql", "minio"), "650m", "2415m", "1152Mi", "2944Mi", "5Gi", "3", "9", "8"),
    (("postgresql", "redis", "minio"), "750m", "2645m", "1216Mi", "3091Mi", "5Gi", "3", "10", "9"),
    (quota.DATABASES, "1400m", "4140m", "1664Mi", "4121Mi", "10Gi", "6", "13", "11"),
]
KEYS = [
    "requests.cpu",
    "limits.cpu",
    "requests.memory",
    "limits.memory",
    "requests.storage",
    "persistentvolumeclaims",
    "pods",
    "services",
]


@pytest.mark.parametrize("row", TABLE, ids=lambda row: "+".join(row[0]) or "app-only")
def test_quota_reproduces_reference_table(row: tuple[Any, ...]) -> None:
    dbs, *expected = row
    hard = quota.quota_hard(databases=dbs)
    assert [hard[k] for k in KEYS] == expected


def test_quota_table_holds_with_explicit_default_options() -> None:
    # Given every database in object form with its documented defaults
    dbs = {
        "postgresql": {"enabled": True, "version": "16", "storage": "1Gi"},
        "mongodb": {"enabled": True, "storage": {"size": "1Gi"}},
        "redis": {"enabled": True},
        "minio": {"enabled": True, "storage": "1Gi", "servers": 1},
        "mariadb": {"enabled": True, "storage": "1024Mi"},
    }
    app = {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"cpu": "200m", "memory": "384Mi"},
    }
    # Then the quota is the "all five" row exactly
    assert quota.quota_hard(databases=dbs, resources=app) == quota.quota_hard(
        databases=quota.DATABASES
    )


def test_fixed_counts_and_no_node_ports() -> None:
    hard = quota.quota_hard()
    assert hard["configmaps"] == "15"
    assert hard["secrets"] == "25"
    assert hard["replicationcontrollers"] == "5"
    assert hard["services.nodeports"] == "0"
    assert hard["services.loadbalancers"] == "0"


def test_larger_app_resources_grow_quota_for_pod_and_surge() -> None:
    app = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    hard = quota.quota_hard(resources=app)
    # requests: 200m + 2 * (250m - 50m); memory 512Mi + 2 * 128Mi
    assert hard["requests.cpu"] == "600m"
    assert hard["requests.memory"] == "768Mi"
    # limits: (600m + 2 * 800m) * 1.15; (1024Mi + 2 * 640Mi) * 1.15
    assert hard["limits.cpu"] == "2530m"
    assert hard["limits.memory"] == "2649Mi"


def test_smaller_app_resources_never_shrink_quota() -> None:
    app = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "0.1"}}
    assert quota.quota_hard(resources=app) == quota.quota_hard()


@pytest.mark.parametrize(
    ("db", "storage", "expected"),
    [
        ("postgresql", "5Gi", "7Gi"),
        ("minio", {"size": "5Gi"}, "7Gi"),
        ("mariadb", "1536Mi", "3584Mi"),
        ("mongodb", "10Gi", "13Gi"),
    ],
)
def test_storage_size_grows_quota(db: str, storage: object, expected: str) -> None:
    hard = quota.quota_hard(databases={db: {"storage": storage}})
    assert hard["requests.storage"] == expected


def test_instances_multiply_database_budget() -> None:
    one = quota.quota_budget(databases={"postgresql": {}})
    three = quota.quota_budget(databases={"postgresql": {"instances": 3}})
    assert three.pods - one.pods == 2 * quota.DB_INCREMENT["postgresql"].pods
    assert three.pvcs - one.pvcs == 2
    assert three.services == one.services  # one set of rw/ro/r services


def test_database_resources_above_default_count() -> None:
    dbs = {"redis": {"resources": {"limits": {"memory": "512Mi"}}}}
    base = quota.quota_budget(databases=["redis"])
    bigger = quota.quota_budget(databases=dbs)
    assert bigger.lim_mem - base.lim_mem == 512 - 128


@pytest.mark.parametrize(
    ("text", "millicores"), [("250m", 250), ("1", 1000), ("0.5", 500), ("1.5", 1500)]
)
def test_cpu_quantities(text: str, millicores: int) -> None:
    assert quota.cpu_millicores(text) == millicores


@pytest.mark.parametrize(("text", "mib"), [("128Mi", 128), ("1Gi", 1024), ("1Ti", 1048576)])
def test_memory_quantities(text: str, mib: int) -> None:
    assert quota.memory_mib(text) == mib


def test_bad_quantity_names_field_and_hints() -> None:
    with pytest.raises(ConfigError) as info:
        quota.quota_hard(databases={"minio": {"storage": "lots"}})
    assert "databases.minio.storage" in info.value.message
    assert info.value.hint and "Gi" in info.value.hint


def test_unknown_database_is_refused() -> None:
    with pytest.raises(ConfigError, match="Unknown database 'oracle'"):
        quota.quota_hard(databases=["oracle"])


def test_quota_manifest_names_and_labels() -> None:
    manifest = quota.resource_quota(namespace="shop-pr-4", project_id="shop", pr=4)
    assert manifest["metadata"]["name"] == "pr-quota"
    assert manifest["metadata"]["namespace"] == "shop-pr-4"
    assert manifest["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "k8see",
        "k8s-ee/type": "ephemeral",
        "k8s-ee/project-id": "shop",
        "k8s-ee/pr-number": "4",
    }


def test_limit_range_reference_numbers() -> None:
    spec = quota.limit_range(namespace="a-pr-1", project_id="a", pr=1)["spec"]["limits"]
    container, pod, pvc = spec
    assert container == {
        "type": "Container",
        "default": {"cpu": "500m", "memory": "512Mi"},
        "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
        "max": {"cpu": "1", "memory": "1Gi"},
        "min": {"cpu": "10m", "memory": "32Mi"},
    }
    assert pod == {"type": "Pod", "max": {"cpu": "2", "memory": "2Gi"}}
    assert pvc == {
        "type": "PersistentVolumeClaim",
        "max": {"storage": "5Gi"},
        "min": {"storage": "100Mi"},
    }


def test_limit_range_maxima_fit_larger_config() -> None:
    spec = quota.limit_range(
        namespace="a-pr-1",
        project_id="a",
        pr=1,
        databases={"minio": {"storage": "8Gi"}},
        resources={"limits": {"cpu": "1500m", "memory": "3Gi"}},
    )["spec"]["limits"]
    assert spec[0]["max"] == {"cpu": "1500m", "memory": "3Gi"}
    assert spec[1]["max"] == {"cpu": "2", "memory": "3Gi"}
    assert spec[2]["max"] == {"storage": "8Gi"}


def _policies(**kw: Any) -> dict[str, dict[str, Any]]:
    args: dict[str, Any] = {"namespace": "shop-pr-4", "app_port": 8080, **kw}
    return {p["metadata"]["name"]: p for p in network.network_policies(**args)}


def test_five_network_policies_select_every_pod() -> None:
    policies = _policies()
    assert list(policies) == [
        "default-deny",
        "allow-same-namespace",
        "allow-ingress-controller",
        "allow-observability",
        "allow-egress",
    ]
    for p in policies.values():
        assert p["spec"]["podSelector"] == {}
        assert p["metadata"]["labels"]["k8s-ee/type"] == "network-policy"
    assert policies["default-deny"]["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
    }


def test_ingress_controller_policy_uses_settings_and_app_port() -> None:
    p = _policies(
        ingress_namespace="ingress-nginx",
        ingress_labels={"app.kubernetes.io/component": "controller"},
    )
    rule = p["allow-ingress-controller"]["spec"]["ingress"][0]
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "controller"}},
        }
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_the_api_server_reaches_the_app_port_for_the_health_check() -> None:
    # The health check goes through the API server's service proxy: its requests come from
    # the control plane's addresses, which default-deny would drop
    rules = _policies(api_cidrs=["10.43.0.1"])["allow-ingress-controller"]["spec"]["ingress"]
    assert rules[1] == {"from": [{"ipBlock": {"cidr": "10.43.0.1/32"}}],
                        "ports": [{"protocol": "TCP", "port": 8080}]}  # fmt: skip
    # Only the app port, and nothing without known addresses
    assert len(_policies()["allow-ingress-controller"]["spec"]["ingress"]) == 1


def test_egress_allows_api_server_dns_and_public_internet() -> None:
    egress = _policies(api_cidrs=["10.43.0.1", "192.168.1.5/32"])["allow-egress"]["spec"]
    rules = egress["egress"]
    assert {"protocol": "UDP", "port": 53} in rules[1]["ports"]
    assert rules[2]["to"] == [
        {"ipBlock": {"cidr": "10.43.0.1/32"}},
        {"ipBlock": {"cidr": "192.168.1.5/32"}},
    ]
    assert {"protocol": "TCP", "port": 6443} in rules[2]["ports"]
    # The reference's private ranges, then what issue 14 added: "this network", loopback,
    # link-local (metadata), CGNAT and Azure's host address.
    assert rules[3]["to"][0]["ipBlock"]["except"] == [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "0.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "168.63.129.16/32",
    ]


def test_no_api_rule_without_addresses() -> None:
    assert len(_policies()["allow-egress"]["spec"]["egress"]) == 3


def test_bad_api_address_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not an IP address"):
        _policies(api_cidrs=["kubernetes.default"])


def test_guardrails_order() -> None:
    objects = guardrails.guardrails(
        namespace="a-pr-1", project_id="a", pr=1, app_port=3000, databases=["redis"]
    )
    assert [o["kind"] for o in objects] == ["ResourceQuota", "LimitRange"] + ["NetworkPolicy"] * 5
