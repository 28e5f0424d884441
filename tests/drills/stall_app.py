"""The Celery app of the Redis-stall drill: k8see's own app and tasks, plus one stage-like task.

``k8see.drill_deploy`` goes through the real ``StageTask.execute`` as the ``deploy`` stage
(generation check, lease, record, probes, result), and its body runs a real subprocess
through ``integrations.process.run_tool`` with the stage's ``should_stop`` and
``record_log``, the way buildah and helm run. It prints a line a second for
``TOOL_SECONDS`` seconds. The ``starts`` file counts how often the body ran, and ``finished``
how often the tool ran to its end.

Run as ``celery -A tests.drills.stall_app worker`` with the platform settings in the
environment (``K8SEE_BUILD__WORKDIR`` is where the files go).
"""

from __future__ import annotations

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

TOOL_SECONDS = 12
TOOL = (
    "import sys, time\n"
    "for i in range(int(sys.argv[1])):\n"
    "    print('line', i, flush=True)\n"
    "    time.sleep(1)\n"
    "open(sys.argv[2], 'a').write('done\\n')\n"
)

app = create_app(load_settings(), name="k8see-drill")


def marks_dir(workdir: str) -> Path:
    path = Path(workdir) / "drill"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _stage(run: Run, ctx: StageContext) -> Run:
    marks = marks_dir(ctx.settings.build.workdir)
    with (marks / "starts").open("a") as out:
        out.write(f"{run.run_id}\n")
    result = run_tool(
        [sys.executable, "-c", TOOL, str(TOOL_SECONDS), str(marks / "finished")],
        timeout_seconds=300,
        should_stop=ctx.should_stop,
        on_line=ctx.record_log,
    )
    ctx.renew_lease()
    return run.with_result(
        "deploy", {"preview_url": "http://drill.invalid", "exit": result.returncode}
    )


class DrillDeploy(StageTask):
    """The deploy stage's row, with the body above in place of the real deploy."""

    name = "k8see.drill_deploy"

    def stage_run(self, spec: StageSpec) -> Callable[[Run, StageContext], Run]:
        return _stage

    def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.execute(stage_table.spec("deploy"), payload)


app.register_task(DrillDeploy())
