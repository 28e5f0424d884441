"""The Celery app of the Sentinel drill and the soak: k8see's framework with quick stage bodies.

Every stage task is the real ``StageTask`` (generation and close checks, lease, record
transitions, counters, the chain's hand-off), registered under the real task names, so the
real ``k8see enqueue`` drives it and the real watchdog re-drives it. The maintenance jobs are
k8see's own. Only the stage bodies are small: build runs a real subprocess for
``HA_BUILD_SECONDS`` (default 3) through ``run_tool`` with the stage's ``should_stop``, the way
buildah runs, so runs are mid-stage when a drill kills something; the others only record.

Each body appends ``<run id> <stage>`` to ``<build.workdir>/ha/finished`` when it completes
(one ``write`` of one short line to a file opened for appending: lines from several
processes never interleave), which is how a drill counts a stage that ran twice.

Run as ``celery -A tests.drills.ha_app worker -Q <queue>`` with the settings in the env.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from k8see import stage_table
from k8see.app import create_app
from k8see.integrations.process import run_tool
from k8see.run import Run
from k8see.settings import load_settings
from k8see.stage_table import StageSpec
from k8see.stages.context import StageContext
from k8see.worker.stage_task import StageTask

STAGES = ("validate", "build", "scan", "deploy", "comment", "destroy")
SLEEP = (
    "import sys, time\n"
    "for i in range(int(sys.argv[1])):\n"
    "    print(i, flush=True)\n"
    "    time.sleep(1)\n"
)


def finished_file(workdir: str | Path) -> Path:
    path = Path(workdir) / "ha"
    path.mkdir(parents=True, exist_ok=True)
    return path / "finished"


def _body(stage: str) -> Any:
    def body(run: Run, ctx: StageContext) -> Run:
        if stage == "build":
            seconds = os.environ.get("HA_BUILD_SECONDS", "3")
            run_tool(
                [sys.executable, "-c", SLEEP, seconds],
                timeout_seconds=120,
                should_stop=ctx.should_stop,
                on_line=ctx.record_log,
            )
        if stage == "validate":
            namespace = f"ha-pr-{run.pr}"
            result: dict[str, Any] = {
                "project_id": "ha",
                "namespace": namespace,
                "preview_url": f"https://{namespace}.ha.invalid",
                "sha": run.sha,
                "ref": run.ref,
            }
        else:
            result = {"recorded": True}
        with finished_file(ctx.settings.build.workdir).open("a") as out:
            out.write(f"{run.run_id} {stage}\n")
        return run.with_result(stage, result)

    return body


def _task_class(stage: str) -> type[StageTask]:
    spec = stage_table.spec(stage)
    body = _body(stage)

    def run(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
        return self.execute(spec, payload)

    def stage_run(self: StageTask, _: StageSpec) -> Callable[[Run, StageContext], Run]:
        return body

    attributes = {"name": spec.task_name, "run": run, "stage_run": stage_run}
    return type(f"Ha{stage.title()}", (StageTask,), attributes)


app = create_app(load_settings(), name="k8see-ha")
for _stage in STAGES:
    # After the app's shared tasks (the real stages), so these replace them by name.
    app.register_task(_task_class(_stage)())
