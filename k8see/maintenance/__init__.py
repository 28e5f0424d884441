"""Maintenance: the scheduled jobs (beat → ``maintenance`` queue) and the preserve commands.

Jobs, each a thin task over a plain function that tests and ``k8see cleanup`` call directly:

- ``k8see.cleanup`` (every ``cleanup.interval_seconds``): destroys environments whose PR is
  closed, merged or gone, or that were not deployed for ``cleanup.ttl_hours``, through the same
  destroy chain a close event uses (``common.destroy_now``: generation bump, close mark,
  record); marks records whose namespace vanished as destroyed; then collects image garbage
  and prunes the build caches by age (``registry_gc``), under the ``registry-gc`` lock.
- ``k8see.preserve_expiry`` (every ``cleanup.expiry_interval_seconds``): warns before a preserve
  ends and, at the end, destroys at once when the PR is closed.
- ``k8see.watchdog`` (every ``cleanup.watchdog_interval_seconds``): sends the outbox's runs
  whose enqueue stopped half-way, sends a lost run's chain again (any non-terminal status,
  ``queued`` included) and fails it, saying so, after ``cleanup.watchdog_max_redrives``
  (``watchdog``).
- ``k8see.pull_secret_refresh`` (every ``registry.pull_secret_refresh_seconds``): rewrites the
  registry pull secret in every k8see-managed namespace, before the registry's token expires
  (its body: ``stages.pull_secret_refresh``).
- ``k8see.preserve``: ``/preserve [hours]`` and ``/unpreserve``, sent by ``k8see enqueue``.

**One active beat.** Run beat as a single replica (the chart does). If two beats run anyway (a
rollout, a second install), each job body runs under a Redis lock (``k8see:lock:job:<name>``,
``SET NX PX``, expiring after the job's period): a duplicate finds the lock taken and returns
``{"skipped": "locked"}``, and every job is idempotent besides, so duplicates are harmless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, shared_task

from k8see import coordination, metrics, state
from k8see.app import settings_of
from k8see.errors import (
    GitHubError,
    K8seeError,
    PolicyError,
    UserError,
)
from k8see.events import parse_command
from k8see.integrations import github as gh
from k8see.integrations import kube
from k8see.maintenance.common import (
    destroy_now,
    exclusive,
    github_client,
    pr_states_of,
    redis_client,
)
from k8see.maintenance.registry_gc import run_registry_gc
from k8see.maintenance.watchdog import run_watchdog
from k8see.run import Status
from k8see.settings import PlatformSettings
from k8see.stages import cleanup, preserve

# The pull-secret job's body and its credentials, re-exported (tests and callers name them here).
from k8see.stages.pull_secret_refresh import RegistryCredentials as RegistryCredentials
from k8see.stages.pull_secret_refresh import registry_credentials as registry_credentials
from k8see.stages.pull_secret_refresh import run_pull_secret_refresh

__all__ = [
    "RegistryCredentials",
    "cleanup_task",
    "destroy_now",
    "exclusive",
    "limits_of",
    "pr_states_of",
    "preserve_expiry_task",
    "preserve_task",
    "pull_secret_refresh_task",
    "redis_client",
    "registry_credentials",
    "run_cleanup",
    "run_expiry",
    "run_preserve_command",
    "run_pull_secret_refresh",
    "run_registry_gc",
    "run_watchdog",
    "watchdog_task",
]

log = logging.getLogger(__name__)

WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})
QUOTA_LOCK = "k8see:lock:preserve-quota"


# --- cleanup -----------------------------------------------------------------------------------


def run_cleanup(
    *,
    settings: PlatformSettings,
    client: redis.Redis,
    dry_run: bool = False,
    now: float | None = None,
    pr_states: cleanup.PrStates | None = None,
) -> dict[str, Any]:
    """One reconcile pass; returns the report (what it destroyed, kept and why)."""
    now = time.time() if now is None else now
    states = pr_states or pr_states_of(settings, client)
    api = kube.make_api(settings)
    try:
        environments = cleanup.list_environments(api=api)
    finally:
        api.close()
    all_records = list(state.list_records(client))
    records = {(str(r.get("repo", "")).lower(), int(r.get("pr") or 0)): r for r in all_records}
    ttl_hours = settings.cleanup.ttl_hours
    states.prefetch(
        cleanup.questions(environments=environments, records=records, now=now, ttl_hours=ttl_hours)
    )
    verdicts = cleanup.plan(
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
    vanished = cleanup.vanished_records(
        records=all_records, namespaces={e.namespace for e in environments}
    )
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


# --- preserve ----------------------------------------------------------------------------------


def limits_of(settings: PlatformSettings) -> preserve.Limits:
    c = settings.cleanup
    return preserve.Limits(
        default_hours=c.preserve_default_hours,
        max_hours=c.preserve_max_hours,
        lifetime_hours=c.preserve_lifetime_hours,
        max_preserved=c.max_preserved,
        project_max_hours=dict(c.preserve_project_max_hours),
    )


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
        acted = preserve.expire(
            api=api, now=now, warning_hours=settings.cleanup.preserve_warning_hours, notify=notify
        )
    finally:
        api.close()
    states = cleanup.PrStates(
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
                result = preserve.preserve(
                    api=api,
                    lock=lock,
                    repo=repo,
                    pr=pr,
                    hours=int(args[0]) if args else None,
                    actor=actor,
                    limits=limits_of(settings),
                    now=now,
                )
                body = preserve.preserved_body(result)
                outcome.update(namespace=result.namespace, until=result.until, ok=True,
                               extended=result.extended, capped_by=result.capped_by)  # fmt: skip
                _record(settings, client, repo, pr, {"preserve_until": result.until})
            else:
                ns = preserve.unpreserve(api=api, repo=repo, pr=pr)
                body = f"{preserve.PRESERVE_MARKER}\n### Preserve removed\n\n`{ns}` is no " + (
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
        body = f"{preserve.PRESERVE_MARKER}\n### /{name} refused\n\n{exc.message}" + (
            f"\n\n**Hint:** {exc.hint}" if exc.hint else ""
        )
        reaction = "-1"
    client_gh.upsert_comment(repo, pr, body, marker=preserve.PRESERVE_MARKER)
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


# --- tasks -------------------------------------------------------------------------------------


def _job(app: Celery, name: str, period_seconds: float, body: Callable[..., dict[str, Any]], /,
         **kwargs: Any) -> dict[str, Any]:  # fmt: skip
    settings = settings_of(app)
    client = redis_client(settings)
    with exclusive(client, name, ttl_seconds=period_seconds) as mine:
        if not mine:
            log.info("The %s job is already running elsewhere; this one skips.", name)
            return {"skipped": "locked"}
        try:
            report = body(settings=settings, client=client, **kwargs)
        except K8seeError as exc:
            log.error("The %s job failed: %s", name, exc.message)
            metrics.maintenance_run(name, "failed")
            raise
        metrics.maintenance_run(name, "ok")
        return report


@shared_task(bind=True, name="k8see.cleanup", acks_late=True)  # type: ignore[untyped-decorator]
def cleanup_task(self: Any, dry_run: bool = False) -> dict[str, Any]:
    settings = settings_of(self.app)
    report = _job(self.app, "cleanup", settings.cleanup.interval_seconds, run_cleanup,
                  dry_run=dry_run)  # fmt: skip
    if "skipped" not in report:
        report["registry"] = _job(self.app, "registry-gc", settings.cleanup.interval_seconds,
                                  run_registry_gc, dry_run=dry_run)  # fmt: skip
    return report


@shared_task(bind=True, name="k8see.preserve_expiry", acks_late=True)  # type: ignore[untyped-decorator]
def preserve_expiry_task(self: Any) -> dict[str, Any]:
    period = settings_of(self.app).cleanup.expiry_interval_seconds
    return _job(self.app, "preserve-expiry", period, run_expiry)


@shared_task(bind=True, name="k8see.watchdog", acks_late=True)  # type: ignore[untyped-decorator]
def watchdog_task(self: Any) -> dict[str, Any]:
    period = settings_of(self.app).cleanup.watchdog_interval_seconds
    return _job(self.app, "watchdog", period, run_watchdog, app=self.app)


@shared_task(bind=True, name="k8see.pull_secret_refresh", acks_late=True)  # type: ignore[untyped-decorator]
def pull_secret_refresh_task(self: Any) -> dict[str, Any]:
    period = settings_of(self.app).registry.pull_secret_refresh_seconds
    return _job(self.app, "pull-secret-refresh", period, run_pull_secret_refresh)


@shared_task(bind=True, name="k8see.preserve", acks_late=True)  # type: ignore[untyped-decorator]
def preserve_task(
    self: Any, payload: dict[str, Any], command: str = "", args: list[str] | None = None
) -> dict[str, Any]:
    """``payload``: a command dict (repo, pr, commenter, comment_id, command, args) or a Run."""
    settings = settings_of(self.app)
    merged = {**payload, **({"command": command} if command else {})}
    if args is not None:
        merged["args"] = list(args)
    return run_preserve_command(settings=settings, client=redis_client(settings), command=merged)
