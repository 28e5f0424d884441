"""Builds are sealed (issue 14): a RUN step reaches nothing of the worker.

Aspects: with the platform's default ``build.network`` (``sealed``) and with ``none``, a
Dockerfile whose RUN step talks to the worker's Redis on loopback (``SET`` and ``PING``), the
registry's catalog and a metadata service at 169.254.169.254 (a real HTTP server in a network
namespace of the test's, routed from the worker's like a cloud's) gets nowhere, and the key is
not in Redis, while the build itself (base image pulled from the local registry, push, both
platforms with the arm64 step under qemu) succeeds; the same Dockerfile with ``host`` (an
explicit opt-in) does reach Redis, the catalog and the metadata, which is what the sealed runs
are compared with. A sealed step is not ``none`` in disguise: it has a route, and an address in
``build.network_allowed_cidrs`` on the worker answers it, while the same address is closed
without that entry. The setting's default and the refusal of sealed networking under chroot
isolation are pinned.

Real buildah (OCI isolation, runc), a real redis-server and registry, real iptables.
"""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from k8see.integrations.buildah import BuildahBuilder
from k8see.settings import PlatformSettings
from k8see.stages.build import make_builder
from tests.conftest import RedisServer, require_tool
from tests.fixtures.images import LocalRegistry, read_image_file

ATTACK = """FROM busybox
ARG RUN_ID
RUN printf 'SET k8see:pwned-{run_id} yes\\r\\nQUIT\\r\\n' | nc 127.0.0.1 {redis} \\
      > /redis-set.txt 2>&1; \\
    printf 'PING\\r\\nQUIT\\r\\n' | nc 127.0.0.1 {redis} > /redis-ping.txt 2>&1; \\
    wget -q -O /catalog.txt http://{registry}/v2/_catalog; echo "registry=$?" > /results.txt; \\
    wget -q -O - http://{metadata}/latest/meta-data/ > /meta.txt; \\
    echo "metadata=$?" >> /results.txt; uname -m > /arch.txt; true
"""


METADATA = "169.254.169.254"


