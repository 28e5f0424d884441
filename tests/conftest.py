"""Session fixtures shared by every test: tool checks, a real redis-server, free ports.

Area fixtures live in ``tests/fixtures/<area>.py`` and are registered below. A test that needs
a binary calls ``require_tool(name)``: it skips with a reason when the tool is missing, except
under ``K8SEE_REQUIRE_TOOLS=1`` (CI), where a missing tool fails the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from k8see import redis_acl

# One implementation of the loopback helpers, shared with the sandbox platform; re-exported
# here because the tests import them from tests.conftest.
from k8see_sandbox.platform import free_port, wait_for_port

pytest_plugins = [
    "tests.fixtures.kube",
    "tests.fixtures.github",
    "tests.fixtures.images",
    "tests.fixtures.databases",
    "tests.fixtures.vulndb",
]

ROOT = Path(__file__).resolve().parents[1]
TOOLS_BIN = ROOT / ".tools" / "bin"
if TOOLS_BIN.is_dir() and str(TOOLS_BIN) not in os.environ.get("PATH", ""):
    os.environ["PATH"] = f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


def require_tool(name: str) -> str:
    """The path of binary ``name``; skip (or fail under K8SEE_REQUIRE_TOOLS=1) if missing."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (run `make bootstrap`)"
    if os.environ.get("K8SEE_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{message}; K8SEE_REQUIRE_TOOLS=1 requires it")
    pytest.skip(message)


#: Passwords of the Redis ACL users in tests (k8see.redis_acl), one per role.
REDIS_PASSWORDS = {role: f"{role}-pw-for-tests" for role in redis_acl.ROLES}


@dataclass(frozen=True)
class RedisTls:
    """A redis-server's TLS files: its certificate and key, and the CA that signed them."""

    cert: Path
    key: Path
    ca: Path


class RedisServer:
    """A real redis-server on a free loopback port, with an append-only file and ACLs on:
    the default user is off and each role has its user (``k8see.redis_acl``).

    With ``tls``, it listens with TLS only on that port (``--port 0 --tls-port``), clients
    need no certificate, and its URLs are ``rediss://`` with ``ssl_ca_certs`` set to the CA.
    """

    def __init__(self, workdir: Path, *, tls: RedisTls | None = None):
        self.binary = require_tool("redis-server")
        self.port = free_port()
        self.workdir = workdir
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.aclfile = workdir / "users.acl"
        self.aclfile.write_text(redis_acl.aclfile(REDIS_PASSWORDS))

    @property
    def url(self) -> str:
        """The admin credential: what tests use to set up and look at Redis."""
        return self.url_for("admin")

    def url_for(self, role: str) -> str:
        """The credential of one role, e.g. ``worker`` or ``enqueue``."""
        if self.tls is None:
            base = f"redis://127.0.0.1:{self.port}/0"
        else:
            base = f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca}"
        return redis_acl.url_for(base, role, REDIS_PASSWORDS[role])

    def start(self) -> None:
        if self.tls is None:
            listen = ["--port", str(self.port)]
        else:
            tls = self.tls
            listen = ["--port", "0", "--tls-port", str(self.port),
                      "--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key),
                      "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no"]  # fmt: skip
        self.proc = subprocess.Popen(
            [
                self.binary,
                *listen,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "no",
                "--aclfile",
                str(self.aclfile),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A flushed Redis for this test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def redis_urls(redis_url: str, redis_server: RedisServer) -> dict[str, str]:
    """The flushed Redis of ``redis_url``, one URL per role (``k8see.redis_acl.ROLES``)."""
    return {role: redis_server.url_for(role) for role in redis_acl.ROLES}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """e2e tests run last, so a quick failure elsewhere shows first."""
    items.sort(key=lambda item: 1 if item.get_closest_marker("e2e") else 0)


@contextlib.contextmanager
def celery_worker(
    app: str, *, queues: str, concurrency: int, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``celery -A <app> worker`` process (prefork), its output in ``log``; stopped with
    its whole process group (SIGTERM, then SIGKILL after 30 s) when the block ends."""
    argv = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues,
            "-c", str(concurrency), "--pool", "prefork", "-l", "info"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
