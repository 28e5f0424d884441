"""Image builders: one interface, a multi-arch manifest list pushed under every tag.

Why a tiny base: the platform chooses buildah (daemonless, what the worker image ships) or
Docker by setting; the build stage only knows ``Builder.build_and_push``. What both must
deliver is the same: one manifest list for all configured platforms, foreign-architecture
``RUN`` steps executed (through qemu via binfmt_misc), pushed under each tag, and its digest,
because deployments pin the digest, never a tag.

Untrusted code runs here (the pull request's Dockerfile), so a build gets a minimal
environment built from scratch (never the worker's, which holds cluster and GitHub
credentials) and registry credentials only through a private auth file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from k8see.errors import BuildFailed, RegistryError
from k8see.integrations.process import ToolResult, run_tool

__all__ = [
    "DEFAULT_PATH",
    "BuildResult",
    "BuildahBuilder",
    "Builder",
    "RegistryAuth",
    "parse_platforms",
    "write_registries_conf",
]

#: The PATH a build sees; the worker's own environment is never passed through.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Lines of build output kept for the error shown to the PR author.
ERROR_TAIL_LINES = 20
#: The platforms the reference allows (build-image input validation).
KNOWN_PLATFORMS = frozenset(
    f"linux/{a}"
    for a in ("amd64", "arm64", "arm/v6", "arm/v7", "arm/v8", "386", "ppc64le", "s390x")
)


@dataclass(frozen=True)
class BuildResult:
    """A pushed multi-arch image.

    Attributes:
        image: ``<repository>@<digest>``, what deployments use.
        digest: The manifest list's digest, ``sha256:…``.
        platforms: The platforms in the list, e.g. ``("linux/amd64", "linux/arm64")``.
        seconds: Wall time of build plus push.
        tags: The tags the list was pushed under.
    """

    image: str
    digest: str
    platforms: tuple[str, ...]
    seconds: float
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry host; the password never reaches argv or logs."""

    host: str
    username: str
    password: str


class Builder(Protocol):
    """What the build stage needs from a builder."""

    def build_and_push(
        self,
        *,
        context_dir: Path,
        dockerfile: Path,
        image: str,
        tags: Sequence[str],
        platforms: Sequence[str],
        build_args: Mapping[str, str],
        timeout_seconds: float,
        should_stop: Callable[[], bool],
        on_line: Callable[[str], None],
    ) -> BuildResult:
        """Build ``dockerfile`` in ``context_dir`` for ``platforms``, push to every tag.

        Raises:
            BuildFailed: the Dockerfile did not build, or the build took too long.
            Superseded: ``should_stop`` became true; the build was killed.
            RegistryError: the push failed.
            ToolMissing: the builder's binary is not installed.
        """
        ...


