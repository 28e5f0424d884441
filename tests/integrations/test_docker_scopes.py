"""Trust scopes of the Docker builder, with our own dockerd and a real registry: a fork PR's
step never becomes a trusted build's cached step, a trusted build reuses its own steps, a
fork reads the repository's steps, and anchors left idle are removed with their images.

The step under test writes a fresh random value, so which build ran it is in the image.
"""

from __future__ import annotations

import time
from pathlib import Path

import docker
import pytest

from k8see.integrations.buildstorage import BuildScope
from k8see.integrations.dockerbuild import DockerBuilder, anchor_tag
from k8see.integrations.registry import OciRegistry
from tests.fixtures.images import DockerDaemon, LocalRegistry, read_image_file

pytestmark = pytest.mark.timeout(600)

PLATFORM = "linux/amd64"
STEP = "RUN cat /proc/sys/kernel/random/uuid > /stamp"


def _builder(daemon: DockerDaemon, registry: LocalRegistry, scope: BuildScope) -> DockerBuilder:
    return DockerBuilder(base_url=daemon.base_url, insecure_registries=[registry.host], scope=scope)


def _stamp(
    builder: DockerBuilder, registry: LocalRegistry, context: Path, repository: str
) -> tuple[str, bool]:
    """Build ``context``; the ``/stamp`` the image holds and whether the step came from cache."""
    lines: list[str] = []
    result = builder.build_and_push(
        context_dir=context,
        dockerfile=context / "Dockerfile",
        image=f"{registry.host}/{repository}",
        tags=["pr-1"],
        platforms=[PLATFORM],
        build_args={},
        timeout_seconds=300,
        should_stop=lambda: False,
        on_line=lines.append,
    )
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
    unscoped = DockerBuilder(base_url=docker_daemon.base_url, insecure_registries=[registry.host])
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
