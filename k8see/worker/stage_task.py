"""``StageTask``: everything cross-cutting about running a stage, for every row of the table.

``StageTask.execute`` is the only place that checks the PR's generation and close mark, holds
the lease for cluster stages, moves the environment record through its statuses, binds the log
context, and classifies failures:

- ``Stopped`` (superseded, closed, nothing to do): logged, chain ends, no retry.
- ``UserError``: recorded with its hint, the PR comment says so, chain ends, no retry.
- a busy lease: the stage is sent again with backoff and jitter, without using up a retry,
  until ``queues.lease_wait_seconds`` have passed; then the run fails saying so.
- a soft time limit: a ``UserError`` naming the limit and how to raise it.
- a transient error (``is_transient``: ``RetryLater``, most platform errors, connection
  errors): retried after its own delay or with exponential backoff and jitter, exactly
  ``queues.max_retries`` times; then the run fails with that error's own message.
- anything else (a bug, a permanent platform error): the run fails at once with its message,
  the traceback in the worker log.
- Redis not answering: probes during the tool mean "unknown", and recording the start, the
  result or a failure waits for ``redis.stall_tolerance_seconds``, then hands the message back
  to the broker (``k8see.controls``).
"""

from __future__ import annotations

import importlib
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import redis
from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded

from k8see import capacity, capacity_gate, controls, coordination, metrics, state
from k8see.app import settings_of
from k8see.errors import (
    PlatformError,
    RetryLater,
    Stopped,
    UserError,
)
from k8see.logs import run_logger
from k8see.record import EnvironmentRecord
from k8see.run import Run
from k8see.settings import PlatformSettings
from k8see.stage_table import StageSpec
from k8see.stages.context import StageContext
from k8see.worker import outcomes
from k8see.worker.failures import (
    backoff_with_jitter,
    describe,
    is_transient,
    limit_hint,
    platform_error,
    retry_delay,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
StageFn = Callable[[Run, StageContext], Run]


class StageModule(Protocol):
    """What a stage's module offers (``k8see.stages``)."""

    def run(self, run: Run, ctx: StageContext) -> Run: ...


def redis_for(settings: PlatformSettings) -> redis.Redis:
    """The worker process's Redis client for k8see's own state (timeouts on every call)."""
    return controls.redis_for(settings.redis)


def stage_module(spec: StageSpec) -> StageModule:
    """The module of ``spec``'s stage, imported on first use (workers only)."""
    return cast(StageModule, importlib.import_module(spec.module))


def record_changes(spec: StageSpec, result: Run, before: EnvironmentRecord) -> dict[str, Any]:
    """What ``result`` of ``spec``'s stage puts on the environment record (its module's
    ``record_changes``; a stage without one changes nothing but its timing)."""
    changes = getattr(importlib.import_module(spec.module), "record_changes", None)
    return dict(changes(result, before)) if changes is not None else {}


class StageTask(Task):  # type: ignore[misc]
    """Base of every stage task; see the module docstring for what it does."""

    acks_late = True
    reject_on_worker_lost = True
    # Expected outcomes: Celery logs them without a traceback.
    throws = (UserError, Stopped)

    def stage_run(self, spec: StageSpec) -> StageFn:
        """The function that does ``spec``'s work: its module's ``run``."""
        return stage_module(spec).run

    def execute(self, spec: StageSpec, payload: dict[str, Any]) -> dict[str, Any]:
        """Run ``spec``'s stage for the run in ``payload``; the task's return value."""
        if spec.reports and payload.get("stopped"):
            return payload  # a run that stopped without acting: nothing to report
        stage = spec.name
        settings = settings_of(self.app)
        run = Run.from_dict(payload)
        client = redis_for(settings)
        rlog = run_logger(run, stage=stage, task_id=str(self.request.id or ""))
        ttl = settings.redis.record_ttl_seconds

        def reliably(action: Callable[[], T], what: str) -> T:
            # Recording must not fail on a stalled Redis: wait, then hand the message back.
            return controls.until_redis_answers(
                action, what=what, tolerance_seconds=settings.redis.stall_tolerance_seconds,
                rlog=rlog,
            )  # fmt: skip

        stop = reliably(lambda: controls.stop_reason(client, run, stage), "check for a newer event")
        if stop is not None:
            return outcomes.stopped(self, client, run, stage, stop, rlog, ttl)
        if spec.running is not None:
            # Not untag and comment: they run after the record went terminal, by design.
            ended = reliably(lambda: controls.ended(client, run), "check whether the run ended")
            if ended is not None:
                return outcomes.after_end(self, client, run, stage, ended, rlog)
        if spec.gated and capacity.enabled(settings.capacity):
            # Before the claim: a run that waits is sent again from here once admitted.
            waits = reliably(
                lambda: capacity_gate.gate(client, app=self.app, settings=settings, run=run),
                "decide capacity",
            )
            if waits is not None:
                rlog.info("Run stops at deploy: %s.", waits["stopped"])
                self.request.chain = None  # it holds no worker slot while it waits
                self.request.callbacks = None
                return {**run.to_dict(), **waits}

        # One delivery of the stage at a time: a dropped broker connection hands a running
        # stage's message out again (coordination.claim_stage).
        if not spec.claimed:
            return self._run_stage(spec, run, client=client, rlog=rlog, ttl=ttl,
                                   settings=settings, reliably=reliably)  # fmt: skip
        token = uuid.uuid4().hex
        claimed = reliably(
            lambda: coordination.claim_stage(
                client, run_id=run.run_id, stage=stage, token=token,
                ttl_seconds=controls.CLAIM_TTL_SECONDS,
            ),
            "claim the stage",
        )  # fmt: skip
        if claimed == "done":
            return outcomes.duplicate(self, client, run, stage, rlog)
        if claimed == "held":
            raise self._wait_for_claim(client, run, stage, rlog)
        done = False
        try:
            with controls.ClaimRenewal(client, run_id=run.run_id, stage=stage, token=token):
                result = self._run_stage(spec, run, client=client, rlog=rlog, ttl=ttl,
                                         settings=settings, reliably=reliably)  # fmt: skip
            reliably(
                lambda: coordination.stage_done(
                    client, run_id=run.run_id, stage=stage, token=token, ttl_seconds=ttl
                ),
                "mark the stage done",
            )
            done = True
            return result
        finally:
            if not done:
                controls.tolerant(
                    lambda: coordination.release_stage(
                        client, run_id=run.run_id, stage=stage, token=token
                    ),
                    rlog,
                    "the claim release",
                )()

    def _run_stage(
        self,
        spec: StageSpec,
        run: Run,
        *,
        client: redis.Redis,
        rlog: logging.LoggerAdapter[logging.Logger],
        ttl: int,
        settings: PlatformSettings,
        reliably: Callable[[Callable[[], Any], str], Any],
    ) -> dict[str, Any]:
        """The stage itself, once claimed: lease, record, the stage function, its outcome."""
        stage = spec.name
        lease = None
        if spec.holds_lease:
            lease = reliably(
                lambda: coordination.acquire_lease(
                    client, repo=run.repo, pr=run.pr, owner=f"{run.run_id}:{stage}",
                    ttl_seconds=settings.queues.lease_ttl_seconds,
                ),
                "take the lease",
            )  # fmt: skip
            if lease is None:
                metrics.lease_contended(stage)
                raise self._wait_for_lease(client, run, stage, rlog, settings)
            coordination.forget_lease_wait(
                client, repo=run.repo, pr=run.pr, owner=f"{run.run_id}:{stage}"
            )

        def started_on_record() -> dict[str, Any]:
            state.count(client, f"stage_started:{stage}")
            if spec.running is not None:
                state.set_status(
                    client, repo=run.repo, pr=run.pr, generation=run.generation,
                    status=spec.running, ttl_seconds=ttl, run_id=run.run_id, stage=stage,
                )  # fmt: skip
            return state.get(client, repo=run.repo, pr=run.pr) or {}

        record = reliably(started_on_record, "record the stage's start")
        rlog.info("Stage %s started.", stage)
        reliably(lambda: metrics.stage_started(client, run, stage), "read the queue wait")
        started = time.monotonic()
        workdir = workdir_for(settings, run)
        ctx = StageContext(
            settings=settings,
            log=rlog,
            workdir=workdir,
            should_stop=controls.stop_probe(client, run, stage, rlog),
            renew_lease=controls.tolerant(lease.renew, rlog, "the lease renewal")
            if lease
            else (lambda: None),
            record_log=controls.log_recorder(client, run, settings),
        )
        ran = False
        try:
            ctx.record = EnvironmentRecord.of(record)  # a malformed one fails like the stage
            result = self.stage_run(spec)(run, ctx)
            ran = True
        except Retry:
            raise
        except Stopped as exc:
            return outcomes.stopped(self, client, run, stage, exc, rlog, ttl)
        except SoftTimeLimitExceeded as exc:
            limit = self.request.timelimit[1] if self.request.timelimit else None
            error = UserError(
                f"The {stage} stage did not finish within its time limit"
                + (f" of {int(limit)} seconds." if limit else "."),
                hint=limit_hint(spec),
            )
            outcomes.failed(self, client, run, stage, error, rlog, ttl)
            raise error from exc
        except UserError as exc:
            outcomes.failed(self, client, run, stage, exc, rlog, ttl)
            raise
        except Exception as exc:
            # RetryLater, an integration failing, Redis gone: retried if transient.
            retries = int(self.request.retries or 0)
            max_retries = settings.queues.max_retries
            if is_transient(exc) and retries < max_retries:
                delay = retry_delay(exc, settings.queues.retry_backoff_seconds, retries)
                rlog.warning(
                    "Stage %s failed (%s); retry %d of %d in %.1fs.",
                    stage,
                    describe(exc),
                    retries + 1,
                    max_retries,
                    delay,
                    exc_info=not isinstance(exc, RetryLater),
                )
                # Counted so drills and operators see how often failures were retried.
                reliably(lambda: state.count(client, f"retried:{stage}"), "count the retry")
                # max_retries given here: the task's own default (Celery's 3) would win.
                raise self.retry(countdown=delay, exc=exc, max_retries=max_retries) from exc
            if is_transient(exc):
                rlog.error("Stage %s failed after %d retries.", stage, retries, exc_info=True)
            else:
                rlog.error("Stage %s failed; not retried.", stage, exc_info=True)
            failure = platform_error(exc, stage=stage, run=run, settings=settings)
            outcomes.failed(self, client, run, stage, failure, rlog, ttl)
            raise failure from exc
        finally:
            if lease is not None and not ran:
                # Unreleased, it expires after its TTL; a stalled Redis must not hide the
                # stage's outcome behind a release error.
                controls.tolerant(lease.release, rlog, "the lease release")()
            shutil.rmtree(workdir, ignore_errors=True)

        seconds = round(time.monotonic() - started, 3)
        if lease is not None:
            # The stage's work is done: the lease is freed before the record says so, waiting
            # for a stalled Redis like the result (found by the mid-deploy stall drill: a
            # release lost in the stall held the next deploy off for the lease's TTL).
            reliably(lease.release, "release the lease")
        reliably(
            lambda: self._finished(client, run, spec, result, ctx, seconds), "record the result"
        )
        rlog.info("Stage %s finished in %.1fs.", stage, seconds)
        if spec.counts_capacity and capacity.enabled(settings.capacity):
            after = capacity_gate.after
            reliably(lambda: after(client, app=self.app, settings=settings, stage=stage,
                                   run=result), "update capacity")  # fmt: skip
        return result.to_dict()

    def _wait_for_claim(
        self, client: redis.Redis, run: Run, stage: str,
        rlog: logging.LoggerAdapter[logging.Logger],
    ) -> Retry:  # fmt: skip
        """Another delivery runs this stage: look again later, without using up a retry."""
        rlog.info("Stage %s of this run is running in another delivery; looking again in "
                  "%.0fs.", stage, controls.CLAIM_WAIT_SECONDS)  # fmt: skip
        state.count(client, f"duplicate_waited:{stage}")
        again = self.signature_from_request(countdown=controls.CLAIM_WAIT_SECONDS)
        again.apply_async()
        return Retry(when=controls.CLAIM_WAIT_SECONDS, sig=again)

    def _finished(
        self, client: redis.Redis, run: Run, spec: StageSpec, result: Run, ctx: StageContext,
        seconds: float,
    ) -> None:  # fmt: skip
        """Put a finished stage's result on the record (and counters, metrics)."""
        stage = spec.name
        ttl = ctx.settings.redis.record_ttl_seconds
        helm_api = result.result(stage).get("helm_api") or {}
        if helm_api.get("retries"):
            # helm's requests that the API proxy retried (stage retries are counted above).
            state.count(client, f"retried_helm_requests:{stage}", int(helm_api["retries"]))
            metrics.helm_api_retried(stage, dict(helm_api.get("retried") or {}))
        changes = record_changes(spec, result, ctx.record)
        if spec.timed:
            changes["timings"] = {stage: seconds}
        state.update(
            client,
            repo=run.repo,
            pr=run.pr,
            generation=run.generation,
            changes=changes,
            ttl_seconds=ttl,
        )
        metrics.stage_finished(client, run, stage, seconds=seconds, status=changes.get("commented"))
        # Beside stage_started: a stage that finished more often than its runs did ran twice.
        state.count(client, f"stage_finished:{stage}")

    def _wait_for_lease(
        self,
        client: redis.Redis,
        run: Run,
        stage: str,
        rlog: logging.LoggerAdapter[logging.Logger],
        settings: PlatformSettings,
    ) -> Retry:
        """Send the stage again later, keeping its retry count, or fail once waited too long.

        A busy lease is another run at work, not a failure, so the wait is bounded in time
        (``queues.lease_wait_seconds``) and never uses up the retries kept for failures.
        """
        queues = settings.queues
        wait = coordination.note_lease_wait(
            client,
            repo=run.repo,
            pr=run.pr,
            owner=f"{run.run_id}:{stage}",
            ttl_seconds=int(queues.lease_wait_seconds + queues.lease_ttl_seconds + 300),
        )
        left = queues.lease_wait_seconds - wait.waited_seconds
        if left <= 0:
            holder = coordination.lease_holder(client, repo=run.repo, pr=run.pr) or "nobody now"
            error = PlatformError(
                f"The {stage} stage waited {wait.waited_seconds:.0f} seconds for this pull "
                f"request's lease, held by another run ({holder.split(':', 1)[-1]}), and gave up.",
                hint="Another deploy or destroy of this pull request did not finish; push again "
                "or comment /deploy-preview to retry. Operators: see that run's worker log, or "
                "raise K8SEE_QUEUES__LEASE_WAIT_SECONDS.",
            )
            outcomes.failed(
                self, client, run, stage, error, rlog, settings.redis.record_ttl_seconds
            )
            raise error
        delay = min(left, backoff_with_jitter(queues.lease_retry_seconds, wait.waits - 1, 60.0))
        rlog.info(
            "The PR's lease is held by another run; %s waits %.1fs (wait %d, %.0fs so far).",
            stage,
            delay,
            wait.waits,
            wait.waited_seconds,
        )
        state.count(client, f"lease_waited:{stage}")
        # self.retry would count this as a retry: send the same message (retries unchanged).
        again = self.signature_from_request(countdown=delay)
        again.apply_async()
        return Retry(when=delay, sig=again)


def workdir_for(settings: PlatformSettings, run: Run) -> Path:
    """A private directory for ``run``'s files on this worker."""
    root = Path(settings.build.workdir or Path(tempfile.gettempdir()) / "k8see-work")
    path = root / "runs" / run.run_id
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
