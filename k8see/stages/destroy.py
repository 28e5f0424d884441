"""The destroy stage: uninstall the app release and delete the PR's namespace.

A destroy from a close event may carry no validated config (nothing was fetched), so the namespace
is found by its labels and annotation: ``k8s-ee/pr-number=<N>``, ``k8s-ee/repository=<repo>`` and
managed by k8see or the reference (docs/environments.md "Destroy"). A validated run names its
namespace directly. A preserved namespace is kept; one that is gone already is done; one that
belongs to someone else is never touched. Running it twice ends in the same state.

The namespace deletion always runs, even when ``helm uninstall --wait`` runs out of time (a
release object stuck on a finalizer), and it leaves nothing behind: objects whose finalizers
nobody removes are unblocked (``namespace_removal``) and listed in ``unblocked``, which the
PR comment shows.

Only GitHub decides that a PR's environment goes (``trust.may_destroy``): a close event is
believed when GitHub says the PR is closed, a ``/destroy-preview`` when GitHub says its author
has write access. A forged "closed" for an open PR is refused and leaves it running.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from k8see import names
from k8see.errors import HelmError
from k8see.integrations import helm, kube, kubeproxy, namespace_removal
from k8see.integrations.github import make_client
from k8see.record import EnvironmentRecord
from k8see.results import DestroyResult, ValidateResult
from k8see.run import Run, Status
from k8see.stages import trust
from k8see.stages.context import StageContext


def run(run: Run, ctx: StageContext) -> Run:
    """Remove the PR's environment, unless it is preserved."""
    started = time.monotonic()
    settings = ctx.settings
    why = trust.may_destroy(make_client(settings, log=ctx.log), run, ctx)
    ctx.log.info("Destroying %s#%s: %s.", run.repo, run.pr, why)
    api = kube.make_api(settings)
    try:
        validated = ValidateResult.of(run).namespace
        targets = (
            [str(validated)]
            if validated
            else kube.find_namespaces(api=api, repo=run.repo, pr=run.pr)
        )
        outcomes = [_destroy_one(api, ctx, run=run, namespace=ns) for ns in targets]
    finally:
        api.close()
    result = DestroyResult(
        namespace=targets[0] if targets else "",
        namespaces=targets,
        deleted=any(o["deleted"] for o in outcomes),
        preserved=any(o["preserved"] for o in outcomes),
        removed=[item for o in outcomes for item in o["removed"]],
        # Objects whose finalizers nobody removed, unblocked so the namespace could go: the
        # PR comment names them (their operator may need looking at).
        unblocked=[item for o in outcomes for item in o["unblocked"]],
        skipped=sorted({o["skipped"] for o in outcomes if o["skipped"]})
        or ([] if targets else ["not-found"]),
        preserve_until=next((o["preserve_until"] for o in outcomes if o["preserved"]), ""),
        helm_api=_helm_api_total([o["helm_api"] for o in outcomes if "helm_api" in o]),
        seconds=round(time.monotonic() - started, 3),
    )
    ctx.log.info(
        "destroy of %s#%s: deleted=%s preserved=%s namespaces=%s",
        run.repo,
        run.pr,
        result.deleted,
        result.preserved,
        targets,
    )
    return result.write(run)


def _helm_api_total(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The API proxy's counts over every namespace destroyed."""
    retried: Counter[str] = Counter()
    for summary in summaries:
        retried.update(summary["retried"])
    return {
        "requests": sum(s["requests"] for s in summaries),
        "retries": sum(retried.values()),
        "retried": dict(sorted(retried.items())),
    }


def _destroy_one(api: Any, ctx: StageContext, *, run: Run, namespace: str) -> dict[str, Any]:
    outcome: dict[str, Any] = {
        "deleted": False,
        "preserved": False,
        "removed": [],
        "unblocked": [],
        "skipped": "",
        "preserve_until": "",
    }
    state, until = kube.namespace_state(api=api, name=namespace, repo=run.repo)
    if state:
        # Not ours, gone already, or preserved: say so and leave it exactly as it is.
        if state in ("not-managed", "different-repo"):
            ctx.log.warning("namespace %s is %s; not touching it", namespace, state)
        outcome.update(skipped=state, preserved=state == "preserved", preserve_until=until)
        return outcome
    ctx.renew_lease()
    # A namespace made before the platform bound its pools there (chart 0.3) gets the bindings
    # now, or the uninstall below would be refused; a no-op when they exist.
    kube.ensure_bindings(
        api=api, namespace=namespace, bindings=ctx.settings.deploy.namespace_bindings
    )
    uninstalled = False
    with kubeproxy.for_helm(ctx.settings) as helm_api:
        try:
            uninstalled = helm.uninstall(
                release=names.RELEASE_NAME,
                namespace=namespace,
                kubeconfig=helm_api.kubeconfig,
                timeout_seconds=ctx.settings.deploy.uninstall_timeout_seconds,
                log=ctx.log,
            )
        except HelmError as exc:
            # Typically a release object stuck on a finalizer (--wait ran out). Stopping here
            # would leave the namespace behind; its deletion removes what the release left.
            ctx.log.warning("helm uninstall in %s did not finish: %s", namespace, exc)
    outcome["helm_api"] = helm_api.summary()
    if uninstalled:
        outcome["removed"].append(f"HelmRelease/{names.RELEASE_NAME}")
    if helm_api.retries:
        ctx.log.info("helm's API requests: %s", helm_api.summary())
    ctx.renew_lease()
    removal = namespace_removal.delete_namespace(
        api=api,
        name=namespace,
        repo=run.repo,
        timeout_seconds=ctx.settings.deploy.destroy_timeout_seconds,
        on_poll=ctx.renew_lease,
    )
    outcome["removed"].extend(removal.removed)
    outcome["unblocked"].extend(removal.unblocked)
    if removal.unblocked:
        ctx.log.warning(
            "namespace %s: removed the finalizers of %s", namespace, ", ".join(removal.unblocked)
        )
    outcome.update(
        deleted=removal.deleted,
        skipped=removal.skipped,
        preserved=removal.skipped == "preserved",
        preserve_until=removal.preserve_until,
    )
    if removal.forced:
        ctx.log.warning("namespace %s was empty but stuck; its finalizers were cleared", namespace)
    return outcome


def record_changes(run: Run, before: EnvironmentRecord) -> dict[str, Any]:
    """A destroyed (or preserved) environment, on its record."""
    result = DestroyResult.of(run)
    status = Status.PRESERVED if result.preserved else Status.DESTROYED
    return {
        "status": status.value,
        "merged": run.merged,
        "unblocked": result.unblocked or [],
        "error": None,
    }
