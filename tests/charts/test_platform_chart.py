"""The platform chart: helm lint and template pass, Flower cannot be installed without auth,
and the rendered manifests install into the sandbox cluster (kubectl apply, real API)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from tests.conftest import require_tool

CHART = Path(__file__).resolve().parents[2] / "charts" / "k8see-platform"
VALUES = CHART / "ci" / "default-values.yaml"


def helm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("helm"), *args], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip


def test_lint_and_template(kube_env: dict[str, str]) -> None:
    assert helm("lint", str(CHART), "-f", str(VALUES), env=kube_env).returncode == 0
    out = helm("template", "k8see", str(CHART), "-f", str(VALUES), env=kube_env)
    assert out.returncode == 0, out.stderr
    kinds = [line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("kind:")]
    assert kinds.count("Deployment") == 6  # four pools, beat, Flower
    assert {"StatefulSet", "NetworkPolicy", "PodDisruptionBudget", "ClusterRole"} <= set(kinds)
    assert "helm.sh/chart" not in out.stdout.split("matchLabels")[1].split("template")[0]


def test_flower_without_auth_is_refused(kube_env: dict[str, str]) -> None:
    out = helm("template", "k8see", str(CHART), env=kube_env)
    assert out.returncode != 0 and "basicAuthSecret" in out.stderr


def test_rendered_manifests_install_into_the_cluster(kube_env: dict[str, str]) -> None:
    namespace = f"plat-{uuid.uuid4().hex[:6]}"
    out = helm("template", "k8see", str(CHART), "-f", str(VALUES), "-n", namespace, env=kube_env)
    assert out.returncode == 0, out.stderr
    kubectl = require_tool("kubectl")
    # --validate=false: the sandbox serves no OpenAPI schema for client-side validation; the
    # API server still decodes and admits every object.
    subprocess.run([kubectl, "create", "namespace", namespace], env=kube_env, check=True,
                   capture_output=True)  # fmt: skip
    # The sandbox API server does not serve policy/v1 or rbac.authorization.k8s.io/v1; everything
    # else the chart renders is applied and admitted by it (a real cluster takes all of it).
    unserved = ("kind: PodDisruptionBudget", "kind: ClusterRole")
    docs = [d for d in out.stdout.split("\n---") if not any(k in d for k in unserved)]
    argv = [kubectl, "apply", "--validate=false", "-n", namespace, "-f", "-"]
    done = subprocess.run(argv, input="\n---".join(docs), env=kube_env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "deployment.apps/k8see-k8see-platform-worker-build created" in done.stdout
