"""The Docker builder: the docker SDK against a daemon, one build per platform.

Why not ``docker push``: the classic builder (what the SDK drives; BuildKit needs a session
protocol the SDK lacks, and Debian's docker.io has no buildx) builds one platform per image
and pushes one manifest per tag, so a multi-arch list needs per-arch tags that would litter
the registry. Instead each platform's image is exported (``docker save``) and uploaded over
the registry API, and one OCI index of them is stored under every tag; the result is the
same manifest list ``BuildahBuilder`` produces (``k8see.integrations.dockersave``).

Trust scopes: the classic builder reuses any image in the daemon whose parent and instruction
match a step, whoever built it, so one fork PR's ``RUN`` could decide what a trusted build
gets. A scoped build therefore passes ``cache_from``: the daemon then reuses a step only from
the history of those images. They are the scope anchors, daemon-local tags
``k8see-scope/<key>:<platform>`` on the last image each scope built per image repository and
platform; a build reads its own scope's anchor and, for a fork PR, the repository's, and
writes only its own (``BuildScope.reads_from``). Anchors not re-tagged within the idle limit
are removed (their images with them), as buildah's idle scope dirs are.

``pull=True`` on every build is deliberate: the classic builder otherwise reuses a base image
of the wrong architecture when the same tag was pulled for another platform before.
Cancellation and the time limit close the connection to the daemon, which cancels the build
and removes its intermediate container.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from k8see.errors import IntegrationError, Superseded
from k8see.integrations.builders import (
    ERROR_TAIL_LINES,
    Builder,
    BuildJob,
    RegistryAuth,
    build_failed,
    build_timed_out,
    target_build_args,
)
from k8see.integrations.buildstorage import BuildScope
from k8see.integrations.dockersave import push_saved_image
from k8see.integrations.oci import OCI_INDEX, parse_ref
from k8see.integrations.registry import OciRegistry

__all__ = ["DockerBuilder", "anchor_tag"]

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
#: The daemon-local repository of the scope anchors.
ANCHOR_REPOSITORY = "k8see-scope"
#: Idle anchors are looked for at most this often per daemon (one inspect per anchor).
COLLECT_EVERY_SECONDS = 600.0
_last_collected: dict[str, float] = {}
_collect_lock = threading.Lock()


def anchor_tag(scope: BuildScope, repository: str, platform: str) -> str:
    """The daemon-local tag of ``scope``'s last build of ``repository`` for ``platform``."""
    key = hashlib.sha256(f"{scope.name}\n{repository}".encode()).hexdigest()[:16]
    return f"{ANCHOR_REPOSITORY}/{key}:{platform.replace('/', '-')}"


