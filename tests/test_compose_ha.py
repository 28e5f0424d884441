"""docker-compose.ha.yml: Redis high availability on top of docker-compose.yml.

Covers: Docker Compose (Debian's docker-compose) accepts the two files together and refuses
them without the Redis password; the replica follows ``redis`` with the same password, and
both announce their service names; three Sentinels monitor the master under the name k8see's
settings use, with a quorum of 2, and their start script is valid shell; every k8see service
keeps its Redis URL (credentials, database) and gets the Sentinels, the master name, their
password and the replica acknowledgement; the base file alone still has no Sentinel.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8see.settings import load_settings
from tests.conftest import ROOT, require_tool
from tests.test_compose import K8SEE_SERVICES

HA = ROOT / "docker-compose.ha.yml"
ROLES = ("WORKER", "BEAT", "FLOWER", "ENQUEUE", "ADMIN")
ENV = {
    **{f"REDIS_PASSWORD_{role}": f"pw-for-{role.lower()}-1" for role in ROLES},
    "REDIS_PASSWORD_SENTINEL": "pw-for-sentinels-1",
    "FLOWER_BASIC_AUTH": "admin:pw-2",
}
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("docker-compose.yml", "docker-compose.ha.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "k8see.env").write_text("K8SEE_REGISTRY__TYPE=ghcr\n")
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    return tmp_path


def compose(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [require_tool("docker-compose"), "--project-directory", str(project),
            "-f", str(project / "docker-compose.yml"), "-f", str(project / "docker-compose.ha.yml"),
            "config"]  # fmt: skip
    full = {"PATH": "/usr/bin:/bin", "KUBECONFIG_FILE": str(project / "kubeconfig"), **env}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=full)


def resolved(project: Path) -> dict[str, Any]:
    done = compose(project, ENV)
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout)["services"])


def test_the_replica_follows_the_master_as_the_admin_acl_user(project: Path) -> None:
    found = resolved(project)
    master, replica = found["redis"]["command"], found["redis-replica"]["command"]
    for command, name in ((master, "redis"), (replica, "redis-replica")):
        # both serve k8see's ACL users (a promoted replica serves every role)
        assert command[command.index("--aclfile") + 1] == "/tmp/users.acl"
        assert found[name]["entrypoint"][1] == "/k8see/redis-aclfile.sh"
        assert command[command.index("--masteruser") + 1] == "k8see-admin"
        assert command[command.index("--masterauth") + 1] == "pw-for-admin-1"
        assert command[command.index("--replica-announce-ip") + 1] == name
        assert command[command.index("--appendonly") + 1] == "yes"
    assert replica[replica.index("--replicaof") + 1 :][:2] == ["redis", "6379"]
    assert "--replicaof" not in master


def test_three_sentinels_monitor_the_master_k8see_asks_for(project: Path) -> None:
    found = resolved(project)
    name = load_settings().redis.sentinel_master_name
    sh = require_tool("sh")
    for sentinel in SENTINELS:
        service = found[sentinel]
        assert service["environment"]["SENTINEL_NAME"] == sentinel
        script = service["command"][0].replace("$$", "$")  # compose's escape for a literal $
        checked = subprocess.run([sh, "-n", "-c", script], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        assert f"sentinel monitor {name} ${{master:-redis}} 6379 2" in script
        assert "requirepass $SENTINEL_PASSWORD" in script
        assert f"sentinel auth-user {name} k8see-admin" in script
        assert f"sentinel auth-pass {name} $ADMIN_PASSWORD" in script
        assert "pw-for" not in script  # the passwords stay in the environment
        assert service["environment"]["SENTINEL_PASSWORD"] == "pw-for-sentinels-1"


def test_every_k8see_service_is_pointed_at_the_sentinels(project: Path) -> None:
    found = resolved(project)
    for name in K8SEE_SERVICES:
        env = found[name]["environment"]
        assert env["K8SEE_REDIS__URL"].endswith("@redis:6379/0"), name  # its role's user
        assert env["K8SEE_REDIS__SENTINELS"] == ",".join(f"{s}:26379" for s in SENTINELS)
        assert env["K8SEE_REDIS__SENTINEL_MASTER_NAME"] == "k8see"
        assert env["K8SEE_REDIS__SENTINEL_PASSWORD"] == "pw-for-sentinels-1"
        assert env["K8SEE_REDIS__MIN_REPLICA_ACKS"] == "1"
        settings = load_settings(
            redis={
                "url": env["K8SEE_REDIS__URL"],
                "sentinels": env["K8SEE_REDIS__SENTINELS"],
            }
        )
        assert settings.redis.sentinels  # the settings accept what compose passes


def test_the_ha_file_needs_the_sentinels_password(project: Path) -> None:
    missing = compose(project, {k: v for k, v in ENV.items() if k != "REDIS_PASSWORD_SENTINEL"})
    assert missing.returncode != 0 and "set REDIS_PASSWORD_SENTINEL" in missing.stderr


def test_the_base_file_alone_has_no_sentinel() -> None:
    base = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert not [s for s in base if "sentinel" in s or "replica" in s]
    assert HA.exists()
