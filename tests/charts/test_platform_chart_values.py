"""The platform chart as a platform team installs it, rendered by the real helm binary.

Covers: ``helm lint --strict`` of every ``ci/*-values.yaml`` scenario; the metrics Service
selects the worker pods only (beat and Flower serve nothing on the metrics port, so a
ServiceMonitor would scrape them as down); with ``redis.enabled=false`` the Redis URL comes
from ``redis.external`` (a Secret or a plain URL), each container gets ``K8SEE_REDIS__URL``
once, and nothing names the bundled Redis or its Secret; Flower's GitHub OAuth needs both
``FLOWER_AUTH_PROVIDER`` and ``FLOWER_AUTH``; ``global`` values (set by a parent chart) are
accepted; Chart.yaml says where the chart comes from; NOTES.txt tells the installer what to do
next.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_tool

CHART = Path(__file__).resolve().parents[2] / "charts" / "k8see-platform"
VALUES = CHART / "ci" / "default-values.yaml"
FULLNAME = "k8see-k8see-platform"


def helm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("helm"), *args], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip


def render(*sets: str) -> list[dict[str, Any]]:
    argv = ["template", "k8see", str(CHART), "-f", str(VALUES)]
    out = helm(*argv, *(arg for s in sets for arg in ("--set", s)))
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def refusal(*sets: str) -> str:
    argv = ["template", "k8see", str(CHART), "-f", str(VALUES)]
    out = helm(*argv, *(arg for s in sets for arg in ("--set", s)))
    assert out.returncode != 0, out.stdout
    return out.stderr


def pod_templates(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }


def containers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f"{name}/{c['name']}": c
        for name, template in pod_templates(docs).items()
        for c in template["spec"].get("initContainers", []) + template["spec"]["containers"]
    }


@pytest.mark.parametrize("scenario", sorted((CHART / "ci").glob("*-values.yaml")), ids=str)
def test_lint_strict_every_scenario(scenario: Path) -> None:
    out = helm("lint", str(CHART), "--strict", "-f", str(scenario))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_metrics_service_selects_only_the_worker_pods() -> None:
    docs = render("metrics.serviceMonitor.enabled=true")
    service = next(d for d in docs if d["metadata"]["name"] == f"{FULLNAME}-metrics")
    selector = service["spec"]["selector"]
    selected = {
        name
        for name, template in pod_templates(docs).items()
        if selector.items() <= template["metadata"]["labels"].items()
    }
    pools = ("default", "build", "deploy", "maintenance")
    assert selected == {f"{FULLNAME}-worker-{pool}" for pool in pools}
    for name in selected:
        ports = containers([d for d in docs if d["metadata"]["name"] == name])
        assert [p["containerPort"] for c in ports.values() for p in c["ports"]] == [9808]


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (
            ["redis.external.existingSecret=shared-redis"],
            {"valueFrom": {"secretKeyRef": {"name": "shared-redis", "key": "redis-url"}}},
        ),
        (
            ["redis.external.existingSecret=shared-redis", "redis.external.existingSecretKey=url"],
            {"valueFrom": {"secretKeyRef": {"name": "shared-redis", "key": "url"}}},
        ),
        (["redis.external.url=rediss://redis.example.org:6380/0"], {"value": "rediss://redis.example.org:6380/0"}),
        (["settings.K8SEE_REDIS__URL=redis://redis.example.org:6379/2"], {"value": "redis://redis.example.org:6379/2"}),
    ],
    ids=["secret", "secret-key", "url", "settings"],
)  # fmt: skip
def test_an_external_redis_is_the_only_redis_the_pods_are_given(
    sets: list[str], expected: dict[str, Any]
) -> None:
    docs = render("redis.enabled=false", *sets)
    text = yaml.safe_dump_all(docs)
    # Then nothing of the bundled Redis is rendered or referenced
    assert f"{FULLNAME}-redis" not in text and "REDIS_PASSWORD" not in text
    assert not [d for d in docs if d["kind"] == "StatefulSet"]
    # And every k8see container gets the external URL exactly once
    for name, container in containers(docs).items():
        urls = [e for e in container["env"] if e["name"] == "K8SEE_REDIS__URL"]
        assert len(urls) == 1, name
        assert {k: v for k, v in urls[0].items() if k != "name"} == expected, name


def test_an_external_redis_without_a_url_is_refused() -> None:
    message = refusal("redis.enabled=false")
    assert "redis.external.existingSecret" in message and "redis.external.url" in message


def test_the_bundled_redis_and_a_url_in_settings_are_refused_together() -> None:
    message = refusal("settings.K8SEE_REDIS__URL=redis://elsewhere:6379/0")
    assert "redis.enabled=false" in message


def test_the_bundled_redis_sets_the_url_once() -> None:
    for name, container in containers(render()).items():
        if name.startswith(f"{FULLNAME}-redis/"):  # Redis's own pod (the server, its aclfile)
            continue
        urls = [e for e in container["env"] if e["name"] == "K8SEE_REDIS__URL"]
        assert len(urls) == 1 and f"@{FULLNAME}-redis:6379/0" in urls[0]["value"], name


def test_flower_oauth_needs_the_provider_and_the_allowed_emails() -> None:
    provider = "flower.env.FLOWER_AUTH_PROVIDER=flower.views.auth.GithubLoginHandler"
    message = refusal("flower.basicAuthSecret=", provider)
    assert "FLOWER_AUTH" in message and "email" in message
    docs = render("flower.basicAuthSecret=", provider, r"flower.env.FLOWER_AUTH=.*@example\.org")
    flower = containers(docs)[f"{FULLNAME}-flower/flower"]
    assert {"FLOWER_AUTH_PROVIDER", "FLOWER_AUTH"} <= {e["name"] for e in flower["env"]}


def test_global_values_from_a_parent_chart_are_accepted() -> None:
    render("global.imageRegistry=registry.example.org", "global.storageClass=fast")


def test_chart_metadata_says_where_it_comes_from() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["home"].startswith("https://")
    assert chart["sources"] and all(s.startswith("https://") for s in chart["sources"])
    assert chart["maintainers"] and all(m.get("name") for m in chart["maintainers"])


def test_notes_tell_the_installer_what_runs_and_what_to_do_next(kube_env: dict[str, str]) -> None:
    out = helm("install", "k8see", str(CHART), "-f", str(VALUES), "--dry-run=client", env=kube_env)
    assert out.returncode == 0, out.stderr
    notes = out.stdout.split("NOTES:", 1)[1]
    assert "worker-build" in notes and "port-forward" in notes and "5555" in notes
    assert "k8see status" in notes


def test_the_deploy_pool_reads_secrets_only_in_the_listed_source_namespaces() -> None:
    docs = render("previewSecrets.namespaces={shop-preview-secrets,cart-preview-secrets}")
    roles = [d for d in docs if d["kind"] == "Role" and "preview-secrets" in d["metadata"]["name"]]
    bindings = [
        d for d in docs if d["kind"] == "RoleBinding" and "preview-secrets" in d["metadata"]["name"]
    ]
    assert sorted(r["metadata"]["namespace"] for r in roles) == [
        "cart-preview-secrets",
        "shop-preview-secrets",
    ]
    for role in roles:
        assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"],
                                  "verbs": ["get", "list"]}]  # fmt: skip
    assert {s["name"] for b in bindings for s in b["subjects"]} == {f"{FULLNAME}-deploy"}
    # None by default, and a name that is no namespace is refused
    assert not [d for d in render() if "preview-secrets" in d["metadata"]["name"]]
    assert "previewSecrets" in refusal("previewSecrets.namespaces={Not_A_Namespace}")