class DockerBuilder(Builder):
    """Build with a Docker daemon and push one manifest list over the registry API.

    Args:
        base_url: The daemon, e.g. ``unix:///run/docker.sock``.
        insecure_registries: Hosts pushed to over plain HTTP.
        auth: Credentials for the registry pushed to.
        network_mode: Network of RUN steps (``build.docker_network``): ``default`` is the
            daemon's bridge; ``host`` works with a daemon started without a bridge
            (``--bridge=none``), as in the tests, but lets RUN steps reach the daemon host's
            loopback.
        scope: The build's trust scope: steps are reused only from its anchors (module
            docstring). ``None`` (tests) reuses whatever the daemon has.
        max_idle_seconds: With a ``scope``, anchors of any scope not re-tagged for this long
            are removed when a build starts (at most every ``collect_every_seconds``); 0
            keeps them.
    """

    def __init__(
        self,
        *,
        base_url: str,
        insecure_registries: Sequence[str] = (),
        auth: Sequence[RegistryAuth] = (),
        network_mode: str = "default",
        scope: BuildScope | None = None,
        max_idle_seconds: float = 0,
        collect_every_seconds: float = COLLECT_EVERY_SECONDS,
    ) -> None:
        self.base_url = base_url
        self.insecure_registries = tuple(insecure_registries)
        self.auth = tuple(auth)
        self.network_mode = network_mode
        self.scope = scope
        self.max_idle_seconds = max_idle_seconds
        self.collect_every_seconds = collect_every_seconds

    def _build_and_push(self, job: BuildJob) -> str:
        import docker  # a worker dependency; imported here so the module imports without it

        ref = parse_ref(f"{job.image}:{job.tags[0]}")
        registry = self._registry(ref.host)
        local = f"k8see-build/{uuid.uuid4().hex[:16]}"
        try:
            client = docker.APIClient(base_url=self.base_url, version="auto", timeout=None)
        except docker.errors.DockerException as exc:
            raise IntegrationError(
                f"The Docker daemon at {self.base_url} is not reachable.",
                hint="Start dockerd, or set build.builder to buildah.",
            ) from exc
        entries = []
        repository = f"{ref.host}/{ref.repository}"
        try:
            if self.scope is not None and self.max_idle_seconds > 0:
                self._collect_idle_anchors(client)
            for plat in job.platforms:
                tag = f"{local}:{plat.replace('/', '-')}"
                self._build_one(
                    client, job, plat=plat, tag=tag, cache_from=self._cache_from(repository, plat)
                )
                if self.scope is not None:
                    anchor = anchor_tag(self.scope, repository, plat)
                    client.tag(tag, *anchor.rsplit(":", 1), force=True)
                job.on_line(f"[push] uploading {plat} to {ref.host}/{ref.repository}")
                entries.append(
                    push_saved_image(client.get_image(tag), registry, ref.repository, plat)
                )
            index = json.dumps(
                {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries},
                separators=(",", ":"),
            ).encode()
            digest = ""
            for tag in job.tags:
                digest = registry.put_manifest(ref.repository, tag, index, OCI_INDEX)
                job.on_line(f"[push] {job.image}:{tag} -> {digest}")
        except docker.errors.DockerException as exc:
            raise IntegrationError(f"The Docker daemon failed: {type(exc).__name__}.") from exc
        finally:
            for plat in job.platforms:
                # Not built when an earlier platform failed: then there is nothing to remove.
                with contextlib.suppress(docker.errors.DockerException):
                    client.remove_image(f"{local}:{plat.replace('/', '-')}", noprune=True)
            client.close()
            registry.close()
        return digest

    def _cache_from(self, repository: str, plat: str) -> list[str] | None:
        if self.scope is None:
            return None
        return [anchor_tag(s, repository, plat) for s in self.scope.reads_from()]

    def _collect_idle_anchors(self, client: Any) -> None:
        """Remove the anchors not re-tagged for ``max_idle_seconds``; never fails a build."""
        with _collect_lock:
            last = _last_collected.get(self.base_url)
            if last is not None and time.monotonic() - last < self.collect_every_seconds:
                return
            _last_collected[self.base_url] = time.monotonic()
        try:
            images = client.images(name=f"{ANCHOR_REPOSITORY}/*")
        except docker_errors() as exc:
            log.warning("Could not list the build cache anchors: %s", exc)
            return
        tags = [
            t
            for i in images
            for t in i.get("RepoTags") or []
            if t.startswith(f"{ANCHOR_REPOSITORY}/")
        ]
        for tag in tags:
            # LastTagTime is the image's: an image another scope tagged since stays.
            try:
                tagged = client.inspect_image(tag).get("Metadata", {}).get("LastTagTime")
                if _age_seconds(str(tagged or "")) > self.max_idle_seconds:
                    log.info("Removing the idle build cache anchor %s.", tag)
                    client.remove_image(tag)  # and the steps only it kept
            except docker_errors() as exc:  # in use by a build, or removed meanwhile
                log.warning("Could not remove the build cache anchor %s: %s", tag, exc)

    def _registry(self, host: str) -> OciRegistry:
        creds = next((a for a in self.auth if a.host == host), None)
        return OciRegistry(
            host=host,
            insecure=host in self.insecure_registries,
            username=creds.username if creds else "",
            password=creds.password if creds else None,
        )

    def _build_one(
        self, client: Any, job: BuildJob, *, plat: str, tag: str, cache_from: list[str] | None
    ) -> None:
        stream = client.build(
            path=str(job.context_dir),
            dockerfile=str(job.dockerfile.relative_to(job.context_dir)),
            tag=tag,
            platform=plat,
            buildargs=target_build_args(plat, job.build_args),
            network_mode=self.network_mode,
            pull=True,
            cache_from=cache_from,
            rm=True,
            forcerm=True,
            decode=True,
        )
        tail: list[str] = []
        secrets = [a.password for a in self.auth if a.password]
        error = ""

        def cancel(container: str) -> None:
            # Killing the RUN step's container fails the step; the daemon then ends the
            # build and removes the container (forcerm).
            with contextlib.suppress(docker_errors()):
                client.kill(container)

        chunks = _pump(stream, deadline=job.deadline, should_stop=job.should_stop, cancel=cancel)
        for chunk in chunks:
            if chunk is STOPPED:
                raise Superseded(
                    f"The Docker build for {plat} was stopped: the run was superseded."
                )
            if chunk is TIMED_OUT:
                raise build_timed_out(job.timeout_seconds)
            text = str(chunk.get("stream") or chunk.get("status") or chunk.get("error") or "")
            for secret in secrets:
                text = text.replace(secret, "***")
            for line in text.rstrip("\n").splitlines():
                tail = [*tail[-(ERROR_TAIL_LINES - 1) :], line]
                job.on_line(f"[{plat}] {line}")
            if chunk.get("error"):
                error = str(chunk["error"])
        if error:
            raise build_failed(plat, f"docker: {error[:200]}", "\n".join(tail))


