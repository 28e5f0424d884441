"""The real helm binary through a release's whole life, with validation on.

Covers: ``helm upgrade --install --atomic --wait`` of a chart with a Deployment, Service,
Ingress, ConfigMap, Secret and a CRD-backed resource (its CRD in ``crds/``); release records
stored as Secrets (type helm.sh/release.v1, labels owner/name/status/version) and found by
label selector; ``helm upgrade`` changing an env var; ``helm history``; ``helm rollback``;
``helm uninstall`` removing what the release made; an ``--atomic`` install of a crash-looping
image failing and rolling back (sandbox only: the crash is injected by image name).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import require_tool
from tests.fixtures.kube import TEST_IMAGE

CHART = Path(__file__).parent / "charts" / "demo"
pytestmark = pytest.mark.timeout(120)


def helm(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [require_tool("helm"), *args], env=env, capture_output=True, text=True, timeout=90
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def env_of(apps: client.AppsV1Api, namespace: str) -> dict[str, str]:
    dep = apps.read_namespaced_deployment("rel-web", namespace)
    return {e.name: e.value for e in dep.spec.template.spec.containers[0].env}


def test_install_upgrade_history_rollback_uninstall(
    kube_env: dict[str, str], kube_api_client: Any, kube_namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube_api_client), client.CoreV1Api(kube_api_client)
    ns = kube_namespace
    # Given a fresh namespace, when the chart is installed atomically and waited for
    helm(
        kube_env,
        "upgrade",
        "--install",
        "rel",
        str(CHART),
        "--set",
        f"image={TEST_IMAGE}",
        "-n",
        ns,
        "--atomic",
        "--wait",
        "--timeout",
        "60s",
    )
    # then every kind exists and the Deployment is ready.
    dep = apps.read_namespaced_deployment("rel-web", ns)
    assert (
        dep.status.ready_replicas == 1 and dep.status.observed_generation == dep.metadata.generation
    )
    assert core.read_namespaced_service("rel-web", ns).spec.cluster_ip
    assert client.NetworkingV1Api(kube_api_client).read_namespaced_ingress("rel-web", ns)
    assert core.read_namespaced_config_map("rel-config", ns).data["GREETING_COPY"] == "hello"
    assert core.read_namespaced_secret("rel-secret", ns).data["token"]
    custom = client.CustomObjectsApi(kube_api_client)
    assert custom.get_namespaced_custom_object(
        "postgresql.cnpg.io", "v1", ns, "clusters", "rel-postgresql"
    )
    releases = core.list_namespaced_secret(ns, label_selector="owner=helm,name=rel")
    assert [s.type for s in releases.items] == ["helm.sh/release.v1"]
    assert releases.items[0].metadata.labels["status"] == "deployed"

    # When an upgrade changes the env var, the Deployment carries the new value.
    helm(
        kube_env,
        "upgrade",
        "--install",
        "rel",
        str(CHART),
        "--set",
        f"image={TEST_IMAGE}",
        "-n",
        ns,
        "--atomic",
        "--wait",
        "--timeout",
        "60s",
        "--set",
        "greeting=bye",
    )
    assert env_of(apps, ns)["GREETING"] == "bye"
    history = json.loads(helm(kube_env, "history", "rel", "-n", ns, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]

    # When rolled back to revision 1, the old value returns as revision 3.
    helm(kube_env, "rollback", "rel", "1", "-n", ns, "--wait", "--timeout", "60s")
    assert env_of(apps, ns)["GREETING"] == "hello"
    history = json.loads(helm(kube_env, "history", "rel", "-n", ns, "-o", "json").stdout)
    assert history[-1]["revision"] == 3 and history[-1]["status"] == "deployed"

    # When uninstalled, the release's objects and records are gone.
    helm(kube_env, "uninstall", "rel", "-n", ns, "--wait", "--timeout", "60s")
    with pytest.raises(client.ApiException) as gone:
        apps.read_namespaced_deployment("rel-web", ns)
    assert gone.value.status == 404
    assert core.list_namespaced_secret(ns, label_selector="owner=helm,name=rel").items == []


@pytest.mark.sandbox_only
def test_atomic_install_of_a_crash_looping_image_rolls_back(
    kube_env: dict[str, str], kube_api_client: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    result = helm(
        kube_env,
        "upgrade",
        "--install",
        "bad",
        str(CHART),
        "--set",
        f"image={TEST_IMAGE}",
        "-n",
        ns,
        "--atomic",
        "--wait",
        "--timeout",
        "4s",
        "--set",
        "image=registry.local/crashloop:1",
        "--set",
        "database=false",
        check=False,
    )
    assert result.returncode != 0
    assert "atomic" in result.stderr and "uninstalled" in result.stderr
    apps, core = client.AppsV1Api(kube_api_client), client.CoreV1Api(kube_api_client)
    with pytest.raises(client.ApiException) as gone:
        apps.read_namespaced_deployment("bad-web", ns)
    assert gone.value.status == 404
    assert core.list_namespaced_secret(ns, label_selector="owner=helm,name=bad").items == []
