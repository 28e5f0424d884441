"""The cleanup job: which environments should go, and which records point at nothing.

The reference ran a CronJob every 6 hours that asked GitHub about every namespace, one by one
(docs/operations.md "Scheduled jobs"). Here the decision is a pure function, ``plan()``, over
three inputs ``run_cleanup`` gathers: the k8see-managed namespaces, the environment records,
and a PR-state lookup (``pr_states.PrStates``: a few list requests, a Redis cache, a budget of
GitHub calls per run).

A namespace is destroyed when its PR is closed or merged, when the PR (or its repository) no
longer exists ("orphaned"), or when it has not been deployed for ``ttl_hours`` ("stale", decided
without asking GitHub). Preserved namespaces are kept until their preserve ends; namespaces
lacking the ownership label, the repository annotation or the PR label are reported and never
touched (the reference's ``skipped_safety``). ``run_cleanup`` sends the destroys through the
same destroy chain a close event uses (``destroy_chain``), and marks records whose namespace
vanished as destroyed. The ``k8see.cleanup`` task runs it every ``cleanup.interval_seconds``,
then the registry GC (``registry_gc``); ``k8see cleanup`` runs both once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import redis
from kubernetes import client as k8s

from k8see import metrics, names, state
from k8see.integrations import kube, kubeapi
from k8see.jobs.destroy_chain import destroy_now
from k8see.jobs.pr_states import PrStates, pr_states_of
from k8see.jobs.times import parse_time
from k8see.run import Status
from k8see.settings import PlatformSettings

__all__ = [
    "DESTROY_REASONS",
    "Environment",
    "Verdict",
    "list_environments",
    "plan",
    "questions",
    "run_cleanup",
    "vanished_records",
]

log = logging.getLogger(__name__)

#: Reasons that lead to a destroy; every other verdict keeps the namespace.
DESTROY_REASONS = frozenset({"closed", "merged", "orphaned", "stale"})
#: Statuses whose record promises a namespace exists.
LIVE_STATUSES = frozenset({Status.READY.value, Status.PRESERVED.value})


@dataclass(frozen=True)
class Environment:
    """One namespace labelled ``k8s-ee/type=ephemeral``, as the cleanup sees it.

    Attributes:
        namespace: Its name.
        managed_by: The ``app.kubernetes.io/managed-by`` label.
        repo: The ``k8s-ee/repository`` annotation, ``""`` when missing.
        pr: The ``k8s-ee/pr-number`` label, 0 when missing or not a number.
        preserve_until: Unix time the preserve ends, or None when not preserved.
        last_deployed: Unix time of the last deploy (``last-updated``, else ``created-at``).
        phase: ``Active`` or ``Terminating``.
    """

    namespace: str
    managed_by: str
    repo: str
    pr: int
    preserve_until: float | None
    last_deployed: float | None
    phase: str = "Active"

    @property
    def owned(self) -> bool:
        return self.managed_by in kube.OWNERS


def list_environments(*, api: Any) -> list[Environment]:
    """Every ephemeral namespace in the cluster (one list call)."""
    found = kubeapi.call(
        k8s.CoreV1Api(api).list_namespace,
        label_selector=f"{names.LABEL_TYPE}=ephemeral",
        what="list ephemeral namespaces",
    )
    out = []
    for ns in found.items or []:
        labels = dict(ns.metadata.labels or {})
        annotations = dict(ns.metadata.annotations or {})
        pr_text = labels.get(names.LABEL_PR, "")
        until = None
        if labels.get(names.LABEL_PRESERVE) == "true":
            # A preserve without a readable deadline counts as held forever: never guess.
            until = parse_time(annotations.get(names.ANN_PRESERVE_UNTIL)) or float("inf")
        out.append(
            Environment(
                namespace=str(ns.metadata.name),
                managed_by=labels.get(names.LABEL_MANAGED_BY, ""),
                repo=annotations.get(names.ANN_REPOSITORY, ""),
                pr=int(pr_text) if pr_text.isdigit() else 0,
                preserve_until=until,
                last_deployed=parse_time(annotations.get(names.ANN_LAST_UPDATED))
                or parse_time(annotations.get(names.ANN_CREATED_AT)),
                phase=str(getattr(ns.status, "phase", "") or "Active"),
            )
        )
    return sorted(out, key=lambda e: e.namespace)


@dataclass(frozen=True)
class Verdict:
    """What the cleanup decided for one namespace."""

    namespace: str
    repo: str
    pr: int
    reason: str
    """closed, merged, orphaned or stale (destroyed); open, young, preserved, safety,
    terminating, deferred or error (kept)."""

    @property
    def destroy(self) -> bool:
        return self.reason in DESTROY_REASONS

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "destroy": self.destroy}


def plan(
    *,
    environments: Iterable[Environment],
    records: dict[tuple[str, int], dict[str, Any]],
    pr_state: Callable[[str, int], str],
    now: float,
    ttl_hours: float,
) -> list[Verdict]:
    """Decide each namespace's fate; GitHub is asked only when nothing else decides.

    Args:
        environments: From ``list_environments``.
        records: Environment records keyed by ``(repo.lower(), pr)``.
        pr_state: A ``PrStates`` (or any function with its answers).
        now: The current Unix time.
        ttl_hours: An environment not deployed for this long is destroyed even if its PR is
            open.
    """
    verdicts = []
    for env in environments:
        verdicts.append(
            Verdict(
                env.namespace, env.repo, env.pr, _reason(env, records, pr_state, now, ttl_hours)
            )
        )
    return verdicts


def questions(
    *,
    environments: Iterable[Environment],
    records: dict[tuple[str, int], dict[str, Any]],
    now: float,
    ttl_hours: float,
) -> list[tuple[str, int]]:
    """The ``(repo, pr)`` pairs ``plan`` will ask its ``pr_state`` about, in that order.

    Takes ``plan``'s arguments; for ``PrStates.prefetch``.
    """
    return [
        (env.repo, env.pr) for env in environments if _settled(env, records, now, ttl_hours) is None
    ]


def _reason(
    env: Environment,
    records: dict[tuple[str, int], dict[str, Any]],
    pr_state: Callable[[str, int], str],
    now: float,
    ttl_hours: float,
) -> str:
    settled = _settled(env, records, now, ttl_hours)
    if settled is not None:
        return settled
    state = pr_state(env.repo, env.pr)
    if state in ("closed", "merged"):
        return state
    if state == "missing":
        return "orphaned"
    if state == "open":
        return "open"
    return state  # deferred or error: keep it, look again next run


def _settled(
    env: Environment, records: dict[tuple[str, int], dict[str, Any]], now: float, ttl_hours: float
) -> str | None:
    """The reason decided without asking GitHub, or None when the PR's state decides."""
    if not env.owned or not env.repo or "/" not in env.repo or env.pr <= 0:
        return "safety"
    if env.phase == "Terminating":
        return "terminating"
    if env.preserve_until is not None and env.preserve_until > now:
        return "preserved"
    record = records.get((env.repo.lower(), env.pr)) or {}
    last = max(
        (t for t in (env.last_deployed, parse_time(record.get("updated_at"))) if t is not None),
        default=None,
    )
    if last is not None and now - last > ttl_hours * 3600:
        return "stale"
    return None


