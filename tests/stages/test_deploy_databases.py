"""Deploying environments with databases on the real cluster: real helm, real kubernetes client.

Covers: the example app (examples/postgres-app's config shape) with each database alone and
with all five: the subchart objects ``app-<db>``, what the operators derive from them
(``app-postgresql-rw``/``-ro``/``-r``, ``app-postgresql-app``, ``app-mongodb-svc``,
``app-mongodb-admin-app``, ``app-minio-hl``), the connection variables and wait init
containers of the app pod (which reach each database's pod by its Service name), the quota
computed for the config, labels; an upgrade with changed env and resources that keeps every
generated password (Helm ``lookup``) and refreshes the registry pull secret; passwords never
in the run log; destroy to nothing left.

The chart ships no operator CRDs (the operators install them). On the local cluster,
``database_operators`` installs the operators' real CRDs and starts the reconciler standing in
for them, and ``database_images`` the images the node can pull (``tests.fixtures.databases``).
"""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from k8see import names
from k8see.integrations import kube
from k8see.manifests import quota
from k8see.settings import PlatformSettings
from k8see.stages import deploy, destroy
from k8see.stages.context import StageContext
from tests.conftest import require_tool
from tests.fixtures.github import SANDBOX_TOKEN
from tests.fixtures.kube import RUN_ID
from tests.stages.test_deploy import _image, make_run  # noqa: F401 (_image: autouse)

DATABASES = ("postgresql", "mongodb", "redis", "minio", "mariadb")
#: Objects each database leaves in the namespace once its operator reconciled (kind, name).
OBJECTS = {
    "postgresql": [
        ("Service", "app-postgresql-rw"),
        ("Service", "app-postgresql-ro"),
        ("Service", "app-postgresql-r"),
        ("Secret", "app-postgresql-app"),
    ],
    "mongodb": [
        ("Service", "app-mongodb-svc"),
        ("Secret", "app-mongodb-password"),
        ("Secret", "app-mongodb-admin-app"),
        ("ServiceAccount", "mongodb-database"),
    ],
    "redis": [("Service", "app-redis"), ("Secret", "app-redis-secret")],
    "minio": [("Service", "app-minio-hl"), ("Secret", "app-minio-secret")],
    "mariadb": [
        ("Service", "app-mariadb"),
        ("Secret", "app-mariadb-secret"),
        ("PersistentVolumeClaim", "app-mariadb"),
    ],
}
#: Secrets whose values the chart generates and must keep across upgrades.
GENERATED = ("app-mongodb-password", "app-redis-secret", "app-minio-secret", "app-mariadb-secret")


class Log:
    """Every line the stage records and logs, to check no password leaks into them."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def record(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def ctx(
    kubeconfig: Path,
    tmp_path: Path,
    database_operators: None,
    database_images: dict[str, Any],
    log: Log,
    github: Any,
) -> StageContext:
    require_tool("helm")
    # destroy asks GitHub whether the PR is gone (these PRs are unknown to it: they are).
    settings = PlatformSettings(
        github={"api_url": github.url, "token": SANDBOX_TOKEN},
        deploy={
            "kubeconfig": str(kubeconfig),
            "domain": "preview.test",
            "health_attempts": 3,
            "health_interval_seconds": 0.1,
            "helm_timeout_seconds": 90,
            "destroy_timeout_seconds": 30,
            "database_wait_images": database_images["wait_images"],
        },
        registry={"type": "ghcr", "host": "ghcr.io", "username": "bot", "password": "pw-one-1"},
    )
    return StageContext(
        settings=settings,
        log=logging.getLogger("test-deploy-databases"),
        workdir=tmp_path,
        record_log=log.record,
    )


def api(ctx: StageContext) -> client.CoreV1Api:
    return client.CoreV1Api(kube.make_api(ctx.settings))


def read(core: client.CoreV1Api, kind: str, name: str, namespace: str) -> Any:
    if kind == "Service":
        return core.read_namespaced_service(name, namespace)
    if kind == "Secret":
        return core.read_namespaced_secret(name, namespace)
    if kind == "ServiceAccount":
        return core.read_namespaced_service_account(name, namespace)
    return core.read_namespaced_persistent_volume_claim(name, namespace)


def app_container(core: client.CoreV1Api, namespace: str, name: str) -> Any:
    apps = client.AppsV1Api(core.api_client)
    return apps.read_namespaced_deployment(name, namespace).spec.template.spec


def wait_for_operators(core: client.CoreV1Api, ns: str, db: str) -> None:
    """Poll until the objects of ``db`` exist (the simulated operators run in the background).

    The deadline only guards against a hang; nothing is asserted about how long it took.
    """
    for kind, name in OBJECTS[db]:
        deadline = time.monotonic() + 60
        while not _exists(core, kind, name, ns):
            assert time.monotonic() < deadline, f"{kind} {name} never appeared in {ns}"
            time.sleep(0.1)


def _exists(core: client.CoreV1Api, kind: str, name: str, ns: str) -> bool:
    try:
        read(core, kind, name, ns)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def options(images: dict[str, Any], db: str) -> Any:
    """k8s-ee.yaml's ``databases.<db>``: on the local cluster, images the node can pull."""
    return images["options"].get(db, True)


