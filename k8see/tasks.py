"""Celery tasks: one thin task per stage; everything cross-cutting lives in ``StageTask``.

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
- Redis not answering: probes during the tool mean "unknown", and recording the start or the
  result waits for ``redis.stall_tolerance_seconds``, then hands the message back to the
  broker (``k8see.controls``).
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis
from celery import Task, shared_task, signals
from celery.exceptions import Retry, SoftTimeLimitExceeded
from kombu.exceptions import OperationalError

from k8see import (
    capacity,
    capacity_gate,
    controls,
    coordination,
    intake,
    metrics,
    pipeline,
    state,
    submission,
)
from k8see.app import settings_of
from k8see.errors import (
    Closed,
    GitHubError,
    K8seeError,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    PlatformError,
    Refused,
    RetryLater,
    Stopped,
    Superseded,
    ToolMissing,
    UserError,
)
from k8see.hardening import deny_same_user_inspection
from k8see.logs import redactor, run_logger
from k8see.run import Action, Run, Status
from k8see.settings import PlatformSettings
from k8see.stages import build, command, comment, deploy, destroy, scan, untag, validate
from k8see.stages.context import StageContext

log = logging.getLogger(__name__)


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


StageFn = Callable[[Run, StageContext], Run]
T = TypeVar("T")


def redis_for(settings: PlatformSettings) -> redis.Redis:
    """The worker process's Redis client for k8see's own state (timeouts on every call)."""
    return controls.redis_for(settings.redis)


#: The record's status while each stage runs.
RUNNING_STATUS = {
    "validate": Status.VALIDATING,
    "build": Status.BUILDING,
    "scan": Status.SCANNING,
    "deploy": Status.DEPLOYING,
    "destroy": Status.DESTROYING,
}
#: Stages that change the cluster hold the PR's lease.
CLUSTER_STAGES = frozenset({"deploy", "destroy"})
#: Stages one delivery at a time runs (``coordination.claim_stage``). Not the comment: it is
#: sent again for one run on purpose (a failure, the watchdog), and upserting it twice is
#: harmless.
CLAIMED_STAGES = frozenset({"validate", "build", "scan", "deploy", "destroy", "untag"})
BACKOFF_CAP_SECONDS = 120.0


class StageTask(Task):  # type: ignore[misc]
    """Base of every stage task; see the module docstring for what it does."""

    acks_late = True
    reject_on_worker_lost = True
    # Expected outcomes: Celery logs them without a traceback.
    throws = (UserError, Stopped)

    def execute(self, stage: str, payload: dict[str, Any], fn: StageFn) -> dict[str, Any]:
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
            return self._stopped(client, run, stage, stop, rlog, ttl)
        if stage in RUNNING_STATUS:
            # Not untag and comment: they run after the record went terminal, by design.
            ended = reliably(lambda: controls.ended(client, run), "check whether the run ended")
            if ended is not None:
                return self._after_end(client, run, stage, ended, rlog)
        if stage == "deploy" and capacity.enabled(settings.capacity):
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
        if stage not in CLAIMED_STAGES:
            return self._run_stage(stage, run, fn, client=client, rlog=rlog, ttl=ttl,
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
            return self._duplicate(client, run, stage, rlog)
        if claimed == "held":
            raise self._wait_for_claim(client, run, stage, rlog)
        done = False
        try:
            with controls.ClaimRenewal(client, run_id=run.run_id, stage=stage, token=token):
                result = self._run_stage(stage, run, fn, client=client, rlog=rlog, ttl=ttl,
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
        stage: str,
        run: Run,
        fn: StageFn,
        *,
        client: redis.Redis,
        rlog: logging.LoggerAdapter[logging.Logger],
        ttl: int,
        settings: PlatformSettings,
        reliably: Callable[[Callable[[], Any], str], Any],
    ) -> dict[str, Any]:
        """The stage itself, once claimed: lease, record, the stage function, its outcome."""
        lease = None
        if stage in CLUSTER_STAGES:
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
            if stage in RUNNING_STATUS:
                state.set_status(
                    client, repo=run.repo, pr=run.pr, generation=run.generation,
                    status=RUNNING_STATUS[stage], ttl_seconds=ttl, run_id=run.run_id, stage=stage,
                )  # fmt: skip
            return state.get(client, repo=run.repo, pr=run.pr) or {}

        record = reliably(started_on_record, "record the stage's start")
        rlog.info("Stage %s started.", stage)
        reliably(lambda: metrics.stage_started(client, run, stage), "read the queue wait")
        started = time.monotonic()
        workdir = _workdir(settings, run)
        ctx = StageContext(
            settings=settings,
            log=rlog,
            workdir=workdir,
            should_stop=controls.stop_probe(client, run, stage, rlog),
            renew_lease=controls.tolerant(lease.renew, rlog, "the lease renewal")
            if lease
            else (lambda: None),
            record_log=controls.log_recorder(client, run, settings),
            extra={"record": record},
        )
        try:
            result = fn(run, ctx)
        except Retry:
            raise
        except Stopped as exc:
            return self._stopped(client, run, stage, exc, rlog, ttl)
        except SoftTimeLimitExceeded as exc:
            limit = self.request.timelimit[1] if self.request.timelimit else None
            error = UserError(
                f"The {stage} stage did not finish within its time limit"
                + (f" of {int(limit)} seconds." if limit else "."),
                hint=_limit_hint(stage),
            )
            self._failed(client, run, stage, error, rlog, ttl)
            raise error from exc
        except UserError as exc:
            self._failed(client, run, stage, exc, rlog, ttl)
            raise
        except Exception as exc:
            # RetryLater, an integration failing, Redis gone: retried if transient.
            retries = int(self.request.retries or 0)
            max_retries = settings.queues.max_retries
            if is_transient(exc) and retries < max_retries:
                delay = _retry_delay(exc, settings.queues.retry_backoff_seconds, retries)
                rlog.warning(
                    "Stage %s failed (%s); retry %d of %d in %.1fs.",
                    stage,
                    _describe(exc),
                    retries + 1,
                    max_retries,
                    delay,
                    exc_info=not isinstance(exc, RetryLater),
                )
                # Counted so drills and operators see how often failures were retried.
                state.count(client, f"retried:{stage}")
                # max_retries given here: the task's own default (Celery's 3) would win.
                raise self.retry(countdown=delay, exc=exc, max_retries=max_retries) from exc
            if is_transient(exc):
                rlog.error("Stage %s failed after %d retries.", stage, retries, exc_info=True)
            else:
                rlog.error("Stage %s failed; not retried.", stage, exc_info=True)
            platform_error = _platform_error(exc, stage=stage, run=run, settings=settings)
            self._failed(client, run, stage, platform_error, rlog, ttl)
            raise platform_error from exc
        finally:
            if lease is not None:
                # Unreleased, it expires after its TTL; a stalled Redis must not hide the
                # stage's outcome behind a release error.
                controls.tolerant(lease.release, rlog, "the lease release")()
            shutil.rmtree(workdir, ignore_errors=True)

        seconds = round(time.monotonic() - started, 3)
        reliably(
            lambda: self._finished(client, run, stage, result, ctx, seconds), "record the result"
        )
        rlog.info("Stage %s finished in %.1fs.", stage, seconds)
        if stage in ("deploy", "destroy") and capacity.enabled(settings.capacity):
            after = capacity_gate.after
            reliably(lambda: after(client, app=self.app, settings=settings, stage=stage,
                                   run=result), "update capacity")  # fmt: skip
        return result.to_dict()

    def _duplicate(
        self, client: redis.Redis, run: Run, stage: str,
        rlog: logging.LoggerAdapter[logging.Logger],
    ) -> dict[str, Any]:  # fmt: skip
        """A second delivery of a stage that finished: it ends here, and so does its chain
        (the first delivery sent the next stage)."""
        rlog.info("Stage %s of this run finished already; this second delivery ends.", stage)
        state.count(client, f"duplicate_delivery:{stage}")
        self.request.chain = None
        self.request.callbacks = None
        return {**run.to_dict(), "stopped": "duplicate", "stop_message": "delivered twice"}

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
        self, client: redis.Redis, run: Run, stage: str, result: Run, ctx: StageContext,
        seconds: float,
    ) -> None:  # fmt: skip
        """Put a finished stage's result on the record (and counters, metrics)."""
        ttl = ctx.settings.redis.record_ttl_seconds
        helm_api = result.result(stage).get("helm_api") or {}
        if helm_api.get("retries"):
            # helm's requests that the API proxy retried (stage retries are counted above).
            state.count(client, f"retried_helm_requests:{stage}", int(helm_api["retries"]))
            metrics.helm_api_retried(stage, dict(helm_api.get("retried") or {}))
        changes = _record_changes(stage, result)
        if stage == "comment":
            snapshot = ctx.extra.get("record")
            status = snapshot.get("status") if isinstance(snapshot, dict) else None
            changes = {**changes, "commented": status}
        else:
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
            self._failed(client, run, stage, error, rlog, settings.redis.record_ttl_seconds)
            raise error
        delay = min(left, _backoff_with_jitter(queues.lease_retry_seconds, wait.waits - 1, 60.0))
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

    def _after_end(
        self,
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
        self.request.chain = None
        self.request.callbacks = None
        return {**run.to_dict(), "stopped": "ended", "stop_message": f"the run ended ({status})"}

    def _stopped(
        self,
        client: redis.Redis,
        run: Run,
        stage: str,
        exc: Stopped,
        rlog: logging.LoggerAdapter[logging.Logger],
        ttl: int,
    ) -> dict[str, Any]:
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
        self.request.chain = None  # end the chain here; later stages must not run
        self.request.callbacks = None
        return {**run.to_dict(), "stopped": exc.reason, "stop_message": exc.message}

    def _failed(
        self,
        client: redis.Redis,
        run: Run,
        stage: str,
        exc: K8seeError,
        rlog: logging.LoggerAdapter[logging.Logger],
        ttl: int,
    ) -> None:
        rlog.info("Stage %s failed: %s", stage, exc.message)
        metrics.stage_failed(stage=stage, reason=exc.reason)
        error = {
            **exc.to_dict(),
            "stage": stage,
            "log_tail": state.log_tail(client, run_id=run.run_id),
        }
        record = state.set_status(
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
        if record is not None and stage != "comment":
            self.app.send_task("k8see.comment", args=[run.to_dict()])


def _workdir(settings: PlatformSettings, run: Run) -> Path:
    root = Path(settings.build.workdir or Path(tempfile.gettempdir()) / "k8see-work")
    path = root / "runs" / run.run_id
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _backoff(base: float, retries: int) -> float:
    """Exponential backoff with full jitter, capped."""
    return random.uniform(0, min(BACKOFF_CAP_SECONDS, base * 2**retries))


def _backoff_with_jitter(base: float, attempt: int, cap: float) -> float:
    """Exponential backoff with equal jitter: never less than half the step, so a wait for a
    lease does not spin, and never more than ``cap``."""
    step = min(cap, base * 2.0 ** min(attempt, 30))
    return step / 2 + random.uniform(0, step / 2)


def _retry_delay(exc: BaseException, base: float, retries: int) -> float:
    """The delay the failure asks for (``RetryLater``, ``Retry-After``), else the backoff."""
    asked = getattr(exc, "delay_seconds", None) or getattr(exc, "retry_after_seconds", None)
    return float(asked) if asked else float(_backoff(base, retries))


#: Errors of systems that may answer on the next try without anyone acting.
_TRANSIENT_LIBRARY_ERRORS = (
    ConnectionError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OperationalError,
)
#: Statuses of an HTTP API worth asking again: timeout, conflict, throttled, server errors.
_TRANSIENT_STATUSES = frozenset({408, 409, 429})


def is_transient(exc: BaseException) -> bool:
    """Whether running the same stage again may succeed without anyone acting.

    Transient: ``RetryLater``; a platform error, unless it says what will not change on its
    own (a missing tool, a 403 or 404 from Kubernetes, a 4xx from GitHub); a connection or
    timeout error. Not transient: user errors and stops (expected outcomes), and anything
    else, which is a bug: the same code on the same input fails the same way again.
    """
    if isinstance(exc, UserError | Stopped):
        return False
    if isinstance(exc, RetryLater):
        return True
    if isinstance(exc, ToolMissing | KubeForbidden | KubeNotFound):
        return False
    if isinstance(exc, KubeError | GitHubError):
        status = exc.status
        return status is None or status >= 500 or status in _TRANSIENT_STATUSES
    if isinstance(exc, PlatformError):
        return True
    return isinstance(exc, _TRANSIENT_LIBRARY_ERRORS)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _platform_error(
    exc: BaseException, *, stage: str, run: Run, settings: PlatformSettings
) -> PlatformError:
    """The error the environment record keeps: the real one, not a generic sentence."""
    retry = (
        f"Push again or comment /deploy-preview to retry; if it persists, give the platform "
        f"team run id {run.run_id}."
    )
    if isinstance(exc, K8seeError):
        message, hint = exc.message, f"{exc.hint} {retry}" if exc.hint else retry
    else:
        # Library text can carry a token or URL with credentials: redact, and keep it short.
        detail = redactor(settings)(_describe(exc))
        message, hint = f"The {stage} stage failed: {detail}", retry
    error = PlatformError(message, hint=hint)
    error.reason = exc.reason if isinstance(exc, PlatformError) else error.reason
    return error


def _limit_hint(stage: str) -> str:
    setting = {
        "build": "K8SEE_BUILD__TIMEOUT_SECONDS",
        "scan": "K8SEE_SCAN__TIMEOUT_SECONDS",
        "deploy": "K8SEE_DEPLOY__HELM_TIMEOUT_SECONDS",
    }.get(stage)
    if setting:
        return f"Make the {stage} faster, or ask the platform team to raise {setting}."
    return "Retry; if it happens again, ask the platform team to look at the worker logs."


def _record_changes(stage: str, run: Run) -> dict[str, Any]:
    """What a finished stage adds to the environment record."""
    result = run.result(stage)
    if stage == "validate":
        return {
            "project_id": result.get("project_id"),
            "namespace": result.get("namespace"),
            "preview_url": result.get("preview_url"),
            "databases": result.get("databases", []),
            "sha": result.get("sha") or run.sha,
            "ref": result.get("ref") or run.ref,
            "trigger_mode": result.get("trigger_mode"),
            "error": None,
        }
    if stage == "build":
        return {k: result.get(k) for k in ("image", "digest", "platforms", "pushed_tags")}
    if stage == "scan":
        return {"scan": result}
    if stage == "deploy":
        return {
            "status": Status.READY.value,
            "preview_url": result.get("preview_url"),
            "ingress": result.get("ingress", True),
            "helm_api": result.get("helm_api"),
            "error": None,
        }
    if stage == "destroy":
        status = Status.PRESERVED if result.get("preserved") else Status.DESTROYED
        return {
            "status": status.value,
            "merged": run.merged,
            "unblocked": result.get("unblocked") or [],
            "error": None,
        }
    if stage == "untag":
        return {"untagged": {k: result.get(k) or [] for k in ("deleted", "failed")}}
    if stage == "comment":
        return {"comment_id": result.get("comment_id")}
    return {}


def _run_stage(task: StageTask, stage: str, payload: dict[str, Any], fn: StageFn) -> dict[str, Any]:
    return task.execute(stage, payload, fn)


@shared_task(base=StageTask, bind=True, name="k8see.validate")  # type: ignore[untyped-decorator]
def validate_task(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
    return _run_stage(self, "validate", payload, validate.run)


@shared_task(base=StageTask, bind=True, name="k8see.build")  # type: ignore[untyped-decorator]
def build_task(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
    return _run_stage(self, "build", payload, build.run)


@shared_task(base=StageTask, bind=True, name="k8see.scan")  # type: ignore[untyped-decorator]
def scan_task(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
    return _run_stage(self, "scan", payload, scan.run)


@shared_task(base=StageTask, bind=True, name="k8see.deploy")  # type: ignore[untyped-decorator]
def deploy_task(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
    return _run_stage(self, "deploy", payload, deploy.run)


@shared_task(base=StageTask, bind=True, name="k8see.destroy")  # type: ignore[untyped-decorator]
def destroy_task(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
    return _run_stage(self, "destroy", payload, destroy.run)


@shared_task(base=StageTask, bind=True, name="k8see.untag")  # type: ignore[untyped-decorator]
def untag_task(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
    return _run_stage(self, "untag", payload, untag.run)


@shared_task(base=StageTask, bind=True, name="k8see.comment")  # type: ignore[untyped-decorator]
def comment_task(self: StageTask, payload: dict[str, Any]) -> dict[str, Any]:
    if payload.get("stopped"):
        return payload
    return _run_stage(self, "comment", payload, comment.run)


@shared_task(bind=True, name="k8see.command", acks_late=True)  # type: ignore[untyped-decorator]
def command_task(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """/help, /preserve, /unpreserve: authorized and answered without touching the PR's
    generation or record (not a ``StageTask``: a newer push must not stop a /help)."""
    settings = settings_of(self.app)
    run = Run.from_dict(payload)
    client = redis_for(settings)
    rlog = run_logger(run, stage="command", task_id=str(self.request.id or ""))
    workdir = _workdir(settings, run)
    ctx = StageContext(
        settings=settings,
        log=rlog,
        workdir=workdir,
        extra={"record": state.get(client, repo=run.repo, pr=run.pr) or {}},
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
    except PlatformError as exc:
        retries = int(self.request.retries or 0)
        if retries >= settings.queues.max_retries:
            rlog.error("Command failed after %d retries: %s", retries, exc.message)
            raise
        delay = getattr(exc, "retry_after_seconds", None) or _backoff(
            settings.queues.retry_backoff_seconds, retries
        )
        rlog.warning("Command failed (%s); retry in %.1fs.", exc.message, delay)
        raise self.retry(countdown=delay, exc=exc, max_retries=settings.queues.max_retries) from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    state.count(client, "commands")
    forward = str(result.result("command").get("forward") or "")
    if forward == "admit":
        admitted = pipeline.admit(result, app=self.app, settings=settings, client=client)
        rlog.info("Command admitted as generation %d.", admitted.generation)
        return admitted.to_dict()
    if forward:
        self.app.send_task(forward, args=[result.to_dict()])
    rlog.info("Command %s handled.", result.result("command").get("command"))
    return result.to_dict()


def _followers(client: redis.Redis, run: Run) -> tuple[str, ...]:
    """The progress tokens of the submissions following ``run`` (``k8see.submission``)."""
    found = intake.stored(client, run_id=run.run_id)
    return found.progress if found else ()


__all__ = ["Action", "StageTask"]
