"""The real kubectl against the cluster, validation on (no ``--validate=false``).

Covers: ``kubectl apply -f`` creating and then three-way-updating a Deployment (an env var
changed, another removed, a container port added: strategic merge by merge keys), ``get -o
json`` and server-side printing, ``rollout status``, ``wait --for=condition=Available``,
``scale``, ``describe``, ``apply`` of a custom resource after its CRD (JSON merge patch path),
``apply --server-side``, and ``delete`` (with ``--wait``, foreground cascade) including a namespace.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_tool
from tests.fixtures.kube import TEST_IMAGE

pytestmark = pytest.mark.timeout(120)


def kubectl(
    env: dict[str, str], *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [require_tool("kubectl"), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def manifest(name: str, env: dict[str, str], ports: list[int]) -> str:
    doc = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": TEST_IMAGE,
                            "env": [{"name": k, "value": v} for k, v in env.items()],
                            "ports": [{"containerPort": p} for p in ports],
                        }
                    ]
                },
            },
        },
    }
    return yaml.safe_dump(doc)


def test_apply_rollout_wait_update_scale_delete(
    kube_env: dict[str, str], kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    path = tmp_path / "web.yaml"
    path.write_text(manifest("web", {"A": "1", "B": "2"}, [8080]))
    # Given a Deployment applied from a file,
    out = kubectl(kube_env, "apply", "-f", str(path), "-n", ns).stdout
    assert "deployment.apps/web created" in out
    # when its rollout is awaited, it completes and the Deployment is Available.
    kubectl(kube_env, "rollout", "status", "deployment/web", "-n", ns, "--timeout=60s")
    kubectl(
        kube_env, "wait", "--for=condition=Available", "deployment/web", "-n", ns, "--timeout=60s"
    )

    # When the file changes (A changed, B removed, a port added) and is applied again,
    path.write_text(manifest("web", {"A": "9"}, [8080, 9090]))
    assert "configured" in kubectl(kube_env, "apply", "-f", str(path), "-n", ns).stdout
    kubectl(kube_env, "rollout", "status", "deployment/web", "-n", ns, "--timeout=60s")
    live = json.loads(kubectl(kube_env, "get", "deployment", "web", "-n", ns, "-o", "json").stdout)
    container = live["spec"]["template"]["spec"]["containers"][0]
    # then the live object matches the file: a three-way strategic merge.
    assert container["env"] == [{"name": "A", "value": "9"}]
    assert [p["containerPort"] for p in container["ports"]] == [8080, 9090]
    assert live["status"]["updatedReplicas"] == 2 and live["metadata"]["generation"] == 2

    table = kubectl(kube_env, "get", "pods", "-n", ns).stdout
    assert "NAME" in table and "Running" in table

    kubectl(kube_env, "scale", "deployment/web", "--replicas=3", "-n", ns)
    kubectl(kube_env, "rollout", "status", "deployment/web", "-n", ns, "--timeout=60s")
    pods = json.loads(
        kubectl(kube_env, "get", "pods", "-n", ns, "-l", "app=web", "-o", "json").stdout
    )
    assert len([p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]) == 3

    described = kubectl(kube_env, "describe", "deployment", "web", "-n", ns).stdout
    assert "NewReplicaSetAvailable" in described

    kubectl(
        kube_env,
        "delete",
        "deployment",
        "web",
        "-n",
        ns,
        "--cascade=foreground",
        "--wait=true",
        "--timeout=60s",
    )
    missing = kubectl(kube_env, "get", "deployment", "web", "-n", ns, check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.sandbox.k8see.io
spec:
  group: sandbox.k8see.io
  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wdg]}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


def test_custom_resource_after_its_crd(kube_env: dict[str, str], kube_namespace: str) -> None:
    ns = kube_namespace
    kubectl(kube_env, "apply", "-f", "-", stdin=CRD)
    kubectl(
        kube_env,
        "wait",
        "--for=condition=Established",
        "crd/widgets.sandbox.k8see.io",
        "--timeout=30s",
    )
    widget = {
        "apiVersion": "sandbox.k8see.io/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"size": 1, "color": "red"},
    }
    kubectl(kube_env, "apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump(widget))
    del widget["spec"]["color"]  # type: ignore[attr-defined]
    widget["spec"]["size"] = 2  # type: ignore[index]
    kubectl(kube_env, "apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump(widget))
    live = json.loads(kubectl(kube_env, "get", "wdg", "w", "-n", ns, "-o", "json").stdout)
    assert live["spec"] == {"size": 2}
    assert live["metadata"]["generation"] == 2


def test_server_side_apply(kube_env: dict[str, str], kube_namespace: str) -> None:
    ns = kube_namespace
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ssa"},
        "data": {"a": "1", "b": "2"},
    }
    kubectl(kube_env, "apply", "--server-side", "-n", ns, "-f", "-", stdin=yaml.safe_dump(doc))
    doc["data"] = {"a": "3"}
    kubectl(kube_env, "apply", "--server-side", "-n", ns, "-f", "-", stdin=yaml.safe_dump(doc))
    live = json.loads(kubectl(kube_env, "get", "configmap", "ssa", "-n", ns, "-o", "json").stdout)
    assert live["data"] == {"a": "3"}


def test_delete_namespace_waits_until_gone(kube_env: dict[str, str]) -> None:
    kubectl(kube_env, "create", "namespace", "kubectl-doomed")
    kubectl(kube_env, "create", "configmap", "x", "-n", "kubectl-doomed", "--from-literal=a=b")
    kubectl(kube_env, "delete", "namespace", "kubectl-doomed", "--wait=true", "--timeout=60s")
    missing = kubectl(kube_env, "get", "namespace", "kubectl-doomed", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr
