"""The platform chart's ``k8see api``: rendered by the real helm binary.

Covers: the API runs by default as its own Deployment with liveness ``/healthz`` and readiness
``/readyz`` probes, no Kubernetes token, the Redis-client label (the Redis NetworkPolicy admits
it) and the Redis URL once; its ClusterIP Service serves ``/metrics`` to a ServiceMonitor when
those are on; no Ingress unless asked, and then one for the front doors only, with TLS, that
refuses to render without a host; the webhook secrets come from a Secret.
"""

from __future__ import annotations

from typing import Any

from tests.charts.test_platform_chart_values import FULLNAME, containers, refusal, render

API = f"{FULLNAME}-api"


def _kind(docs: list[dict[str, Any]], kind: str, name: str = API) -> dict[str, Any] | None:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found[0] if found else None


def test_the_api_runs_by_default_with_probes_and_no_kubernetes_access() -> None:
    docs = render()
    deployment = _kind(docs, "Deployment")
    assert deployment is not None
    pod = deployment["spec"]["template"]
    container = containers(docs)[f"{API}/api"]
    assert container["args"][:1] == ["api"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["metadata"]["labels"]["k8see.dev/redis-client"] == "true"
    names = [e["name"] for e in container["env"]]
    assert names.count("K8SEE_REDIS__URL") == 1
    assert "K8SEE_API__WEBHOOK_SECRETS" not in names
    service = _kind(docs, "Service")
    assert service is not None and service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert _kind(docs, "Ingress") is None  # nothing exposed unless asked


def test_the_webhook_secrets_come_from_a_secret() -> None:
    container = containers(render("api.webhookSecret=k8see-hooks"))[f"{API}/api"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["K8SEE_API__WEBHOOK_SECRETS"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "k8see-hooks", "key": "webhook-secrets"}


def test_the_ingress_serves_only_the_front_doors_over_tls() -> None:
    docs = render(
        "api.ingress.enabled=true",
        "api.ingress.host=k8see.example.com",
        "api.ingress.tls[0].secretName=k8see-api-tls",
        "api.ingress.tls[0].hosts[0]=k8see.example.com",
    )
    ingress = _kind(docs, "Ingress")
    assert ingress is not None
    assert ingress["spec"]["tls"] == [
        {"secretName": "k8see-api-tls", "hosts": ["k8see.example.com"]}
    ]
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "k8see.example.com"
    assert [p["path"] for p in rule["http"]["paths"]] == ["/github/webhooks", "/v1/"]


def test_an_ingress_without_a_host_is_refused() -> None:
    assert "api.ingress.host" in refusal("api.ingress.enabled=true")


def test_a_service_monitor_scrapes_the_api_when_asked() -> None:
    monitor = _kind(render("metrics.serviceMonitor.enabled=true"), "ServiceMonitor", API)
    assert monitor is not None
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_the_api_can_be_left_out() -> None:
    docs = render("api.enabled=false")
    assert not [d for d in docs if d["metadata"]["name"].startswith(API)]
