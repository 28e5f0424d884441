"""Registry garbage collection: the tags of PRs that are gone (generic registries), then the
build caches pruned by age (``cache_prune``). Part of the ``k8see.cleanup`` job, under the
``registry-gc`` lock; ``k8see cleanup`` runs it too."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from k8see import metrics, state
from k8see.integrations.oci import parse_ref
from k8see.integrations.registry import OciRegistry
from k8see.jobs import cache_prune
from k8see.jobs.pr_states import PrStates, pr_states_of
from k8see.run import Status
from k8see.settings import PlatformSettings

__all__ = ["ImageGarbage", "collect_images", "run_registry_gc"]

log = logging.getLogger(__name__)


def run_registry_gc(
    *,
    settings: PlatformSettings,
    client: redis.Redis,
    dry_run: bool = False,
    pr_states: PrStates | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Delete image tags whose PR is gone (generic registries), then prune the build caches.

    The distribution API deletes a manifest by digest, taking every tag on it along; a tag
    that is garbage by name but shares its digest with a kept tag (a commit rebuilt to the
    same image as the PR's live one) is therefore kept and reported as ``kept_shared``.
    GHCR and ECR tags go with the untag stage instead. The build caches are pruned on every
    registry type (``cache_prune``; ``cleanup.build_cache_max_age_days``), best-effort, at
    most every ``cache_prune.PERIOD_SECONDS`` (a dry run always looks).

    Returns:
        The report: tags deleted (or, in a dry run, to delete), kept for a shared digest, and
        failed with a reason, each by image repository (or ``skipped``); and ``cache``, what
        the cache pruning did (``CachePrune``).
    """
    records = list(state.list_records(client))
    # The cache first: it reports its failures instead of raising, the tag GC may raise.
    cache = _prune_cache(settings, client, records, dry_run=dry_run, now=now)
    report = _collect_tags(settings, client, records, dry_run=dry_run, pr_states=pr_states)
    report["cache"] = cache
    return report


def _prune_cache(
    settings: PlatformSettings,
    client: redis.Redis,
    records: list[dict[str, Any]],
    *,
    dry_run: bool,
    now: float | None,
) -> dict[str, Any]:
    """The build-cache part of ``run_registry_gc``: when due, prune and count."""
    period = cache_prune.PERIOD_SECONDS
    if not dry_run and not client.set(cache_prune.DUE_KEY, "1", nx=True, ex=period):
        return {"skipped": f"pruned less than {period // 3600} hours ago"}
    pruned = cache_prune.prune(
        settings=settings,
        records=records,
        now=time.time() if now is None else now,
        dry_run=dry_run,
        log=log,
    )
    if not dry_run:
        metrics.cleanup_action("cache-pruned", pruned.images)
    metrics.cleanup_action("cache-prune-failed", sum(map(len, pruned.failed.values())))
    return pruned.to_dict()


def _collect_tags(
    settings: PlatformSettings,
    client: redis.Redis,
    records: list[dict[str, Any]],
    *,
    dry_run: bool,
    pr_states: PrStates | None,
) -> dict[str, Any]:
    """The ``pr-N``/``sha-*`` part of ``run_registry_gc`` (generic registries only)."""
    reg = settings.registry
    if reg.type != "generic" or not settings.cleanup.registry_gc:
        return {"skipped": f"registry type {reg.type} (or registry_gc off)"}
    registry = OciRegistry(
        host=reg.host,
        insecure=reg.insecure,
        username=reg.username,
        password=reg.password.get_secret_value() if reg.password else None,
    )
    deleted: dict[str, list[str]] = {}
    failed: dict[str, dict[str, str]] = {}
    try:
        garbage = collect_images(
            registry=registry,
            records=records,
            pr_state=pr_states or pr_states_of(settings, client),
        )
        for item in garbage:
            # Tag by tag: a garbage tag on the same image as a live one takes only itself.
            if dry_run:
                deleted[item.repository] = list(item.tags)
                continue
            outcome = registry.remove_tags(item.repository, item.tags)
            if outcome.deleted:
                deleted[item.repository] = list(outcome.deleted)
            if outcome.failed:
                failed[item.repository] = dict(outcome.failed)
            metrics.cleanup_action("image-tag", len(outcome.deleted))
    finally:
        registry.close()
    log.info(
        "Registry GC%s: %d tags deleted in %d repositories, %d failed.",
        " (dry run)" if dry_run else "",
        sum(map(len, deleted.values())),
        len(deleted),
        sum(map(len, failed.values())),
    )
    return {"dry_run": dry_run, "deleted": deleted, "failed": failed}


@dataclass
class ImageGarbage:
    """Tags to delete in one image repository, and why."""

    repository: str
    tags: list[str] = field(default_factory=list)


def collect_images(
    *,
    registry: OciRegistry,
    records: Iterable[dict[str, Any]],
    pr_state: Callable[[str, int], str],
) -> list[ImageGarbage]:
    """``pr-N`` and ``sha-*`` tags whose PR is gone, per image repository k8see pushed to.

    A repository is known from the records' ``image``. ``pr-N`` goes when PR N is closed,
    merged or missing and its record is not live; a ``sha-*`` tag goes when no live record of
    that repository points at that commit (it is only a cache for redeploying a commit).
    """
    by_repository: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        image = record.get("image")
        if not isinstance(image, str) or not image:
            continue
        ref = parse_ref(image)
        if ref.host != registry.host:
            continue
        by_repository.setdefault(ref.repository, []).append(record)
    out = []
    for repository, recs in sorted(by_repository.items()):
        live_shas = {r.get("sha") for r in recs if _live(r)}
        live_prs = {int(r.get("pr") or 0) for r in recs if _live(r)}
        owner = str(recs[0].get("repo") or "")
        garbage = ImageGarbage(repository)
        for tag in registry.list_tags(repository):
            if tag.startswith("pr-") and tag[3:].isdigit():
                number = int(tag[3:])
                if number in live_prs:
                    continue
                if pr_state(owner, number) in ("closed", "merged", "missing"):
                    garbage.tags.append(tag)
            elif tag.startswith("sha-") and tag[4:] not in live_shas:
                garbage.tags.append(tag)
        if garbage.tags:
            out.append(garbage)
    return out


def _live(record: dict[str, Any]) -> bool:
    return record.get("status") not in (Status.DESTROYED.value,)
