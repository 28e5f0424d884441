"""Chains of stage tasks, built from task *names* so nothing here imports stage code.

Each signature carries its own time limits from the settings: a soft limit that the task turns
into a clear error, and a hard limit a little later that kills a stuck process.
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery, chain
from celery.canvas import Signature

from k8see import coordination, state
from k8see.run import TERMINAL, Action, Run, Status
from k8see.settings import PlatformSettings

DEPLOY_STAGES = ("validate", "build", "scan", "deploy", "comment")
#: ``untag`` deletes the PR's image tags after the destroy (best-effort, on the build queue).
DESTROY_STAGES = ("destroy", "untag", "comment")
#: A destroy asked for by a comment is checked first: the repository's trigger mode decides
#: whether the command counts (automatic mode ignores it), and only the worker can read it.
COMMAND_DESTROY_STAGES = ("validate", "destroy", "untag", "comment")
HARD_LIMIT_GRACE_SECONDS = 30


def stage_time_limit(settings: PlatformSettings, stage: str) -> int:
    """The soft time limit of a stage, in seconds."""
    return {
        "validate": 180,
        "build": settings.build.timeout_seconds,
        "scan": settings.scan.timeout_seconds,
        "deploy": settings.deploy.helm_timeout_seconds + 120,
        # helm uninstall, the namespace wait, then up to a minute after unblocking leftovers
        # and a minute after forcing an empty namespace (namespace_removal).
        "destroy": settings.deploy.uninstall_timeout_seconds
        + settings.deploy.destroy_timeout_seconds
        + 180,
        "untag": 180,
        "comment": 120,
    }[stage]


def describe(run: Run) -> str:
    """What Flower and worker logs show as a task's arguments: ``acme/shop#42 gen 3 abc1234``.

    Every task of a chain gets it (``argsrepr``), so an admin sees the repo, PR, generation and
    commit at a glance instead of the Run's JSON.
    """
    sha = f" {run.sha[:7]}" if run.sha else ""
    return f"{run.repo}#{run.pr} gen {run.generation}{sha} {run.action.value} run {run.run_id}"


def _signature(
    app: Celery, settings: PlatformSettings, stage: str, args: tuple[Any, ...], run: Run
) -> Signature:
    soft = stage_time_limit(settings, stage)
    return app.signature(
        f"k8see.{stage}",
        args=args,
        soft_time_limit=soft,
        time_limit=soft + HARD_LIMIT_GRACE_SECONDS,
        argsrepr=describe(run),
        kwargsrepr="{}",
    )


def chain_for(app: Celery, settings: PlatformSettings, run: Run) -> Signature:
    """The chain a run's action needs: deploy (and redeploy) or destroy."""
    stages: tuple[str, ...]
    if run.action is Action.DESTROY:
        from_comment = run.trigger.startswith("issue_comment")
        stages = COMMAND_DESTROY_STAGES if from_comment else DESTROY_STAGES
    else:
        stages = DEPLOY_STAGES
    first, *rest = stages
    signatures = [_signature(app, settings, first, (run.to_dict(),), run)]
    signatures += [_signature(app, settings, stage, (), run) for stage in rest]
    return chain(*signatures)


def admit(
    run: Run,
    *,
    app: Celery,
    settings: PlatformSettings,
    client: redis.Redis,
    fingerprint: str = "",
) -> Run:
    """Accept ``run`` for its PR: the one place a run becomes the PR's latest.

    Sets or clears the close mark, bumps the generation (older runs stop), writes the
    ``queued`` record and sends the chain. The enqueue client calls it for events; the
    command task calls it for ``/deploy-preview`` and ``/destroy-preview`` only after the
    commenter was authorized, so a stranger's command can never supersede queued work.

    Returns:
        The run with its generation.
    """
    repo, pr = run.repo, run.pr
    if run.action is Action.DESTROY:
        coordination.mark_closed(client, repo=repo, pr=pr)
    else:
        coordination.clear_closed(client, repo=repo, pr=pr)
    generation = coordination.next_generation(client, repo=repo, pr=pr)
    run = Run.from_dict({**run.to_dict(), "generation": generation})
    if fingerprint:
        coordination.settle_delivery(
            client,
            repo=repo,
            pr=pr,
            fingerprint=fingerprint,
            run_id=run.run_id,
            generation=generation,
        )
    before = state.get(client, repo=repo, pr=pr) or {}
    settled = _settled(before)
    state.set_status(
        client,
        repo=repo,
        pr=pr,
        generation=generation,
        status=Status.QUEUED,
        ttl_seconds=settings.redis.record_ttl_seconds,
        run_id=run.run_id,
        action=run.action.value,
        trigger=run.trigger,
        sha=run.sha or None,
        ref=run.ref,
        stage=None,
        error=None,
        timings={},
        enqueued_at=run.enqueued_at,
        previous_status=settled,
        # The commit the environment runs, restored if this event is skipped or refused.
        previous_sha=before.get("sha") if settled else before.get("previous_sha"),
        skipped_run=None,
        reason=None,
    )
    chain_for(app, settings, run).apply_async()
    return run


def _settled(record: dict[str, Any]) -> str | None:
    """The environment's last settled status, to restore if the new event is skipped."""
    status = record.get("status")
    if status in {s.value for s in TERMINAL}:
        return str(status)
    previous = record.get("previous_status")
    return previous if isinstance(previous, str) else None