@pytest.fixture
def metadata_service(tmp_path: Path) -> Iterator[str]:
    """An HTTP server at 169.254.169.254 in a namespace of its own, routed from the worker's.

    The route (a /32 to a veth) exists only while the test runs; nothing else on these
    machines uses a metadata address.
    """
    ip = require_tool("ip")
    name = f"k8see-meta-{uuid.uuid4().hex[:6]}"
    host_if, peer_if = f"km{name[-6:]}h", f"km{name[-6:]}c"
    root = tmp_path / "metadata" / "latest" / "meta-data"
    root.mkdir(parents=True)
    (root / "index.html").write_text("iam-role-credentials\n")

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=30)

    run(ip, "netns", "add", name)
    server = None
    try:
        run(ip, "link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns", name)
        run(ip, "link", "set", host_if, "up")
        run(ip, "-n", name, "link", "set", peer_if, "up")
        run(ip, "-n", name, "link", "set", "lo", "up")
        run(ip, "-n", name, "addr", "add", f"{METADATA}/32", "dev", peer_if)
        run(ip, "-n", name, "route", "add", "default", "dev", peer_if)
        run(ip, "route", "add", f"{METADATA}/32", "dev", host_if)
        server = subprocess.Popen(
            [ip, "netns", "exec", name, sys.executable, "-m", "http.server", "80",
             "--bind", METADATA, "--directory", str(tmp_path / "metadata")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((METADATA, 80), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield METADATA
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        subprocess.run([ip, "link", "del", host_if], capture_output=True, check=False)
        subprocess.run([ip, "netns", "del", name], capture_output=True, check=False)


@pytest.fixture
def images(
    registry: LocalRegistry, mirror_env: dict[str, str], buildah_storage: Path
) -> tuple[LocalRegistry, dict[str, str], Path]:
    """The registry with the busybox mirror, the env pointing at it, the session storage."""
    for tool in ("buildah", "runc", "iptables", "ip", "nsenter"):
        require_tool(tool)
    return registry, mirror_env, buildah_storage


def settings_for(
    tmp_path: Path, images: tuple[LocalRegistry, dict[str, str], Path], **build: Any
) -> PlatformSettings:
    registry, mirror_env, storage = images
    return PlatformSettings(
        registry={"type": "generic", "host": registry.host, "insecure": True},
        build={
            "workdir": str(tmp_path / "work"),
            "storage_dir": str(storage),
            "registries_conf": mirror_env["CONTAINERS_REGISTRIES_CONF"],
            "cache_repository": "",
            **build,
        },
    )


def build(settings: PlatformSettings, tmp_path: Path, dockerfile: str, platforms: list[str]) -> str:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    builder = make_builder(settings, workdir=tmp_path)
    result = builder.build_and_push(
        context_dir=ctx,
        dockerfile=ctx / "Dockerfile",
        image=f"{settings.registry.host}/k8see-tests/sealed/app",
        tags=[f"t-{uuid.uuid4().hex[:8]}"],
        platforms=platforms,
        build_args={"RUN_ID": uuid.uuid4().hex},
        timeout_seconds=600,
        should_stop=lambda: False,
        on_line=lambda _line: None,
    )
    return result.image


@pytest.mark.parametrize("network", ["sealed", "none", "host"])
def test_a_run_step_reaches_redis_the_registry_and_metadata_only_on_the_host_network(
    network: str,
    tmp_path: Path,
    redis_server: RedisServer,
    images: tuple[LocalRegistry, dict[str, str], Path],
    metadata_service: str,
) -> None:
    # Given a worker with this build.network and its Redis and registry on loopback
    isolation = "chroot" if network == "host" else "oci"
    settings = settings_for(tmp_path, images, network=network, isolation=isolation)
    registry = images[0]
    run_id = uuid.uuid4().hex
    dockerfile = ATTACK.format(
        run_id=run_id, redis=redis_server.port, registry=registry.host, metadata=metadata_service
    )
    # When a PR's Dockerfile attacks them from a RUN step, on both platforms
    before = _sealed_links()
    image = build(settings, tmp_path, dockerfile, ["linux/amd64", "linux/arm64"])
    # Then the build succeeded all the same, the arm64 step ran under qemu
    client = registry.client()
    files = {
        name: read_image_file(client, image, "linux/arm64", f"/{name}.txt").decode()
        for name in ("redis-set", "redis-ping", "results", "arch", "meta")
    }
    client.close()
    assert files["arch"].strip() == "aarch64"
    results = dict(line.split("=") for line in files["results"].split())
    stored = redis.Redis.from_url(redis_server.url).get(f"k8see:pwned-{run_id}")
    if network == "host":
        # (the attack reaches everything on the worker's network: this is what sealing takes
        # away. The tests' Redis runs with ACLs and its default user off, so the step's
        # unauthenticated SET is refused there; a Redis answer of any kind proves the reach.)
        assert stored is None
        assert files["redis-set"].startswith("-NOAUTH"), files["redis-set"]
        assert files["redis-ping"].startswith("-NOAUTH"), files["redis-ping"]
        assert results["registry"] == "0"
        assert results["metadata"] == "0" and files["meta"] == "iam-role-credentials\n"
        return
    # And sealed or without a network, nothing answered: no Redis reply, no catalog
    assert stored is None
    for reply in (files["redis-set"], files["redis-ping"]):
        assert not reply.startswith(("+", "-")), reply  # how every Redis answer starts
        assert "can't connect" in reply, reply
    assert results["registry"] != "0"
    assert results["metadata"] != "0" and "iam-role" not in files["meta"]
    # And nothing of this build's sealed network is left behind (a slot that a killed worker
    # left earlier is cleaned by that slot's next build, not by this one)
    assert _sealed_links() - before == set()


def _sealed_links() -> set[str]:
    return {name for _, name in socket.if_nameindex() if name.startswith("k8sb")}


@pytest.fixture
def worker_http() -> Iterator[tuple[str, int]]:
    """An HTTP server on the worker's own (non-loopback) address, as a package mirror."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect(("192.0.2.1", 9))  # no packet is sent: only picks the outgoing address
    address = probe.getsockname()[0]
    probe.close()

    class Mirror(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"mirror\n")

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((address, 0), Mirror)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield address, server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("allowed", [True, False])
def test_a_sealed_step_has_a_route_and_only_allowed_addresses_of_the_worker_answer(
    allowed: bool,
    tmp_path: Path,
    images: tuple[LocalRegistry, dict[str, str], Path],
    worker_http: tuple[str, int],
) -> None:
    # Given a mirror on the worker's own address, listed in network_allowed_cidrs or not
    address, port = worker_http
    extra = {"network_allowed_cidrs": [f"{address}/32:{port}"]} if allowed else {}
    settings = settings_for(tmp_path, images, **extra)
    registry = images[0]
    assert settings.build.network == "sealed"
    # When a sealed RUN step fetches from it
    dockerfile = (
        "FROM busybox\nARG RUN_ID\n"
        f"RUN wget -q -O /got.txt http://{address}:{port}/; echo $? > /rc.txt; true\n"
    )
    image = build(settings, tmp_path, dockerfile, ["linux/amd64"])
    # Then it gets the answer exactly when the address is allowed
    client = registry.client()
    rc = read_image_file(client, image, "linux/amd64", "/rc.txt").decode().strip()
    client.close()
    assert (rc == "0") is allowed


def test_builds_are_sealed_by_default_and_never_under_chroot_isolation(tmp_path: Path) -> None:
    settings = PlatformSettings()
    assert settings.build.network == "sealed"
    assert settings.build.isolation == "oci"
    builder = make_builder(settings, workdir=tmp_path)
    assert isinstance(builder, BuildahBuilder) and builder.network == "sealed"
    with pytest.raises(ValueError, match=r"needs build\.isolation oci"):
        PlatformSettings(build={"isolation": "chroot"})
    assert shutil.which("runc"), "OCI isolation needs runc (make bootstrap installs it)"