def vanished_records(
    *, records: Iterable[dict[str, Any]], namespaces: set[str]
) -> list[dict[str, Any]]:
    """Records that say an environment is up whose namespace no longer exists."""
    out = []
    for record in records:
        ns = record.get("namespace")
        live = record.get("status") in LIVE_STATUSES
        if live and isinstance(ns, str) and ns and ns not in namespaces:
            out.append(record)
    return out


def run_cleanup(
    *,
    settings: PlatformSettings,
    client: redis.Redis,
    dry_run: bool = False,
    now: float | None = None,
    pr_states: PrStates | None = None,
) -> dict[str, Any]:
    """One reconcile pass; returns the report (what it destroyed, kept and why)."""
    now = time.time() if now is None else now
    states = pr_states or pr_states_of(settings, client)
    api = kube.make_api(settings)
    try:
        environments = list_environments(api=api)
    finally:
        api.close()
    all_records = list(state.list_records(client))
    records = {(str(r.get("repo", "")).lower(), int(r.get("pr") or 0)): r for r in all_records}
    ttl_hours = settings.cleanup.ttl_hours
    states.prefetch(
        questions(environments=environments, records=records, now=now, ttl_hours=ttl_hours)
    )
    verdicts = plan(
        environments=environments, records=records, pr_state=states, now=now, ttl_hours=ttl_hours
    )
    destroyed: list[dict[str, Any]] = []
    sent: set[tuple[str, int]] = set()
    for verdict in verdicts:
        if not verdict.destroy:
            continue
        entry = verdict.to_dict()
        key = (verdict.repo.lower(), verdict.pr)
        if not dry_run and key not in sent:
            sent.add(key)
            entry["run_id"] = destroy_now(
                settings=settings, client=client, repo=verdict.repo, pr=verdict.pr,
                reason=verdict.reason,
            )  # fmt: skip
        destroyed.append(entry)
    vanished = vanished_records(records=all_records, namespaces={e.namespace for e in environments})
    for record in vanished:
        if not dry_run:
            state.update(
                client,
                repo=str(record["repo"]),
                pr=int(record["pr"]),
                generation=int(record.get("generation") or 0),
                changes={
                    "status": Status.DESTROYED.value,
                    "reason": "The namespace no longer exists; found by the cleanup job.",
                    "stage": None,
                },
                ttl_seconds=settings.redis.record_ttl_seconds,
            )
            metrics.cleanup_action("vanished")
    kept: dict[str, int] = {}
    for verdict in verdicts:
        if not verdict.destroy:
            kept[verdict.reason] = kept.get(verdict.reason, 0) + 1
    report = {
        "dry_run": dry_run,
        "checked": len(verdicts),
        "destroyed": destroyed,
        "kept": kept,
        "kept_namespaces": [v.to_dict() for v in verdicts if not v.destroy],
        "vanished": [f"{r['repo']}#{r['pr']}" for r in vanished],
        "github_calls": states.calls,
    }
    log.info(
        "Cleanup%s checked %d namespaces: %d to destroy, %d kept %s, %d vanished records, "
        "%d GitHub calls.",
        " (dry run)" if dry_run else "",
        len(verdicts),
        len(destroyed),
        sum(kept.values()),
        kept,
        len(vanished),
        states.calls,
    )
    return report
