"""The watchdog job: every accepted run ends in a terminal status, with its real reason.

Each pass (every ``cleanup.watchdog_interval_seconds``, under the job lock):

1. It sends the runs the outbox holds longer than ``queues.outbox_grace_seconds``: admitted,
   but their enqueue stopped before the chain was sent (``pipeline.resend_due``).
2. It looks at every record in a non-terminal status, ``queued`` included, unchanged for
   ``cleanup.watchdog_grace_seconds``. A run with a task queued, at work or held for a
   countdown (in the broker's unacked hash) is left alone: the broker will run or redeliver
   it. A run with no message anywhere, on two passes in a row, is lost (a worker acknowledged
   a stage it could not finish): its chain is sent again from the run admission stored, the
   same run id and generation, since every stage can run twice. After
   ``cleanup.watchdog_max_redrives`` re-drives it fails, saying so.
3. A run admission did not store (a record older than this code, or expired) cannot be sent
   again; past its stage's hard limit plus the grace it fails, as before.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery import Celery

from k8see import capacity_gate, coordination, intake, metrics, pipeline, stage_table, state
from k8see.app import QUEUES
from k8see.jobs.times import parse_time
from k8see.run import TERMINAL, Run, Status
from k8see.settings import PlatformSettings

log = logging.getLogger(__name__)


def _running() -> dict[str, str]:
    """Record statuses of a run inside a stage, and the stage they stand for (the first row
    of the table with that running status)."""
    found: dict[str, str] = {}
    for name in stage_table.names():
        row = stage_table.spec(name)
        if row.running is not None:
            found.setdefault(row.running.value, name)
    return found


RUNNING = _running()
_TERMINAL = frozenset(s.value for s in TERMINAL)


def run_watchdog(
    *,
    settings: PlatformSettings,
    client: redis.Redis,
    app: Celery,
    now: float | None = None,
) -> dict[str, Any]:
    """One pass; returns what it sent from the outbox, re-drove and failed."""
    now = time.time() if now is None else now
    resent = pipeline.resend_due(app=app, settings=settings, client=client)
    records = list(state.list_records(client))
    # The capacity queue's re-check: a lost wake-up is found here (capacity_gate.recheck).
    # Runs it sends are skipped below this pass (still "waiting" in the listing).
    admitted = capacity_gate.recheck(client, app=app, settings=settings, listed=records)
    pending: set[str] | None = None
    redriven: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for record in records:
        status = str(record.get("status"))
        updated = parse_time(record.get("updated_at"))
        # A waiting run has no task on purpose: the capacity queue sends it (recheck above).
        if status in _TERMINAL or status == Status.WAITING.value or updated is None:
            continue
        idle = now - updated
        if idle <= settings.cleanup.watchdog_grace_seconds:
            continue
        run_id = str(record.get("run_id") or "")
        if pending is None:  # one snapshot of the queues per pass
            pending = intake.pending_task_ids(client, queues=QUEUES)
        at_work = bool(run_id) and any(t.startswith(f"{run_id}-") for t in pending)
        stored = intake.stored(client, run_id=run_id) if run_id else None
        if stored is None:
            if not at_work and _past_hard_limit(settings, status, idle):
                failed += _fail(settings, client, app, record, idle=idle, redrives=None)
            continue
        if not intake.note_missing(client, run_id=run_id, missing=not at_work):
            continue  # at work, or missing on this look only
        latest = coordination.current_generation(client, repo=stored.run.repo, pr=stored.run.pr)
        if latest > stored.run.generation:
            _superseded(settings, client, stored.run, latest)
            continue
        if stored.redrives >= settings.cleanup.watchdog_max_redrives:
            failed += _fail(settings, client, app, record, idle=idle, redrives=stored.redrives)
            continue
        redriven.append(_redrive(settings, client, app, stored, status))
    return {"resent": resent, "redriven": redriven, "failed": failed, "capacity": admitted}


def _past_hard_limit(settings: PlatformSettings, status: str, idle: float) -> bool:
    stage = RUNNING.get(status)
    if stage is None:
        return True  # queued, and never sent (nothing to wait for)
    hard = pipeline.stage_time_limit(settings, stage) + pipeline.HARD_LIMIT_GRACE_SECONDS
    return idle > hard + settings.cleanup.watchdog_grace_seconds


def _redrive(
    settings: PlatformSettings,
    client: redis.Redis,
    app: Celery,
    stored: intake.Stored,
    status: str,
) -> dict[str, Any]:
    """Send the lost run's chain again, from its first stage, as the same run."""
    run = stored.run
    count = intake.count_redrive(client, run_id=run.run_id)
    state.set_status(
        client, repo=run.repo, pr=run.pr, generation=run.generation, status=Status.QUEUED,
        ttl_seconds=settings.redis.record_ttl_seconds, stage=None, redriven=count,
    )  # fmt: skip
    # Its stages run again, so the marks that end second deliveries of done stages go.
    coordination.forget_stages(client, run_id=run.run_id, stages=stage_table.names())
    pipeline.chain_for(app, settings, run).apply_async()
    intake.note_missing(client, run_id=run.run_id, missing=False)
    state.count(client, "redriven")
    log.warning("Watchdog sent %s#%s run %s again (lost while %s; re-drive %d).",
                run.repo, run.pr, run.run_id, status, count)  # fmt: skip
    return {"repo": run.repo, "pr": run.pr, "run_id": run.run_id, "status": status}


