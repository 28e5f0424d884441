"""The platform chart's RBAC grants what the pools do, and nothing outside PR namespaces.

The rules are checked by a small RBAC evaluator (apiGroups, resources with ``pods/log``-style
subresources, verbs, resourceNames, ``*``), the way the API server's authorizer reads them:
the ClusterRoles and ClusterRoleBindings rendered by the real helm binary, plus the
RoleBindings k8see writes into a PR namespace (``kube.role_binding_manifest`` of the
``K8SEE_DEPLOY__NAMESPACE_BINDINGS`` the chart gives the workers, parsed by the settings).

Covers: (a) every object a deploy applies (guardrails, pull secret, the app chart with every
database and every optional piece) may be created, read, patched and deleted by the deploy
pool in a PR namespace, as may the reads of its health check, and none of it without the
RoleBinding; (b) the deploy pool reads no Secret outside a PR namespace; (c) it may write the
RoleBindings, binding only the two per-namespace ClusterRoles; (d) the maintenance pool lists
and patches namespaces and writes the pull Secret in a PR namespace, and no more there;
(e) every Role the subcharts render grants only what the deploy pool holds there, so creating
it needs no ``escalate``; the per-namespace roles are never bound cluster-wide.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from k8see.config.model import RepoConfig
from k8see.integrations import helm, kube
from k8see.manifests.release import offline_run, render_manifests
from k8see.settings import PlatformSettings
from tests.conftest import ROOT, require_tool

PLATFORM = ROOT / "charts" / "k8see-platform"
APP = ROOT / "charts" / "k8s-ee-app"
RELEASE_NAMESPACE = "k8see"
FULLNAME = "k8see-k8see-platform"
PR_NAMESPACE = "shop-pr-42"
DEPLOY = (RELEASE_NAMESPACE, f"{FULLNAME}-deploy")
MAINTENANCE = (RELEASE_NAMESPACE, f"{FULLNAME}-maintenance")
DEFAULT = (RELEASE_NAMESPACE, f"{FULLNAME}-default")
PER_NAMESPACE_ROLES = {f"{FULLNAME}-pr-namespace", f"{FULLNAME}-pr-namespace-maintenance"}
#: What helm and ``kube.apply_objects`` do to an object: look it up, create, patch or replace
#: it on upgrade, delete it on rollback or uninstall, list and watch while waiting.
OBJECT_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")
#: The resource (plural) of each kind a deploy applies, as RBAC rules name it. The operators'
#: CRDs: clusters.postgresql.cnpg.io, mongodbcommunity.mongodbcommunity.mongodb.com,
#: tenants.minio.min.io.
RESOURCES = {
    ("", "Namespace"): "namespaces",
    ("", "ConfigMap"): "configmaps",
    ("", "LimitRange"): "limitranges",
    ("", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("", "Pod"): "pods",
    ("", "ResourceQuota"): "resourcequotas",
    ("", "Secret"): "secrets",
    ("", "Service"): "services",
    ("", "ServiceAccount"): "serviceaccounts",
    ("apps", "Deployment"): "deployments",
    ("networking.k8s.io", "Ingress"): "ingresses",
    ("networking.k8s.io", "NetworkPolicy"): "networkpolicies",
    ("rbac.authorization.k8s.io", "Role"): "roles",
    ("rbac.authorization.k8s.io", "RoleBinding"): "rolebindings",
    ("monitoring.coreos.com", "ServiceMonitor"): "servicemonitors",
    ("postgresql.cnpg.io", "Cluster"): "clusters",
    ("mongodbcommunity.mongodb.com", "MongoDBCommunity"): "mongodbcommunity",
    ("minio.min.io", "Tenant"): "tenants",
}


@dataclass(frozen=True)
class Request:
    """One API request as the authorizer sees it; ``namespace`` "" is cluster-scoped."""

    verb: str
    group: str
    resource: str
    namespace: str = ""
    name: str = ""


def rule_allows(rule: dict[str, Any], req: Request) -> bool:
    """Whether one PolicyRule covers ``req`` (resource ``*`` covers subresources too)."""

    def has(values: list[str], value: str) -> bool:
        return "*" in values or value in values

    resources = rule.get("resources") or []
    sub = req.resource.partition("/")[2]
    resource_ok = has(resources, req.resource) or bool(sub and f"*/{sub}" in resources)
    names = rule.get("resourceNames") or []
    return (
        has(rule.get("apiGroups") or [], req.group)
        and resource_ok
        and has(rule.get("verbs") or [], req.verb)
        and (not names or req.name in names)
    )


class Authorizer:
    """RBAC over a set of ClusterRoles, Roles and their bindings (no aggregation)."""

    def __init__(self, objects: list[dict[str, Any]]):
        self.objects = objects

    def _of(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def _rules(self, ref: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
        for role in self._of(ref["kind"]):
            same_ns = ref["kind"] == "ClusterRole" or role["metadata"]["namespace"] == namespace
            if role["metadata"]["name"] == ref["name"] and same_ns:
                return list(role.get("rules") or [])
        return []

    def rules_of(self, account: tuple[str, str], namespace: str) -> list[dict[str, Any]]:
        """The rules ``account`` holds in ``namespace`` ("" : cluster-wide bindings only)."""
        subject = {"kind": "ServiceAccount", "namespace": account[0], "name": account[1]}
        bindings = self._of("ClusterRoleBinding") + [
            b
            for b in self._of("RoleBinding")
            if namespace and b["metadata"]["namespace"] == namespace
        ]
        return [
            rule
            for b in bindings
            if subject in [{k: s.get(k) for k in subject} for s in b.get("subjects") or []]
            for rule in self._rules(b["roleRef"], namespace)
        ]

    def allowed(self, account: tuple[str, str], req: Request) -> bool:
        return any(rule_allows(r, req) for r in self.rules_of(account, req.namespace))


def group_of(obj: dict[str, Any]) -> str:
    version = str(obj["apiVersion"])
    return version.split("/")[0] if "/" in version else ""


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The platform chart rendered into namespace k8see with its CI values."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    done = subprocess.run(
        [
            require_tool("helm"),
            "template",
            "k8see",
            str(PLATFORM),
            "-n",
            RELEASE_NAMESPACE,
            "-f",
            str(PLATFORM / "ci" / "default-values.yaml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def namespace_bindings(platform: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The RoleBindings a deploy writes into the PR namespace, from the workers' own env."""
    worker = next(
        d
        for d in platform
        if d["kind"] == "Deployment" and d["metadata"]["name"] == f"{FULLNAME}-worker-deploy"
    )
    env = {
        e["name"]: e.get("value")
        for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    mp = pytest.MonkeyPatch()
    mp.setenv("K8SEE_DEPLOY__NAMESPACE_BINDINGS", env["K8SEE_DEPLOY__NAMESPACE_BINDINGS"])
    try:
        bindings = PlatformSettings().deploy.namespace_bindings
    finally:
        mp.undo()
    return [
        kube.role_binding_manifest(namespace=PR_NAMESPACE, cluster_role=role, account=account)
        for role, account in bindings.items()
    ]


@pytest.fixture(scope="module")
def app_objects() -> list[dict[str, Any]]:
    """Everything a deploy applies: a k8s-ee.yaml with every database through
    ``render_manifests`` (namespace, guardrails, pull secret, release), and the app chart
    with every optional piece on (ingress, ServiceMonitor, test pod) and every database."""
    require_tool("helm")
    databases = {db: True for db in ("postgresql", "mongodb", "redis", "minio", "mariadb")}
    config = RepoConfig.model_validate({"projectId": "shop", "databases": databases})
    settings = PlatformSettings(registry={"username": "bot", "password": "not-a-secret"})
    run = offline_run(config, repo="acme/shop", pr=42, sha="a" * 40, ref="main", settings=settings)
    applied = render_manifests(run, settings=settings, api_cidrs=["10.0.0.1/32"])
    values: dict[str, Any] = {}
    for name in ("full-values.yaml", "databases-values.yaml"):
        values.update(yaml.safe_load((APP / "ci" / name).read_text()))
    chart = helm.template(release="app", chart=APP, namespace=PR_NAMESPACE, values=values)
    return applied + chart


def test_every_object_a_deploy_applies_is_writable_in_the_pr_namespace_only_when_bound(
    platform: list[dict[str, Any]],
    namespace_bindings: list[dict[str, Any]],
    app_objects: list[dict[str, Any]],
) -> None:
    bound = Authorizer(platform + namespace_bindings)
    unbound = Authorizer(platform)
    kinds = {(group_of(o), o["kind"]) for o in app_objects}
    assert {
        ("postgresql.cnpg.io", "Cluster"),
        ("rbac.authorization.k8s.io", "Role"),
        ("monitoring.coreos.com", "ServiceMonitor"),
        ("", "Secret"),
    } <= kinds
    for obj in app_objects:
        key = (group_of(obj), obj["kind"])
        assert key in RESOURCES, f"{key}: name its resource here and grant it in clusterrole.yaml"
        namespace = "" if obj["kind"] == "Namespace" else PR_NAMESPACE
        for verb in OBJECT_VERBS if namespace else ("get", "create", "patch", "delete"):
            req = Request(verb, key[0], RESOURCES[key], namespace, obj["metadata"]["name"])
            assert bound.allowed(DEPLOY, req), req
            # Namespaced objects come only with the binding (RoleBindings aside: the deploy
            # pool writes its own in a new namespace); namespaces are cluster-wide.
            if RESOURCES[key] != "rolebindings":
                assert unbound.allowed(DEPLOY, req) is not bool(namespace), req
    # And the reads of the health check, the pod diagnostics and the destroy's PVC cleanup
    for req in (
        Request("list", "", "pods", PR_NAMESPACE),
        Request("get", "", "pods/log", PR_NAMESPACE, "app-0"),
        Request("get", "", "services/proxy", PR_NAMESPACE, "shop-pr-42-app:80"),
        Request("list", "apps", "replicasets", PR_NAMESPACE),
        Request("list", "", "secrets", PR_NAMESPACE),  # helm's release records
        Request("patch", "", "persistentvolumeclaims", PR_NAMESPACE, "data"),
    ):
        assert bound.allowed(DEPLOY, req), req
    # And the cluster-wide calls of ensure/delete_namespace and api_server_addresses
    for req in (
        Request("list", "", "namespaces"),
        Request("update", "", "namespaces/finalize", name=PR_NAMESPACE),
        Request("get", "", "services", "default", "kubernetes"),
        Request("get", "", "endpoints", "default", "kubernetes"),
    ):
        assert unbound.allowed(DEPLOY, req), req


def test_the_deploy_pool_reads_no_secret_outside_a_pr_namespace(
    platform: list[dict[str, Any]], namespace_bindings: list[dict[str, Any]]
) -> None:
    auth = Authorizer(platform + namespace_bindings)
    for pool in (DEFAULT, DEPLOY, MAINTENANCE):
        for verb in ("get", "list", "watch"):
            assert not auth.allowed(pool, Request(verb, "", "secrets", "kube-system", "x"))
            assert not auth.allowed(pool, Request(verb, "", "secrets", RELEASE_NAMESPACE, "x"))
            assert not auth.allowed(pool, Request(verb, "", "secrets"))  # across namespaces
        # No cluster-wide rule names Secrets, or every resource of a group.
        for rule in auth.rules_of(pool, ""):
            assert "secrets" not in rule["resources"] and "*" not in rule["resources"], rule
            assert "*" not in rule["apiGroups"] and "*" not in rule["verbs"], rule
    assert not auth.allowed(DEPLOY, Request("get", "", "services", "kube-system", "dns"))


def test_the_deploy_pool_writes_the_bindings_and_binds_only_the_per_namespace_roles(
    platform: list[dict[str, Any]], namespace_bindings: list[dict[str, Any]]
) -> None:
    # Given the cluster-wide rules alone (the namespace is new: nothing is bound in it yet)
    auth = Authorizer(platform)
    assert {b["roleRef"]["name"] for b in namespace_bindings} == PER_NAMESPACE_ROLES
    bound_to = {b["roleRef"]["name"]: b["subjects"] for b in namespace_bindings}
    assert bound_to == {
        f"{FULLNAME}-{role}": [{"kind": "ServiceAccount", "name": pool[1], "namespace": pool[0]}]
        for role, pool in (("pr-namespace", DEPLOY), ("pr-namespace-maintenance", MAINTENANCE))
    }
    for binding in namespace_bindings:
        name = binding["metadata"]["name"]
        for verb in ("get", "create", "patch"):
            req = Request(verb, "rbac.authorization.k8s.io", "rolebindings", PR_NAMESPACE, name)
            assert auth.allowed(DEPLOY, req), req
        # Writing a binding to a ClusterRole needs `bind` on that role.
        bind = Request("bind", "rbac.authorization.k8s.io", "clusterroles", name=name)
        assert auth.allowed(DEPLOY, bind)
        assert not auth.allowed(MAINTENANCE, bind)
    for other in ("cluster-admin", "admin", "edit", f"{FULLNAME}-deploy"):
        assert not auth.allowed(
            DEPLOY, Request("bind", "rbac.authorization.k8s.io", "clusterroles", name=other)
        )
    for verb in ("escalate", "create", "update"):
        assert not auth.allowed(DEPLOY, Request(verb, "rbac.authorization.k8s.io", "clusterroles"))
    # And the per-namespace roles are never bound cluster-wide
    refs = {b["roleRef"]["name"] for b in platform if b["kind"] == "ClusterRoleBinding"}
    assert refs == {f"{FULLNAME}-default", f"{FULLNAME}-deploy", f"{FULLNAME}-maintenance"}
    cluster_roles = {r["metadata"]["name"] for r in platform if r["kind"] == "ClusterRole"}
    assert cluster_roles >= PER_NAMESPACE_ROLES


def test_the_maintenance_pool_patches_namespaces_and_writes_the_pull_secret_when_bound(
    platform: list[dict[str, Any]], namespace_bindings: list[dict[str, Any]]
) -> None:
    bound = Authorizer(platform + namespace_bindings)
    for verb in ("get", "list", "patch"):
        assert bound.allowed(MAINTENANCE, Request(verb, "", "namespaces", name=PR_NAMESPACE))
    assert not bound.allowed(MAINTENANCE, Request("delete", "", "namespaces", name=PR_NAMESPACE))
    # kube.apply_objects: create, or read and replace
    for verb in ("get", "create", "update"):
        secret = Request(verb, "", "secrets", PR_NAMESPACE, "ghcr-pull-secret")
        assert bound.allowed(MAINTENANCE, secret)
        assert not Authorizer(platform).allowed(MAINTENANCE, secret)
        assert not bound.allowed(MAINTENANCE, Request(verb, "", "secrets", "kube-system", "x"))
    assert not bound.allowed(MAINTENANCE, Request("create", "apps", "deployments", PR_NAMESPACE))
    assert not bound.allowed(MAINTENANCE, Request("list", "", "pods", PR_NAMESPACE))


def test_the_subcharts_roles_grant_only_what_the_deploy_pool_holds(
    platform: list[dict[str, Any]],
    namespace_bindings: list[dict[str, Any]],
    app_objects: list[dict[str, Any]],
) -> None:
    # Creating a Role (or binding one) needs every permission it grants, or `escalate`.
    auth = Authorizer(platform + namespace_bindings)
    roles = [o for o in app_objects if o["kind"] == "Role"]
    assert roles, "the MongoDB subchart renders a Role"
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or [""]:
                            req = Request(verb, group, resource, PR_NAMESPACE, name)
                            assert auth.allowed(DEPLOY, req), (role["metadata"]["name"], req)
    role_names = {r["metadata"]["name"] for r in roles}
    for binding in (o for o in app_objects if o["kind"] == "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] in role_names


def test_rule_evaluation_follows_kubernetes() -> None:
    # The evaluator itself: wildcards, subresources and resourceNames as RBAC reads them.
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}
    assert rule_allows(rule, Request("get", "", "pods", "ns"))
    assert not rule_allows(rule, Request("get", "", "pods/log", "ns"))
    assert not rule_allows(rule, Request("get", "apps", "pods", "ns"))
    assert rule_allows({**rule, "resources": ["*"]}, Request("get", "", "pods/log", "ns"))
    assert rule_allows({**rule, "resources": ["*/log"]}, Request("get", "", "pods/log", "ns"))
    named = {**rule, "resourceNames": ["a"]}
    assert rule_allows(named, Request("get", "", "pods", "ns", "a"))
    assert not rule_allows(named, Request("get", "", "pods", "ns", "b"))
    assert not rule_allows(named, Request("get", "", "pods", "ns"))  # create, list: no name


def test_the_default_pool_only_lists_namespaces(
    platform: list[dict[str, Any]], namespace_bindings: list[dict[str, Any]]
) -> None:
    # validate asks whether an on-demand PR's namespace exists (kube.find_namespaces)
    auth = Authorizer(platform + namespace_bindings)
    assert auth.allowed(DEFAULT, Request("list", "", "namespaces"))
    assert auth.allowed(DEFAULT, Request("get", "", "namespaces", name=PR_NAMESPACE))
    for verb in ("create", "patch", "update", "delete"):
        assert not auth.allowed(DEFAULT, Request(verb, "", "namespaces", name=PR_NAMESPACE))
    for resource in ("secrets", "pods", "configmaps"):
        assert not auth.allowed(DEFAULT, Request("get", "", resource, PR_NAMESPACE, "x"))
    (account,) = [
        o for o in platform
        if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == DEFAULT[1]
    ]  # fmt: skip
    assert account["automountServiceAccountToken"] is True
    (build,) = [
        o for o in platform
        if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == f"{FULLNAME}-build"
    ]  # fmt: skip
    assert build["automountServiceAccountToken"] is False
