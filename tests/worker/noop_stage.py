"""A stage added by a test: this module and one row of the table (``noop_app``) are all it takes.

What it does comes from the run's ``plan`` result, so one worker can show each outcome: finish
(recording the status it saw on the record), sleep past its time limit, refuse with a user
error, or fail with a platform error.
"""

from __future__ import annotations

import time
from typing import Any

from k8see.errors import PlatformError, UserError
from k8see.record import EnvironmentRecord
from k8see.run import Run
from k8see.stages.context import StageContext


def run(run: Run, ctx: StageContext) -> Run:
    plan = run.result("plan")
    ctx.renew_lease()
    if plan.get("sleep"):
        time.sleep(float(plan["sleep"]))
    if plan.get("refuse"):
        raise UserError("The noop stage refuses this run.", hint="Ask it nicely.")
    if plan.get("fail"):
        raise PlatformError("The noop stage's platform is down.", hint="Wait for it.")
    return run.with_result("noop", {"saw_status": ctx.record.status})


def record_changes(run: Run, before: EnvironmentRecord) -> dict[str, Any]:
    return {"noop_saw": run.result("noop").get("saw_status")}
