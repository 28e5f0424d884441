"""The platform chart: helm lint and template pass, Flower cannot be installed without auth,
and the rendered manifests install into the sandbox cluster (kubectl apply, real API).

The Grafana dashboard: every metric and label its queries use is one k8see.metrics exports,
and its ConfigMap is off by default and, when on, carries the sidecar label and the JSON."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

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
    assert kinds.count("Deployment") == 7  # four pools, beat, Flower, the API
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
    # The namespace is new, so whatever of it the cluster has is cluster-wide and not ours
    # (the platform installed there): the test would change it, then delete it.
    there = subprocess.run([kubectl, "get", "-n", namespace, "--ignore-not-found", "-o", "name",
                            "-f", "-"], input=out.stdout, env=kube_env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert there.returncode == 0, there.stderr
    if there.stdout.strip():
        pytest.skip(f"the cluster has the platform's cluster-wide objects: {there.stdout.split()}")
    subprocess.run([kubectl, "create", "namespace", namespace], env=kube_env, check=True,
                   capture_output=True)  # fmt: skip
    # Everything the chart renders, PodDisruptionBudgets and cluster RBAC included, with
    # kubectl's validation on.
    argv = [kubectl, "apply", "-n", namespace, "-f", "-"]
    try:
        done = subprocess.run(argv, input=out.stdout, env=kube_env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
    finally:
        # The cluster-wide objects too, so the cluster is as it was (the suite runs again).
        subprocess.run([kubectl, "delete", "-n", namespace, "--ignore-not-found", "--wait=false",
                        "-f", "-"], input=out.stdout, env=kube_env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "deployment.apps/k8see-k8see-platform-worker-build created" in done.stdout
    assert "poddisruptionbudget.policy/" in done.stdout
    assert "clusterrole.rbac.authorization.k8s.io/" in done.stdout


# --- the Grafana dashboard ----------------------------------------------------------------------

DASHBOARD = CHART / "dashboards" / "k8see.json"
#: Sample names each metric type exposes, from its family name.
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",), "gauge": ("",)}


def exported_metrics(redis_url: str) -> dict[str, set[str]]:
    """Every sample name k8see.metrics exports, with the labels a query may group by."""
    from prometheus_client.metrics import MetricWrapperBase

    from k8see import metrics

    out: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            labels = set(value._labelnames)
            if value._type == "histogram":
                labels.add("le")
            for suffix in SUFFIXES[str(value._type)]:
                out[value._name.removesuffix("_total") + suffix] = labels
    # The environment gauges are collected from Redis at scrape time.
    for family in metrics.EnvironmentCollector(redis_url).collect():
        out[family.name] = {"status"} if family.name == "k8see_environments" else set()
    return out


def test_dashboard_queries_only_metrics_and_labels_k8see_exports(redis_url: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exported = exported_metrics(redis_url)
    assert len(exprs) >= 12
    used = set()
    for expr in exprs:
        names = set(re.findall(r"\bk8see_[a-z_]+\b", expr))
        assert names, expr
        for name in names:
            assert name in exported, f"{name} in {expr!r} is not exported by k8see.metrics"
            used.add(name)
        labels = set(re.findall(r"(?:by|without) \(([^)]*)\)", expr))
        grouped = {label.strip() for group in labels for label in group.split(",")}
        matched = set(re.findall(r"(\w+)=~?\"", expr))
        allowed = set().union(*(exported[n] for n in names))
        assert grouped | matched <= allowed, expr
    # Every topic the issue asks for has a panel.
    for name in ("k8see_time_to_ready_seconds_bucket", "k8see_stage_duration_seconds_bucket",
                 "k8see_queue_wait_seconds_bucket", "k8see_runs_total",
                 "k8see_stage_failures_total", "k8see_environments",
                 "k8see_cleanup_actions_total", "k8see_lease_contention_total",
                 "k8see_stage_stops_total"):  # fmt: skip
        assert name in used


def test_dashboard_configmap_is_off_by_default_and_carries_the_sidecar_label(
    kube_env: dict[str, str],
) -> None:
    off = helm("template", "k8see", str(CHART), "-f", str(VALUES), env=kube_env)
    assert off.returncode == 0 and "-dashboard" not in off.stdout
    on = helm("template", "k8see", str(CHART), "-f", str(VALUES), "--set",
              "grafanaDashboard.enabled=true", "--show-only",
              "templates/dashboard-configmap.yaml", env=kube_env)  # fmt: skip
    assert on.returncode == 0, on.stderr
    configmap = yaml.safe_load(on.stdout)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["k8see.json"]) == json.loads(DASHBOARD.read_text())


def test_a_pool_can_get_a_user_namespace_for_buildah(kube_env: dict[str, str]) -> None:
    out = helm("template", "k8see", str(CHART), "-f", str(VALUES), "--set",
               "pools.build.hostUsers=false", "--set-json",
               'pools.build.securityContext={"seccompProfile":{"type":"Unconfined"}}',
               "--show-only", "templates/workers-deployment.yaml", env=kube_env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    pods = {d["metadata"]["name"].rsplit("-", 1)[1]: d["spec"]["template"]["spec"]
            for d in yaml.safe_load_all(out.stdout) if d}  # fmt: skip
    assert pods["build"]["hostUsers"] is False
    assert pods["build"]["containers"][0]["securityContext"] == {
        "seccompProfile": {"type": "Unconfined"}}  # fmt: skip
    # The other pools keep the defaults: non-root, nothing to escalate, no capabilities.
    for pool in ("default", "deploy", "maintenance"):
        assert "hostUsers" not in pods[pool]
        assert pods[pool]["securityContext"]["runAsNonRoot"] is True
        assert pods[pool]["containers"][0]["securityContext"] == {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}  # fmt: skip


def test_worker_metrics_listen_on_the_pod_ip(kube_env: dict[str, str]) -> None:
    # Issue 14: worker metrics listened on 0.0.0.0; the chart binds them to the pod's IP.
    out = helm("template", "k8see", str(CHART), "-f", str(VALUES),
               "--show-only", "templates/workers-deployment.yaml", env=kube_env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    for doc in (d for d in yaml.safe_load_all(out.stdout) if d):
        env = {e["name"]: e for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["K8SEE_METRICS__ADDRESS"]["valueFrom"] == {
            "fieldRef": {"fieldPath": "status.podIP"}}  # fmt: skip
