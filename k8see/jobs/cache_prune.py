"""Build-cache pruning: cache images older than ``cleanup.build_cache_max_age_days`` go.

Why: the registry build cache (``build.cache_repository``, default ``{image}/cache``) belongs
to the project, not to a PR, so no close deletes from it, and every build whose steps changed
adds an image per changed step and platform. Age is what ends a cache entry; a pruned entry
costs only a rerun of that step on its next build.

Which repositories: the cache of each image repository an environment record names on the
platform's registry, the way the registry GC finds image repositories. A cache template that
names an image repository itself (``{image}``) is refused: age would take PR images along.

How, per registry type (the registry decides what "old" can mean):

- **generic** (distribution API, no tag or push times): an image's age is its config's
  ``created``, which buildah sets to when it built the step (a manifest list: its newest
  image). Deletion is by manifest digest, which takes every tag on it, so a digest goes only
  when every tag on it is expired (tags on one digest share its age) and no kept manifest
  list references it. An image without ``created`` is kept and reported as undated.
- **GHCR**: each package version's ``updated_at`` (GitHub's last change to it); expired
  versions are deleted by id through the GitHub API. GitHub refuses a package's last tagged
  version, and deleting the package would drop its settings and access grants, so the newest
  tagged version stays when all of them are expired.
- **ECR**: a lifecycle policy on the cache repository, which ECR applies itself: the 7-day
  untagged rule plus every image expiring ``max_age_days`` after its push
  (``ecr.cache_lifecycle_policy``); set idempotently on each pass, so repositories created
  before it and a changed setting converge. 0 puts back the untagged rule alone.

Best-effort: a registry or GitHub failure is reported per repository and tag, and the next
one goes on. The registry GC (``registry_gc``) counts and schedules; this module decides.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from k8see.errors import K8seeError, PlatformError, RegistryError
from k8see.integrations.buildcache import cache_repository_for
from k8see.integrations.ghcr import GhcrPackages, PackageVersion
from k8see.integrations.oci import parse_ref
from k8see.integrations.registry import OciRegistry
from k8see.integrations.registry_access import registry_host, tag_remover
from k8see.settings import PlatformSettings

__all__ = [
    "DUE_KEY",
    "PERIOD_SECONDS",
    "CachePrune",
    "cache_repositories",
    "prune",
    "prune_ghcr",
    "prune_oci",
]

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]
DAY_SECONDS = 86400
#: A real pass runs at most this often (the registry GC runs every cleanup interval, 15
#: minutes by default): ages count in days, and listing every cache tag or package version
#: costs a request per tag (generic) or per 100 versions (GHCR, against the GitHub rate limit).
PERIOD_SECONDS = 6 * 3600
#: Redis key set (``NX``, expiring after ``PERIOD_SECONDS``) when a real pass starts.
DUE_KEY = "k8see:cache-prune:started"


@dataclass
class CachePrune:
    """What pruning did to the cache repositories (in a dry run: would do), by repository.

    Attributes:
        dry_run: Nothing was deleted or changed.
        max_age_days: ``cleanup.build_cache_max_age_days`` of this pass.
        repositories: The cache repositories looked at (paths without the host).
        deleted: Tags deleted per repository (an untagged GHCR version by its digest).
        images: Images (manifests, package versions) deleted.
        kept: Images kept (young, undated, held by a kept manifest list, or not deletable),
            per repository.
        undated: Tags kept because their image says nothing about its age.
        policies: ECR: ``set``, ``unchanged`` or ``absent`` per repository.
        failed: Per repository, what failed (a tag, ``list``, ``policy``) and why.
        skipped: Why nothing was looked at, when nothing was.
    """

    dry_run: bool
    max_age_days: int
    repositories: list[str] = field(default_factory=list)
    deleted: dict[str, list[str]] = field(default_factory=dict)
    images: int = 0
    kept: dict[str, int] = field(default_factory=dict)
    undated: dict[str, list[str]] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)
    skipped: str = ""

    def fail(self, repository: str, what: str, reason: str) -> None:
        self.failed.setdefault(repository, {})[what] = reason

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cache_repositories(
    *, records: Iterable[dict[str, Any]], host: str, template: str
) -> tuple[list[str], list[str]]:
    """The cache repositories of the image repositories that ``records`` name on ``host``.

    Returns:
        The cache repositories (paths without the host) and the refused ones: a cache that
        is on another registry, or is an image repository itself.
    """
    images: set[str] = set()
    for record in records:
        image = record.get("image")
        try:
            ref = parse_ref(image) if isinstance(image, str) and image else None
        except RegistryError:
            continue
        if ref is not None and ref.host == host:
            images.add(ref.repository)
    caches: set[str] = set()
    refused: set[str] = set()
    for repository in images:
        cache = cache_repository_for(template, f"{host}/{repository}")
        path = cache.removeprefix(f"{host}/")
        if path == cache or path in images:
            refused.add(cache)
        else:
            caches.add(path)
    return sorted(caches), sorted(refused)


def prune(
    *,
    settings: PlatformSettings,
    records: Iterable[dict[str, Any]],
    now: float,
    dry_run: bool,
    log: Log,
) -> CachePrune:
    """Prune the cache repository of every image repository ``records`` name.

    Args:
        settings: ``cleanup.build_cache_max_age_days``, ``build.cache_repository`` and the
            registry (type, host, credentials).
        records: The environment records (their ``image`` names the image repositories).
        now: Unix time the ages are measured at.
        dry_run: Report what would go; delete and change nothing.
        log: Logger for the summary line and refused caches.

    Returns:
        The report. Registry and GitHub failures are in it, per repository, not raised.
    """
    days = settings.cleanup.build_cache_max_age_days
    reg = settings.registry
    report = CachePrune(dry_run=dry_run, max_age_days=days)
    if not settings.build.cache_repository:
        report.skipped = "no registry build cache (build.cache_repository is empty)"
        return report
    if days <= 0 and reg.type != "ecr":
        report.skipped = "pruning is off (cleanup.build_cache_max_age_days is 0)"
        return report
    try:
        host = registry_host(settings)
        report.repositories, refused = cache_repositories(
            records=records, host=host, template=settings.build.cache_repository
        )
        remover = tag_remover(settings, log=log) if report.repositories else None
    except PlatformError as exc:  # ECR unreachable, GHCR without a token
        report.skipped = f"the registry cannot be used: {exc.message}"
        return report
    for cache in refused:
        log.warning("The build cache %s is not pruned: it is another registry's or an image "
                    "repository (check build.cache_repository).", cache)  # fmt: skip
    if remover is None:
        return report
    cutoff = now - days * DAY_SECONDS
    for repository in report.repositories:
        if isinstance(remover, OciRegistry):
            prune_oci(remover, repository, cutoff=cutoff, report=report)
        elif isinstance(remover, GhcrPackages):
            prune_ghcr(remover, repository, cutoff=cutoff, report=report)
        else:
            _ecr_policy(remover, repository, report=report)
    if isinstance(remover, OciRegistry):
        remover.close()
    log.info(
        "Build cache pruning%s: %d images older than %d days deleted (%d tags) in %d cache "
        "repositories, %d kept, %d undated, %d failures.",
        " (dry run)" if dry_run else "",
        report.images,
        days,
        sum(map(len, report.deleted.values())),
        len(report.repositories),
        sum(report.kept.values()),
        sum(map(len, report.undated.values())),
        sum(map(len, report.failed.values())),
    )
    return report


def prune_oci(registry: OciRegistry, repository: str, *, cutoff: float, report: CachePrune) -> None:
    """Delete the images of ``repository`` built before ``cutoff`` (Unix time), by digest."""
    try:
        tags = registry.list_tags(repository)
    except RegistryError as exc:
        report.fail(repository, "list", exc.message)
        return
    on_digest: dict[str, list[str]] = {}
    manifests = {}
    for tag in tags:
        try:
            manifest = registry.get_manifest(f"{repository}:{tag}")
        except RegistryError as exc:
            report.fail(repository, tag, exc.message)
            continue
        on_digest.setdefault(manifest.digest, []).append(tag)
        manifests[manifest.digest] = manifest
    expired: list[str] = []
    kept: list[str] = []
    for digest, manifest in manifests.items():
        try:
            created = registry.image_created(repository, manifest)
        except RegistryError as exc:
            for tag in on_digest[digest]:
                report.fail(repository, tag, exc.message)
            kept.append(digest)
            continue
        if created is None:
            report.undated.setdefault(repository, []).extend(on_digest[digest])
            kept.append(digest)
        elif created < cutoff:
            expired.append(digest)
        else:
            kept.append(digest)
    # A kept manifest list needs its images: deleting one would break every tag on the list.
    needed = {
        str(entry.get("digest"))
        for digest in kept
        if manifests[digest].is_index
        for entry in manifests[digest].body.get("manifests") or []
    }
    for digest in expired:
        if digest in needed:
            kept.append(digest)
            continue
        try:
            if not report.dry_run:
                registry.delete_manifest(repository, digest)
        except RegistryError as exc:
            for tag in on_digest[digest]:
                report.fail(repository, tag, exc.message)
            continue
        report.images += 1
        report.deleted.setdefault(repository, []).extend(on_digest[digest])
    if kept:
        report.kept[repository] = len(kept)


def prune_ghcr(
    packages: GhcrPackages, repository: str, *, cutoff: float, report: CachePrune
) -> None:
    """Delete the package versions of ``repository`` GitHub last changed before ``cutoff``."""
    try:
        versions = packages.list_versions(repository)
    except K8seeError as exc:
        report.fail(repository, "list", exc.message)
        return
    expired = [v for v in versions if v.updated_at is not None and v.updated_at < cutoff]
    undated = [v for v in versions if v.updated_at is None]
    tagged = [v for v in versions if v.tags]
    # GitHub refuses the last tagged version (or, with none tagged, the last version).
    last = tagged or versions
    if last and all(v in expired for v in last):
        expired.remove(max(last, key=lambda v: v.updated_at or 0.0))
    failed = {} if report.dry_run else packages.delete_versions(repository, [v.id for v in expired])
    for version in expired:
        if version.id in failed:
            for name in _names(version):
                report.fail(repository, name, failed[version.id])
            continue
        report.images += 1
        report.deleted.setdefault(repository, []).extend(_names(version))
    for version in undated:
        report.undated.setdefault(repository, []).extend(_names(version))
    if len(versions) > len(expired):
        report.kept[repository] = len(versions) - len(expired)


def _ecr_policy(ecr: Any, repository: str, *, report: CachePrune) -> None:
    """Give an ECR cache repository the policy that expires its old images."""
    from k8see.integrations.ecr import cache_lifecycle_policy  # boto3: worker-only

    try:
        report.policies[repository] = ecr.ensure_lifecycle_policy(
            repository, cache_lifecycle_policy(report.max_age_days), dry_run=report.dry_run
        )
    except RegistryError as exc:
        report.fail(repository, "policy", exc.message)


def _names(version: PackageVersion) -> list[str]:
    return list(version.tags) or [version.digest]
