"""The buildah builder: one ``buildah build`` per platform into a manifest list.

Untrusted code runs here (the pull request's Dockerfile), so a build gets a minimal
environment built from scratch (never the worker's, which holds cluster and GitHub
credentials), registry credentials only through a private auth file, and (``pid_namespace``)
a PID namespace of its own, so a ``RUN`` step can neither list nor signal the worker.
``network`` decides what a step reaches: ``sealed`` (the platform's default) a network
namespace of its own with the internet but nothing of the worker
(``k8see.integrations.buildnet``), ``none`` only its own loopback, ``host`` the worker's
network, loopback services and metadata address included.

With a cache repository, a worker with an empty storage pulls steps from the registry
(``--cache-from``) instead of running them, and a build with new inputs pushes its steps there
(``--cache-to``); ``k8see.integrations.buildcache`` says what buildah 1.28 needs for that.
Who shares cached steps is limited by a trust scope (``k8see.integrations.buildstorage``): a
scope has local storage of its own, and only a trusted one writes the registry cache.

Why one module of about 480 lines: it is one class, ``BuildahBuilder`` (and the
registries.conf its builds read), and every method of it shapes the same buildah command
line and environment (PID namespace, network, storage scope, registry cache); apart, each
piece would be read only against the others. What it shares with the Docker builder is in
``k8see.integrations.builders``, the cache's rules in ``buildcache``, the storage scopes in
``buildstorage``, the sealed network in ``buildnet``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from k8see.errors import BuildFailed, IntegrationError, RegistryError, ToolMissing
from k8see.integrations.buildcache import (
    Tool,
    arg_step_images,
    cache_push_failed,
    cache_repository_for,
    inputs_key,
    pull_anchors,
    push_anchors,
    steps_run,
)
from k8see.integrations.builders import (
    ERROR_TAIL_LINES,
    Builder,
    BuildJob,
    RegistryAuth,
    build_failed,
    build_timed_out,
    target_build_args,
)
from k8see.integrations.buildnet import sealed_namespace
from k8see.integrations.buildstorage import (
    BuildScope,
    cache_was_pushed,
    remember_cache_pushed,
    scope_dir,
    use_scope,
)
from k8see.integrations.process import ToolResult, run_tool

__all__ = ["DEFAULT_PATH", "NETWORKS", "BuildahBuilder", "write_registries_conf"]

log = logging.getLogger(__name__)

#: The PATH a build sees; the worker's own environment is never passed through.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: What a RUN step's network may be (``build.network``).
NETWORKS = ("sealed", "none", "host")


def write_registries_conf(
    path: Path, *, mirrors: Mapping[str, str], insecure: Sequence[str] = ()
) -> Path:
    """Write a containers registries.conf that sends pulls of ``mirrors`` keys to a mirror.

    ``{"docker.io": "127.0.0.1:5000"}`` makes ``FROM busybox`` pull from the local registry,
    which holds the busybox image ``make bootstrap`` built. The system's
    ``/etc/containers/registries.conf`` is never touched: builders pass this file through
    ``CONTAINERS_REGISTRIES_CONF``.

    Args:
        path: Where to write it.
        mirrors: Upstream registry → mirror host[:port].
        insecure: Hosts reached over plain HTTP (the local registry).
    """
    lines = ['unqualified-search-registries = ["docker.io"]', 'short-name-mode = "permissive"']
    for upstream, mirror in mirrors.items():
        lines += [
            "",
            "[[registry]]",
            f'prefix = "{upstream}"',
            f'location = "{upstream}"',
            "[[registry.mirror]]",
            f'location = "{mirror}"',
            f"insecure = {'true' if mirror in insecure else 'false'}",
        ]
    for host in insecure:
        lines += ["", "[[registry]]", f'location = "{host}"', "insecure = true"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


class BuildahBuilder(Builder):
    """Build with buildah: one ``buildah build`` per platform into a manifest list.

    Why one build per platform rather than ``--platform a,b``: the output of each is streamed
    and labelled, a failure names the platform, and cancellation is checked in between.

    Args:
        storage_dir: buildah's storage root; with a ``scope``, the root of the scopes'
            storage dirs. Share it between builds of one worker: the base images and
            ``--layers`` cache live there, which is what makes a warm rebuild fast.
        storage_driver: ``vfs`` works everywhere (no overlay in containers).
        registries_conf: A registries.conf for mirrors and insecure hosts (see
            ``write_registries_conf``); ``None`` uses the system's.
        insecure_registries: Hosts pushed to with ``--tls-verify=false``.
        auth: Credentials for the registry pushed to, if it needs them.
        isolation: ``chroot`` needs no runtime or user namespaces (works as root in a
            container); ``oci`` where a runtime is available.
        pid_namespace: Run buildah as PID 1 of a new PID namespace (util-linux ``unshare
            --pid --fork --kill-child --mount-proc``). Under ``chroot`` isolation a ``RUN``
            step otherwise shares the worker's PID namespace: it lists the worker's
            processes and, as root, can signal them. Needs root or ``CAP_SYS_ADMIN``.
        cache_repository: The registry build cache, ``{image}`` standing for the image
            repository (e.g. ``{image}/cache``); empty: no registry cache. Pulled and
            pushed with the image's credentials and TLS setting; pushed only by a trusted
            scope, and not when this storage pushed a build of the same inputs before. A
            failed cache push is logged and never fails the build.
        scope: The build's trust scope: storage in ``storage_dir/<scope dir>``, held
            under a lock, and registry cache writes only if trusted. ``None`` (tests,
            tools): ``storage_dir`` itself, cache written.
        storage_max_idle_seconds: With a ``scope``, other scopes' storage dirs unused for
            longer than this are deleted when a build starts; 0 keeps them.
        network: What ``RUN`` steps reach: ``sealed`` (a namespace of their own with only
            internet egress, see ``k8see.integrations.buildnet``), ``none`` (only their own
            loopback) or ``host`` (the worker's network: its loopback services, the cluster,
            the metadata address). ``sealed`` and ``none`` need ``isolation="oci"``; the
            default here is the old behaviour, the platform's (``build.network``) is sealed.
        network_subnet: ``sealed``: the IPv4 range the per-build ``/30`` links come from.
        network_denied: ``sealed``: CIDRs closed besides private, loopback, link-local,
            CGNAT and multicast ranges (the cluster's CIDRs outside them).
        network_allowed: ``sealed``: ``CIDR`` or ``CIDR:port`` a step may reach despite
            the closed ranges and the worker itself (an in-house package mirror).
        binary: The buildah executable.
        unshare: The util-linux ``unshare`` executable (used when ``pid_namespace``).
        path: The PATH a build sees.
    """

    def __init__(
        self,
        *,
        storage_dir: Path,
        storage_driver: str = "vfs",
        registries_conf: Path | None = None,
        insecure_registries: Sequence[str] = (),
        auth: Sequence[RegistryAuth] = (),
        isolation: str = "chroot",
        pid_namespace: bool = True,
        cache_repository: str = "",
        scope: BuildScope | None = None,
        storage_max_idle_seconds: float = 0,
        network: str = "host",
        network_subnet: str = "10.231.0.0/24",
        network_denied: Sequence[str] = (),
        network_allowed: Sequence[str] = (),
        binary: str = "buildah",
        unshare: str = "unshare",
        path: str = DEFAULT_PATH,
    ) -> None:
        self.storage_dir = storage_dir
        self.storage_driver = storage_driver
        self.registries_conf = registries_conf
        self.insecure_registries = tuple(insecure_registries)
        self.auth = tuple(auth)
        self.isolation = isolation
        self.pid_namespace = pid_namespace
        self.cache_repository = cache_repository
        self.scope = scope
        self.storage_max_idle_seconds = storage_max_idle_seconds
        if network not in NETWORKS:
            raise IntegrationError(f"Build network {network!r} is not one of {NETWORKS}.")
        if network != "host" and isolation == "chroot":
            raise IntegrationError(
                f"Build network {network!r} needs OCI isolation: under chroot isolation RUN "
                "steps share the worker's network.",
                hint="Set build.isolation to oci (needs runc), or build.network to host.",
            )
        self.network = network
        self.network_subnet = network_subnet
        self.network_denied = tuple(network_denied)
        self.network_allowed = tuple(network_allowed)
        #: buildah's own storage for this builder's builds.
        self.storage = storage_dir if scope is None else scope_dir(storage_dir, scope)
        self.writes_cache = scope is None or scope.trusted
        # Found where the worker finds its tools; buildah itself gets a minimal env.
        self.binary = shutil.which(binary) or binary
        self.unshare = shutil.which(unshare) or unshare
        self.path = path

    def _build_and_push(self, job: BuildJob) -> str:
        self._check_unshare()
        secrets = [a.password for a in self.auth]
        list_name = f"localhost/k8see-build/{uuid.uuid4().hex[:16]}"
        cache = cache_repository_for(self.cache_repository, job.image)
        with (
            self._storage(),
            tempfile.TemporaryDirectory(prefix="k8see-build-") as scratch,
            self._network() as network,
        ):
            env = self._env(Path(scratch))

            def tool(
                args: list[str], what: str, *, keep: list[str] | None = None, echo: bool = True
            ) -> ToolResult:
                remaining = job.deadline - time.monotonic()
                if remaining <= 0:
                    raise build_timed_out(job.timeout_seconds)

                def line_out(line: str) -> None:
                    if keep is not None:
                        keep.append(line)
                    if echo:
                        job.on_line(f"[{what}] {line}")

                try:
                    result = run_tool(
                        self._command(args),
                        timeout_seconds=remaining,
                        env=env,
                        should_stop=job.should_stop,
                        on_line=line_out,
                        redact=secrets,
                        timeout_error=BuildFailed,
                    )
                except BuildFailed as exc:  # only the time limit raises it here
                    raise build_timed_out(job.timeout_seconds) from exc
                self._check_namespace(result)
                return result

            self._ok(tool(["manifest", "create", list_name], "manifest"), "create a manifest list")
            try:
                for plat in job.platforms:
                    argv = self._build_argv(plat, job, list_name)
                    argv[1:1] = ["--network", network]
                    if cache:
                        key = ""  # needed only by a build that writes the cache
                        if self.writes_cache:
                            key = inputs_key(
                                plat, job.build_args, job.dockerfile, job.context_dir, cache
                            )
                        result = self._build_cached(tool, argv, plat, job.dockerfile, cache, key)
                    else:
                        result = tool(argv, plat)
                    if not result.ok:
                        raise build_failed(
                            plat,
                            f"buildah exited with {result.returncode}",
                            result.tail_text(ERROR_TAIL_LINES),
                        )
                digest = self._push(tool, list_name, job.image, job.tags, Path(scratch))
            finally:
                # The list is per build; the per-platform images and layers stay as cache.
                run_tool(
                    self._command(["manifest", "rm", list_name]),
                    timeout_seconds=60,
                    env=env,
                )
        return digest

    # --- steps ------------------------------------------------------------------------------

    def _build_argv(self, plat: str, job: BuildJob, list_name: str) -> list[str]:
        argv = [
            "build",
            "--platform",
            plat,
            "--manifest",
            list_name,
            "--layers",
            "--isolation",
            self.isolation,
            "--file",
            str(job.dockerfile),
        ]
        for key, value in target_build_args(plat, job.build_args).items():
            argv += ["--build-arg", f"{key}={value}"]
        return [*argv, str(job.context_dir)]

    def _build_cached(
        self, tool: Tool, argv: list[str], plat: str, dockerfile: Path, cache: str, key: str
    ) -> ToolResult:
        """``argv`` reading the registry cache (anchors pulled first), and writing it if new.

        buildah 1.28's ``--cache-to`` pushes every step, hits included, so it is left out when
        this storage pushed a build of the same inputs (``key``) before: every step is then a
        local hit. Should a step run all the same, ``_push_cache`` pushes afterwards. Other
        builds push as they build: a second, all-cached build costs more (0.7-2 s per
        platform for examples/hello) than pushing the hits.
        """
        known = self.writes_cache and cache_was_pushed(self.storage, key)
        tls = ["--tls-verify=false"] if self._is_insecure(cache) else []
        # Known inputs hit in local storage, the ARG steps too: no anchor is needed then.
        text = dockerfile.read_text(errors="replace")
        anchors = pull_anchors(
            tool, dockerfile=text, plat=plat, cache=cache, tls=tls, pull=not known
        )
        reading = [*argv[:-1], *tls, "--cache-from", cache, argv[-1]]
        if not self.writes_cache:
            return tool(reading, plat)
        lines: list[str] = []
        if known:
            result = tool(reading, plat, keep=lines)
            if not result.ok or not steps_run(lines):
                return result
            pushed = self._push_cache(tool, reading, plat, cache)
        else:
            result = tool([*reading[:-1], "--cache-to", cache, reading[-1]], plat, keep=lines)
            pushed = result.ok
            if not result.ok and cache_push_failed(lines):
                log.warning(
                    "Pushing the build cache to %s failed; building %s again without it.",
                    cache,
                    plat,
                )
                return tool(argv, plat)
        if pushed:
            if not known:
                remember_cache_pushed(self.storage, key)
            images = arg_step_images(lines)
            push_anchors(tool, anchors=anchors, images=images, cache=cache, tls=tls)
        return result

    def _push_cache(self, tool: Tool, reading: list[str], plat: str, cache: str) -> bool:
        """Build again with ``--cache-to`` (all hits: it only pushes), not into the list."""
        at = reading.index("--manifest")
        argv = [*reading[:at], *reading[at + 2 : -1], "--cache-to", cache, reading[-1]]
        pushed = tool(argv, f"cache {plat}")
        if not pushed.ok:
            log.warning(
                "Pushing the build cache to %s failed for %s (see the build log); the image "
                "is built all the same.",
                cache,
                plat,
            )
        return pushed.ok

    def _push(
        self,
        tool: Tool,
        list_name: str,
        image: str,
        tags: Sequence[str],
        scratch: Path,
    ) -> str:
        digests = []
        for tag in tags:
            digest_file = scratch / f"digest-{tag}"
            argv = ["manifest", "push", "--all", "--digestfile", str(digest_file)]
            if self._is_insecure(image):
                argv.append("--tls-verify=false")
            argv += [list_name, f"docker://{image}:{tag}"]
            self._ok(tool(argv, "push"), f"push {image}:{tag}", error=RegistryError)
            digests.append(digest_file.read_text().strip())
        if len(set(digests)) != 1:
            raise RegistryError(
                f"Pushing {image} under {', '.join(tags)} gave different digests {digests}."
            )
        return digests[0]

    # --- plumbing ---------------------------------------------------------------------------

    def _command(self, args: list[str]) -> list[str]:
        """buildah with ``args``; in a PID namespace of its own when ``pid_namespace``.

        Every subcommand goes the same way (one code path; only ``build`` runs PR code).
        ``--fork`` makes buildah PID 1 of the new namespace, so when it dies the kernel kills
        every step process left in it; ``--kill-child`` kills buildah when ``unshare`` is
        killed; ``--mount-proc`` gives the namespace its own /proc, which buildah's chroot
        isolation binds into each ``RUN`` step.
        """
        buildah = [self.binary, *self._global_args(), *args]
        if not self.pid_namespace:
            return buildah
        return [self.unshare, "--pid", "--fork", "--kill-child", "--mount-proc", *buildah]

    def _check_unshare(self) -> None:
        if self.pid_namespace and shutil.which(self.unshare, path=self.path) is None:
            raise ToolMissing(
                "The tool 'unshare' (util-linux) is not installed on this worker; builds "
                "need it to run in their own PID namespace.",
                hint="Install util-linux on the worker, or set build.pid_namespace to false "
                "(RUN steps then see the worker's processes).",
            )

    def _check_namespace(self, result: ToolResult) -> None:
        """Raise when ``unshare`` itself failed, before buildah ever started.

        Then the output is exactly unshare's one error line (buildah prints its own lines
        first, so a failing build step cannot pose as this).
        """
        if not self.pid_namespace or result.ok or len(result.tail) != 1:
            return
        line = result.tail[0]
        if line.startswith("unshare: "):
            raise IntegrationError(
                f"buildah could not start in a PID namespace of its own ({line}).",
                hint="The build worker needs root or CAP_SYS_ADMIN for this: give the build "
                "pool's pod CAP_SYS_ADMIN, or set build.pid_namespace to false "
                "(K8SEE_BUILD__PID_NAMESPACE=false), after which RUN steps can list and "
                "signal the worker's processes.",
            )

    @contextmanager
    def _network(self) -> Iterator[str]:
        """The ``--network`` of this build's steps; a sealed namespace lives as long as it."""
        if self.network != "sealed":
            yield self.network
            return
        with sealed_namespace(
            subnet=self.network_subnet,
            denied=self.network_denied,
            allowed=self.network_allowed,
        ) as path:
            yield f"ns:{path}"

    def _storage(self) -> AbstractContextManager[Path]:
        """Holds the build's storage dir (see ``k8see.integrations.buildstorage``)."""
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        if self.scope is None:
            return nullcontext(self.storage)
        idle = self.storage_max_idle_seconds
        return use_scope(self.storage_dir, self.scope, max_idle_seconds=idle)

    def _global_args(self) -> list[str]:
        return [
            "--root",
            str(self.storage / "root"),
            "--runroot",
            str(self.storage / "run"),
            "--storage-driver",
            self.storage_driver,
        ]

    def _env(self, scratch: Path) -> dict[str, str]:
        """The whole environment of buildah: nothing of the worker's leaks into a build."""
        env = {"PATH": self.path, "HOME": str(scratch), "TMPDIR": str(scratch)}
        if self.registries_conf is not None:
            env["CONTAINERS_REGISTRIES_CONF"] = str(self.registries_conf)
        if self.auth:
            auth_file = scratch / "auth.json"
            fd = os.open(auth_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({"auths": {a.host: _auth_entry(a) for a in self.auth}}, fh)
            env["REGISTRY_AUTH_FILE"] = str(auth_file)
        return env

    def _is_insecure(self, image: str) -> bool:
        return image.split("/", 1)[0] in self.insecure_registries

    @staticmethod
    def _ok(result: ToolResult, what: str, *, error: type[RegistryError] = RegistryError) -> None:
        if not result.ok:
            raise error(
                f"buildah could not {what} (exit {result.returncode}).",
                hint=result.tail_text(ERROR_TAIL_LINES),
            )


def _auth_entry(auth: RegistryAuth) -> dict[str, str]:
    import base64

    token = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
    return {"auth": token}
