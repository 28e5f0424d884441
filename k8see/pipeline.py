"""Chains of stage tasks, built from task *names* so nothing here imports stage code.

Each signature carries its own time limits from the settings: a soft limit that the task turns
into a clear error, and a hard limit a little later that kills a stuck process.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, chain
from celery.canvas import Signature

from k8see.run import Action, Run
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
        "destroy": settings.deploy.destroy_timeout_seconds + 120,
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
