"""Preserve: keep a PR's environment past the PR's close for a while, within limits.

The reference's preserve (docs/operations.md "Preserve"), with its gaps closed:

- **Limits.** ``/preserve [hours]`` defaults to 48 hours; the hours are capped by a per-project
  maximum (keyed by repository) and a global one, and by an absolute lifetime: a namespace can
  be preserved until ``preserved-at + lifetime`` and no later, so re-preserving cannot extend it
  forever. ``preserved-at`` survives ``/unpreserve`` and expiry; it goes with the namespace.
- **Atomic quota.** Counting the preserved namespaces and labelling one happen under one Redis
  lock (``redis.lock.Lock``: ``SET NX PX`` plus a compare-and-delete release), so two
  ``/preserve`` commands on different PRs cannot both take the last slot. The cluster's labels
  stay the truth; the lock only serialises the check-and-set.
- **Authorization** is the task's job (it asks GitHub for the commenter's permission).
- **Expiry.** ``expire()`` warns once, ``warning_hours`` before the end (recording
  ``k8s-ee/preserve-warning-sent=true`` only when the comment was posted), and at the end removes
  the ``preserve`` label and returns the namespace so the task destroys it at once when the PR
  is closed (the reference waited up to 6 hours for the next cleanup).

Labels and annotations are exactly the reference's: label ``preserve=true``; annotations
``k8s-ee/preserve-until`` (ISO-8601 Z), ``k8s-ee/preserved-by``,
``k8s-ee/preserve-warning-sent`` (``false``, then ``true``), plus k8see's ``k8s-ee/preserved-at``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s

from k8see import names
from k8see.errors import PolicyError
from k8see.integrations import kube

__all__ = [
    "ANN_PRESERVED_AT",
    "ANN_PRESERVE_WARNING_SENT",
    "Expired",
    "Limits",
    "Preserved",
    "expire",
    "preserve",
    "unpreserve",
]

ANN_PRESERVE_WARNING_SENT = "k8s-ee/preserve-warning-sent"
ANN_PRESERVED_AT = "k8s-ee/preserved-at"
PRESERVE_MARKER = "<!-- k8s-ee-preserve -->"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class Limits:
    """The platform's preserve limits (from ``settings.cleanup``).

    Attributes:
        default_hours: Hours when ``/preserve`` has no number.
        max_hours: The global maximum of one ``/preserve``.
        project_max_hours: Per-repository maxima (``owner/repo`` → hours), lower or higher
            than the global one.
        lifetime_hours: The absolute cap, counted from the namespace's first preserve.
        max_preserved: Preserved namespaces allowed at once, cluster-wide.
    """

    default_hours: int
    max_hours: int
    lifetime_hours: int
    max_preserved: int
    project_max_hours: dict[str, int] = field(default_factory=dict)

    def cap_for(self, repo: str) -> int:
        lowered = {k.lower(): v for k, v in self.project_max_hours.items()}
        return int(lowered.get(repo.lower(), self.max_hours))


@dataclass(frozen=True)
class Preserved:
    """What a ``/preserve`` did."""

    namespace: str
    until: str
    hours: float
    extended: bool
    capped_by: str = ""
    """``lifetime`` when the absolute cap shortened the request, else ``""``."""


def _namespace_of(api: Any, repo: str, pr: int) -> str:
    found = kube.find_namespaces(api=api, repo=repo, pr=pr)
    if not found:
        raise PolicyError(
            f"{repo}#{pr} has no preview environment to preserve.",
            hint="Deploy it first (push a commit or comment /deploy-preview), then /preserve.",
        )
    return found[0]


def _read(api: Any, name: str) -> tuple[dict[str, str], dict[str, str]]:
    ns = kube.call(k8s.CoreV1Api(api).read_namespace, name, what=f"read namespace {name}")
    return dict(ns.metadata.labels or {}), dict(ns.metadata.annotations or {})


def _patch(api: Any, name: str, *, labels: dict[str, Any], annotations: dict[str, Any]) -> None:
    kube.call(
        k8s.CoreV1Api(api).patch_namespace,
        name,
        {"metadata": {"labels": labels, "annotations": annotations}},
        what=f"update the preserve of namespace {name}",
        _content_type="application/merge-patch+json",
    )


def preserve(
    *,
    api: Any,
    lock: AbstractContextManager[Any],
    repo: str,
    pr: int,
    hours: int | None,
    actor: str,
    limits: Limits,
    now: float,
) -> Preserved:
    """Preserve the PR's namespace for ``hours`` (or the default), within every limit.

    Args:
        api: A Kubernetes ``ApiClient``.
        lock: Held around the quota count and the label write (a Redis lock).
        repo: ``owner/repo``.
        pr: PR number.
        hours: From the command; None for the default.
        actor: The commenter's login (already authorized by the caller).
        limits: The platform's limits.
        now: Current Unix time.

    Raises:
        PolicyError: too many hours, the lifetime cap is used up, the quota is full, or the
            PR has no environment.
    """
    cap = limits.cap_for(repo)
    wanted = limits.default_hours if hours is None else hours
    if wanted < 1 or wanted > cap:
        raise PolicyError(
            f"/preserve {wanted} asks for more than this project's maximum of {cap} hours."
            if wanted > cap
            else "/preserve needs at least 1 hour.",
            hint=f"Comment /preserve with 1 to {cap} hours, e.g. /preserve {min(24, cap)}.",
        )
    name = _namespace_of(api, repo, pr)
    with lock:
        labels, annotations = _read(api, name)
        extended = labels.get(names.LABEL_PRESERVE) == "true"
        first = _parse(annotations.get(ANN_PRESERVED_AT)) or now
        until = now + wanted * 3600
        end_of_life = first + limits.lifetime_hours * 3600
        capped = ""
        if until > end_of_life:
            until, capped = end_of_life, "lifetime"
        if until <= now + 60:
            raise PolicyError(
                f"Namespace {name} has used up its preserve lifetime of "
                f"{limits.lifetime_hours} hours (first preserved at {iso(first)}).",
                hint="Redeploy after the PR closes, or ask the platform team to raise "
                "K8SEE_CLEANUP__PRESERVE_LIFETIME_HOURS.",
            )
        if not extended:
            held = _count_preserved(api, now=now, other_than=name)
            if held >= limits.max_preserved:
                raise PolicyError(
                    f"The cluster already has {held} preserved environments (the maximum is "
                    f"{limits.max_preserved}).",
                    hint="Comment /unpreserve on a PR that no longer needs its environment, "
                    "or wait until one expires.",
                )
        _patch(
            api,
            name,
            labels={names.LABEL_PRESERVE: "true"},
            annotations={
                names.ANN_PRESERVE_UNTIL: iso(until),
                names.ANN_PRESERVED_BY: names.sanitize_label_value(actor, fallback="unknown"),
                ANN_PRESERVE_WARNING_SENT: "false",
                ANN_PRESERVED_AT: iso(first),
            },
        )
    return Preserved(
        namespace=name,
        until=iso(until),
        hours=round((until - now) / 3600, 2),
        extended=extended,
        capped_by=capped,
    )


def _count_preserved(api: Any, *, now: float, other_than: str) -> int:
    found = kube.call(
        k8s.CoreV1Api(api).list_namespace,
        label_selector=f"{names.LABEL_PRESERVE}=true",
        what="count preserved namespaces",
    )
    count = 0
    for ns in found.items or []:
        if ns.metadata.name == other_than:
            continue
        until = _parse((ns.metadata.annotations or {}).get(names.ANN_PRESERVE_UNTIL))
        # A preserve without a readable deadline still holds its slot; an expired one does not.
        if until is None or until > now:
            count += 1
    return count


def unpreserve(*, api: Any, repo: str, pr: int) -> str:
    """Remove the PR's preserve (``preserved-at`` stays); returns the namespace."""
    name = _namespace_of(api, repo, pr)
    _release(api, name)
    return name


