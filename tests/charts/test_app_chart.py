"""The app chart, rendered by the real helm binary (no cluster needed).

Covers: ``helm lint --strict`` of every ``ci/*-values.yaml`` scenario; names, labels and
selectors (docs/environments.md); the hardened pod; image by digest or tag; every value k8see passes
changing the rendered manifest as it says (resources, env, envFrom, writableDirs, ingress
enabled/class/annotations, metrics and metricsPath, priorityClassName, imagePullSecrets,
probes on healthPath, app port); the ConfigMap checksum following env; ``helm lint --strict``
with the chart's own defaults; no default previewDomain (someone's domain); and refusals with
a clear message (missing projectId or previewDomain, unknown keys, ``..`` in writableDirs).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8see.errors import HelmError
from k8see.integrations import helm
from tests.conftest import ROOT, require_tool

CHART = ROOT / "charts" / "k8s-ee-app"
DIGEST = "sha256:" + "ab" * 32
SHA = "0123456789abcdef0123456789abcdef01234567"
BASE: dict[str, Any] = {
    "projectId": "shop",
    "prNumber": 42,
    "commitSha": SHA,
    "branchName": "feature/Checkout page",
    "previewDomain": "preview.example.com",
    "image": {"repository": "reg.example.com/acme/shop/shop", "tag": "pr-42", "digest": DIGEST},
}


@pytest.fixture(autouse=True)
def _helm() -> None:
    require_tool("helm")


def render(**overrides: Any) -> dict[str, dict[str, Any]]:
    values = {**BASE, **overrides}
    docs = helm.template(release="app", chart=CHART, namespace="shop-pr-42", values=values)
    return {doc["kind"]: doc for doc in docs}


def pod(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = objects["Deployment"]["spec"]["template"]["spec"]
    return spec


def container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    first: dict[str, Any] = pod(objects)["containers"][0]
    return first


@pytest.mark.parametrize("scenario", sorted((CHART / "ci").glob("*-values.yaml")), ids=str)
def test_lint_strict_every_scenario(scenario: Path) -> None:
    done = subprocess.run(
        ["helm", "lint", str(CHART), "--strict", "-f", str(scenario)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_lint_strict_with_the_charts_own_defaults() -> None:
    # Given no values at all: helm lint renders past the chart's required-value failures
    done = subprocess.run(
        ["helm", "lint", str(CHART), "--strict"], capture_output=True, text=True, check=False
    )
    # Then it still passes, and it reports what is required
    assert done.returncode == 0, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert "projectId is required" in said and "previewDomain is required" in said


def test_preview_domain_has_no_default_that_belongs_to_someone() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert defaults["previewDomain"] == ""


def test_a_preview_url_alone_needs_no_preview_domain() -> None:
    objects = render(previewDomain="", previewUrl="https://shop-42.apps.example.org")
    assert objects["ConfigMap"]["data"]["PREVIEW_URL"] == "https://shop-42.apps.example.org"


def test_default_objects_names_and_labels() -> None:
    objects = render()
    assert sorted(objects) == ["ConfigMap", "Deployment", "Service"]
    deploy = objects["Deployment"]
    assert deploy["metadata"]["name"] == "shop-pr-42-app"
    labels = deploy["metadata"]["labels"]
    assert labels["k8s-ee/project-id"] == "shop"
    assert labels["k8s-ee/pr-number"] == "42"
    assert labels["k8s-ee/commit-sha"] == SHA
    assert labels["k8s-ee/branch"] == "feature-Checkout-page"
    assert labels["app.kubernetes.io/name"] == "k8s-ee-app"
    assert labels["app.kubernetes.io/instance"] == "app"
    assert labels["app.kubernetes.io/version"] == "pr-42"
    selector = deploy["spec"]["selector"]["matchLabels"]
    assert "helm.sh/chart" not in selector
    assert "k8s-ee/commit-sha" not in selector
    assert selector == objects["Service"]["spec"]["selector"]
    assert objects["ConfigMap"]["metadata"]["name"] == "shop-pr-42-app-config"


def test_fullname_is_cut_to_63_characters() -> None:
    objects = render(projectId="a" * 20, prNumber=10**9, nameOverride="x" * 40)
    assert len(objects["Deployment"]["metadata"]["name"]) <= 63


def test_pod_is_hardened_without_prestop_shell() -> None:
    objects = render()
    assert pod(objects)["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1001,
        "runAsGroup": 1001,
        "fsGroup": 1001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    sc = container(objects)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "lifecycle" not in container(objects)
    mounts = {m["mountPath"] for m in container(objects)["volumeMounts"]}
    assert mounts == {"/tmp"}


def test_image_by_digest_else_tag() -> None:
    assert container(render())["image"] == f"reg.example.com/acme/shop/shop@{DIGEST}"
    tagged = render(image={"repository": "reg/x", "tag": "pr-42"})
    assert container(tagged)["image"] == "reg/x:pr-42"


def test_configmap_has_platform_keys_and_user_env_which_cannot_override_them() -> None:
    data = render(env={"LOG_LEVEL": "debug", "PORT": "1"})["ConfigMap"]["data"]
    assert data == {
        "PORT": "3000",
        "PR_NUMBER": "42",
        "COMMIT_SHA": SHA,
        "BRANCH_NAME": "feature-Checkout-page",
        "APP_VERSION": "pr-42",
        "PREVIEW_URL": "https://shop-pr-42.preview.example.com",
        "LOG_LEVEL": "debug",
    }


def test_preview_url_given_by_k8see_wins() -> None:
    data = render(previewUrl="https://x.example.org")["ConfigMap"]["data"]
    assert data["PREVIEW_URL"] == "https://x.example.org"


def test_env_change_changes_config_checksum() -> None:
    def checksum(objects: dict[str, dict[str, Any]]) -> str:
        annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    assert checksum(render(env={"A": "1"})) != checksum(render(env={"A": "2"}))
    assert checksum(render(env={"A": "1"})) == checksum(render(env={"A": "1"}))


def test_env_from_adds_user_sources_after_platform_config() -> None:
    env_from = container(
        render(envFrom=[{"secretRef": {"name": "s"}}, {"configMapRef": {"name": "c"}}])
    )["envFrom"]
    assert env_from == [
        {"configMapRef": {"name": "shop-pr-42-app-config"}},
        {"secretRef": {"name": "s"}},
        {"configMapRef": {"name": "c"}},
    ]


def test_resources_default_and_from_values() -> None:
    assert container(render())["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"cpu": "200m", "memory": "384Mi"},
    }
    custom = {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    assert container(render(resources=custom))["resources"] == custom


def test_writable_dirs_become_empty_dirs() -> None:
    objects = render(writableDirs=["/app/cache", "/var/run/x"])
    mounts = {m["name"]: m["mountPath"] for m in container(objects)["volumeMounts"]}
    assert mounts == {"tmp": "/tmp", "writable-0": "/app/cache", "writable-1": "/var/run/x"}
    volumes = {v["name"]: v for v in pod(objects)["volumes"]}
    assert volumes["writable-1"] == {"name": "writable-1", "emptyDir": {}}


def test_app_port_and_health_path_drive_probes_and_port() -> None:
    c = container(render(app={"port": 8080, "healthPath": "/healthz.json"}))
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz.json", "port": "http"}
    assert c["startupProbe"]["failureThreshold"] == 60
    assert c["livenessProbe"]["timeoutSeconds"] == 5
    assert c["readinessProbe"]["periodSeconds"] == 5


def test_ingress_enabled_with_class_annotations_and_tls_host() -> None:
    assert "Ingress" not in render()
    ingress = render(ingress={"enabled": True, "className": "nginx", "annotations": {"a/b": "c"}})[
        "Ingress"
    ]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["metadata"]["annotations"] == {"a/b": "c"}
    assert ingress["spec"]["tls"] == [{"hosts": ["shop-pr-42.preview.example.com"]}]
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "shop-pr-42.preview.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": "shop-pr-42-app",
        "port": {"name": "http"},
    }


def test_metrics_service_monitor_uses_metrics_path_and_interval() -> None:
    assert "ServiceMonitor" not in render()
    sm = render(
        metrics={"enabled": True, "interval": "15s"}, app={"metricsPath": "/internal/metrics"}
    )["ServiceMonitor"]
    endpoint = sm["spec"]["endpoints"][0]
    assert endpoint["path"] == "/internal/metrics"
    assert endpoint["interval"] == "15s"
    assert endpoint["scrapeTimeout"] == "10s"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["shop-pr-42"]}
    # A scrape interval under 10 s: the timeout follows it (Prometheus refuses a longer one)
    fast = render(metrics={"enabled": True, "interval": "5s"})["ServiceMonitor"]
    assert fast["spec"]["endpoints"][0]["scrapeTimeout"] == "5s"
    slow = render(metrics={"enabled": True, "interval": "2m"})["ServiceMonitor"]
    assert slow["spec"]["endpoints"][0]["scrapeTimeout"] == "10s"


def test_priority_class_and_pull_secrets() -> None:
    spec = pod(
        render(priorityClassName="default-app", imagePullSecrets=[{"name": "ghcr-pull-secret"}])
    )
    assert spec["priorityClassName"] == "default-app"
    assert spec["imagePullSecrets"] == [{"name": "ghcr-pull-secret"}]
    assert "priorityClassName" not in pod(render())


def test_service_port_80_to_http() -> None:
    assert render()["Service"]["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"projectId": ""}, "projectId is required"),
        ({"previewDomain": ""}, "previewDomain is required"),
        ({"surprise": 1}, "surprise"),
        ({"writableDirs": ["/a/../etc"]}, "writableDirs"),
        ({"env": {"A": 1}}, "env"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(
    overrides: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(HelmError) as info:
        render(**overrides)
    assert fragment in info.value.message
    assert "Traceback" not in info.value.message


def test_rendered_output_is_plain_yaml_documents() -> None:
    done = subprocess.run(
        ["helm", "template", "app", str(CHART), "-f", str(CHART / "ci" / "full-values.yaml")],
        capture_output=True,
        text=True,
        check=True,
    )
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(done.stdout) if d)
    assert kinds == ["ConfigMap", "Deployment", "Ingress", "Pod", "Service", "ServiceMonitor"]
