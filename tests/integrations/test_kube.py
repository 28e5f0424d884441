"""The kube integration against the real API server (the local cluster, or K8SEE_TEST_KUBECONFIG).

Covers: credentials errors; unreachable server and API errors wrapped into the KubeError
family (no kubernetes or urllib3 exception escapes), 429/5xx retried; namespace creation with
the reference's labels and annotations, relabelling on a later deploy without touching
created-at, and the ownership refusal (another manager, another repository) that leaves the
namespace untouched; legacy namespaces adopted; the pools' RoleBindings written into a new
namespace and into one an older k8see made, once, with a missing subject added and a binding
to another role refused; none without bindings configured; apply twice is idempotent;
finding a PR's namespaces by label and repository; deleting with PVC finalizers stripped,
preserved and foreign namespaces kept, missing ones done; the service-proxy health check
against a real pod (200, 204 with an empty body, 500, nothing listening).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from k8see import names
from k8see.errors import KubeConflict, KubeError, KubeNotFound, PolicyError
from k8see.integrations import health, kube, kubeapi, namespace_removal
from k8see.manifests.guardrails import guardrails
from k8see.settings import PlatformSettings, ServiceAccountRef
from tests.conftest import free_port
from tests.fixtures.kube import RUN_ID, app_requests, run_testapp

REPO = "acme/shop"


@pytest.fixture
def api(kubeconfig: Path) -> Iterator[Any]:
    settings = PlatformSettings(deploy={"kubeconfig": str(kubeconfig)})
    api = kube.make_api(settings)
    yield api
    api.close()


@pytest.fixture
def ns_name(request: pytest.FixtureRequest) -> str:
    # One namespace per test, so tests sharing the sandbox never see each other's objects.
    return f"t{abs(hash(request.node.name)) % 10**8}-pr-{1 + abs(hash(request.node.name)) % 999}"


def _labels(ns: str, sha: str = "a" * 40) -> dict[str, str]:
    return {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_TYPE: "ephemeral",
        names.LABEL_PROJECT: ns.split("-pr-")[0],
        names.LABEL_PR: ns.split("-pr-")[1],
        names.LABEL_BRANCH: "main",
        names.LABEL_SHA: sha,
    }


def _annotations() -> dict[str, str]:
    return {
        names.ANN_CREATED_BY: "k8see",
        names.ANN_REPOSITORY: REPO,
        names.ANN_LAST_UPDATED: kube.now_iso(),
    }


def _read_ns(api: Any, name: str) -> Any:
    return client.CoreV1Api(api).read_namespace(name)


def test_missing_kubeconfig_is_a_kube_error_with_hint(tmp_path: Path) -> None:
    settings = PlatformSettings(deploy={"kubeconfig": str(tmp_path / "nope")})
    with pytest.raises(KubeError) as info:
        kube.make_api(settings)
    assert "K8SEE_DEPLOY__KUBECONFIG" in (info.value.hint or "")


def test_unreachable_server_is_a_kube_error(tmp_path: Path) -> None:
    # Given a kubeconfig pointing at a port where nothing listens
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{free_port()}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    api = kube.make_api(PlatformSettings(deploy={"kubeconfig": str(path)}))
    # Then every call fails as a KubeError, never a urllib3 or kubernetes exception
    with pytest.raises(KubeError) as info:
        kube.find_namespaces(api=api, repo=REPO, pr=1)
    assert "Cannot reach the Kubernetes API" in info.value.message
    api.close()


def test_not_found_is_wrapped_with_status_fields(api: Any) -> None:
    with pytest.raises(KubeNotFound) as info:
        kubeapi.call(client.CoreV1Api(api).read_namespace, "no-such-ns", what="read namespace")
    assert info.value.status == 404
    assert info.value.message.startswith("Kubernetes refused to read namespace: 404 NotFound")
    assert info.value.__cause__ is not None  # raised from the ApiException


@pytest.fixture
def faulty_api(kube_faults: Any) -> Iterator[Any]:
    """A client whose requests pass the fault-injecting proxy in front of the real server."""
    api = kube.make_api(PlatformSettings(deploy={"kubeconfig": kube_faults.kubeconfig}))
    yield api
    api.close()


def test_throttling_and_server_errors_are_retried(faulty_api: Any, faults: Any) -> None:
    faults.sequence[:] = [429, 500]
    found = kubeapi.call(client.CoreV1Api(faulty_api).list_namespace, what="list namespaces")
    assert any(ns.metadata.name == "default" for ns in found.items)
    assert faults.injected == 2


def test_persistent_server_errors_end_as_kube_error(faulty_api: Any, faults: Any) -> None:
    faults.sequence[:] = [500] * kubeapi.RETRY_ATTEMPTS
    with pytest.raises(KubeError) as info:
        kubeapi.call(client.CoreV1Api(faulty_api).list_namespace, what="list namespaces")
    assert info.value.status == 500
    assert "InternalError" in info.value.message


def test_ensure_namespace_creates_then_relabels(api: Any, ns_name: str) -> None:
    # When the namespace is ensured for the first time
    assert (
        kube.ensure_namespace(
            api=api, name=ns_name, labels=_labels(ns_name), annotations=_annotations(), repo=REPO
        )
        is True
    )
    first = _read_ns(api, ns_name)
    assert first.metadata.labels[names.LABEL_MANAGED_BY] == "k8see"
    assert first.metadata.labels[names.LABEL_SHA] == "a" * 40
    created_at = first.metadata.annotations[names.ANN_CREATED_AT]
    assert first.metadata.annotations[names.ANN_REPOSITORY] == REPO
    # And again for a new commit
    assert (
        kube.ensure_namespace(
            api=api,
            name=ns_name,
            labels=_labels(ns_name, "b" * 40),
            annotations=_annotations(),
            repo=REPO,
        )
        is False
    )
    second = _read_ns(api, ns_name)
    # Then the commit label moved and the creation time did not
    assert second.metadata.labels[names.LABEL_SHA] == "b" * 40
    assert second.metadata.annotations[names.ANN_CREATED_AT] == created_at


def _create_raw(api: Any, name: str, labels: dict[str, str], annotations: dict[str, str]) -> None:
    body = {"metadata": {"name": name, "labels": labels, "annotations": annotations}}
    client.CoreV1Api(api).create_namespace(body)


def test_namespace_of_another_manager_is_refused_and_untouched(api: Any, ns_name: str) -> None:
    _create_raw(api, ns_name, {names.LABEL_MANAGED_BY: "argocd", "team": "x"}, {})
    with pytest.raises(PolicyError) as info:
        kube.ensure_namespace(
            api=api, name=ns_name, labels=_labels(ns_name), annotations=_annotations(), repo=REPO
        )
    assert "managed-by: argocd" in info.value.message
    assert info.value.hint
    assert _read_ns(api, ns_name).metadata.labels == {
        names.LABEL_MANAGED_BY: "argocd",
        "team": "x",
        "kubernetes.io/metadata.name": ns_name,
    }


def test_namespace_of_another_repository_is_refused(api: Any, ns_name: str) -> None:
    _create_raw(
        api, ns_name, {names.LABEL_MANAGED_BY: "k8see"}, {names.ANN_REPOSITORY: "other/repo"}
    )
    with pytest.raises(PolicyError, match="belongs to repository other/repo"):
        kube.ensure_namespace(
            api=api, name=ns_name, labels=_labels(ns_name), annotations=_annotations(), repo=REPO
        )
    assert names.LABEL_SHA not in (_read_ns(api, ns_name).metadata.labels or {})


def test_legacy_namespace_is_adopted(api: Any, ns_name: str) -> None:
    _create_raw(
        api,
        ns_name,
        {names.LABEL_MANAGED_BY: "github-actions"},
        {names.ANN_REPOSITORY: REPO, names.ANN_CREATED_AT: "2024-01-01T00:00:00Z"},
    )
    assert (
        kube.ensure_namespace(
            api=api, name=ns_name, labels=_labels(ns_name), annotations=_annotations(), repo=REPO
        )
        is False
    )
    ns = _read_ns(api, ns_name)
    assert ns.metadata.labels[names.LABEL_MANAGED_BY] == "k8see"
    assert ns.metadata.annotations[names.ANN_CREATED_AT] == "2024-01-01T00:00:00Z"


#: What the platform chart configures: each pool's ServiceAccount bound to its ClusterRole.
BINDINGS = {
    "k8see-pr-namespace": ServiceAccountRef(name="k8see-deploy", namespace="k8see"),
    "k8see-pr-namespace-maintenance": ServiceAccountRef(
        name="k8see-maintenance", namespace="k8see"
    ),
}


def _bindings(api: Any, ns: str) -> dict[str, Any]:
    found = client.RbacAuthorizationV1Api(api).list_namespaced_role_binding(ns).items
    return {b.metadata.name: b for b in found}


def _ensure(api: Any, ns: str, bindings: Any = None) -> bool:
    return kube.ensure_namespace(
        api=api,
        name=ns,
        labels=_labels(ns),
        annotations=_annotations(),
        repo=REPO,
        bindings=bindings,
    )


def test_ensure_namespace_binds_each_pool_to_its_role_once(api: Any, ns_name: str) -> None:
    # When a new namespace is ensured with the chart's bindings
    assert _ensure(api, ns_name, BINDINGS) is True
    # Then each ServiceAccount is bound to its ClusterRole there, in a binding of its name
    found = _bindings(api, ns_name)
    assert sorted(found) == sorted(BINDINGS)
    for role, account in BINDINGS.items():
        binding = found[role]
        assert (binding.role_ref.api_group, binding.role_ref.kind, binding.role_ref.name) == (
            "rbac.authorization.k8s.io",
            "ClusterRole",
            role,
        )
        assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [
            ("ServiceAccount", account.name, account.namespace)
        ]
        assert binding.metadata.labels[names.LABEL_MANAGED_BY] == names.MANAGED_BY
    versions = {name: b.metadata.resource_version for name, b in found.items()}
    # And a second deploy changes nothing
    assert kube.ensure_bindings(api=api, namespace=ns_name, bindings=BINDINGS) == []
    assert _ensure(api, ns_name, BINDINGS) is False
    again = _bindings(api, ns_name)
    assert {name: b.metadata.resource_version for name, b in again.items()} == versions


def test_a_namespace_from_an_older_k8see_gets_its_bindings(api: Any, ns_name: str) -> None:
    # Given a namespace an older k8see made (no bindings), one binding there lacking its pool
    _create_raw(api, ns_name, _labels(ns_name), {names.ANN_REPOSITORY: REPO})
    role = "k8see-pr-namespace"
    other = {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "auditor"}
    body = kube.role_binding_manifest(namespace=ns_name, cluster_role=role, account=BINDINGS[role])
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        ns_name, {**body, "subjects": [other]}
    )
    # When the next deploy ensures the namespace
    assert _ensure(api, ns_name, BINDINGS) is False
    # Then both bindings are there, the existing one with its subject kept and the pool added
    found = _bindings(api, ns_name)
    assert sorted(found) == sorted(BINDINGS)
    assert [(s.kind, s.api_group or "", s.name) for s in found[role].subjects] == [
        ("User", "rbac.authorization.k8s.io", "auditor"),
        ("ServiceAccount", "", "k8see-deploy"),
    ]


def test_no_bindings_configured_writes_none(api: Any, ns_name: str) -> None:
    # docker-compose and the sandbox run without RBAC: nothing to bind
    assert _ensure(api, ns_name) is True
    assert _ensure(api, ns_name, {}) is False
    assert _bindings(api, ns_name) == {}


def test_a_binding_of_that_name_to_another_role_is_refused(api: Any, ns_name: str) -> None:
    _ensure(api, ns_name)
    role = "k8see-pr-namespace"
    body = kube.role_binding_manifest(namespace=ns_name, cluster_role=role, account=BINDINGS[role])
    body["roleRef"]["name"] = "admin"
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(ns_name, body)
    with pytest.raises(KubeConflict, match="refers to ClusterRole admin") as info:
        kube.ensure_bindings(api=api, namespace=ns_name, bindings={role: BINDINGS[role]})
    assert info.value.hint
    assert _bindings(api, ns_name)[role].role_ref.name == "admin"


def test_apply_twice_is_idempotent(api: Any, ns_name: str) -> None:
    kube.ensure_namespace(
        api=api, name=ns_name, labels=_labels(ns_name), annotations=_annotations(), repo=REPO
    )
    manifests = guardrails(
        namespace=ns_name,
        project_id=ns_name.split("-pr-")[0],
        pr=int(ns_name.split("-pr-")[1]),
        app_port=3000,
        databases=["redis"],
        api_cidrs=["10.43.0.1"],
    )
    first = kube.apply_objects(api=api, namespace=ns_name, manifests=manifests)
    second = kube.apply_objects(api=api, namespace=ns_name, manifests=manifests)
    assert first == second
    assert first[:2] == ["ResourceQuota/pr-quota", "LimitRange/pr-limits"]
    core = client.CoreV1Api(api)
    assert len(core.list_namespaced_resource_quota(ns_name).items) == 1
    hard = core.read_namespaced_resource_quota("pr-quota", ns_name).spec.hard
    assert hard["requests.cpu"] == "300m"
    assert hard["limits.memory"] == "1324Mi"
    policies = client.NetworkingV1Api(api).list_namespaced_network_policy(ns_name).items
    assert sorted(p.metadata.name for p in policies) == sorted(
        [
            "default-deny",
            "allow-same-namespace",
            "allow-ingress-controller",
            "allow-observability",
            "allow-egress",
        ]
    )
    # And a changed quota replaces the old one
    bigger = guardrails(
        namespace=ns_name,
        project_id=ns_name.split("-pr-")[0],
        pr=int(ns_name.split("-pr-")[1]),
        app_port=3000,
        databases=["redis", "postgresql"],
    )
    kube.apply_objects(api=api, namespace=ns_name, manifests=bigger[:1])
    hard = core.read_namespaced_resource_quota("pr-quota", ns_name).spec.hard
    assert hard["services"] == "7"


def test_apply_unknown_kind_is_refused(api: Any) -> None:
    with pytest.raises(KubeError, match="cannot apply Deployment"):
        kube.apply_objects(
            api=api,
            namespace="default",
            manifests=[{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}],
        )


def test_find_namespaces_filters_by_repository(api: Any) -> None:
    _create_raw(
        api,
        "find-a-pr-4242",
        {names.LABEL_MANAGED_BY: "k8see", names.LABEL_PR: "4242"},
        {names.ANN_REPOSITORY: REPO},
    )
    _create_raw(
        api,
        "find-b-pr-4242",
        {names.LABEL_MANAGED_BY: "github-actions", names.LABEL_PR: "4242"},
        {names.ANN_REPOSITORY: REPO},
    )
    _create_raw(
        api,
        "find-c-pr-4242",
        {names.LABEL_MANAGED_BY: "k8see", names.LABEL_PR: "4242"},
        {names.ANN_REPOSITORY: "other/repo"},
    )
    _create_raw(
        api,
        "find-d-pr-4242",
        {names.LABEL_MANAGED_BY: "kustomize", names.LABEL_PR: "4242"},
        {names.ANN_REPOSITORY: REPO},
    )
    assert kube.find_namespaces(api=api, repo=REPO, pr=4242) == ["find-a-pr-4242", "find-b-pr-4242"]
    assert kube.find_namespaces(api=api, repo=REPO, pr=4243) == []


def test_delete_strips_pvc_finalizers_and_reports(api: Any, ns_name: str) -> None:
    kube.ensure_namespace(
        api=api, name=ns_name, labels=_labels(ns_name), annotations=_annotations(), repo=REPO
    )
    client.CoreV1Api(api).create_namespaced_persistent_volume_claim(
        ns_name,
        {
            "metadata": {"name": "data", "finalizers": ["kubernetes.io/pvc-protection"]},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    removal = namespace_removal.delete_namespace(
        api=api, name=ns_name, repo=REPO, timeout_seconds=30, poll_seconds=0.2
    )
    assert removal.deleted is True
    assert removal.removed == ["PersistentVolumeClaim/data", f"Namespace/{ns_name}"]
    with pytest.raises(Exception) as gone:
        _read_ns(api, ns_name)
    assert getattr(gone.value, "status", None) == 404
    # And deleting again is done, not an error
    again = namespace_removal.delete_namespace(api=api, name=ns_name, repo=REPO, timeout_seconds=5)
    assert (again.deleted, again.skipped) == (False, "not-found")


@pytest.mark.parametrize(
    ("labels", "annotations", "skipped"),
    [
        (
            {names.LABEL_MANAGED_BY: "k8see", names.LABEL_PRESERVE: "true"},
            {names.ANN_REPOSITORY: REPO, names.ANN_PRESERVE_UNTIL: "2030-01-01T00:00:00Z"},
            "preserved",
        ),
        ({names.LABEL_MANAGED_BY: "helm"}, {}, "not-managed"),
        ({names.LABEL_MANAGED_BY: "k8see"}, {names.ANN_REPOSITORY: "other/repo"}, "different-repo"),
    ],
)
def test_delete_keeps_preserved_and_foreign_namespaces(
    api: Any, ns_name: str, labels: dict[str, str], annotations: dict[str, str], skipped: str
) -> None:
    _create_raw(api, ns_name, labels, annotations)
    removal = namespace_removal.delete_namespace(
        api=api, name=ns_name, repo=REPO, timeout_seconds=5
    )
    assert (removal.deleted, removal.skipped) == (False, skipped)
    assert _read_ns(api, ns_name).metadata.name == ns_name
    if skipped == "preserved":
        assert removal.preserve_until == "2030-01-01T00:00:00Z"


def _service(api: Any, namespace: str, name: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    port = {"name": "http", "port": 80, "targetPort": "http"}
    spec = {"selector": {"app": name}, "ports": [port]}
    core.create_namespaced_service(namespace, {"metadata": {"name": name}, "spec": spec})


@pytest.mark.parametrize(("status", "ok"), [(200, True), (204, True), (500, False)])
def test_health_check_through_service_proxy(api: Any, status: int, ok: bool) -> None:
    # Given the real app pod behind a Service, answering every path with `status`
    ns = f"hc{status}{RUN_ID}-pr-1"
    _service(api, ns, "hc-app")
    run_testapp(api, ns, "hc-app", status=status)
    # When the health check goes through the API server's service proxy
    result = health.wait_healthy(
        api=api,
        namespace=ns,
        service="hc-app",
        port=80,
        path="/health.json?full=1",
        attempts=2,
        interval_seconds=0.05,
    )
    # Then it reads the status the pod gave, for the path and query it was asked
    assert result.ok is ok
    assert result.status == status
    seen = app_requests(api, ns, "hc-app", at_least=1 if ok else 2)
    assert seen[0] == "GET /health.json?full=1"
    assert len(seen) == (1 if ok else 2)
    if not ok:
        assert "500" in result.detail
        assert "path" not in result.detail  # never a response body


def test_health_check_without_ready_backend(api: Any) -> None:
    ns = f"nobody{RUN_ID}-pr-1"
    _service(api, ns, f"{ns}-app")
    result = health.wait_healthy(
        api=api,
        namespace=ns,
        service=f"{ns}-app",
        port=80,
        path="/health",
        attempts=2,
        interval_seconds=0.05,
    )
    assert result.ok is False
    assert result.attempts == 2
    assert result.status in (404, 503)


def test_api_server_addresses_are_host_blocks(api: Any) -> None:
    found = kube.api_server_addresses(api=api)
    assert all(a.endswith("/32") or a.endswith("/128") for a in found)
