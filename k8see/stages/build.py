"""The build stage: the PR's Dockerfile → a multi-arch image pushed by digest.

Input: the ``Run``'s repository, PR and commit, nothing else. A message to ``k8see.build``
may come from anyone who reaches Redis, so the stage believes none of its results: it asks
GitHub that the PR is open with this commit at its head (and, for a fork, that a maintainer
approved it), fetches the source itself into a directory it derives (``trust.checkout``:
GitHub, or the worker's ``build.local_source_root``), and reads ``k8s-ee.yaml`` from there.
``build_checkout`` is the build proper, for a checkout the caller vouches for (``k8see
build`` on a maintainer's machine). Output: a ``BuildResult`` (``k8see.results``):
``image`` (``<repo>@<digest>``), ``digest``, ``platforms``, ``seconds``, ``tags``,
``repository``, ``pushed_tags``, ``cache_scope``, ``cache_trusted`` (``pushed_tags``:
every tag of the PR so far, for deletion on close; ``cache_scope``: the trust scope whose
build cache the build used, see ``k8see.integrations.buildstorage``).

Trust: a PR from the repository itself shares the repository's build cache and writes its
registry cache; a fork PR gets a cache scope of its own and only reads. A run whose
validate result does not say (``fork`` missing: ``k8see build`` on a maintainer's machine,
runs from older workers) counts as a fork: a worker that cannot tell must not let a build
write a cache that other builds trust, and a local reproduction, whose checkout may hold
uncommitted changes, should not write the project's cache either.

Why the path checks live here and not only in the config model: the build is where a path
meets the disk, so this is where ``..``, absolute paths and symlinks that leave the checkout
are refused (docs/images.md "Build" refuses ``..`` and ``/``; we also resolve symlinks).
Tags are ``pr-<N>`` (moves with the PR) and ``sha-<sha>`` (immutable, so a redeploy of an
older commit needs no rebuild); deployments use the digest.
"""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from k8see import names
from k8see.config import RepoConfig
from k8see.config.policy import check_allowed
from k8see.errors import ConfigError, PolicyError, Where
from k8see.integrations.buildah import BuildahBuilder
from k8see.integrations.buildcache import cache_repository_for
from k8see.integrations.builders import Builder, RegistryAuth, parse_platforms
from k8see.integrations.buildstorage import BuildScope
from k8see.integrations.dockerbuild import DockerBuilder
from k8see.integrations.github import make_client
from k8see.integrations.registry_access import (
    ensure_repository,
    registry_credentials,
    registry_host,
)
from k8see.record import EnvironmentRecord
from k8see.results import BuildResult
from k8see.run import Run
from k8see.settings import PlatformSettings
from k8see.stages import trust
from k8see.stages.context import StageContext
from k8see.stages.provenance import image_repository, require_approval

#: Tags remembered per PR for deletion on close (older ones are left to registry GC).
MAX_PUSHED_TAGS = 100


def run(run: Run, ctx: StageContext) -> Run:
    """Build the PR's head, as GitHub reports it, for every platform and push both tags.

    Raises:
        PolicyError: the repository is not allowed or the PR is unknown to GitHub.
        Stale: the run's commit is not the PR's head.
        Refused: the PR is closed, or a fork commit no maintainer approved.
    """
    settings = ctx.settings
    check_allowed(run.repo, allowlist_path=settings.policy.allowlist_path)
    github = make_client(settings, log=ctx.log)
    pull = trust.pull_of(github, run)
    trust.require_head(github, run, ctx, pull)
    if pull.fork:
        require_approval(github, run, settings)
    directory = trust.checkout(run, ctx, github)
    config_file, config = trust.load_config(run, directory, settings)
    return build_checkout(
        run,
        ctx,
        source_dir=directory,
        config=config,
        config_file=config_file,
        fork=pull.fork,
    )


def build_checkout(
    run: Run,
    ctx: StageContext,
    *,
    source_dir: Path,
    config: RepoConfig,
    config_file: str = names.DEFAULT_CONFIG_PATH,
    fork: bool | None,
) -> Run:
    """Build ``source_dir`` (a checkout the caller vouches for) with its validated ``config``.

    ``fork`` ``None`` (unknown) counts as a fork: the build writes no shared cache.
    """
    settings = ctx.settings
    image_cfg = config.image
    context_dir = inside(source_dir, image_cfg.context or ".", "image.context", config_file)
    dockerfile = inside(
        context_dir, image_cfg.dockerfile or "Dockerfile", "image.dockerfile", config_file
    )
    inside(source_dir, str(dockerfile.relative_to(source_dir)), "image.dockerfile", config_file)
    if not dockerfile.is_file():
        raise ConfigError(
            f"The Dockerfile {dockerfile.relative_to(source_dir)} does not exist at "
            f"{run.sha[:12]}.",
            hint="Commit a Dockerfile, or point image.context / image.dockerfile at it.",
            where=Where(file=config_file, field="image.dockerfile"),
        )
    host = registry_host(settings)
    repository = image_repository(
        settings,
        run.repo,
        config.project_id,
        image_cfg.repository,
        host=host,
        config_file=config_file,
    )
    tags = [names.image_tag(run.pr), names.sha_tag(run.sha)]
    platforms = _platforms(run, settings)
    scope = BuildScope.for_pull(run.repo, run.pr, fork=fork)
    wanted = [repository]
    cache = cache_repository_for(settings.build.cache_repository, repository)
    # The Docker builder has no such cache; an untrusted scope only reads it.
    if cache and settings.build.builder == "buildah" and scope.trusted:
        wanted.append(cache)
    for repo in wanted:
        if ensure_repository(settings, repository=repo.split("/", 1)[1], cache=repo == cache):
            ctx.log.info("Created the registry repository %s.", repo)

    ctx.log.info(
        "Building %s for %s in the cache scope %s (%s).",
        repository,
        ", ".join(platforms),
        scope.name,
        "trusted" if scope.trusted else "reads the registry cache only",
    )
    builder = make_builder(settings, workdir=ctx.workdir, host=host, scope=scope)
    result = builder.build_and_push(
        context_dir=context_dir,
        dockerfile=dockerfile,
        image=repository,
        tags=tags,
        platforms=platforms,
        build_args={},
        timeout_seconds=settings.build.timeout_seconds,
        should_stop=ctx.should_stop,
        on_line=ctx.record_log,
    )
    ctx.log.info("Build finished for %s in %.1fs.", result.image, result.seconds)
    return BuildResult(
        image=result.image,
        repository=repository,
        digest=result.digest,
        platforms=list(result.platforms),
        seconds=round(result.seconds, 3),
        tags=list(result.tags),
        pushed_tags=pushed_tags(ctx, list(result.tags)),
        cache_scope=scope.name,
        cache_trusted=scope.trusted,
    ).write(run)


