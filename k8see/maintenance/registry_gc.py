"""Registry garbage collection: the tags of PRs that are gone (generic registries), then the
build caches pruned by age (``stages.cache_prune``). Part of the ``k8see.cleanup`` job, under
the ``registry-gc`` lock; ``k8see cleanup`` runs it too."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from k8see import metrics, state
from k8see.integrations.registry import OciRegistry
from k8see.maintenance.common import pr_states_of
from k8see.settings import PlatformSettings
from k8see.stages import cache_prune, cleanup

__all__ = ["run_registry_gc"]

log = logging.getLogger("k8see.maintenance")


def run_registry_gc(
    *,
    settings: PlatformSettings,
    client: redis.Redis,
    dry_run: bool = False,
    pr_states: cleanup.PrStates | None = None,
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
    pr_states: cleanup.PrStates | None,
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
        garbage = cleanup.collect_images(
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
