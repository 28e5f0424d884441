"""Capacity admission at work: the deploy stage's gate, the destroy's release, the beat's re-check.

``k8see.capacity`` decides in Redis; this module acts on the decisions for the task layer:

- ``gate`` (before a deploy stage is claimed): a run that is not its PR's current, recorded
  run is not let into the queue at all (a forged or stale message names a PR, a run id or a
  generation the record does not); an admitted run deploys; a waiting one gets the record
  status ``waiting`` with its position, a PR comment saying so, and its chain ends there, so it
  holds no worker slot while it waits.
- ``release`` (after a destroy that removed the namespace): frees the environment's place and
  sends the deploys of the heads admitted by it.
- ``recheck`` (the watchdog beat job): reconciles the admitted set with the records (an
  environment destroyed is released; one running that was never recorded, e.g. deployed
  before ceilings were set, is counted), admits whatever fits, and refreshes the positions
  on the waiting records, so a lost wake-up never leaves a run waiting for ever.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery

from k8see import capacity, coordination, pipeline, stage_table, state
from k8see.errors import PolicyError
from k8see.manifests.release import database_options
from k8see.results import DestroyResult, ValidateResult
from k8see.run import Run, Status
from k8see.settings import PlatformSettings

log = logging.getLogger(__name__)

#: Record statuses that mean the environment's namespace exists (counted by ``recheck``).
RUNNING = frozenset({Status.READY.value, Status.DEPLOYING.value})
#: Record statuses that mean it is gone (released by ``recheck``).
GONE = frozenset({Status.DESTROYED.value})


def gate(
    client: redis.Redis, *, app: Celery, settings: PlatformSettings, run: Run
) -> dict[str, Any] | None:
    """Admit ``run``'s environment or queue it; None when its deploy may go on.

    Returns:
        ``{"stopped": "waiting", "position": N}`` when it waits, ``{"stopped": "unverified"}``
        when the message is not the PR's current run (it neither waits nor deploys).
    """
    record = state.get(client, repo=run.repo, pr=run.pr) or {}
    latest = coordination.current_generation(client, repo=run.repo, pr=run.pr)
    try:
        validated = ValidateResult.of(run)
    except PolicyError as exc:  # a forged message: the deploy stage refuses it as well
        log.warning("Deploy of %s#%s: %s", run.repo, run.pr, exc.message)
        validated = None
    if (
        validated is None
        or record.get("run_id") != run.run_id
        or latest != run.generation
        or latest <= 0
    ):
        log.warning(
            "Deploy of %s#%s run %s is not the PR's recorded run; it does not take capacity.",
            run.repo, run.pr, run.run_id,
        )  # fmt: skip
        state.count(client, "capacity_unverified")
        return {"stopped": "unverified"}
    env = capacity.env_key(run.repo, run.pr)
    decision = capacity.admit(
        client,
        settings=settings.capacity,
        env=env,
        project=validated.project_id or run.repo.lower(),
        demand=demand(run),
        run=run.to_json(),
        generation=run.generation,
        # Running already (before ceilings were recorded): a redeploy is never turned away.
        exists=record.get("previous_status") == Status.READY.value,
    )
    send(client, app=app, settings=settings, runs=decision.promoted)
    if decision.admitted:
        return None
    written = state.set_status(
        client, repo=run.repo, pr=run.pr, generation=run.generation, status=Status.WAITING,
        ttl_seconds=settings.redis.record_ttl_seconds, run_id=run.run_id, stage="deploy",
        capacity_position=decision.position,
    )  # fmt: skip
    log.info("%s#%s waits for capacity at position %d.", run.repo, run.pr, decision.position)
    state.count(client, "capacity_waited")
    if written is not None:
        app.send_task(stage_table.spec(stage_table.REPORTER).task_name, args=[run.to_dict()])
    return {"stopped": "waiting", "position": decision.position}


def after(
    client: redis.Redis, *, app: Celery, settings: PlatformSettings, stage: str, run: Run
) -> None:
    """After a finished deploy (``deployed``) or destroy: a destroy that removed the
    namespace (not preserved) frees its place for the head of the queue (``release``)."""
    if stage == "deploy":
        deployed(client, settings=settings, run=run)
    elif stage == "destroy" and not DestroyResult.of(run).preserved:
        release(client, app=app, settings=settings, repo=run.repo, pr=run.pr)


def demand(run: Run) -> dict[str, int]:
    """What ``run``'s environment counts for: its validated config's quota hard limits."""
    validated = ValidateResult.of(run)
    return capacity.demand_of(
        databases=database_options(validated.to_json()),
        resources=validated.config.get("resources"),
    )


def deployed(client: redis.Redis, *, settings: PlatformSettings, run: Run) -> None:
    """After a deploy: count the environment for the config the deploy verified against
    GitHub (admission counted the validate stage's, as the message carried it)."""
    capacity.recount(client, env=capacity.env_key(run.repo, run.pr), demand=demand(run))


def release(
    client: redis.Redis, *, app: Celery, settings: PlatformSettings, repo: str, pr: int
) -> list[str]:
    """Free ``repo#pr``'s place (admitted or waiting) and send the deploys it lets in."""
    runs = capacity.release(client, settings=settings.capacity, env=capacity.env_key(repo, pr))
    return send(client, app=app, settings=settings, runs=runs)


def send(
    client: redis.Redis, *, app: Celery, settings: PlatformSettings, runs: list[str]
) -> list[str]:
    """Send each admitted run's chain from deploy; returns their run ids.

    The record goes back to ``queued`` first, so if this send is lost the watchdog sees a
    queued run that nothing works on and sends it again (as it does for any lost run).
    """
    sent = []
    for raw in runs:
        run = Run.from_json(raw)
        written = state.set_status(
            client, repo=run.repo, pr=run.pr, generation=run.generation, status=Status.QUEUED,
            ttl_seconds=settings.redis.record_ttl_seconds, run_id=run.run_id, stage=None,
            capacity_position=None,
        )  # fmt: skip
        if written is None:
            continue  # a newer generation owns the PR; it takes the place when it deploys
        pipeline.resume_from_deploy(app, settings, run).apply_async()
        log.info("%s#%s admitted from the capacity queue; its deploy is sent.", run.repo, run.pr)
        sent.append(run.run_id)
    return sent


def recheck(
    client: redis.Redis,
    *,
    app: Celery,
    settings: PlatformSettings,
    listed: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Reconcile the admitted set with the records, admit what fits, refresh positions.

    ``listed``: the records as the caller already listed them (the watchdog's pass), so
    they are read once per pass.
    """
    if not capacity.enabled(settings.capacity):
        return {"enabled": False}
    records = {
        capacity.env_key(str(r.get("repo")), int(r.get("pr") or 0)): r
        for r in (state.list_records(client) if listed is None else listed)
    }
    admitted = capacity.admitted(client)
    # Counted first, so a place freed below goes to the queue only if it is really free.
    counted = []
    for env, record in records.items():
        if env not in admitted and str(record.get("status")) in RUNNING:
            capacity.admit(
                client, settings=settings.capacity, env=env,
                project=str(record.get("project_id") or record.get("repo") or ""),
                demand={}, run="", generation=int(record.get("generation") or 0), exists=True,
            )  # fmt: skip
            counted.append(env)
    released: list[str] = []
    runs: list[str] = []
    for env in admitted:
        held = records.get(env)
        if held is None or str(held.get("status")) in GONE:
            runs += capacity.release(client, settings=settings.capacity, env=env)
            released.append(env)
    runs += capacity.release(client, settings=settings.capacity, env="")
    sent = send(client, app=app, settings=settings, runs=runs)
    positions = capacity.positions(client, settings=settings.capacity)
    for env, position in positions.items():
        waiting = records.get(env)
        if (
            waiting
            and waiting.get("status") == Status.WAITING.value
            and waiting.get("capacity_position") != position
        ):
            moved = state.update(
                client, repo=str(waiting["repo"]), pr=int(waiting["pr"]),
                generation=int(waiting.get("generation") or 0),
                changes={"capacity_position": position},
                ttl_seconds=settings.redis.record_ttl_seconds,
            )  # fmt: skip
            if moved is not None:
                # The PR comment shows the position: it follows the record.
                reporter = stage_table.spec(stage_table.REPORTER).task_name
                app.send_task(reporter, args=[state.run_of(waiting).to_dict()])
    for env, record in records.items():
        if record.get("status") == Status.WAITING.value and env not in positions:
            # Waiting, but no longer in the queue (its entry was lost): queued again, the
            # watchdog sends its run once more, and its deploy asks for capacity anew.
            state.set_status(
                client, repo=str(record["repo"]), pr=int(record["pr"]),
                generation=int(record.get("generation") or 0), status=Status.QUEUED,
                ttl_seconds=settings.redis.record_ttl_seconds, capacity_position=None,
            )  # fmt: skip
    return {"released": released, "counted": counted, "sent": sent, "waiting": positions}
