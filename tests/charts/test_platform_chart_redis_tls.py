"""The platform chart's ``redis.tls``, rendered by the real helm binary, and its server args and
probes run against a real redis-server.

Covers: off by default (no ``rediss://``, no TLS volume anywhere); on, the bundled Redis listens
with TLS only (``--port 0 --tls-port 6379``, ``--tls-replication yes``) with the Secret mounted
read-only, its probes are ``redis-cli --tls --cacert``, and every k8see component (each worker
pool, beat, Flower, the API) connects with ``rediss://...?ssl_ca_certs=<mounted CA>`` and mounts
``ca.crt`` alone, never the key; the NetworkPolicies do not change. With an external Redis the
CA is mounted and the URL is the user's own. Refused with a reason: no ``existingSecret``;
together with ``redis.sentinel`` or ``autoscaling.keda`` (not covered yet). Then the rendered
redis-server args start a real TLS-only server (in a network namespace of its own, so on port
6379), and the rendered probe command lines pass with the probe password, fail with a wrong
one, and a plain (non-TLS) ``redis-cli`` gets no answer.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from k8see import redis_acl
from k8see_sandbox.cluster.pki import Pki
from tests.charts.test_platform_chart_redis_probes import ANSWERED, redis_in_its_own_network
from tests.charts.test_platform_chart_values import (
    FULLNAME,
    containers,
    pod_templates,
    refusal,
    render,
)

ON = ("redis.tls.enabled=true", "redis.tls.existingSecret=redis-tls")
REDIS = f"{FULLNAME}-redis/redis"
CA = "/etc/k8see/redis-tls/ca.crt"
CLIENTS = {
    f"{FULLNAME}-worker-default/worker": "worker",
    f"{FULLNAME}-worker-build/worker": "worker",
    f"{FULLNAME}-worker-deploy/worker": "worker",
    f"{FULLNAME}-worker-maintenance/worker": "worker",
    f"{FULLNAME}-beat/beat": "beat",
    f"{FULLNAME}-flower/flower": "flower",
    f"{FULLNAME}-api/api": "worker",
}
TLS_ARGS = ["--port", "0", "--tls-port", "6379", "--tls-cert-file", "/tls/tls.crt",
            "--tls-key-file", "/tls/tls.key", "--tls-ca-cert-file", "/tls/ca.crt",
            "--tls-auth-clients", "no", "--tls-replication", "yes"]  # fmt: skip


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def _pod_of(container_key: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = pod_templates(docs)[container_key.split("/")[0]]["spec"]
    return spec


def test_tls_is_off_by_default() -> None:
    docs = render()
    found = containers(docs)
    assert "--tls-port" not in found[REDIS]["args"]
    for key in CLIENTS:
        assert env_of(found[key])["K8SEE_REDIS__URL"]["value"].startswith("redis://"), key
        volumes = _pod_of(key, docs).get("volumes", [])
        assert all(v["name"] != "redis-tls-ca" for v in volumes), key
    assert "--tls" not in found[REDIS]["livenessProbe"]["exec"]["command"][-1]


def test_tls_on_makes_redis_tls_only_and_every_client_verify_it() -> None:
    docs = render(*ON)
    found = containers(docs)
    redis_c = found[REDIS]
    args = redis_c["args"]
    assert args[: args.index("--port")] == containers(render())[REDIS]["args"]
    assert args[args.index("--port") :] == TLS_ARGS
    assert {"name": "tls", "mountPath": "/tls", "readOnly": True} in redis_c["volumeMounts"]
    tls_volume = next(v for v in _pod_of(REDIS, docs)["volumes"] if v["name"] == "tls")
    assert tls_volume["secret"]["secretName"] == "redis-tls"
    probe_cli = "redis-cli --tls --cacert /tls/ca.crt --user k8see-probe -e ping"
    for kind in ("livenessProbe", "readinessProbe"):
        assert probe_cli in redis_c[kind]["exec"]["command"][-1]
    for key, role in CLIENTS.items():
        url = env_of(found[key])["K8SEE_REDIS__URL"]["value"]
        assert url == (
            f"rediss://k8see-{role}:$(REDIS_PASSWORD)@{FULLNAME}-redis:6379/0?ssl_ca_certs={CA}"
        ), key
        mount = {"name": "redis-tls-ca", "mountPath": "/etc/k8see/redis-tls", "readOnly": True}
        assert mount in found[key]["volumeMounts"], key
        volume = next(v for v in _pod_of(key, docs)["volumes"] if v["name"] == "redis-tls-ca")
        # The CA alone: a client pod never holds Redis's key.
        assert volume["secret"] == {
            "secretName": "redis-tls",
            "items": [{"key": "ca.crt", "path": "ca.crt"}],
        }, key


def test_tls_leaves_the_network_policies_as_they_are() -> None:
    def policies(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [d for d in docs if d["kind"] == "NetworkPolicy"]

    before, after = policies(render()), policies(render(*ON))
    assert before and before == after


def test_an_external_redis_gets_the_ca_mounted_and_keeps_its_url() -> None:
    url = f"rediss://u:p@redis.example:6380/0?ssl_ca_certs={CA}"
    docs = render("redis.enabled=false", f"redis.external.url={url}", *ON)
    found = containers(docs)
    assert REDIS not in found
    for key in CLIENTS:
        assert env_of(found[key])["K8SEE_REDIS__URL"]["value"] == url, key
        assert any(m["name"] == "redis-tls-ca" for m in found[key]["volumeMounts"]), key


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (("redis.tls.enabled=true",), "redis.tls.enabled needs redis.tls.existingSecret"),
        ((*ON, "redis.sentinel.enabled=true"), "redis.tls does not cover redis.sentinel"),
        ((*ON, "autoscaling.keda.enabled=true"), "does not cover autoscaling.keda"),
    ],
    ids=["no-secret", "sentinel", "keda"],
)
def test_what_tls_cannot_do_is_refused_with_a_reason(sets: tuple[str, ...], says: str) -> None:
    assert says in refusal(*sets)


def test_the_rendered_server_args_and_probes_work_against_real_redis(tmp_path: Path) -> None:
    server, cli, ip, unshare = redis_in_its_own_network()
    redis_c = containers(render(*ON))[REDIS]
    # The Secret's files as cert-manager writes them; the certificate names the Service only
    # (what clients reach), not the loopback address the probes use.
    pki = Pki(tmp_path / "pki")
    pair = pki.issue("redis", common_name=f"{FULLNAME}-redis", hosts=(f"{FULLNAME}-redis",),
                     server=True)  # fmt: skip
    for d in ("tls", "acl", "data"):
        (tmp_path / d).mkdir()
    shutil.copy(pair.cert, tmp_path / "tls" / "tls.crt")
    shutil.copy(pair.key, tmp_path / "tls" / "tls.key")
    shutil.copy(pki.ca.cert, tmp_path / "tls" / "ca.crt")
    passwords = {role: f"{role}-pw" for role in redis_acl.ROLES}
    (tmp_path / "acl" / "users.acl").write_text(redis_acl.aclfile(passwords))

    def here(text: str) -> str:
        """The pod's mount points, in tmp_path."""
        for mount in ("/tls/", "/acl/", "/data"):
            text = text.replace(mount, f"{tmp_path}{mount}")
        return text

    args = shlex.join(here(a) for a in redis_c["args"])
    live = shlex.join(here(a) for a in redis_c["livenessProbe"]["exec"]["command"])
    ready = shlex.join(here(a) for a in redis_c["readinessProbe"]["exec"]["command"])
    tls_cli = f"{cli} --tls --cacert {shlex.quote(str(tmp_path / 'tls' / 'ca.crt'))}"
    script = f"""
set -u
{ip} link set lo up
cd {shlex.quote(str(tmp_path))}
probe() {{ name=$1; shift; env "$@" >>probes.log 2>&1; echo "$name $?"; }}
{server} {args} --save '' >server.log 2>&1 &
rpid=$!
for _ in $(seq 100); do {tls_cli} ping 2>&1 | {ANSWERED} && break; sleep 0.1; done
probe live-ok PROBE_PASSWORD=probe-pw sh -c {shlex.quote(live)}
probe ready-ok PROBE_PASSWORD=probe-pw sh -c {shlex.quote(ready)}
probe live-wrong PROBE_PASSWORD=nope sh -c {shlex.quote(live)}
probe ready-wrong PROBE_PASSWORD=nope sh -c {shlex.quote(ready)}
probe plain-cli REDISCLI_AUTH=probe-pw sh -c '{cli} --user k8see-probe -e ping | grep -q PONG'
kill $rpid; wait
"""
    env = {**os.environ, "PATH": f"{Path(cli).parent}:{os.environ['PATH']}"}
    out = subprocess.run([unshare, "--net", "sh", "-c", script], capture_output=True, text=True,
                         env=env, timeout=120)  # fmt: skip
    results = dict(line.split() for line in out.stdout.splitlines() if line.strip())
    log = (tmp_path / "probes.log").read_text() if (tmp_path / "probes.log").exists() else ""
    server_log = (tmp_path / "server.log").read_text()
    assert "probe-pw" not in log
    expected = {"live-ok": "0", "ready-ok": "0", "live-wrong": "1", "ready-wrong": "1",
                "plain-cli": "1"}  # fmt: skip
    assert results == expected, (out.stdout, out.stderr, log, server_log)
