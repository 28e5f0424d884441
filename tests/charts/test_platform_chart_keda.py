"""The platform chart's worker pools scaled by KEDA on their queue lengths (``autoscaling.keda``).

Covers, rendered by the real helm binary: off by default (no KEDA object, every pool's
Deployment keeps ``pools.<pool>.replicas``); turned on, no pool's Deployment sets ``replicas``
(KEDA's HPA owns them), each pool has one ScaledObject that targets that pool's Deployment and
reads the Redis list of each queue the pool consumes (``k8see.cli.POOLS``) as the
``k8see-scaler`` ACL user, with the pool's min/max/target and the polling and cooldown
settings; the TriggerAuthentication reads that user's password (and with ``redis.sentinel``
the Sentinels') from the chart's Redis Secret, which holds a ``scaler-password``; with
Sentinel the trigger is ``redis-sentinel`` on every Sentinel pod, namespace-qualified, with
the master's name; KEDA's operator may reach Redis and the Sentinels through the
NetworkPolicies; k8see sends no message priority, so a queue's own list is all there is to
read; the Redis init container leaves the scaler's user out when its password is missing (an
older ``redis.existingSecret``) and still requires every other role's; refusals name the
setting (no bundled Redis, min above max, a pool without a queue).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from k8see import redis_acl
from k8see.app import create_app
from k8see.cli import POOLS
from k8see.settings import PlatformSettings
from tests.charts.test_platform_chart_values import CHART, FULLNAME, containers, refusal, render

KEDA = ("autoscaling.keda.enabled=true",)
SENTINEL = ("redis.sentinel.enabled=true",)
CHART_POOLS = ("default", "build", "deploy", "maintenance")


def kinds(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def worker_deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: d for name, d in kinds(docs, "Deployment").items() if "-worker-" in name}


def test_keda_is_off_by_default_and_the_pools_keep_their_replicas() -> None:
    docs = render("pools.build.replicas=3")
    assert not [d for d in docs if d["apiVersion"].startswith("keda.sh/")]
    deployments = worker_deployments(docs)
    assert set(deployments) == {f"{FULLNAME}-worker-{pool}" for pool in CHART_POOLS}
    assert deployments[f"{FULLNAME}-worker-build"]["spec"]["replicas"] == 3
    assert all("replicas" in d["spec"] for d in deployments.values())


def test_each_pool_scales_on_its_queues_as_the_scaler_user() -> None:
    docs = render(*KEDA, "autoscaling.keda.pollingInterval=7", "autoscaling.keda.cooldownPeriod=90",
                  "autoscaling.keda.pools.build.maxReplicaCount=9")  # fmt: skip
    deployments = worker_deployments(docs)
    # KEDA's HPA owns the replicas: a Deployment that set them would fight it on each upgrade
    for name, deployment in deployments.items():
        assert "replicas" not in deployment["spec"], name
    scaled = kinds(docs, "ScaledObject")
    assert set(scaled) == set(deployments)
    auth_name = f"{FULLNAME}-redis-scaler"
    for pool in CHART_POOLS:
        spec = scaled[f"{FULLNAME}-worker-{pool}"]["spec"]
        target = spec["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        assert target["name"] == f"{FULLNAME}-worker-{pool}" and target["name"] in deployments
        assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (7, 90)
        # One trigger per queue the pool's workers consume (`k8see worker --pool`)
        triggers = spec["triggers"]
        assert [t["metadata"]["listName"] for t in triggers] == list(POOLS[pool])
        for trigger in triggers:
            assert trigger["type"] == "redis"
            meta = trigger["metadata"]
            assert meta["address"] == f"{FULLNAME}-redis.default.svc:6379"
            assert meta["username"] == redis_acl.username("scaler")
            assert meta["databaseIndex"] == "0"
            assert "password" not in meta  # only through the TriggerAuthentication
            assert trigger["authenticationRef"] == {"name": auth_name}
    build = scaled[f"{FULLNAME}-worker-build"]["spec"]
    assert (build["minReplicaCount"], build["maxReplicaCount"]) == (1, 9)
    assert build["triggers"][0]["metadata"]["listLength"] == "2"
    # The password comes from the chart's Redis Secret, which has one for the scaler
    auth = kinds(docs, "TriggerAuthentication")[auth_name]["spec"]
    assert auth["secretTargetRef"] == [
        {"parameter": "password", "name": f"{FULLNAME}-redis", "key": "scaler-password"}
    ]
    secret = kinds(docs, "Secret")[f"{FULLNAME}-redis"]
    assert "scaler-password" in secret["data"]
    init = containers(docs)[f"{FULLNAME}-redis/aclfile"]
    scaler_env = next(e for e in init["env"] if e["name"] == "PASSWORD_SCALER")
    assert scaler_env["valueFrom"]["secretKeyRef"]["key"] == "scaler-password"


def test_with_sentinel_the_scaler_asks_the_sentinels_for_the_master() -> None:
    docs = render(*KEDA, *SENTINEL, "autoscaling.keda.pools.deploy.minReplicaCount=0")
    sentinels = [
        f"{FULLNAME}-redis-sentinel-{i}.{FULLNAME}-redis-sentinel-headless.default.svc:26379"
        for i in range(3)
    ]
    scaled = kinds(docs, "ScaledObject")
    assert len(scaled) == len(CHART_POOLS)
    for pool in CHART_POOLS:
        spec = scaled[f"{FULLNAME}-worker-{pool}"]["spec"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "redis-sentinel"
        meta = trigger["metadata"]
        assert meta["addresses"].split(",") == sentinels
        assert meta["sentinelMaster"] == "k8see"
        assert meta["listName"] == pool and meta["username"] == "k8see-scaler"
    assert scaled[f"{FULLNAME}-worker-deploy"]["spec"]["minReplicaCount"] == 0
    auth = kinds(docs, "TriggerAuthentication")[f"{FULLNAME}-redis-scaler"]["spec"]
    assert {r["parameter"]: r["key"] for r in auth["secretTargetRef"]} == {
        "password": "scaler-password",
        "sentinelPassword": "sentinel-password",
    }
    assert all(r["name"] == f"{FULLNAME}-redis" for r in auth["secretTargetRef"])


def test_kedas_operator_may_reach_redis_and_the_sentinels() -> None:
    keda_peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "autoscalers"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "keda-operator"}},
    }
    docs = render(*KEDA, *SENTINEL, "autoscaling.keda.operator.namespace=autoscalers")
    policies = kinds(docs, "NetworkPolicy")
    for name in (f"{FULLNAME}-redis", f"{FULLNAME}-redis-sentinel"):
        assert keda_peer in policies[name]["spec"]["ingress"][0]["from"], name
    off = kinds(render(*SENTINEL), "NetworkPolicy")
    for name in (f"{FULLNAME}-redis", f"{FULLNAME}-redis-sentinel"):
        assert off[name]["spec"]["ingress"][0]["from"] == [
            {"podSelector": {"matchLabels": {"k8see.dev/redis-client": "true"}}}
        ]


def test_k8see_sends_no_priority_so_each_queue_is_one_list(tmp_path: Path) -> None:
    # Kombu keeps a message with a priority in `<queue>\x06\x16<step>`; the ScaledObjects read
    # only `<queue>`, right while nothing sets a priority. This fails first if one is added.
    app = create_app(PlatformSettings(), name="keda-priority-check")
    assert app.conf.task_default_priority is None
    assert app.conf.task_queue_max_priority is None
    assert "priority_steps" not in app.conf.broker_transport_options
    for queue in app.conf.task_queues:
        assert not (queue.queue_arguments or {}).get("x-max-priority"), queue.name
    for route in app.conf.task_routes.values():
        assert "priority" not in route


def test_the_redis_pod_leaves_the_scaler_out_without_its_password(tmp_path: Path) -> None:
    script = CHART / "files" / "redis-aclfile.sh"
    rules = CHART / "files" / "redis-acl-rules.txt"
    others = {f"PASSWORD_{r.upper()}": f"pw-{r}" for r in redis_acl.ROLES if r != "scaler"}
    base = {"PATH": os.environ["PATH"]}
    out = tmp_path / "users.acl"
    subprocess.run(["sh", str(script), str(rules), str(out)], env={**base, **others},
                   check=True, timeout=30)  # fmt: skip
    written = out.read_text()
    assert written == redis_acl.aclfile({r: f"pw-{r}" for r in redis_acl.ROLES if r != "scaler"})
    assert "k8see-scaler" not in written and "k8see-worker" in written
    # Every other role's password is still required
    missing = {k: v for k, v in others.items() if k != "PASSWORD_BEAT"}
    done = subprocess.run(["sh", str(script), str(rules), str(out)], env={**base, **missing},
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode != 0 and "PASSWORD_BEAT is not set" in done.stderr


def test_refusals_name_the_setting() -> None:
    assert "autoscaling.keda.enabled needs the bundled Redis" in refusal(
        *KEDA, "redis.enabled=false", "redis.external.url=redis://elsewhere:6379/0"
    )
    assert "minReplicaCount (6) is above maxReplicaCount (5)" in refusal(
        *KEDA, "autoscaling.keda.pools.build.minReplicaCount=6"
    )
    assert 'pool "nightly" consumes no queue k8see knows' in refusal(
        *KEDA, "pools.nightly.replicas=1", "pools.nightly.concurrency=1",
        "autoscaling.keda.pools.nightly.minReplicaCount=1",
        "autoscaling.keda.pools.nightly.maxReplicaCount=2",
        "autoscaling.keda.pools.nightly.listLength=1",
    )  # fmt: skip
    assert "autoscaling.keda.pools.build needs minReplicaCount" in refusal(
        *KEDA, "autoscaling.keda.pools.build=null"
    )
