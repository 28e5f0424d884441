"""The platform chart's probes of Redis and Sentinel, rendered by the real helm binary and run.

Covers: Redis's liveness and readiness probes are exec ``redis-cli`` as the ACL user
``k8see-probe`` with ``-e`` (an error reply fails), the password from the Secret's
``probe-password`` through the environment (never on the command line); Sentinel's are
``redis-cli -p 26379 -e ping`` with the Sentinels' password; the timings come from
``probes.redis|sentinel.liveness|readiness`` and each probe can be turned off (and with both off
the Redis container no longer needs ``probe-password``). Then the exact command lines the chart
renders run, in a network namespace of their own (so on Redis's own ports 6379 and 26379), against
a real redis-server started from the aclfile k8see writes and a real Sentinel: they pass with the
right passwords, fail with a wrong one, and while Redis loads its data the liveness probe passes
(LOADING) and the readiness probe fails.
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
from tests.charts.test_platform_chart_values import FULLNAME, containers, render
from tests.conftest import require_tool

REDIS = f"{FULLNAME}-redis/redis"
SENTINEL = f"{FULLNAME}-redis-sentinel/sentinel"


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def test_redis_and_sentinel_are_probed_as_their_own_users() -> None:
    found = containers(render("redis.sentinel.enabled=true"))
    redis_c, sentinel = found[REDIS], found[SENTINEL]
    live, ready = redis_c["livenessProbe"], redis_c["readinessProbe"]
    for probe in (live, ready):
        script = probe["exec"]["command"][-1]
        assert probe["exec"]["command"][:2] == ["sh", "-c"]
        assert "redis-cli --user k8see-probe -e ping" in script
        assert 'REDISCLI_AUTH="$PROBE_PASSWORD"' in script and " -a " not in script
    assert "LOADING" in live["exec"]["command"][-1]
    assert "LOADING" not in ready["exec"]["command"][-1]
    password = env_of(redis_c)["PROBE_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password == {"name": f"{FULLNAME}-redis", "key": "probe-password"}
    timings = {k: v for k, v in live.items() if k != "exec"}
    assert timings == {"initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 5,
                       "failureThreshold": 6}  # fmt: skip
    assert {k: v for k, v in ready.items() if k != "exec"} == {
        "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 3}  # fmt: skip
    for kind in ("livenessProbe", "readinessProbe"):
        assert sentinel[kind]["exec"]["command"] == ["redis-cli", "-p", "26379", "-e", "ping"]
    auth = env_of(sentinel)["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"]
    assert auth["key"] == "sentinel-password"
    # Without Sentinel, Redis still gets both probes and its password
    alone = containers(render())[REDIS]
    assert {"livenessProbe", "readinessProbe"} <= set(alone) and "PROBE_PASSWORD" in env_of(alone)


def test_the_probes_timings_and_switches_come_from_values() -> None:
    found = containers(render(
        "redis.sentinel.enabled=true", "probes.redis.liveness.failureThreshold=12",
        "probes.redis.liveness.periodSeconds=20", "probes.redis.readiness.enabled=false",
        "probes.sentinel.liveness.timeoutSeconds=9", "probes.sentinel.readiness.enabled=false",
    ))  # fmt: skip
    assert found[REDIS]["livenessProbe"]["failureThreshold"] == 12
    assert found[REDIS]["livenessProbe"]["periodSeconds"] == 20
    assert "readinessProbe" not in found[REDIS] and "readinessProbe" not in found[SENTINEL]
    assert found[SENTINEL]["livenessProbe"]["timeoutSeconds"] == 9
    off = containers(
        render("probes.redis.liveness.enabled=false", "probes.redis.readiness.enabled=false")
    )[REDIS]
    assert "livenessProbe" not in off and "readinessProbe" not in off
    assert "PROBE_PASSWORD" not in env_of(off)


#: Reads redis-cli's output: true once the server answered anything (PONG, NOAUTH, LOADING),
#: false while it is not listening yet ("Could not connect to Redis at ...").
ANSWERED = "grep -v '^Could not connect' | grep -q ."


def redis_in_its_own_network() -> tuple[str, str, str, str]:
    """redis-server, redis-cli, ip and unshare, for a Redis on the chart's own ports in a
    network namespace of its own; skips (fails under K8SEE_REQUIRE_TOOLS=1) without them."""
    server, cli, ip = (require_tool(t) for t in ("redis-server", "redis-cli", "ip"))
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--net", "true"]).returncode != 0:
        if os.environ.get("K8SEE_REQUIRE_TOOLS") == "1":
            pytest.fail("unshare --net is needed (util-linux, root) to run Redis on port 6379")
        pytest.skip("unshare --net is not available: the probes need Redis on its own ports")
    return server, cli, ip, unshare


def test_the_rendered_probe_commands_pass_and_fail_against_real_redis(tmp_path: Path) -> None:
    server, cli, ip, unshare = redis_in_its_own_network()
    found = containers(render("redis.sentinel.enabled=true"))
    live = shlex.join(found[REDIS]["livenessProbe"]["exec"]["command"])
    ready = shlex.join(found[REDIS]["readinessProbe"]["exec"]["command"])
    sentinel = shlex.join(found[SENTINEL]["livenessProbe"]["exec"]["command"])
    passwords = {role: f"{role}-pw" for role in redis_acl.ROLES}
    (tmp_path / "users.acl").write_text(redis_acl.aclfile(passwords))
    (tmp_path / "sentinel.conf").write_text("port 26379\nrequirepass sentinel-pw\n")
    (tmp_path / "fill.lua").write_text("for i = 1, 30000 do redis.call('set', 'k' .. i, i) end")
    admin = f"REDISCLI_AUTH=admin-pw {cli} --user k8see-admin -e"
    d = shlex.quote(str(tmp_path))
    # Each line: "<case> <exit status of the probe>"; the probes' stdout/stderr go to a log.
    script = f"""