def _superseded(settings: PlatformSettings, client: redis.Redis, run: Run, latest: int) -> None:
    """A lost run that a newer event replaced: nothing to redo, it ends superseded."""
    state.set_status(
        client, repo=run.repo, pr=run.pr, generation=run.generation, status=Status.SUPERSEDED,
        ttl_seconds=settings.redis.record_ttl_seconds, stage=None,
        reason=f"A newer event (generation {latest}) replaced this run.",
    )  # fmt: skip


def _fail(
    settings: PlatformSettings,
    client: redis.Redis,
    app: Celery,
    record: dict[str, Any],
    *,
    idle: float,
    redrives: int | None,
) -> list[dict[str, Any]]:
    """Fail the record's run with a clear reason, and comment on the PR; [] if a newer run
    took the record over meanwhile."""
    status = str(record.get("status"))
    stage = RUNNING.get(status) or "queue"
    repo, pr = str(record["repo"]), int(record["pr"])
    generation = int(record.get("generation") or 0)
    run_id = str(record.get("run_id") or "watchdog")
    if redrives is None:
        message = (
            f"The {stage} stage stopped reporting: no progress for {int(idle)} seconds, and "
            "the run cannot be sent again (it was not stored when it was admitted)."
        )
    else:
        message = (
            f"The {stage} stage stopped reporting: the run's messages were lost, and it was "
            f"sent again {redrives} times without finishing."
        )
    error = {
        "type": "PlatformError",
        "reason": "stuck" if redrives is None else "lost",
        "message": message,
        "hint": "Push again or comment /deploy-preview to retry; if it happens again, give "
        f"the platform team run id {run_id}.",
        "stage": stage,
    }
    written = state.set_status(
        client, repo=repo, pr=pr, generation=generation, status=Status.FAILED,
        ttl_seconds=settings.redis.record_ttl_seconds, stage=stage, error=error,
    )  # fmt: skip
    if written is None:
        return []
    metrics.stage_failed(stage=stage, reason=error["reason"])
    reporter = stage_table.spec(stage_table.REPORTER).task_name
    app.send_task(reporter, args=[state.run_of({**record, "run_id": run_id}).to_dict()])
    log.warning("Watchdog failed %s#%s in %s: %s", repo, pr, stage, message)
    return [{"repo": repo, "pr": pr, "stage": stage, "run_id": run_id}]
