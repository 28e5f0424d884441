"""The platform chart's Redis ACL users: the same rules as ``k8see.redis_acl``, one per component.

Covers, with the real helm binary and a real redis-server: the chart's copy of the rules
(``files/redis-acl-rules.txt``) is what ``k8see redis-acl --rules`` prints; the Redis pod's
init container, run with ``sh``, writes exactly ``redis_acl.aclfile`` for the passwords in
the Secret (only hashes, the default user off), and redis-server starts with it and lets
each role in with its password; the worker pools, beat and Flower connect as their own ACL
users with their own Secret keys; the generated Secret has one password per role.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

from k8see import redis_acl
from tests.charts.test_platform_chart_values import CHART, FULLNAME, containers, render
from tests.conftest import free_port, require_tool, wait_for_port


def test_the_charts_rules_are_k8sees() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "k8see", "redis-acl", "--rules"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert (
        (CHART / "files" / "redis-acl-rules.txt").read_text() == printed == redis_acl.rules_file()
    )


def test_the_redis_pod_writes_k8sees_aclfile_and_redis_accepts_it(tmp_path: Path) -> None:
    docs = render()
    rules = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-redis-acl")
    )
    (tmp_path / "rules").mkdir()
    for name, text in rules["data"].items():
        (tmp_path / "rules" / name).write_text(text)
    init = containers(docs)[f"{FULLNAME}-redis/aclfile"]
    command = [a.replace("/rules/", f"{tmp_path}/rules/") for a in init["command"]]
    command = [a.replace("/acl/users.acl", f"{tmp_path}/users.acl") for a in command]
    keys = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in init["env"]}
    assert keys == {f"PASSWORD_{r.upper()}": f"{r}-password" for r in redis_acl.ROLES}
    passwords = {role: f"{role}-secret-{n}" for n, role in enumerate(redis_acl.ROLES)}
    env = {**os.environ, **{f"PASSWORD_{r.upper()}": pw for r, pw in passwords.items()}}
    subprocess.run(command, env=env, check=True, timeout=30)

    written = (tmp_path / "users.acl").read_text()
    assert written == redis_acl.aclfile(passwords)
    assert "secret" not in written and written.startswith(redis_acl.DEFAULT_USER + "\n")
    port = free_port()
    server = subprocess.Popen(
        [require_tool("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--aclfile", str(tmp_path / "users.acl"), "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        for role, password in passwords.items():
            url = redis_acl.url_for(f"redis://127.0.0.1:{port}/0", role, password)
            assert redis.Redis.from_url(url).ping(), role
    finally:
        server.terminate()
        server.wait(timeout=10)
    redis_args = containers(docs)[f"{FULLNAME}-redis/redis"]["args"]
    assert "--aclfile" in redis_args and "--requirepass" not in redis_args


def test_each_component_connects_as_its_own_user() -> None:
    docs = render()
    expected = {"worker-default": "worker", "worker-build": "worker", "worker-deploy": "worker",
                "worker-maintenance": "worker", "beat": "beat", "flower": "flower"}  # fmt: skip
    found = containers(docs)
    for component, role in expected.items():
        name = next(n for n in found if n.startswith(f"{FULLNAME}-{component}/"))
        env = {e["name"]: e for e in found[name]["env"]}
        url = env["K8SEE_REDIS__URL"]["value"]
        assert url.startswith(f"redis://k8see-{role}:$(REDIS_PASSWORD)@"), (component, url)
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == f"{role}-password"
    secret = next(
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-redis")
    )
    assert set(secret["data"]) == {f"{role}-password" for role in redis_acl.ROLES}
