"""A Celery app whose stage tasks only record: the framework without the tools.

Every stage task is the real ``StageTask`` (generation and close checks, lease, record
transitions, counters, chain hand-off), registered under the real
task names on a dedicated app, so the real client's ``enqueue`` drives it unchanged. Only the
stage bodies are trivial: each adds a small result and returns. Run with
``celery -A tests.benchmarks.trivial_app worker -Q <queue>``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from k8see import stage_table
from k8see.app import create_app
from k8see.run import Run
from k8see.settings import load_settings
from k8see.stage_table import StageSpec
from k8see.stages.context import StageContext
from k8see.worker.stage_task import StageTask
from tests.benchmarks.bare_app import register

STAGES = ("validate", "build", "scan", "deploy", "comment", "destroy")


def _record_only(stage: str) -> Any:
    def body(run: Run, ctx: StageContext) -> Run:
        if stage == "validate":
            namespace = f"bench-pr-{run.pr}"
            return run.with_result(
                "validate",
                {
                    "project_id": "bench",
                    "namespace": namespace,
                    "preview_url": f"https://{namespace}.bench.invalid",
                    "sha": run.sha,
                    "ref": run.ref,
                },
            )
        return run.with_result(stage, {"recorded": True})

    return body


def _task_class(stage: str) -> type[StageTask]:
    spec = stage_table.spec(stage)
    body = _record_only(stage)

    def run(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
        return self.execute(spec, payload)

    def stage_run(self: StageTask, _: StageSpec) -> Callable[[Run, StageContext], Run]:
        return body

    attributes = {"name": spec.task_name, "run": run, "stage_run": stage_run}
    return type(f"Trivial{stage.title()}", (StageTask,), attributes)


app = create_app(load_settings(), name="k8see-bench")
for _stage in STAGES:
    # After the app's shared tasks (the real stages), so these replace them by name.
    app.register_task(_task_class(_stage)())

# The throughput baseline: bare Celery chains of the same length through the same worker
# processes (bench_client routes each task to the queue of the stage it stands in for).
register(app)
