"""How a stage's delivery ends when it does not simply finish: stopped, failed, after the
run's end, or a second delivery of a stage that finished. Each records the outcome and ends
the chain where it must; ``StageTask`` calls them.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Task

from k8see import controls, coordination, metrics, state
from k8see.app import settings_of
from k8see.errors import Closed, K8seeError, Refused, Stopped, Superseded
from k8see.run import Action, Run, Status
from k8see.stage_table import REPORTER


def stopped(
    task: Task,
    client: redis.Redis,
    run: Run,
    stage: str,
    exc: Stopped,
    rlog: logging.LoggerAdapter[logging.Logger],
    ttl: int,
) -> dict[str, Any]:
    """The run stops here on purpose (superseded, closed, refused, nothing to do): counted,
    the record keeps what it should, and the chain ends."""
    rlog.info("Run stops at %s: %s", stage, exc.message)
    metrics.run_stopped(run, stage=stage, reason=exc.reason)
    state.count(client, f"stopped:{exc.reason}:{stage}")
    latest = coordination.current_generation(client, repo=run.repo, pr=run.pr)
    if isinstance(exc, Refused) and run.action is Action.DESTROY and latest == run.generation:
        # A refused /destroy-preview must not leave its close mark behind: deploys
        # enqueued later by people allowed to would otherwise stop as "closed".
        coordination.clear_closed(client, repo=run.repo, pr=run.pr)
    if not isinstance(exc, Superseded | Closed):
        # Nothing to do for this event (e.g. on-demand mode). The environment keeps the
        # status it had before the event was queued; the record says this run skipped.
        record = state.get(client, repo=run.repo, pr=run.pr) or {}
        previous = record.get("previous_status") or Status.SKIPPED.value
        state.update(
            client,
            repo=run.repo,
            pr=run.pr,
            generation=run.generation,
            changes={
                "status": previous,
                "skipped_run": run.run_id,
                "reason": exc.message,
                "stage": None,
                # A refused fork push must not show its commit as the running one.
                **({"sha": record["previous_sha"]} if record.get("previous_sha") else {}),
            },
            ttl_seconds=ttl,
        )
    task.request.chain = None  # end the chain here; later stages must not run
    task.request.callbacks = None
    return {**run.to_dict(), "stopped": exc.reason, "stop_message": exc.message}


def failed(
    task: Task,
    client: redis.Redis,
    run: Run,
    stage: str,
    exc: K8seeError,
    rlog: logging.LoggerAdapter[logging.Logger],
    ttl: int,
) -> None:
    """The run failed at ``stage`` with ``exc``: on the record with its log's tail, and the
    reporting stage is sent to tell the PR (unless it is the one that failed)."""
    rlog.info("Stage %s failed: %s", stage, exc.message)
    metrics.stage_failed(stage=stage, reason=exc.reason)

    def failed_on_record() -> dict[str, Any] | None:
        error = {
            **exc.to_dict(),
            "stage": stage,
            "log_tail": state.log_tail(client, run_id=run.run_id),
        }
        return state.set_status(
            client,
            repo=run.repo,
            pr=run.pr,
            generation=run.generation,
            status=Status.FAILED,
            ttl_seconds=ttl,
            run_id=run.run_id,
            stage=stage,
            error=error,
        )

    # A stage can fail while Redis stalls (a build step failing mid-stall): its error must
    # wait for Redis, not be lost to a timeout with the run left at its running status.
    record = controls.until_redis_answers(
        failed_on_record, what="record the failure", rlog=rlog,
        tolerance_seconds=settings_of(task.app).redis.stall_tolerance_seconds,
    )  # fmt: skip
    if record is not None and stage != REPORTER:
        task.app.send_task(f"k8see.{REPORTER}", args=[run.to_dict()])


def after_end(
    task: Task,
    client: redis.Redis,
    run: Run,
    stage: str,
    status: str,
    rlog: logging.LoggerAdapter[logging.Logger],
) -> dict[str, Any]:
    """A message of a run that already ended, delivered again: acknowledged, not run."""
    rlog.warning(
        "Stage %s not run again: run %s already ended (%s); its message came again.",
        stage, run.run_id, status,
    )  # fmt: skip
    state.count(client, f"delivered_after_end:{stage}")
    task.request.chain = None
    task.request.callbacks = None
    return {**run.to_dict(), "stopped": "ended", "stop_message": f"the run ended ({status})"}


def duplicate(
    task: Task, client: redis.Redis, run: Run, stage: str,
    rlog: logging.LoggerAdapter[logging.Logger],
) -> dict[str, Any]:  # fmt: skip
    """A second delivery of a stage that finished: it ends here, and so does its chain
    (the first delivery sent the next stage)."""
    rlog.info("Stage %s of this run finished already; this second delivery ends.", stage)
    state.count(client, f"duplicate_delivery:{stage}")
    task.request.chain = None
    task.request.callbacks = None
    return {**run.to_dict(), "stopped": "duplicate", "stop_message": "delivered twice"}
