"""The Celery tasks: one per row of ``k8see.stage_table`` on ``StageTask``, and the command task.

What a stage does is its module (``k8see.stages``); what running one involves (generation and
close checks, the lease, the record, retries and failure classification) is
``k8see.worker.stage_task``. This module only registers them, and connects the worker's
signals: process hardening and the intake dispatcher.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task, signals

from k8see import stage_table, submission
from k8see.hardening import deny_same_user_inspection
from k8see.stage_table import StageSpec
from k8see.worker import commands
from k8see.worker.stage_task import StageTask


@signals.worker_process_init.connect(weak=False, dispatch_uid="k8see.hardening")  # type: ignore[untyped-decorator]
def _harden(**_: Any) -> None:
    """Each pool process, however the worker was started (``k8see worker`` already hardened
    the main process): build steps of the same user must not read its memory or env."""
    deny_same_user_inspection()


@signals.worker_init.connect(weak=False, dispatch_uid="k8see.intake")  # type: ignore[untyped-decorator]
def _add_dispatcher(sender: Any, **_: Any) -> None:
    """Every worker gets the intake dispatcher (``k8see.submission``); it runs only in those
    that consume the default queue. Sent before the worker builds its bootsteps."""
    sender.app.steps["worker"].add(submission.Dispatcher)


@signals.worker_shutdown.connect(weak=False, dispatch_uid="k8see.intake-stop")  # type: ignore[untyped-decorator]
def _stop_dispatcher(sender: Any, **_: Any) -> None:
    """Stop the worker's intake dispatcher with the worker, however it stops."""
    dispatcher = getattr(sender, "k8see_dispatcher", None)
    if dispatcher is not None:
        dispatcher.stop(sender)


def register(spec: StageSpec) -> Task:
    """The task of ``spec``'s stage, ``k8see.<name>``, on every app (Celery's shared tasks)."""

    def stage_task(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
        return self.execute(spec, payload)

    stage_task.__name__ = stage_task.__qualname__ = f"{spec.name}_task"
    task: Task = shared_task(base=StageTask, bind=True, name=spec.task_name)(stage_task)
    return task


#: The task of every stage in the table, by stage name.
STAGE_TASKS: dict[str, Task] = {
    name: register(stage_table.spec(name)) for name in stage_table.names()
}


@shared_task(bind=True, name="k8see.command", acks_late=True)  # type: ignore[untyped-decorator]
def command_task(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """/help, /preserve, /unpreserve, and the admission of authorized deploy and destroy
    commands (``k8see.worker.commands``)."""
    return commands.handle(self, payload)


__all__ = ["STAGE_TASKS", "StageTask", "command_task", "register"]
