"""The comment-command task's body: ``/help``, ``/preserve``, ``/unpreserve``, and the door
through which ``/deploy-preview`` and ``/destroy-preview`` are admitted once authorized.

Not a ``StageTask``: a newer push must not stop a ``/help``, and a command touches neither the
PR's generation nor its record. Its failures are classified as a stage's are
(``k8see.worker.failures``).
"""

from __future__ import annotations

import shutil
from typing import Any

import redis
from celery import Task

from k8see import intake, pipeline, state
from k8see.app import settings_of
from k8see.errors import Stopped, UserError
from k8see.logs import run_logger
from k8see.record import EnvironmentRecord
from k8see.results import CommandResult
from k8see.run import Run
from k8see.stages import command
from k8see.stages.context import StageContext
from k8see.worker.failures import describe, is_transient, retry_delay
from k8see.worker.stage_task import redis_for, workdir_for


def handle(task: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Authorize and answer the command in ``payload``; forward what it asks for."""
    settings = settings_of(task.app)
    run = Run.from_dict(payload)
    client = redis_for(settings)
    rlog = run_logger(run, stage="command", task_id=str(task.request.id or ""))
    workdir = workdir_for(settings, run)
    ctx = StageContext(
        settings=settings,
        log=rlog,
        workdir=workdir,
        record=EnvironmentRecord.of(state.get(client, repo=run.repo, pr=run.pr)),
    )
    try:
        result = command.run(run, ctx)
    except Stopped as exc:
        rlog.info("Command stops: %s", exc.message)
        state.count(client, f"stopped:{exc.reason}:command")
        state.set_run_outcome(
            client, run_id=run.run_id, outcome=exc.to_dict(), progress=_followers(client, run)
        )
        return {**run.to_dict(), "stopped": exc.reason, "stop_message": exc.message}
    except UserError as exc:
        rlog.info("Command refused: %s", exc.message)
        state.set_run_outcome(
            client, run_id=run.run_id, outcome=exc.to_dict(), progress=_followers(client, run)
        )
        return {**run.to_dict(), "stopped": exc.reason, "stop_message": exc.message}
    except Exception as exc:
        retries = int(task.request.retries or 0)
        max_retries = settings.queues.max_retries
        if not is_transient(exc):
            rlog.error("Command failed; not retried: %s", describe(exc))
            raise
        if retries >= max_retries:
            rlog.error("Command failed after %d retries: %s", retries, describe(exc))
            raise
        delay = retry_delay(exc, settings.queues.retry_backoff_seconds, retries)
        rlog.warning("Command failed (%s); retry in %.1fs.", describe(exc), delay)
        raise task.retry(countdown=delay, exc=exc, max_retries=max_retries) from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    state.count(client, "commands")
    handled = CommandResult.of(result)
    forward = handled.forward or ""
    if forward == "admit":
        admitted = pipeline.admit(result, app=task.app, settings=settings, client=client)
        rlog.info("Command admitted as generation %d.", admitted.generation)
        return admitted.to_dict()
    if forward:
        task.app.send_task(forward, args=[result.to_dict()])
    rlog.info("Command %s handled.", handled.command)
    return result.to_dict()


def _followers(client: redis.Redis, run: Run) -> tuple[str, ...]:
    """The progress tokens of the submissions following ``run`` (``k8see.submission``)."""
    found = intake.stored(client, run_id=run.run_id)
    return found.progress if found else ()