def reached(core: client.CoreV1Api, ns: str, path: str) -> bool:
    """Whether a database pod (the test app, on the local cluster) logged a GET of ``path``:
    what the app's wait init container sent it by its Service name."""
    for pod in core.list_namespaced_pod(ns).items:
        if pod.status.phase != "Running":
            continue
        log = core.read_namespaced_pod_log(pod.metadata.name, ns, _preload_content=False)
        if f"request GET {path}" in log.data.decode():
            return True
    return False


@pytest.mark.parametrize("db", DATABASES)
def test_each_database_alone(
    ctx: StageContext, database_images: dict[str, Any], db: str, log: Log
) -> None:
    project = f"db{db[:5]}{RUN_ID}"
    ns = names.namespace(project, 3)
    # When the app is deployed with only this database
    deploy.deploy_verified(make_run(project, 3, databases={db: options(database_images, db)}), ctx)
    core = api(ctx)
    # Then the database's objects exist, including what its operator derives
    wait_for_operators(core, ns, db)
    # And the app pod waits for it and gets its connection variables
    pod = app_container(core, ns, names.deployment_name(project, 3))
    assert [c.name for c in pod.init_containers] == [f"wait-for-{db}"]
    env = {e.name for e in pod.containers[0].env}
    assert env
    if database_images["standin"]:  # the database pod is the test app: it logs the wait
        client_name = {"postgresql": "pg_isready", "mongodb": "mongosh", "redis": "redis-cli"}
        path = {"minio": "/minio/health/live", "mariadb": "/mariadb-admin"}
        assert reached(core, ns, path.get(db) or f"/{client_name[db]}")
    # And the quota is the one computed for this config (the reference row)
    hard = core.read_namespaced_resource_quota("pr-quota", ns).spec.hard
    assert hard == quota.quota_hard(databases={db: {}})
    gone = destroy.run(make_run(project, 3), ctx).result("destroy")
    assert gone["deleted"] is True


def secret_values(core: client.CoreV1Api, ns: str) -> dict[str, dict[str, str]]:
    return {
        name: {
            k: base64.b64decode(v).decode()
            for k, v in (core.read_namespaced_secret(name, ns).data or {}).items()
        }
        for name in GENERATED
    }


