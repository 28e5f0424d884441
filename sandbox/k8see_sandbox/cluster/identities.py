"""The platform chart's identities on the local cluster: the pools run as its service accounts.

On a cluster, each pool's pod runs as a ServiceAccount of ``charts/k8see-platform`` with that
chart's least-privilege RBAC, and the chart's ValidatingAdmissionPolicy holds the deploy pool
to k8see's namespaces. Here the same objects are rendered from the same chart (``helm
template --validate`` against the cluster) and applied, and each pool process gets a
kubeconfig holding a token of its own ServiceAccount (TokenRequest, as a projected token
would be). No pool ever uses the cluster-admin identity; the build pool, whose pods mount no
token, gets none.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

NAMESPACE = "k8see"
RELEASE = "k8see"
CHART = Path(__file__).resolve().parents[3] / "charts" / "k8see-platform"
#: What the local cluster applies of the chart: identities and their limits, not workloads
#: (the pools run as processes here).
KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


@dataclass(frozen=True)
class PoolIdentities:
    """Per pool, the kubeconfig it uses (None: no API access), and the settings the chart
    gives every pool about identities (``K8SEE_DEPLOY__NAMESPACE_BINDINGS``)."""

    kubeconfigs: dict[str, Path | None]
    env: dict[str, str]


def render(*, helm: str, kubeconfig: Path) -> list[dict[str, Any]]:
    """The chart's objects for this cluster (its API versions decide what renders)."""
    out = subprocess.run(
        [
            helm,
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--validate",
            "--kubeconfig",
            str(kubeconfig),
            "--set",
            "flower.enabled=false",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def install(cluster: Any, *, helm: str, kubectl: str, pools: tuple[str, ...]) -> PoolIdentities:
    """Apply the chart's identities to ``cluster`` (a ``LocalCluster``) and mint pool tokens."""
    admin = cluster.admin_kubeconfig
    docs = render(helm=helm, kubeconfig=admin)
    objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}]
    objects += [d for d in docs if d.get("kind") in KINDS]
    subprocess.run(
        [kubectl, "--kubeconfig", str(admin), "-n", NAMESPACE, "apply", "--server-side", "-f", "-"],
        input=yaml.safe_dump_all(objects),
        check=True,
        capture_output=True,
        text=True,
    )
    accounts = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ServiceAccount"}
    env: dict[str, str] = {}
    for doc in docs:
        if doc.get("kind") == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                for var in container.get("env") or []:
                    if var["name"] == "K8SEE_DEPLOY__NAMESPACE_BINDINGS":
                        env[var["name"]] = var["value"]
    json.loads(env.get("K8SEE_DEPLOY__NAMESPACE_BINDINGS", "{}"))  # the chart renders JSON
    kubeconfigs: dict[str, Path | None] = {}
    for pool in pools:
        name = f"{RELEASE}-k8see-platform-{pool}"
        account = accounts.get(name)
        if account is None or account.get("automountServiceAccountToken") is False:
            kubeconfigs[pool] = None
            continue
        kubeconfigs[pool] = cluster.service_account_kubeconfig(
            cluster.root / f"pool-{pool}.kubeconfig", namespace=NAMESPACE, name=name
        )
    return PoolIdentities(kubeconfigs=kubeconfigs, env=env)
