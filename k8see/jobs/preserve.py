"""The preserve command: keep a PR's environment past the PR's close for a while, within limits.

The reference's preserve (docs/operations.md "Preserve"), with its gaps closed:

- **Limits.** ``/preserve [hours]`` defaults to 48 hours; the hours are capped by a per-project
  maximum (keyed by repository) and a global one, and by an absolute lifetime: a namespace can
  be preserved until ``preserved-at + lifetime`` and no later, so re-preserving cannot extend it
  forever. ``preserved-at`` survives ``/unpreserve`` and expiry; it goes with the namespace.
- **Atomic quota.** Counting the preserved namespaces and labelling one happen under one Redis
  lock (``redis.lock.Lock``: ``SET NX PX`` plus a compare-and-delete release), so two
  ``/preserve`` commands on different PRs cannot both take the last slot. The cluster's labels
  stay the truth; the lock only serialises the check-and-set.
- **Authorization.** ``run_preserve_command`` asks GitHub who wrote the command's comment and
  that commenter's permission; write, maintain or admin may use it.
- **Expiry** is its own job (``preserve_expiry``): it warns before the end and, at the end,
  destroys at once when the PR is closed (the reference waited up to 6 hours for the next
  cleanup).

Labels and annotations are exactly the reference's: label ``preserve=true``; annotations
``k8s-ee/preserve-until`` (ISO-8601 Z), ``k8s-ee/preserved-by``,
``k8s-ee/preserve-warning-sent`` (``false``, then ``true``), plus k8see's ``k8s-ee/preserved-at``.

``run_preserve_command`` is the ``k8see.preserve`` task's body: the task layer sends a
``/preserve`` or ``/unpreserve`` run there once ``k8see.command`` has authorized it, and it
checks the commenter's permission again.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import redis
from kubernetes import client as k8s

from k8see import names, state
from k8see.errors import GitHubError, PolicyError, UserError
from k8see.events import parse_command
from k8see.integrations import github as gh
from k8see.integrations import kube, kubeapi
from k8see.jobs.destroy_chain import destroy_now
from k8see.jobs.times import iso, parse_time
from k8see.settings import PlatformSettings

__all__ = [
    "ANN_PRESERVED_AT",
    "ANN_PRESERVE_WARNING_SENT",
    "PRESERVE_MARKER",
    "Limits",
    "Preserved",
    "end_preserve",
    "limits_of",
    "patch_preserve",
    "preserve",
    "run_preserve_command",
    "unpreserve",
]

log = logging.getLogger(__name__)

ANN_PRESERVE_WARNING_SENT = "k8s-ee/preserve-warning-sent"
ANN_PRESERVED_AT = "k8s-ee/preserved-at"
PRESERVE_MARKER = "<!-- k8s-ee-preserve -->"
WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})
QUOTA_LOCK = "k8see:lock:preserve-quota"


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
    ns = kubeapi.call(k8s.CoreV1Api(api).read_namespace, name, what=f"read namespace {name}")
    return dict(ns.metadata.labels or {}), dict(ns.metadata.annotations or {})


def patch_preserve(
    api: Any, name: str, *, labels: dict[str, Any], annotations: dict[str, Any]
) -> None:
    kubeapi.call(
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
        first = parse_time(annotations.get(ANN_PRESERVED_AT)) or now
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
        patch_preserve(
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
    found = kubeapi.call(
        k8s.CoreV1Api(api).list_namespace,
        label_selector=f"{names.LABEL_PRESERVE}=true",
        what="count preserved namespaces",
    )
    count = 0
    for ns in found.items or []:
        if ns.metadata.name == other_than:
            continue
        until = parse_time((ns.metadata.annotations or {}).get(names.ANN_PRESERVE_UNTIL))
        # A preserve without a readable deadline still holds its slot; an expired one does not.
        if until is None or until > now:
            count += 1
    return count


def unpreserve(*, api: Any, repo: str, pr: int) -> str:
    """Remove the PR's preserve (``preserved-at`` stays); returns the namespace."""
    name = _namespace_of(api, repo, pr)
    end_preserve(api, name)
    return name


def end_preserve(api: Any, name: str) -> None:
    patch_preserve(
        api,
        name,
        labels={names.LABEL_PRESERVE: None},
        annotations={
            names.ANN_PRESERVE_UNTIL: None,
            names.ANN_PRESERVED_BY: None,
            ANN_PRESERVE_WARNING_SENT: None,
        },
    )


def preserved_body(result: Preserved) -> str:
    verb = "extended" if result.extended else "preserved"
    note = " (shortened: the environment's preserve lifetime ends then)" if result.capped_by else ""
    return (
        f"{PRESERVE_MARKER}\n### Environment {verb}\n\n"
        f"`{result.namespace}` stays until **{result.until}**{note}, even after this PR closes. "
        "Comment `/unpreserve` to release it earlier."
    )


def limits_of(settings: PlatformSettings) -> Limits:
    c = settings.cleanup
    return Limits(
        default_hours=c.preserve_default_hours,
        max_hours=c.preserve_max_hours,
        lifetime_hours=c.preserve_lifetime_hours,
        max_preserved=c.max_preserved,
        project_max_hours=dict(c.preserve_project_max_hours),
    )