def test_all_five_upgrade_keeps_passwords_and_destroy_leaves_nothing(
    ctx: StageContext, database_images: dict[str, Any], log: Log
) -> None:
    project = f"dball{RUN_ID}"
    ns = names.namespace(project, 5)
    dbs = {db: options(database_images, db) for db in DATABASES} | {"minio": {"storage": "3Gi"}}
    # Given an environment with all five databases
    deploy.deploy_verified(make_run(project, 5, databases=dbs, env={"STEP": "one"}), ctx)
    core = api(ctx)
    for db in DATABASES:
        wait_for_operators(core, ns, db)
    hard = core.read_namespaced_resource_quota("pr-quota", ns).spec.hard
    assert hard["requests.cpu"] == "1400m"  # the reference's all-five row
    assert hard["requests.storage"] == "12Gi"  # plus MinIO's 2Gi over its default
    pod = app_container(core, ns, names.deployment_name(project, 5))
    assert [c.name for c in pod.init_containers] == [f"wait-for-{db}" for db in DATABASES]
    env = {e.name: e for e in pod.containers[0].env}
    assert env["DATABASE_TYPE"].value == "mariadb"
    assert env["DATABASE_URL"].value_from.secret_key_ref.name == "app-postgresql-app"
    assert env["MONGODB_URI"].value_from.secret_key_ref.name == "app-mongodb-admin-app"
    assert env["S3_ENDPOINT"].value == "http://app-minio-hl:9000"
    assert pod.image_pull_secrets[0].name == "ghcr-pull-secret"
    before = secret_values(core, ns)
    pull_before = core.read_namespaced_secret("ghcr-pull-secret", ns).data

    # When it is upgraded with changed env and resources, and a rotated registry password
    ctx.settings.registry.password = ctx.settings.registry.password.__class__("pw-two-2")
    resources = {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "400m", "memory": "512Mi"},
    }
    second = deploy.deploy_verified(
        make_run(project, 5, databases=dbs, env={"STEP": "two"}, resources=resources), ctx
    )
    # Then the release moved on with the new env and resources
    assert second.result("deploy")["release_revision"] == 2
    cm = core.read_namespaced_config_map(f"{names.deployment_name(project, 5)}-config", ns)
    assert cm.data["STEP"] == "two"
    pod = app_container(core, ns, names.deployment_name(project, 5))
    assert pod.containers[0].resources.limits == {"cpu": "400m", "memory": "512Mi"}
    new_hard = core.read_namespaced_resource_quota("pr-quota", ns).spec.hard
    assert quota.cpu_millicores(new_hard["requests.cpu"]) > 1400
    # And every generated password is the same as before (Helm lookup)
    assert secret_values(core, ns) == before
    # And the pull secret was refreshed with the new registry password
    assert core.read_namespaced_secret("ghcr-pull-secret", ns).data != pull_before
    # And no password reached the run's log
    text = "\n".join(log.lines)
    for values in before.values():
        for value in values.values():
            assert len(value) < 8 or value not in text

    # When the PR is closed
    gone = destroy.run(make_run(project, 5), ctx).result("destroy")
    # Then nothing is left: no namespace, no release, no objects
    assert gone["deleted"] is True
    assert gone["removed"] == ["HelmRelease/app", f"Namespace/{ns}"]
    with pytest.raises(ApiException) as info:
        core.read_namespace(ns)
    assert info.value.status == 404
    assert ns not in kube.find_namespaces(api=core.api_client, repo="acme/shop", pr=5)


def test_unknown_database_option_fails_with_the_key_and_where_to_look(ctx: StageContext) -> None:
    # Given a k8s-ee.yaml passing a nested option the redis subchart does not have (a
    # top-level one is refused by validate already; nested values pass to the subchart)
    from k8see.errors import DeployFailed

    project = f"dbbad{RUN_ID}"
    with pytest.raises(DeployFailed) as info:
        deploy.deploy_verified(
            make_run(project, 2, databases={"redis": {"config": {"maxmemry": "1gb"}}}), ctx
        )
    # Then the PR author is told which key and where the options are listed
    assert "maxmemry" in info.value.message
    assert "docs/environments.md" in (info.value.hint or "")
    assert info.value.where is not None and info.value.where.field == "databases"
    destroy.run(make_run(project, 2), ctx)