set -u
{ip} link set lo up
cd {d}
probe() {{ name=$1; shift; env "$@" >>probes.log 2>&1; echo "$name $?"; }}
up() {{ for _ in $(seq 100); do {cli} -p "$1" ping 2>&1 | {ANSWERED} && return; sleep 0.1; done; }}
{server} --port 6379 --save '' --appendonly no --aclfile users.acl --dir . >/dev/null &
rpid=$!
{server} sentinel.conf --sentinel >/dev/null &
spid=$!
up 6379; up 26379
probe live-ok PROBE_PASSWORD=probe-pw sh -c {shlex.quote(live)}
probe ready-ok PROBE_PASSWORD=probe-pw sh -c {shlex.quote(ready)}
probe live-wrong PROBE_PASSWORD=nope sh -c {shlex.quote(live)}
probe ready-wrong PROBE_PASSWORD=nope sh -c {shlex.quote(ready)}
probe live-none PROBE_PASSWORD= sh -c {shlex.quote(live)}
probe sentinel-ok REDISCLI_AUTH=sentinel-pw {sentinel}
probe sentinel-wrong REDISCLI_AUTH=nope {sentinel}
probe sentinel-none -u REDISCLI_AUTH {sentinel}
# Fill Redis, save, restart with each key's load slowed down (and events served every KiB
# loaded, not every 2 MiB): it answers LOADING for a few seconds.
{admin} eval "$(cat fill.lua)" 0 >/dev/null && {admin} save >/dev/null
{admin} shutdown nosave >/dev/null 2>&1; wait $rpid
{server} --port 6379 --save '' --appendonly no --aclfile users.acl --dir . \\
  --key-load-delay 200 --loading-process-events-interval-bytes 1024 >/dev/null &
rpid=$!
up 6379
probe loading-state REDISCLI_AUTH=probe-pw sh -c '{cli} --user k8see-probe ping | grep -q LOADING'
probe live-loading PROBE_PASSWORD=probe-pw sh -c {shlex.quote(live)}
probe ready-loading PROBE_PASSWORD=probe-pw sh -c {shlex.quote(ready)}
kill $rpid $spid; wait
"""
    env = {**os.environ, "PATH": f"{Path(cli).parent}:{os.environ['PATH']}"}
    out = subprocess.run([unshare, "--net", "sh", "-c", script], capture_output=True, text=True,
                         env=env, timeout=120)  # fmt: skip
    results = dict(line.split() for line in out.stdout.splitlines() if line.strip())
    log = (tmp_path / "probes.log").read_text() if (tmp_path / "probes.log").exists() else ""
    assert "probe-pw" not in log and "sentinel-pw" not in log
    expected = {
        "live-ok": "0", "ready-ok": "0", "live-wrong": "1", "ready-wrong": "1", "live-none": "1",
        "sentinel-ok": "0", "sentinel-wrong": "1", "sentinel-none": "1",
        "loading-state": "0", "live-loading": "0", "ready-loading": "1",
    }  # fmt: skip
    assert results == expected, (out.stdout, out.stderr, log)