def run_preserve_command(
    *,
    settings: PlatformSettings,
    client: redis.Redis,
    command: dict[str, Any],
    github: gh.GitHubClient | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """``/preserve [hours]`` or ``/unpreserve`` from a PR comment, answered on the PR.

    Only commenters with write, maintain or admin permission may use them (reference gap 9).
    The commenter is whoever GitHub says wrote comment ``comment_id`` on this PR (and that
    comment must say the command): the ``commenter`` a message names is never believed.
    """
    now = time.time() if now is None else now
    repo, pr = str(command["repo"]), int(command["pr"])
    # A command dict names the command; a Run forwarded by k8see.command carries it in its
    # ``command`` result, and in its trigger (``issue_comment:/preserve 24``) besides.
    results = command.get("results")
    forwarded = results.get("command") if isinstance(results, dict) else None
    forwarded = forwarded if isinstance(forwarded, dict) else {}
    words = str(command.get("trigger") or "").partition(":")[2].lstrip("/").split()
    name = str(command.get("command") or forwarded.get("command") or (words[:1] or [""])[0])
    raw_args = command.get("args") or forwarded.get("args") or words[1:]
    args = [str(a) for a in raw_args]
    actor = ""
    comment_id = int(command.get("comment_id") or 0)
    client_gh = github or gh.make_client(settings, log=log)
    outcome: dict[str, Any] = {"repo": repo, "pr": pr, "command": name}
    try:
        if name not in ("preserve", "unpreserve"):
            raise PolicyError(f"/{name} is not a preserve command.")
        actor = _comment_author(client_gh, repo=repo, pr=pr, comment_id=comment_id, name=name)
        permission = client_gh.get_permission(repo, actor)
        if permission not in WRITE_PERMISSIONS:
            raise PolicyError(
                f"@{actor or 'unknown'} may not /{name} here (permission: {permission}).",
                hint="Ask someone with write access to the repository.",
            )
        pull = client_gh.get_pull(repo, pr)
        api = kube.make_api(settings)
        try:
            if name == "preserve":
                if pull.state != "open":
                    raise PolicyError(
                        f"{repo}#{pr} is not open (state: {pull.state}).",
                        hint="Preserve an environment before closing its PR.",
                    )
                lock = client.lock(QUOTA_LOCK, timeout=60, blocking_timeout=30)
                result = preserve(
                    api=api,
                    lock=lock,
                    repo=repo,
                    pr=pr,
                    hours=int(args[0]) if args else None,
                    actor=actor,
                    limits=limits_of(settings),
                    now=now,
                )
                body = preserved_body(result)
                outcome.update(namespace=result.namespace, until=result.until, ok=True,
                               extended=result.extended, capped_by=result.capped_by)  # fmt: skip
                _record(settings, client, repo, pr, {"preserve_until": result.until})
            else:
                ns = unpreserve(api=api, repo=repo, pr=pr)
                body = f"{PRESERVE_MARKER}\n### Preserve removed\n\n`{ns}` is no " + (
                    "longer preserved; it is destroyed now because the PR is closed."
                    if pull.state != "open"
                    else "longer preserved; it goes when the PR closes."
                )
                outcome.update(namespace=ns, ok=True)
                _record(settings, client, repo, pr, {"preserve_until": None})
                if pull.state != "open":
                    outcome["destroy_run"] = destroy_now(
                        settings=settings, client=client, repo=repo, pr=pr, reason="unpreserved"
                    )
        finally:
            api.close()
        reaction = "+1"
    except UserError as exc:
        outcome.update(ok=False, error=exc.to_dict())
        body = f"{PRESERVE_MARKER}\n### /{name} refused\n\n{exc.message}" + (
            f"\n\n**Hint:** {exc.hint}" if exc.hint else ""
        )
        reaction = "-1"
    client_gh.upsert_comment(repo, pr, body, marker=PRESERVE_MARKER)
    if comment_id:
        client_gh.add_reaction(repo, comment_id, reaction)
    return outcome


def _comment_author(
    github: gh.GitHubClient, *, repo: str, pr: int, comment_id: int, name: str
) -> str:
    """The GitHub login that wrote ``comment_id``, if it is a ``/name`` on PR ``pr``.

    Raises:
        PolicyError: no comment id, no such comment, or one elsewhere or saying otherwise.
    """
    refusal = PolicyError(
        f"/{name} on PR #{pr} was not found as a comment on GitHub, so its author is unknown.",
        hint="Comment the command on the pull request; its comment id must reach k8see.",
    )
    if comment_id <= 0:
        raise refusal
    try:
        comment = github.get_comment(repo, comment_id)
    except GitHubError as exc:
        if exc.status == 404:
            raise refusal from None
        raise
    if comment.issue != pr or parse_command(comment.body)[0] != name:
        raise refusal
    return comment.author


def _record(
    settings: PlatformSettings, client: redis.Redis, repo: str, pr: int, changes: dict[str, Any]
) -> None:
    record = state.get(client, repo=repo, pr=pr)
    if record is not None:
        state.update(client, repo=repo, pr=pr, generation=int(record.get("generation") or 0),
                     changes=changes, ttl_seconds=settings.redis.record_ttl_seconds)  # fmt: skip
