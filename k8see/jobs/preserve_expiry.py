"""The preserve expiry job: warn before a preserve ends, end it, destroy a closed PR's at once.

Every ``cleanup.expiry_interval_seconds`` (``k8see.preserve_expiry``, under the job lock):
``expire()`` warns once, ``cleanup.preserve_warning_hours`` before the end (recording
``k8s-ee/preserve-warning-sent=true`` only when the comment was posted), and at the end removes
the ``preserve`` label; ``run_expiry`` then destroys the environment at once when its PR is
closed, merged or gone (the reference waited up to 6 hours for the next cleanup). The labels
and annotations are the preserve command's (``preserve``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from kubernetes import client as k8s

from k8see import coordination, metrics, names
from k8see.errors import GitHubError
from k8see.integrations import github as gh
from k8see.integrations import kube, kubeapi
from k8see.jobs.connections import github_client
from k8see.jobs.destroy_chain import destroy_now
from k8see.jobs.pr_states import PrStates
from k8see.jobs.preserve import (
    ANN_PRESERVE_WARNING_SENT,
    PRESERVE_MARKER,
    end_preserve,
    patch_preserve,
)
from k8see.jobs.times import parse_time
from k8see.settings import PlatformSettings

__all__ = ["Expired", "expire", "run_expiry"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Expired:
    """One namespace the expiry job acted on."""

    namespace: str
    repo: str
    pr: int
    action: str
    """``warned``, ``expired``, ``warn-failed`` or ``error`` (no readable deadline)."""


def expire(
    *,
    api: Any,
    now: float,
    warning_hours: float,
    notify: Callable[[str, int, str], bool],
) -> list[Expired]:
    """Warn about preserves ending soon and end the ones past their deadline.

    Args:
        api: A Kubernetes ``ApiClient``.
        now: Current Unix time.
        warning_hours: Warn this long before the end, once.
        notify: Posts ``body`` on ``repo#pr``; returns whether it was posted. A failed warning
            is retried next run; a failed expiry notice is not (the preserve ends anyway).
    """
    found = kubeapi.call(
        k8s.CoreV1Api(api).list_namespace,
        label_selector=f"{names.LABEL_PRESERVE}=true",
        what="list preserved namespaces",
    )
    out = []
    for ns in sorted(found.items or [], key=lambda n: str(n.metadata.name)):
        labels = dict(ns.metadata.labels or {})
        annotations = dict(ns.metadata.annotations or {})
        if labels.get(names.LABEL_MANAGED_BY) not in kube.OWNERS:
            continue
        name = str(ns.metadata.name)
        repo = annotations.get(names.ANN_REPOSITORY, "")
        pr_text = labels.get(names.LABEL_PR, "")
        pr = int(pr_text) if pr_text.isdigit() else 0
        until = parse_time(annotations.get(names.ANN_PRESERVE_UNTIL))
        if until is None or not repo or pr <= 0:
            out.append(Expired(name, repo, pr, "error"))
            continue
        left = until - now
        if left <= 0:
            end_preserve(api, name)
            notify(repo, pr, _expired_body(name))
            out.append(Expired(name, repo, pr, "expired"))
        elif left <= warning_hours * 3600 and annotations.get(ANN_PRESERVE_WARNING_SENT) != "true":
            if notify(repo, pr, _warning_body(name, annotations[names.ANN_PRESERVE_UNTIL])):
                patch_preserve(
                    api, name, labels={}, annotations={ANN_PRESERVE_WARNING_SENT: "true"}
                )
                out.append(Expired(name, repo, pr, "warned"))
            else:
                out.append(Expired(name, repo, pr, "warn-failed"))
    return out


def run_expiry(
    *,
    settings: PlatformSettings,
    client: redis.Redis,
    now: float | None = None,
    github: gh.GitHubClient | None = None,
) -> dict[str, Any]:
    """Warn about preserves ending within the hour; end expired ones, destroying closed PRs."""
    now = time.time() if now is None else now
    github = github or github_client(settings)

    def notify(repo: str, pr: int, body: str) -> bool:
        if github is None:
            return False
        try:
            github.create_comment(repo, pr, body)
        except GitHubError as exc:
            log.warning("Could not comment on %s#%s: %s", repo, pr, exc.message)
            return False
        return True

    api = kube.make_api(settings)
    try:
        acted = expire(
            api=api, now=now, warning_hours=settings.cleanup.preserve_warning_hours, notify=notify
        )
    finally:
        api.close()
    states = PrStates(
        github=github,
        redis_client=client,
        cache_seconds=1,  # an expiry decides a destroy: ask GitHub afresh
        max_calls=settings.cleanup.max_github_calls,
        is_closed=lambda repo, pr: coordination.is_closed(client, repo=repo, pr=pr),
    )
    states.prefetch([(item.repo, item.pr) for item in acted if item.action == "expired"])
    destroyed = []
    for item in acted:
        if item.action == "expired":
            metrics.cleanup_action("preserve-expired")
            pr_state = states(item.repo, item.pr)
            if pr_state in ("closed", "merged", "missing"):
                destroy_now(
                    settings=settings, client=client, repo=item.repo, pr=item.pr,
                    reason="preserve-expired",
                )  # fmt: skip
                destroyed.append(item.namespace)
    return {
        "warned": [i.namespace for i in acted if i.action == "warned"],
        "expired": [i.namespace for i in acted if i.action == "expired"],
        "destroyed": destroyed,
        "errors": [i.namespace for i in acted if i.action in ("error", "warn-failed")],
    }


def _warning_body(namespace: str, until: str) -> str:
    return (
        f"{PRESERVE_MARKER}\n### Preserve expiring soon\n\n"
        f"The preserve of `{namespace}` ends at **{until}**. If this PR is closed by then, the "
        "environment is destroyed at once. Comment `/preserve [hours]` to extend it."
    )


def _expired_body(namespace: str) -> str:
    return (
        f"{PRESERVE_MARKER}\n### Preserve expired\n\n"
        f"The preserve of `{namespace}` has ended. If this PR is closed, the environment is "
        "being destroyed now; otherwise it follows the PR as usual."
    )