def _age_seconds(stamp: str) -> float:
    """Seconds since a daemon timestamp (``2026-11-26T08:00:00.123456789Z``); 0 if unknown.

    A never-tagged image says ``0001-01-01T00:00:00Z``, which counts as unknown too.
    """
    try:
        when = datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    if when.year < 2000:
        return 0.0
    return (datetime.now(UTC) - when).total_seconds()


STOPPED = object()
TIMED_OUT = object()
#: After cancelling, how long to wait for the daemon to end the build stream.
CANCEL_DRAIN_SECONDS = 30.0


def docker_errors() -> type[Exception]:
    import docker

    return docker.errors.DockerException  # type: ignore[no-any-return]


def _pump(
    stream: Iterator[dict[str, Any]],
    *,
    deadline: float,
    should_stop: Callable[[], bool],
    cancel: Callable[[str], None],
) -> Iterator[Any]:
    """Yield the build's JSON chunks, then ``STOPPED`` or ``TIMED_OUT`` if it was cut short.

    The daemon's stream can be silent for minutes (a long RUN), so a thread reads it while
    this one checks cancellation and the deadline; ``cancel`` then ends the build daemon-side
    and the stream is drained so the daemon has cleaned up before we go on.
    """
    chunks: queue.Queue[Any] = queue.Queue()
    done = object()

    failed: list[BaseException] = []

    def reader() -> None:
        try:
            for chunk in stream:
                chunks.put(chunk)
        except (OSError, ValueError, docker_errors()) as exc:  # requests errors are OSErrors
            failed.append(exc)
        finally:
            chunks.put(done)

    thread = threading.Thread(target=reader, daemon=True, name="docker-build-stream")
    thread.start()
    running = ""  # the classic builder names each RUN step's container in its output
    while True:
        stop = should_stop()
        if stop or time.monotonic() >= deadline:
            # Keep reading until the build ends: a RUN container may start after we decided
            # to stop, and each one we learn of is killed.
            killed = ""
            drain_until = time.monotonic() + CANCEL_DRAIN_SECONDS
            while time.monotonic() < drain_until:
                if running and running != killed:
                    cancel(running)
                    killed = running
                try:
                    item = chunks.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    continue
                if item is done:
                    break
                running = _container_of(item) or running
            yield STOPPED if stop else TIMED_OUT
            return
        try:
            item = chunks.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue
        if item is not done:
            running = _container_of(item) or running
        if item is done:
            if failed:
                raise IntegrationError(
                    f"The Docker daemon's build stream broke ({type(failed[0]).__name__})."
                ) from failed[0]
            return
        yield item


def _container_of(chunk: dict[str, Any]) -> str:
    """The container id in a `` ---> Running in <id>`` line of the build output, if any."""
    text = str(chunk.get("stream") or "")
    marker = " ---> Running in "
    return text.split(marker, 1)[1].split()[0] if marker in text else ""