def parse_platforms(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"linux/amd64,linux/arm64"`` → a tuple, each checked against the known platforms."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(dict.fromkeys(p.strip() for p in items if p.strip()))
    bad = [p for p in out if p not in KNOWN_PLATFORMS]
    if bad or not out:
        raise BuildFailed(
            f"Platform list {value!r} is not valid.",
            hint="Use a comma list of " + ", ".join(sorted(KNOWN_PLATFORMS)) + ".",
        )
    return out


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


class BuildahBuilder:
    """Build with buildah: one ``buildah build`` per platform into a manifest list.

    Why one build per platform rather than ``--platform a,b``: the output of each is streamed
    and labelled, a failure names the platform, and cancellation is checked in between.

    Args:
        storage_dir: buildah's storage root. Share it between builds of one worker: the
            base images and ``--layers`` cache live there, which is what makes a warm
            rebuild fast.
        storage_driver: ``vfs`` works everywhere (no overlay in containers).
        registries_conf: A registries.conf for mirrors and insecure hosts (see
            ``write_registries_conf``); ``None`` uses the system's.
        insecure_registries: Hosts pushed to with ``--tls-verify=false``.
        auth: Credentials for the registry pushed to, if it needs them.
        isolation: ``chroot`` needs no runtime or user namespaces (works as root in a
            container); ``oci`` where a runtime is available.
        binary: The buildah executable.
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
        binary: str = "buildah",
        path: str = DEFAULT_PATH,
    ) -> None:
        self.storage_dir = storage_dir
        self.storage_driver = storage_driver
        self.registries_conf = registries_conf
        self.insecure_registries = tuple(insecure_registries)
        self.auth = tuple(auth)
        self.isolation = isolation
        # Found where the worker finds its tools; buildah itself gets a minimal env.
        self.binary = shutil.which(binary) or binary
        self.path = path

    def build_and_push(
        self,
        *,
        context_dir: Path,
        dockerfile: Path,
        image: str,
        tags: Sequence[str],
        platforms: Sequence[str],
        build_args: Mapping[str, str],
        timeout_seconds: float,
        should_stop: Callable[[], bool],
        on_line: Callable[[str], None],
    ) -> BuildResult:
        started = time.monotonic()
        deadline = started + timeout_seconds
        plats = parse_platforms(platforms)
        secrets = [a.password for a in self.auth]
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        list_name = f"localhost/k8see-build/{uuid.uuid4().hex[:16]}"
        with tempfile.TemporaryDirectory(prefix="k8see-build-") as scratch:
            env = self._env(Path(scratch))

            def tool(args: list[str], what: str) -> ToolResult:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout(timeout_seconds)
                try:
                    return run_tool(
                        [self.binary, *self._global_args(), *args],
                        timeout_seconds=remaining,
                        env=env,
                        should_stop=should_stop,
                        on_line=lambda line: on_line(f"[{what}] {line}"),
                        redact=secrets,
                        timeout_error=BuildFailed,
                    )
                except BuildFailed as exc:  # only the time limit raises it here
                    raise self._timeout(timeout_seconds) from exc

            self._ok(tool(["manifest", "create", list_name], "manifest"), "create a manifest list")
            try:
                for plat in plats:
                    self._build_one(tool, plat, context_dir, dockerfile, list_name, build_args)
                digest = self._push(tool, list_name, image, tags, Path(scratch))
            finally:
                # The list is per build; the per-platform images and layers stay as cache.
                run_tool(
                    [self.binary, *self._global_args(), "manifest", "rm", list_name],
                    timeout_seconds=60,
                    env=env,
                )
        return BuildResult(
            image=f"{image}@{digest}",
            digest=digest,
            platforms=plats,
            seconds=time.monotonic() - started,
            tags=tuple(tags),
        )

    # --- steps ------------------------------------------------------------------------------

    def _build_one(
        self,
        tool: Callable[[list[str], str], ToolResult],
        plat: str,
        context_dir: Path,
        dockerfile: Path,
        list_name: str,
        build_args: Mapping[str, str],
    ) -> None:
        os_name, arch, *variant = plat.split("/")
        args = {
            **build_args,
            "TARGETPLATFORM": plat,
            "TARGETOS": os_name,
            "TARGETARCH": arch,
            "TARGETVARIANT": variant[0] if variant else "",
        }
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
            str(dockerfile),
        ]
        for key, value in args.items():
            argv += ["--build-arg", f"{key}={value}"]
        argv.append(str(context_dir))
        result = tool(argv, plat)
        if not result.ok:
            raise BuildFailed(
                f"The image did not build for {plat} (buildah exited with {result.returncode}).",
                hint="Last lines of the build output:\n" + result.tail_text(ERROR_TAIL_LINES),
            )

    def _push(
        self,
        tool: Callable[[list[str], str], ToolResult],
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

    def _global_args(self) -> list[str]:
        return [
            "--root",
            str(self.storage_dir / "root"),
            "--runroot",
            str(self.storage_dir / "run"),
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
    def _timeout(timeout_seconds: float) -> BuildFailed:
        return BuildFailed(
            f"The build did not finish within {timeout_seconds:g}s and was stopped.",
            hint="Make the build faster (smaller context, cached steps) or ask the platform "
            "operators to raise build.timeout_seconds.",
        )

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
