"""What separates one pull request's Docker build from others and from the daemon's host,
with our own dockerd and a real registry.

Trust scopes: a fork PR's step never becomes a trusted build's cached step, a trusted build
reuses its own steps, a fork reads the repository's steps, and anchors left idle are removed
with their images. The step under test writes a fresh random value, so which build ran it is
in the image. Network: ``build.docker_network`` reaches the RUN steps; with ``host`` a step
reaches a service on the host's loopback, with ``none`` it does not (the default, the
daemon's bridge, needs a daemon with a bridge, which the test daemon has not).
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from k8see.errors import BuildFailed
from k8see.integrations.buildstorage import BuildScope
from k8see.integrations.dockerbuild import DockerBuilder, anchor_tag
from k8see.integrations.registry import OciRegistry
from k8see.settings import PlatformSettings
from k8see.stages.build import make_builder
from tests.fixtures.images import DockerDaemon, LocalRegistry, read_image_file
from tests.integrations.test_builders import _build

pytestmark = pytest.mark.timeout(600)

PLATFORM = "linux/amd64"
STEP = "RUN cat /proc/sys/kernel/random/uuid > /stamp"


def _builder(daemon: DockerDaemon, registry: LocalRegistry, scope: BuildScope) -> DockerBuilder:
    # The steps here need no network.
    return DockerBuilder(
        base_url=daemon.base_url,
        insecure_registries=[registry.host],
        scope=scope,
        network_mode="none",
    )


def _stamp(
    builder: DockerBuilder, registry: LocalRegistry, context: Path, repository: str
) -> tuple[str, bool]:
    """Build ``context``; the ``/stamp`` the image holds and whether the step came from cache."""
    lines: list[str] = []
    result = _build(builder, registry, context, repository=repository, lines=lines)
    after_step = "\n".join(lines).split(STEP, 1)[1]
    cached = "Using cache" in after_step.split("Successfully built", 1)[0]
    client = OciRegistry(host=registry.host, insecure=True)
    try:
        stamp = read_image_file(client, result.image, PLATFORM, "/stamp").decode().strip()
    finally:
        client.close()
    return stamp, cached


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text(f"FROM busybox\n{STEP}\n")
    return tmp_path


def test_a_fork_step_never_reaches_a_trusted_build(
    registry: LocalRegistry, docker_daemon: DockerDaemon, context: Path
) -> None:
    repository = f"k8see-tests/scopes/{time.time_ns()}"
    trusted = BuildScope.for_pull("acme/shop", 1, fork=False)
    # Given a fork PR built the step first in this daemon
    forked, fork_cached = _stamp(
        _builder(docker_daemon, registry, BuildScope.for_pull("acme/shop", 7, fork=True)),
        registry,
        context,
        repository,
    )
    assert not fork_cached
    # When the repository's own PR builds the same Dockerfile
    first, first_cached = _stamp(
        _builder(docker_daemon, registry, trusted), registry, context, repository
    )
    # Then it ran the step itself rather than taking the fork's result
    assert (first_cached, first != forked) == (False, True)
    # And its next build reuses its own step
    again, again_cached = _stamp(
        _builder(docker_daemon, registry, trusted), registry, context, repository
    )
    assert (again_cached, again) == (True, first)
    # And another fork PR reads the repository's step (read, never written)
    other, other_cached = _stamp(
        _builder(docker_daemon, registry, BuildScope.for_pull("acme/shop", 8, fork=True)),
        registry,
        context,
        repository,
    )
    assert (other_cached, other) == (True, first)


def test_an_unscoped_builder_shares_every_step_in_the_daemon(
    registry: LocalRegistry, docker_daemon: DockerDaemon, context: Path
) -> None:
    """What the scopes guard against: without ``cache_from`` the daemon reuses a step
    whoever built it (tests and ``scope=None`` only)."""
    repository = f"k8see-tests/unscoped/{time.time_ns()}"
    fork = _builder(docker_daemon, registry, BuildScope.for_pull("acme/cafe", 3, fork=True))
    forked, _ = _stamp(fork, registry, context, repository)
    unscoped = DockerBuilder(
        base_url=docker_daemon.base_url, insecure_registries=[registry.host], network_mode="none"
    )
    stamp, cached = _stamp(unscoped, registry, context, repository)
    assert (cached, stamp) == (True, forked)


def test_idle_anchors_are_removed_with_their_steps(
    registry: LocalRegistry, docker_daemon: DockerDaemon, context: Path
) -> None:
    repository = f"k8see-tests/idle/{time.time_ns()}"
    fork = BuildScope.for_pull("acme/idle", 5, fork=True)
    _stamp(_builder(docker_daemon, registry, fork), registry, context, repository)
    anchor = anchor_tag(fork, f"{registry.host}/{repository}", PLATFORM)
    api = docker.APIClient(base_url=docker_daemon.base_url, version="auto")
    try:
        assert api.inspect_image(anchor)["Id"]
        time.sleep(2)  # LastTagTime has a resolution of seconds here
        # When a build starts with an idle limit the anchor has passed
        collector = DockerBuilder(
            base_url=docker_daemon.base_url,
            insecure_registries=[registry.host],
            scope=BuildScope.for_pull("acme/other", 1, fork=False),
            network_mode="none",
            max_idle_seconds=1,
            collect_every_seconds=0,
        )
        _stamp(collector, registry, context, f"{repository}-collector")
        # Then the fork's anchor is gone, and the collector's own (just tagged) is kept
        with pytest.raises(docker.errors.ImageNotFound):
            api.inspect_image(anchor)
        kept = anchor_tag(
            BuildScope.for_pull("acme/other", 1, fork=False),
            f"{registry.host}/{repository}-collector",
            PLATFORM,
        )
        assert api.inspect_image(kept)["Id"]
    finally:
        api.close()


def test_a_fork_scope_reads_its_own_and_the_repositorys_anchors() -> None:
    fork = BuildScope.for_pull("Acme/Shop", 9, fork=True)
    assert [s.name for s in fork.reads_from()] == ["acme/shop#9", "acme/shop"]
    assert [s.trusted for s in fork.reads_from()] == [False, True]
    trusted = BuildScope.for_pull("acme/shop", 9, fork=False)
    assert trusted.reads_from() == (trusted,)
    assert anchor_tag(fork, "r.example/acme/shop", "linux/arm64").endswith(":linux-arm64")
    assert anchor_tag(fork, "r.example/a", PLATFORM) != anchor_tag(trusted, "r.example/a", PLATFORM)


@pytest.fixture
def loopback_service() -> Iterator[int]:
    """An HTTP server on the host's 127.0.0.1 only; its port."""

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"reached")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("network", ["host", "none"])
def test_the_docker_network_setting_decides_what_a_run_step_reaches(
    network: str,
    registry: LocalRegistry,
    docker_daemon: DockerDaemon,
    loopback_service: int,
    tmp_path: Path,
) -> None:
    # Given a Dockerfile whose RUN step calls a service on the daemon host's loopback
    (tmp_path / "Dockerfile").write_text(
        f"FROM busybox\nRUN wget -q -O /got http://127.0.0.1:{loopback_service}/\n"
    )
    settings = PlatformSettings(
        registry={"type": "generic", "host": registry.host, "insecure": True},
        build={
            "builder": "docker",
            "docker_host": docker_daemon.base_url,
            "docker_network": network,
        },
    )
    builder = make_builder(settings, workdir=tmp_path)
    repository = f"k8see-tests/network/{network}"
    if network == "host":
        # Then on the host network the step reaches it
        result = _build(builder, registry, tmp_path, repository=repository)
        client = OciRegistry(host=registry.host, insecure=True)
        try:
            assert read_image_file(client, result.image, PLATFORM, "/got") == b"reached"
        finally:
            client.close()
    else:
        # And on no network it does not, and the build fails as the PR's own error
        with pytest.raises(BuildFailed):
            _build(builder, registry, tmp_path, repository=repository)


def test_run_steps_get_the_daemons_bridge_by_default() -> None:
    assert PlatformSettings().build.docker_network == "default"
    with pytest.raises(ValueError, match="docker_network"):
        PlatformSettings(build={"docker_network": "host --privileged"})
