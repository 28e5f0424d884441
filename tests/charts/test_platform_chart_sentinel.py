"""The platform chart's Redis high availability (``redis.sentinel``), rendered by real helm.

Covers: off by default (one Redis, no Sentinel, no Sentinel settings in any pod); turned on,
the Redis StatefulSet runs a master and one replica behind a headless Service, the Sentinel
StatefulSet runs ``redis.sentinel.replicas`` Sentinels, and every k8see container is given
exactly those Sentinels (one DNS name per Sentinel pod, on the headless Service), the
master's name the Sentinels monitor, the Sentinels' password from the Redis Secret (never in
plain text) and the replica acknowledgement an enqueue waits for; the start scripts are valid
shell and name the same master; the NetworkPolicy lets Redis clients, the Redis pods and the
Sentinels reach the Sentinels; ``redis.sentinel`` without the bundled Redis is refused with a
hint.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.charts.test_platform_chart_values import FULLNAME, containers, refusal, render
from tests.conftest import require_tool

SENTINEL_SETS = ("redis.sentinel.enabled=true",)


def _by_name(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_sentinel_is_off_by_default() -> None:
    docs = render()
    redis = _by_name(docs, "StatefulSet", f"{FULLNAME}-redis")
    assert redis["spec"]["replicas"] == 1
    assert not [d for d in docs if "sentinel" in d["metadata"]["name"]]
    for name, container in containers(docs).items():
        assert not [k for k in _env(container) if "SENTINEL" in k or "REPLICA_ACKS" in k], name


def test_sentinel_renders_a_replica_and_three_sentinels() -> None:
    docs = render(*SENTINEL_SETS)
    redis = _by_name(docs, "StatefulSet", f"{FULLNAME}-redis")
    assert redis["spec"]["replicas"] == 2
    assert redis["spec"]["serviceName"] == f"{FULLNAME}-redis-headless"
    headless = _by_name(docs, "Service", f"{FULLNAME}-redis-headless")
    assert headless["spec"]["clusterIP"] == "None"
    sentinels = _by_name(docs, "StatefulSet", f"{FULLNAME}-redis-sentinel")
    assert sentinels["spec"]["replicas"] == 3
    assert sentinels["spec"]["serviceName"] == f"{FULLNAME}-redis-sentinel-headless"
    assert (
        _by_name(docs, "Service", f"{FULLNAME}-redis-sentinel-headless")["spec"]["clusterIP"]
        == "None"
    )
    # The Sentinels' Service selects the Sentinel pods only
    service = _by_name(docs, "Service", f"{FULLNAME}-redis-sentinel")
    pod_labels = sentinels["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert (
        not service["spec"]["selector"].items()
        <= redis["spec"]["template"]["metadata"]["labels"].items()
    )


@pytest.mark.parametrize("count", [3, 5])
def test_every_component_is_pointed_at_the_sentinels(count: int) -> None:
    docs = render(*SENTINEL_SETS, f"redis.sentinel.replicas={count}",
                  "redis.sentinel.masterName=main")  # fmt: skip
    expected = ",".join(
        f"{FULLNAME}-redis-sentinel-{i}.{FULLNAME}-redis-sentinel-headless:26379"
        for i in range(count)
    )
    redis_side = ("/redis", "/sentinel", "/aclfile")  # the servers and their aclfile writer
    k8see = {n: c for n, c in containers(docs).items() if not n.endswith(redis_side)}
    assert {n.split("/")[0] for n in k8see} >= {f"{FULLNAME}-worker-default", f"{FULLNAME}-beat"}
    for name, container in k8see.items():
        env = _env(container)
        assert env["K8SEE_REDIS__SENTINELS"]["value"] == expected, name
        assert env["K8SEE_REDIS__SENTINEL_MASTER_NAME"]["value"] == "main", name
        assert env["K8SEE_REDIS__MIN_REPLICA_ACKS"]["value"] == "1", name
        secret = env["K8SEE_REDIS__SENTINEL_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert secret == {"name": f"{FULLNAME}-redis", "key": "sentinel-password"}, name
        assert "value" not in env["K8SEE_REDIS__SENTINEL_PASSWORD"], name
        # The URL still carries the component's own ACL user and password (from the Secret)
        assert env["K8SEE_REDIS__URL"]["value"].startswith("redis://k8see-")
        assert ":$(REDIS_PASSWORD)@" in env["K8SEE_REDIS__URL"]["value"]


def test_the_replica_acknowledgement_can_be_turned_off() -> None:
    docs = render(*SENTINEL_SETS, "redis.sentinel.minReplicaAcks=0")
    worker = containers(docs)[f"{FULLNAME}-worker-default/worker"]
    assert _env(worker)["K8SEE_REDIS__MIN_REPLICA_ACKS"]["value"] == "0"


def test_the_start_scripts_are_shell_and_agree_on_the_master() -> None:
    sh = require_tool("sh")
    docs = render(*SENTINEL_SETS, "redis.sentinel.masterName=main", "redis.sentinel.quorum=2")
    found = containers(docs)
    redis_script = found[f"{FULLNAME}-redis/redis"]["args"][0]
    sentinel_script = found[f"{FULLNAME}-redis-sentinel/sentinel"]["args"][0]
    for script in (redis_script, sentinel_script):
        checked = subprocess.run([sh, "-n", "-c", script], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        assert "sentinel get-master-addr-by-name main" in script
        # The passwords come from the environment, never written into the manifest
        assert "$ADMIN_PASSWORD" in script
    first = f"{FULLNAME}-redis-0.{FULLNAME}-redis-headless.default.svc"
    assert first in redis_script and first in sentinel_script
    assert "sentinel monitor main $master 6379 2" in sentinel_script
    assert "--replicaof" in redis_script and "--masterauth" in redis_script
    # Redis keeps k8see's ACL users; replicas and Sentinels act as its admin user
    assert "--aclfile /acl/users.acl" in redis_script and "--masteruser k8see-admin" in redis_script
    assert "sentinel auth-user main k8see-admin" in sentinel_script
    assert "requirepass $SENTINEL_PASSWORD" in sentinel_script


def test_the_network_policy_lets_clients_reach_the_sentinels() -> None:
    docs = render(*SENTINEL_SETS, "networkPolicy.enabled=true")
    policy = _by_name(docs, "NetworkPolicy", f"{FULLNAME}-redis-sentinel")
    rule = policy["spec"]["ingress"][0]
    assert rule["ports"] == [{"port": 26379}]
    client = rule["from"][0]["podSelector"]["matchLabels"]
    for name in (f"{FULLNAME}-redis", f"{FULLNAME}-redis-sentinel"):
        labels = _by_name(docs, "StatefulSet", name)["spec"]["template"]["metadata"]["labels"]
        assert client.items() <= labels.items(), name


def test_sentinel_without_the_bundled_redis_is_refused() -> None:
    message = refusal("redis.enabled=false", "redis.external.url=redis://r:6379/0",
                      *SENTINEL_SETS)  # fmt: skip
    assert "K8SEE_REDIS__SENTINELS" in message
