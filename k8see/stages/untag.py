"""The untag stage: after a destroy, delete the PR's image tags from the registry.

Input: the ``DestroyResult`` and the environment record (``ctx.record``: the
deployed ``image``, the PR's ``sha`` and every tag its builds pushed, ``pushed_tags``).
Output: an ``UntagResult`` (``k8see.results``): ``repository``, ``deleted``, ``failed``,
``absent``, ``errors`` (``failed`` lists tags; ``errors`` says why, per tag, without secrets),
or ``skipped`` (the reason) with ``deleted`` and ``failed`` empty.

Why a stage of its own, on the build queue: it talks to the registry with the build pool's registry
credentials, and a slow or failing registry must not hold the deploy pool or the destroy's lease. It
is best-effort: nothing here fails the chain, so the destroy comment is always posted and says what
could not be deleted; and idempotent: a second run finds the tags absent. A preserved environment
keeps its image (its pods still pull it by digest). Which tags: ``pr-<N>`` and every ``sha-*`` tag
the PR's builds pushed (the reference deleted only ``pr-<N>`` on ECR and nothing on GHCR;
docs/images.md "On close: the untag stage"). Untagged leftovers expire through the ECR lifecycle
policy, or the registry's garbage collection.
"""

from __future__ import annotations

import time
from typing import Any

from k8see import names
from k8see.errors import K8seeError, PlatformError
from k8see.integrations.oci import parse_ref
from k8see.integrations.registry_access import tag_remover
from k8see.record import EnvironmentRecord
from k8see.results import DestroyResult, UntagResult
from k8see.run import Run
from k8see.stages.context import StageContext

#: At most this many tags are deleted per close (a PR with hundreds of pushes keeps the rest
#: for the registry garbage collection job).
MAX_TAGS = 200


def run(run: Run, ctx: StageContext) -> Run:
    """Delete the PR's ``pr-<N>`` and ``sha-*`` tags; record what went and what did not."""
    started = time.monotonic()
    destroy = DestroyResult.of(run)
    record = ctx.record
    if destroy.preserved:
        return _skip(run, ctx, "preserved", started)
    image = record.image or ""
    if not image:
        return _skip(run, ctx, "no-image", started)
    try:
        ref = parse_ref(image)
    except PlatformError:
        return _skip(run, ctx, "unknown-image", started)
    reg = ctx.settings.registry
    derived_ecr = reg.type == "ecr" and reg.host in ("", "ghcr.io")
    if not derived_ecr and ref.host != reg.host:
        # Built when the platform used another registry: our credentials are not for it.
        return _skip(run, ctx, "other-registry", started)
    if not ref.repository.startswith(names.image_path(run.repo) + "/"):
        # The record names another repository's image: its tags are never ours to delete.
        ctx.log.warning("Not untagging %s: it is outside %s's registry path.", image, run.repo)
        return _skip(run, ctx, "other-repository", started)
    tags = tags_of(run, record)
    try:
        outcome = tag_remover(ctx.settings, log=ctx.log).remove_tags(ref.repository, tags)
        deleted, absent, errors = list(outcome.deleted), list(outcome.absent), outcome.failed
    except PlatformError as exc:  # no registry login at all, e.g. GHCR without a token
        deleted, absent, errors = [], [], dict.fromkeys(tags, exc.message)
    result = UntagResult(
        repository=f"{ref.host}/{ref.repository}",
        deleted=deleted,
        failed=list(errors),
        absent=absent,
        errors=errors,
        seconds=round(time.monotonic() - started, 3),
    )
    log = ctx.log.warning if errors else ctx.log.info
    log(
        "Image tags of %s#%s in %s: %d deleted, %d absent, %d failed%s.",
        run.repo,
        run.pr,
        result.repository,
        len(deleted),
        len(absent),
        len(errors),
        f" ({next(iter(errors.values()))})" if errors else "",
    )
    return result.write(run)


def tags_of(run: Run, record: EnvironmentRecord) -> list[str]:
    """``pr-<N>``, then the PR's commit tags: every one its builds pushed, newest known."""
    tags = [names.image_tag(run.pr)]
    for tag in record.pushed_tags:
        if tag.startswith("sha-") and tag not in tags:
            tags.append(tag)
    for sha in (record.sha, run.sha):
        if isinstance(sha, str) and len(sha) == 40:
            try:
                tag = names.sha_tag(sha)
            except K8seeError:  # not a lowercase hex SHA: nothing was pushed under it
                continue
            if tag not in tags:
                tags.append(tag)
    return tags[:MAX_TAGS]


def _skip(run: Run, ctx: StageContext, reason: str, started: float) -> Run:
    ctx.log.info("Image tags of %s#%s are kept: %s.", run.repo, run.pr, reason)
    seconds = round(time.monotonic() - started, 3)
    return UntagResult(skipped=reason, deleted=[], failed=[], seconds=seconds).write(run)


def record_changes(run: Run, before: EnvironmentRecord) -> dict[str, Any]:
    """The tags deleted on close, and those that could not be, on the record."""
    result = UntagResult.of(run)
    return {"untagged": {"deleted": result.deleted or [], "failed": result.failed or []}}
