"""docker-compose.yml: the platform on one machine, checked against the Procfile and the CLI.

Covers:
- one service per Procfile line, whose command is that line (extra arguments only after it),
  and a worker service for every pool ``k8see worker --pool`` knows (``all`` aside);
- Redis runs with ACLs (the default user off, the platform chart's script and k8see's rules
  file) and keeps an append-only file; every k8see service reaches it as its own role's ACL
  user (workers, beat, Flower) with that role's password, reads the host's kubeconfig
  read-only and shares the metrics directory that ``k8see metrics`` serves; Flower cannot
  start without basic auth and, like metrics and the API, listens on loopback only;
- Docker Compose itself (Debian's docker-compose) accepts the file, refuses it without the
  Redis passwords, and resolves the worker command and environment as written.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8see.cli import POOLS
from tests.charts.test_platform_chart_values import FULLNAME, containers, render
from tests.conftest import ROOT, require_tool

COMPOSE = ROOT / "docker-compose.yml"
K8SEE_SERVICES = ("worker-default", "worker-build", "worker-deploy", "worker-maintenance",
                  "beat", "flower", "metrics", "api")  # fmt: skip


def services() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    return dict(data["services"])


def procfile() -> dict[str, list[str]]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = shlex.split(command)
    return entries


def test_services_run_the_procfile_commands_and_every_pool() -> None:
    found = services()
    assert set(found) == {"redis", *K8SEE_SERVICES}
    for name, command in procfile().items():
        assert found[name]["command"][: len(command)] == command, name
    pools = {
        s["command"][3] for s in found.values() if s.get("command", [])[:2] == ["k8see", "worker"]
    }
    assert pools == set(POOLS) - {"all"}
    assert all(found[f"worker-{pool}"]["command"] == ["k8see", "worker", "--pool", pool]
               for pool in pools)  # fmt: skip


ROLE_OF = {"beat": "beat", "flower": "flower"}  # every other k8see service is a worker


def test_redis_has_acl_users_and_an_append_only_file() -> None:
    found = services()
    redis_cmd = found["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert "--requirepass" not in redis_cmd
    aclfile = redis_cmd[redis_cmd.index("--aclfile") + 1]
    # The same script and rules as the platform chart write that file before Redis starts
    entrypoint = found["redis"]["entrypoint"]
    assert entrypoint[:4] == ["sh", "/k8see/redis-aclfile.sh", "/k8see/redis-acl-rules.txt",
                              aclfile]  # fmt: skip
    assert "./charts/k8see-platform/files:/k8see:ro" in found["redis"]["volumes"]
    assert "redis-data:/data" in found["redis"]["volumes"]
    for role in ("WORKER", "BEAT", "FLOWER", "ENQUEUE", "ADMIN"):
        password = found["redis"]["environment"][f"PASSWORD_{role}"]
        assert password.startswith(f"${{REDIS_PASSWORD_{role}:?")  # compose refuses without it
    for name in K8SEE_SERVICES:
        service = found[name]
        env = service["environment"]
        role = ROLE_OF.get(name, "worker")
        url = f"redis://k8see-{role}:${{REDIS_PASSWORD_{role.upper()}:?"
        assert env["K8SEE_REDIS__URL"].startswith(url), name
        assert env["K8SEE_REDIS__URL"].endswith("@redis:6379/0")
        kube = [v for v in service["volumes"] if v.endswith(":/kube/config:ro")]
        assert kube and env["KUBECONFIG"] == env["K8SEE_DEPLOY__KUBECONFIG"] == "/kube/config"
        assert "metrics:/metrics" in service["volumes"]
        assert env["PROMETHEUS_MULTIPROC_DIR"] == "/metrics"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert found["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    for name in ("flower", "metrics", "api"):
        assert all(port.startswith("127.0.0.1:") for port in found[name]["ports"])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The compose file with an empty k8see.env and a kubeconfig, as a user would set it up."""
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    (tmp_path / "k8see.env").write_text("K8SEE_REGISTRY__TYPE=ghcr\n")
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    return tmp_path


def compose(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [require_tool("docker-compose"), "--project-directory", str(project), "-f",
            str(project / "docker-compose.yml"), "config"]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **env})  # fmt: skip


def test_docker_compose_accepts_the_file(project: Path) -> None:
    env = {"FLOWER_BASIC_AUTH": "admin:pw-2", "KUBECONFIG_FILE": str(project / "kubeconfig"),
           **{f"REDIS_PASSWORD_{role}": f"pw-for-{role.lower()}-1"
              for role in ("WORKER", "BEAT", "FLOWER", "ENQUEUE", "ADMIN")}}  # fmt: skip
    done = compose(project, env)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)["services"]
    build = resolved["worker-build"]
    assert build["command"] == ["k8see", "worker", "--pool", "build"]
    assert (
        build["environment"]["K8SEE_REDIS__URL"]
        == "redis://k8see-worker:pw-for-worker-1@redis:6379/0"
    )
    assert (resolved["beat"]["environment"]["K8SEE_REDIS__URL"]
            == "redis://k8see-beat:pw-for-beat-1@redis:6379/0")  # fmt: skip
    assert build["environment"]["K8SEE_REGISTRY__TYPE"] == "ghcr"  # from k8see.env
    assert resolved["redis"]["environment"]["PASSWORD_ENQUEUE"] == "pw-for-enqueue-1"

    for role in ("WORKER", "ENQUEUE"):
        missing = compose(project, {k: v for k, v in env.items() if k != f"REDIS_PASSWORD_{role}"})
        assert missing.returncode != 0 and f"set REDIS_PASSWORD_{role}" in missing.stderr


def test_compose_and_the_chart_persist_redis_as_the_drills_test_it() -> None:
    """tests/drills/test_redis_killed.py SIGKILLs the sandbox's redis-server, which runs with
    ``REDIS_PERSISTENCE``; what it proves holds only where Redis runs the same way."""
    from k8see_sandbox.platform import REDIS_PERSISTENCE

    def pairs(argv: list[str]) -> dict[str, str]:
        return {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}

    wanted = pairs(list(REDIS_PERSISTENCE))
    compose = pairs(services()["redis"]["command"])
    # The bundled Redis as the chart renders it, without and with TLS (the Sentinel branch
    # runs a script of its own)
    found = {"docker-compose.yml": compose}
    for sets in ((), ("redis.tls.enabled=true", "redis.tls.existingSecret=redis-tls")):
        redis = containers(render(*sets))[f"{FULLNAME}-redis/redis"]
        found[f"the platform chart {' '.join(sets)}".strip()] = pairs(redis["args"])
    for where, args in found.items():
        assert {k: args.get(k) for k in wanted} == wanted, where
