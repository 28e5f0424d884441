"""The platform chart limits the build pool's egress (issue 14, "Builds are sealed").

The build pool runs pull requests' RUN steps. It is a Celery worker, so it must reach Redis;
its steps must not. In the chart the pool runs buildah rootless with ``build.network: host``
(a sealed namespace needs CAP_NET_ADMIN), so the pod's egress policy is what limits a step:
covers that the policy selects the build pods only and allows exactly DNS (port 53), the
bundled Redis (port 6379, its pods only), the internet without the private, loopback,
link-local (metadata), CGNAT and Azure host ranges (the same list as the PR namespaces'
egress, ``k8see.manifests.network``) and the ``deniedCIDRs`` (pod and Service CIDRs), plus
``extraEgress``; that no rule reaches a pod or namespace on every port; that the chart's build
pool says ``host`` explicitly; and that the policy can be turned off.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from k8see.manifests.network import NON_INTERNET_RANGES, PRIVATE_RANGES
from tests.conftest import require_tool

CHART = Path(__file__).resolve().parents[2] / "charts" / "k8see-platform"
VALUES = CHART / "ci" / "default-values.yaml"


def render(*args: str) -> list[dict[str, Any]]:
    argv = [require_tool("helm"), "template", "k8see", str(CHART), "-f", str(VALUES), *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def build_policy(docs: list[dict[str, Any]]) -> dict[str, Any] | None:
    found = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy" and "Egress" in d["spec"].get("policyTypes", [])
    ]
    assert len(found) <= 1
    return found[0] if found else None


def test_the_build_pool_reaches_dns_redis_and_the_internet_only() -> None:
    # Given the chart with its defaults (the bundled Redis)
    docs = render()
    policy = build_policy(docs)
    assert policy is not None
    spec = policy["spec"]
    # Then the policy selects the build pool's pods, and only them
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "worker-build"
    assert spec["policyTypes"] == ["Egress"]
    dns, redis_rule, internet = spec["egress"]
    # DNS: kube-dns, port 53 only
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    # Redis: the bundled Redis pods, its port only
    assert redis_rule["ports"] == [{"port": 6379}]
    labels = redis_rule["to"][0]["podSelector"]["matchLabels"]
    assert labels["app.kubernetes.io/component"] == "redis"
    # The internet, without what the PR namespaces' egress cuts out too (metadata included)
    block = internet["to"][0]["ipBlock"]
    assert block["cidr"] == "0.0.0.0/0" and "ports" not in internet
    assert set(block["except"]) == {*PRIVATE_RANGES, *NON_INTERNET_RANGES}
    assert "169.254.0.0/16" in block["except"]
    # And no rule opens a pod or namespace on every port
    for rule in spec["egress"]:
        for peer in rule["to"]:
            if "ipBlock" not in peer:
                assert rule.get("ports"), rule


def test_cluster_cidrs_and_extra_rules_come_from_values() -> None:
    extra = [{"to": [{"ipBlock": {"cidr": "10.20.0.5/32"}}], "ports": [{"port": 5000}]}]
    docs = render(
        "--set-json",
        'networkPolicy.buildEgress.deniedCIDRs=["100.96.0.0/11","34.1.2.3/32"]',
        "--set-json",
        f"networkPolicy.buildEgress.extraEgress={json.dumps(extra)}",
    )
    policy = build_policy(docs)
    assert policy is not None
    rules = policy["spec"]["egress"]
    excepts = rules[2]["to"][0]["ipBlock"]["except"]
    assert {"100.96.0.0/11", "34.1.2.3/32"} <= set(excepts)
    assert rules[3:] == extra


def test_with_your_own_redis_no_rule_names_the_bundled_one() -> None:
    docs = render("-f", str(CHART / "ci" / "external-redis-values.yaml"))
    policy = build_policy(docs)
    assert policy is not None
    assert len(policy["spec"]["egress"]) == 2  # DNS and the internet
    assert "redis" not in json.dumps(policy["spec"]["egress"])


def test_the_charts_build_pool_shares_the_pods_network_explicitly() -> None:
    # The rootless build pool cannot make a sealed namespace: it says host, on purpose.
    docs = render("--show-only", "templates/workers-deployment.yaml")
    build = next(d for d in docs if d["metadata"]["name"].endswith("-worker-build"))
    env = {
        e["name"]: e.get("value") for e in build["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["K8SEE_BUILD__NETWORK"] == "host"
    assert env["K8SEE_BUILD__ISOLATION"] == "chroot"


def test_the_policy_can_be_turned_off() -> None:
    assert build_policy(render("--set", "networkPolicy.buildEgress.enabled=false")) is None
    assert build_policy(render("--set", "networkPolicy.enabled=false")) is None