def _release(api: Any, name: str) -> None:
    _patch(
        api,
        name,
        labels={names.LABEL_PRESERVE: None},
        annotations={
            names.ANN_PRESERVE_UNTIL: None,
            names.ANN_PRESERVED_BY: None,
            ANN_PRESERVE_WARNING_SENT: None,
        },
    )


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
    found = kube.call(
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
        until = _parse(annotations.get(names.ANN_PRESERVE_UNTIL))
        if until is None or not repo or pr <= 0:
            out.append(Expired(name, repo, pr, "error"))
            continue
        left = until - now
        if left <= 0:
            _release(api, name)
            notify(repo, pr, _expired_body(name))
            out.append(Expired(name, repo, pr, "expired"))
        elif left <= warning_hours * 3600 and annotations.get(ANN_PRESERVE_WARNING_SENT) != "true":
            if notify(repo, pr, _warning_body(name, annotations[names.ANN_PRESERVE_UNTIL])):
                _patch(api, name, labels={}, annotations={ANN_PRESERVE_WARNING_SENT: "true"})
                out.append(Expired(name, repo, pr, "warned"))
            else:
                out.append(Expired(name, repo, pr, "warn-failed"))
    return out


def preserved_body(result: Preserved) -> str:
    verb = "extended" if result.extended else "preserved"
    note = " (shortened: the environment's preserve lifetime ends then)" if result.capped_by else ""
    return (
        f"{PRESERVE_MARKER}\n### Environment {verb}\n\n"
        f"`{result.namespace}` stays until **{result.until}**{note}, even after this PR closes. "
        "Comment `/unpreserve` to release it earlier."
    )


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
