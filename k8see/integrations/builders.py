"""Image builders: one base class, a multi-arch manifest list pushed under every tag.

Why a tiny base: the platform chooses buildah (daemonless, what the worker image ships,
``k8see.integrations.buildah``) or Docker (``k8see.integrations.dockerbuild``) by setting; the
build stage only knows ``Builder.build_and_push``. What both must deliver is the same: one
manifest list for all configured platforms, foreign-architecture ``RUN`` steps executed
(through qemu via binfmt_misc), pushed under each tag, and its digest, because deployments
pin the digest, never a tag. So the base checks the platforms, sets the deadline and times
the build; a builder implements ``_build_and_push`` and returns the list's digest. The few
rules both apply to a build (the ``TARGET*`` arguments, what a failure and a timeout say)
are here too.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from k8see.errors import BuildFailed

__all__ = [
    "ERROR_TAIL_LINES",
    "KNOWN_PLATFORMS",
    "BuildJob",
    "BuildResult",
    "Builder",
    "RegistryAuth",
    "build_failed",
    "build_timed_out",
    "parse_platforms",
    "target_build_args",
]

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


@dataclass(frozen=True)
class BuildJob:
    """One ``build_and_push`` call as a builder receives it: platforms checked, deadline set.

    Attributes:
        deadline: ``time.monotonic()`` by which the whole build and push must be done.
        (the others: the arguments of ``Builder.build_and_push``)
    """

    context_dir: Path
    dockerfile: Path
    image: str
    tags: tuple[str, ...]
    platforms: tuple[str, ...]
    build_args: Mapping[str, str]
    timeout_seconds: float
    deadline: float
    should_stop: Callable[[], bool]
    on_line: Callable[[str], None]


class Builder(ABC):
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
        started = time.monotonic()
        job = BuildJob(
            context_dir=context_dir,
            dockerfile=dockerfile,
            image=image,
            tags=tuple(tags),
            platforms=parse_platforms(platforms),
            build_args=build_args,
            timeout_seconds=timeout_seconds,
            deadline=started + timeout_seconds,
            should_stop=should_stop,
            on_line=on_line,
        )
        digest = self._build_and_push(job)
        return BuildResult(
            image=f"{image}@{digest}",
            digest=digest,
            platforms=job.platforms,
            seconds=time.monotonic() - started,
            tags=job.tags,
        )

    @abstractmethod
    def _build_and_push(self, job: BuildJob) -> str:
        """Build ``job`` into one manifest list, push it under every tag; the list's digest."""


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


def target_build_args(plat: str, build_args: Mapping[str, str]) -> dict[str, str]:
    """``build_args`` plus the ``TARGET*`` arguments BuildKit sets for ``plat``."""
    os_name, arch, *variant = plat.split("/")
    return {
        **build_args,
        "TARGETPLATFORM": plat,
        "TARGETOS": os_name,
        "TARGETARCH": arch,
        "TARGETVARIANT": variant[0] if variant else "",
    }


def build_failed(plat: str, detail: str, tail: str) -> BuildFailed:
    """The error for a Dockerfile that did not build for ``plat``, its output's last lines."""
    return BuildFailed(
        f"The image did not build for {plat} ({detail}).",
        hint="Last lines of the build output:\n" + tail,
    )


def build_timed_out(timeout_seconds: float) -> BuildFailed:
    """The error for a build stopped at its time limit."""
    return BuildFailed(
        f"The build did not finish within {timeout_seconds:g}s and was stopped.",
        hint="Make the build faster (smaller context, cached steps) or ask the platform "
        "operators to raise build.timeout_seconds.",
    )