def pushed_tags(ctx: StageContext, tags: list[str]) -> list[str]:
    """Every tag the PR's builds pushed so far (the record's list plus these), newest last.

    The untag stage deletes them when the PR closes: per-commit tags of earlier pushes are
    otherwise unknown (a registry cannot say which PR pushed ``sha-<x>``).
    """
    merged = [t for t in ctx.record.pushed_tags if t not in tags] + tags
    return merged[-MAX_PUSHED_TAGS:]


def inside(
    base: Path, relative: str, field: str, config_file: str = names.DEFAULT_CONFIG_PATH
) -> Path:
    """``base / relative``, refused unless it stays inside ``base`` (symlinks resolved).

    Raises:
        ConfigError: the path is absolute, contains ``..`` or leaves ``base``.
    """
    parts = PurePosixPath(relative).parts
    if relative.startswith(("/", "\\")) or ".." in parts or "\\" in relative or "\0" in relative:
        raise ConfigError(
            f"{field} {relative!r} must be a relative path inside the repository.",
            hint=f"Remove '..' and leading '/' from {field}; paths are relative to the "
            "repository root (image.dockerfile: to image.context).",
            where=Where(file=config_file, field=field),
        )
    root = base.resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(root):
        raise ConfigError(
            f"{field} {relative!r} leads outside the repository (through a symlink).",
            hint=f"Point {field} at a real directory or file inside the repository.",
            where=Where(file=config_file, field=field),
        )
    return target


def make_builder(
    settings: PlatformSettings,
    *,
    workdir: Path,
    host: str | None = None,
    scope: BuildScope | None = None,
) -> Builder:
    """The configured builder, with the registry's credentials and the shared cache.

    ``host`` is the registry host when already resolved; ECR's login is fetched here, fresh
    for each build (it lives 12 hours, a build at most ``build.timeout_seconds``). ``scope``
    is the build's trust scope (``None``: buildah uses the storage root as it is, Docker
    reuses any step the daemon has).
    """
    build, reg = settings.build, settings.registry
    host = host or reg.host
    username, password, _expires = registry_credentials(settings)
    auth = [RegistryAuth(host=host, username=username, password=password)]
    if build.builder == "docker":
        return DockerBuilder(
            base_url=build.docker_host,
            insecure_registries=[host] if reg.insecure else [],
            auth=auth if username and password else [],
            network_mode=build.docker_network,
            scope=scope,
            max_idle_seconds=build.storage_max_idle_hours * 3600,
        )
    storage = build.storage_dir or str(
        Path(build.workdir or tempfile.gettempdir()) / "k8see-buildah"
    )
    return BuildahBuilder(
        storage_dir=Path(storage),
        storage_driver=build.buildah_storage_driver,
        registries_conf=Path(build.registries_conf) if build.registries_conf else None,
        insecure_registries=[host] if reg.insecure else [],
        auth=auth if username and password else [],
        isolation=build.isolation,
        pid_namespace=build.pid_namespace,
        cache_repository=build.cache_repository,
        scope=scope,
        storage_max_idle_seconds=build.storage_max_idle_hours * 3600,
        network=build.network,
        network_subnet=build.network_subnet,
        network_denied=build.network_denied_cidrs,
        network_allowed=build.network_allowed_cidrs,
    )


def _platforms(run: Run, settings: PlatformSettings) -> tuple[str, ...]:
    """The platform's ``build.platforms``, narrowed to the run's ``platforms`` input if any.

    Raises:
        PolicyError: the run asks for a platform this platform does not build.
    """
    offered = parse_platforms(settings.build.platforms)
    if not run.platforms:
        return offered
    asked = names.check_platforms(run.platforms).split(",")
    missing = [p for p in asked if p not in offered]
    if missing:
        raise PolicyError(
            f"This platform does not build {', '.join(missing)}.",
            hint=f"Ask for some of {', '.join(offered)} in the workflow's platforms input, or "
            "leave it empty to build them all.",
        )
    return tuple(p for p in offered if p in asked)


def record_changes(run: Run, before: EnvironmentRecord) -> dict[str, Any]:
    """The image a build pushed, on the environment record."""
    result = BuildResult.of(run)
    return {
        "image": result.image,
        "digest": result.digest,
        "platforms": result.platforms,
        "pushed_tags": result.pushed_tags,
    }
