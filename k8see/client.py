"""The enqueue client: what a GitHub workflow step runs.

It turns a decision about an event into ONE message set in Redis: it bumps the PR's
generation (so older runs stop), sets or clears the close mark, writes the ``queued`` record
and sends the chain by task name. A retry after Redis failed half-way finishes the same run
instead of reporting a duplicate (``k8see.intake`` has the design). It imports no worker
dependency (kubernetes, boto3, docker, pyhelm3) and no stage code; the import-linter contract
in pyproject.toml keeps it that way.

With the enqueue credential (a Redis URL naming the ``enqueue`` ACL user, ``k8see.redis_acl``)
the client cannot do any of that: it submits the request to the intake list and a worker
admits it (``k8see.submission``); it follows the run through the progress token it gets back.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery

from k8see import intake, redis_acl, state, submission
from k8see.app import create_app
from k8see.events import Decision
from k8see.names import DEFAULT_CONFIG_PATH, check_config_path, check_platforms
from k8see.redis_connect import NotReplicated, connect
from k8see.run import TERMINAL, Action, Run, Status
from k8see.settings import PlatformSettings

#: How long a delivered event is remembered, so a redelivery enqueues nothing.
DEDUPE_SECONDS = submission.DEDUPE_SECONDS
POLL_SECONDS = 0.25
#: Comment commands that start a pipeline: authorized by a worker before they are admitted.
AUTHORIZED_FIRST = frozenset({"deploy-preview", "destroy-preview"})
#: Celery apps by process and settings (see ``_app_for``); a few at most.
_APPS: dict[tuple[int, str], Celery] = {}
_APPS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Enqueued:
    """What ``enqueue`` did: the run it sent, or the earlier run a duplicate maps to."""

    run: Run
    duplicate_of: str | None = None
    #: A command waiting for a worker to authorize it; admitted (or refused) later.
    authorizing: bool = False
    #: A submission's progress token (the enqueue credential; ``k8see.submission``): the
    #: only key it may read about its run. Empty when the run was admitted in-process.
    progress: str = ""
    #: Replicas that confirmed a submission (``WAIT`` after its ``RPUSH``); 0 when none asked.
    confirmed: int = 0

    @property
    def run_id(self) -> str:
        return self.duplicate_of or self.run.run_id


def enqueue(
    decision: Decision,
    *,
    settings: PlatformSettings,
    trigger: str,
    config_path: str = "",
    platforms: str = "",
    client: redis.Redis | None = None,
) -> Enqueued:
    """Send the chain for ``decision`` (which must not be a skip).

    Args:
        decision: The action decided from the event.
        settings: Platform settings (Redis URL, limits).
        trigger: What started it, e.g. ``pull_request:synchronize`` or
            ``issue_comment:/deploy-preview``; the workers re-decide from it once they have
            read the repository's trigger mode.
        config_path: ``k8s-ee.yaml``'s path in the repository; empty means the root's.
        platforms: The platforms to build (a subset of the platform's); empty means all.
        client: A Redis client to reuse (tests); one is made from the settings otherwise.

    Raises:
        NotReplicated: fewer than ``redis.min_replica_acks`` replicas confirmed the event in
            time; the master has it, and a retry of the same event is queued exactly once.
    """
    if decision.action is Action.SKIP:
        raise ValueError("a skip decision is not enqueued")
    redis_client = client or connect(settings.redis)
    done = _enqueue(
        decision,
        settings=settings,
        trigger=trigger,
        config_path=config_path,
        platforms=platforms,
        client=redis_client,
    )
    wanted = settings.redis.min_replica_acks
    timeout = settings.redis.replica_ack_timeout_seconds
    if done.progress:
        # A submission (the enqueue credential): its WAIT went with the RPUSH.
        confirmed = done.confirmed
    else:
        confirmed = intake.confirm(
            redis_client, run_id=done.run_id, replicas=wanted, timeout_seconds=timeout
        )
    if confirmed < wanted:
        # Accepted by the master only: a failover now could lose it. The caller retries
        # (exit 3), and a retry of the same event is queued exactly once (k8see.intake).
        raise NotReplicated(wanted=wanted, confirmed=confirmed, timeout_seconds=timeout)
    return done


def _enqueue(
    decision: Decision,
    *,
    settings: PlatformSettings,
    trigger: str,
    config_path: str,
    platforms: str,
    client: redis.Redis,
) -> Enqueued:
    redis_client = client
    repo, pr = decision.repo, decision.pr
    draft = Run(
        repo=repo,
        pr=pr,
        sha=decision.sha,
        generation=0,
        action=decision.action,
        ref=decision.ref,
        trigger=trigger,
        config_path=_repository_config_path(config_path),
        platforms=check_platforms(platforms),
        comment_id=decision.comment_id or 0,
        commenter=decision.commenter,
        merged=bool(decision.merged),
        enqueued_at=time.time(),
    )
    fingerprint = f"{trigger}:{decision.action.value}:{decision.sha}:{decision.comment_id or 0}"
    # Every comment command goes to one k8see.command task first, which authorizes it.
    # /help and /preserve never touch the PR's generation, close mark or record;
    # /deploy-preview and /destroy-preview are admitted (generation bumped, close mark set,
    # chain sent) only after the commenter was found to have write access, so a stranger's
    # command can never supersede or disturb queued work.
    command = decision.action is Action.COMMAND or decision.command in AUTHORIZED_FIRST
    authorizing = decision.command in AUTHORIZED_FIRST
    if submits_only(settings):
        # The enqueue credential: a worker admits the request and sends its chain.
        submitted = submission.submit(
            redis_client,
            run=draft,
            command=command,
            authorizing=authorizing,
            fingerprint=fingerprint,
            replicas=settings.redis.min_replica_acks,
            timeout_seconds=settings.redis.replica_ack_timeout_seconds,
        )
        return Enqueued(
            run=draft,
            authorizing=authorizing,
            progress=submitted.token,
            confirmed=submitted.confirmed,
        )
    found = submission.admit_and_send(
        draft,
        command=command,
        authorizing=authorizing,
        fingerprint=fingerprint,
        app=_app_for(settings),
        settings=settings,
        client=redis_client,
    )
    return Enqueued(run=found.run, duplicate_of=found.duplicate_of, authorizing=found.authorizing)


def submits_only(settings: PlatformSettings) -> bool:
    """Whether ``settings.redis.url`` is the enqueue credential, which only submits requests
    (``k8see.submission``); every other credential admits and sends in-process."""
    return redis_acl.role_of(settings.redis.url) == "enqueue"


def _repository_config_path(config_path: str) -> str:
    """``config_path`` checked; ``""`` for the default, so ordinary runs carry nothing."""
    checked = check_config_path(config_path)
    return "" if checked == DEFAULT_CONFIG_PATH else checked


def _app_for(settings: PlatformSettings) -> Celery:
    """The Celery app this process sends with, one per settings.

    Creating an app costs about 20 ms and opens its own broker connection pool, which a
    process that enqueues in a loop (cleanup's destroys, a webhook receiver) paid on every
    call. Keyed by the process id too: a forked child must not share its parent's sockets.
    """
    key = (os.getpid(), settings.model_dump_json())
    with _APPS_LOCK:
        app = _APPS.get(key)
        if app is None:
            if len(_APPS) >= 8:  # tests make many settings; a service has one
                _APPS.clear()
            app = _APPS[key] = create_app(settings, sender_only=True)
    return app


@dataclass(frozen=True)
class Outcome:
    """How a followed run ended."""

    status: str
    record: dict[str, Any]
    superseded: bool = False
    timed_out: bool = False

    skipped: bool = False

    @property
    def ok(self) -> bool:
        """Ready, destroyed, preserved, or nothing to do for this event."""
        return self.skipped or self.status in (
            Status.READY.value,
            Status.DESTROYED.value,
            Status.PRESERVED.value,
        )


def follow(
    *,
    settings: PlatformSettings | None,
    repo: str,
    pr: int,
    run_id: str,
    generation: int,
    timeout_seconds: float,
    on_change: Callable[[dict[str, Any]], None] = lambda record: None,
    until_commented: bool = False,
    authorizing: bool = False,
    client: redis.Redis | None = None,
    look: Callable[[], tuple[dict[str, Any], dict[str, Any] | None]] | None = None,
    poll_seconds: float = POLL_SECONDS,
    progress: str = "",
) -> Outcome:
    """Watch the PR's record until this run ends, calling ``on_change`` on every update.

    With ``until_commented``, a finished run also waits for its PR comment to be written.
    An ``authorizing`` run (a comment command) has no generation of its own until a worker
    admits it; until then only its refusal or its admission ends the wait. Where the record
    and the refusal are read from:

    - ``look``: a function returning both (``k8see enqueue --api`` follows through the API);
    - ``progress`` (a submission's token, ``Enqueued.progress``): only that submission's
      progress key, the enqueue credential's one readable key; the run id, generation and
      ``authorizing`` come from it once a worker admitted the request;
    - otherwise the PR's record and the run's outcome in Redis.
    """
    deadline = time.monotonic() + timeout_seconds
    if look is None:
        if client is None and settings is None:
            raise ValueError("follow needs settings, a Redis client or look")
        redis_client = client or connect(settings.redis)  # type: ignore[union-attr]
        if progress:
            found: dict[str, Any] = {}
            while time.monotonic() < deadline:
                found = state.read_progress(redis_client, token=progress)
                if "admission" in found:
                    break
                time.sleep(poll_seconds)
            else:
                return Outcome(status="submitted", record={}, timed_out=True)
            admission = found["admission"]
            run_id = str(admission["run_id"])
            generation = int(admission.get("generation") or 0)
            authorizing = bool(admission.get("authorizing"))

            def from_progress() -> tuple[dict[str, Any], dict[str, Any] | None]:
                found = state.read_progress(redis_client, token=progress)
                record, outcome = found.get("record"), found.get("outcome")
                return (
                    record if isinstance(record, dict) else {},
                    outcome if isinstance(outcome, dict) else None,
                )

            look = from_progress
        else:

            def from_redis() -> tuple[dict[str, Any], dict[str, Any] | None]:
                record = state.get(redis_client, repo=repo, pr=pr) or {}
                if record.get("run_id") == run_id:
                    return record, None
                return record, state.run_outcome(redis_client, run_id=run_id)

            look = from_redis

    seen: tuple[Any, ...] = ()
    record: dict[str, Any] = {}
    admitted = not authorizing
    while time.monotonic() < deadline:
        record, refusal = look()
        if not admitted:
            if record.get("run_id") == run_id:
                admitted, generation = True, int(record.get("generation") or 0)
            else:
                if refusal is not None:
                    # Refused or not applicable: nothing changed, like a skipped event.
                    reason = str(refusal.get("message") or "the command was refused")
                    return Outcome(
                        status=Status.SKIPPED.value,
                        record={**record, "reason": reason},
                        skipped=True,
                    )
                time.sleep(poll_seconds)
                continue
        key = (record.get("status"), record.get("stage"), record.get("updated_at"))
        if key != seen:
            seen = key
            on_change(record)
        if int(record.get("generation") or 0) > generation:
            return Outcome(status=Status.SUPERSEDED.value, record=record, superseded=True)
        if record.get("skipped_run") == run_id:
            return Outcome(status=Status.SKIPPED.value, record=record, skipped=True)
        status = record.get("status")
        if record.get("run_id") == run_id and status in {s.value for s in TERMINAL}:
            commented = status == Status.SKIPPED.value or record.get("commented") == status
            if commented or not until_commented:
                return Outcome(status=str(status), record=record)
        time.sleep(poll_seconds)
    return Outcome(status=str(record.get("status", "unknown")), record=record, timed_out=True)
