"""Chains of stage tasks, built from task *names* so nothing here imports stage code.

Each signature carries its own time limits from the settings: a soft limit that the task turns
into a clear error, and a hard limit a little later that kills a stuck process, and a task id
that is the same every time the run is sent (``<run_id>-<stage>``), so a re-sent chain is
recognisable in the queues (``intake.pending_task_ids``) and in Flower.

``admit`` is the one place a run becomes the PR's latest; ``dispatch`` finishes an admission
(record, chain, ``sent``) and is what a retried enqueue, the outbox and the watchdog call again.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis
from celery import Celery, chain
from celery.canvas import Signature

from k8see import intake, stage_table, state
from k8see.app import QUEUES
from k8see.run import TERMINAL, Action, Run, Status
from k8see.settings import PlatformSettings

DEPLOY_STAGES = stage_table.chain(stage_table.DEPLOY)
#: ``untag`` deletes the PR's image tags after the destroy (best-effort, on the build queue).
DESTROY_STAGES = stage_table.chain(stage_table.DESTROY)
COMMAND_DESTROY_STAGES = stage_table.chain(stage_table.COMMAND_DESTROY)
HARD_LIMIT_GRACE_SECONDS = 30
#: The worker task that authorizes and answers comment commands.
COMMAND_TASK = "k8see.command"


def stage_time_limit(settings: PlatformSettings, stage: str) -> int:
    """The soft time limit of a stage, in seconds (its row of ``k8see.stage_table``)."""
    return stage_table.spec(stage).time_limit(settings)


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
        stage_table.spec(stage).task_name,
        args=args,
        soft_time_limit=soft,
        time_limit=soft + HARD_LIMIT_GRACE_SECONDS,
        argsrepr=describe(run),
        kwargsrepr="{}",
    ).set(task_id=task_id(run, stage))


def task_id(run: Run, stage: str) -> str:
    """The id of ``stage``'s task in ``run``'s chain: the same on every send of the run."""
    return f"{run.run_id}-{stage}"


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


def resume_from_deploy(app: Celery, settings: PlatformSettings, run: Run) -> Signature:
    """The rest of a deploy chain from its gated stage (the deploy): what a run that waited
    for capacity (``k8see.capacity``) is sent when admitted; its validate, build and scan
    results ride in ``run``, and the deploy stage verifies them again as always."""
    gated = next(i for i, stage in enumerate(DEPLOY_STAGES) if stage_table.spec(stage).gated)
    first, *rest = DEPLOY_STAGES[gated:]
    signatures = [_signature(app, settings, first, (run.to_dict(),), run)]
    signatures += [_signature(app, settings, stage, (), run) for stage in rest]
    return chain(*signatures)


def admit(
    run: Run,
    *,
    app: Celery,
    settings: PlatformSettings,
    client: redis.Redis,
) -> Run:
    """Accept ``run`` for its PR: the one place a run becomes the PR's latest.

    Stores it as admitted (close mark, generation bump; ``intake.admit``, atomic), then
    ``dispatch``. The command task calls it for ``/deploy-preview`` and ``/destroy-preview``
    only after the commenter was authorized, so a stranger's command can never supersede
    queued work; a redelivered command task finds its run admitted and only finishes sending.

    Returns:
        The run with its generation.
    """
    found = intake.admit(
        client, run=run, command=False, run_ttl_seconds=settings.redis.record_ttl_seconds
    )
    if found.stored is None:  # only a delivery mark names an earlier run; there is none here
        raise RuntimeError(f"run {run.run_id} was not stored")
    if found.stored.state == intake.SENT:
        return found.stored.run
    return dispatch(
        found.stored.run, app=app, settings=settings, client=client, resend=not found.fresh
    )


def dispatch(
    run: Run, *, app: Celery, settings: PlatformSettings, client: redis.Redis, resend: bool
) -> Run:
    """Finish an admission: write the ``queued`` record, send the chain, mark the run sent.

    Safe to call again for the same run after a failure at any point (``resend``): the record
    is written only if it is not this run's yet, and the chain is not sent again while one of
    its tasks is visibly queued or at work (a lost reply can still make it twice: at least
    once). A first send skips that look at the queues.
    """
    if not _claim_send(client, run.run_id):
        return run  # another sender finished it while this one waited
    try:
        found = intake.stored(client, run_id=run.run_id)
        if found is not None and found.state == intake.SENT:
            return run  # sent by another sender before this one took the claim
        before = state.get(client, repo=run.repo, pr=run.pr) or {}
        if before.get("run_id") != run.run_id:
            settled = _settled(before)
            state.set_status(
                client,
                repo=run.repo,
                pr=run.pr,
                generation=run.generation,
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
                # Submissions with the enqueue credential follow the run here (state.py).
                progress_tokens=list(found.progress) if found else [],
            )
        if not (resend and is_pending(run, client=client)):
            chain_for(app, settings, run).apply_async()
        intake.advance(client, run_id=run.run_id, from_state=intake.ADMITTED, to_state=intake.SENT)
    finally:
        with contextlib.suppress(redis.RedisError):
            client.delete(_sending_key(run.run_id))
    return run


#: How long one sender holds a run's send: the same event delivered several times at once
#: finds the run admitted by the first, and must not send its chain again meanwhile.
SEND_CLAIM_SECONDS = 2


def _sending_key(run_id: str) -> str:
    return f"k8see:sending:{run_id}"


def _claim_send(client: redis.Redis, run_id: str) -> bool:
    """Take the right to send ``run_id``'s chain; False when another sender sent it meanwhile.

    A sender that died holding the claim holds it no longer than ``SEND_CLAIM_SECONDS``, so a
    retry after a partial failure waits at most that long, then sends."""
    deadline = time.monotonic() + SEND_CLAIM_SECONDS + 1
    while True:
        if client.set(_sending_key(run_id), "1", nx=True, ex=SEND_CLAIM_SECONDS):
            return True
        found = intake.stored(client, run_id=run_id)
        if found is not None and found.state == intake.SENT:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)


def send_command(run: Run, *, app: Celery, client: redis.Redis, resend: bool) -> None:
    """Send a stored comment command to the command task and mark it sent (see ``dispatch``)."""
    command_id = task_id(run, "command")
    if not (resend and command_id in intake.pending_task_ids(client, queues=QUEUES)):
        app.send_task(COMMAND_TASK, args=[run.to_dict()], task_id=command_id)
    intake.advance(
        client, run_id=run.run_id, from_state=intake.COMMANDED, to_state=intake.COMMAND_SENT
    )


def is_pending(run: Run, *, client: redis.Redis) -> bool:
    """Whether a task of ``run``'s chain waits in a queue or is delivered and not yet acked."""
    prefix = f"{run.run_id}-"
    pending = intake.pending_task_ids(client, queues=QUEUES)
    return any(found.startswith(prefix) for found in pending)


def resend_due(
    *, app: Celery, settings: PlatformSettings, client: redis.Redis
) -> list[dict[str, Any]]:
    """Send the runs admitted but not sent for ``queues.outbox_grace_seconds`` (the outbox).

    The beat's watchdog job calls it, so a client that died between admitting and sending
    still gets its run. Returns what was sent.
    """
    sent = []
    for run_id in intake.due(client, older_than_seconds=settings.queues.outbox_grace_seconds):
        found = intake.stored(client, run_id=run_id)
        if found is None or found.state not in (intake.ADMITTED, intake.COMMANDED):
            intake.forget(client, run_id=run_id)
            continue
        if found.state == intake.COMMANDED:
            send_command(found.run, app=app, client=client, resend=True)
        else:
            dispatch(found.run, app=app, settings=settings, client=client, resend=True)
        sent.append({"repo": found.run.repo, "pr": found.run.pr, "run_id": run_id})
    return sent


def _settled(record: dict[str, Any]) -> str | None:
    """The environment's last settled status, to restore if the new event is skipped."""
    status = record.get("status")
    if status in {s.value for s in TERMINAL}:
        return str(status)
    previous = record.get("previous_status")
    return previous if isinstance(previous, str) else None
