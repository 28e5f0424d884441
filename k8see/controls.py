"""A stage's view of Redis while it runs: probes that survive a stall, reports that wait.

A stage's tool (buildah, helm) runs for minutes while Redis may stall, fail over or restart.
None of that is the tool's business, so:

- the newer-event probe (``stop_probe``), the log recorder and the lease renewal treat a Redis
  that does not answer as "unknown": the probe says "go on", the log line is dropped, the
  renewal is skipped (the fencing token still guards every cluster write). None of them
  raises into the tool's output loop, which would kill the tool;
- what the task layer must record (the stage's start, its result) goes through
  ``until_redis_answers``, which tries again for ``redis.stall_tolerance_seconds`` and then
  hands the message back to the broker (``Reject(requeue=True)``): a stage that cannot
  report is redelivered, never acknowledged as done.

Every call has a socket timeout (``redis.socket_timeout_seconds``), so "unanswered" is
noticed instead of hanging.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from celery.exceptions import Reject

from k8see import coordination, stage_table, state
from k8see.errors import Closed, Stopped, Superseded
from k8see.logs import redactor
from k8see.redis_connect import connect
from k8see.run import TERMINAL, Action, Run
from k8see.settings import PlatformSettings, RedisSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Errors of a Redis that did not answer (stalled, gone, failing over).
UNANSWERED = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
STOP_CHECK_INTERVAL_SECONDS = 1.0
#: After Redis did not answer a probe, how long before asking again.
PROBE_BACKOFF_SECONDS = 5.0


def redis_for(settings: RedisSettings) -> redis.Redis:
    """One connection pool per worker process and Redis (or Sentinel group), with timeouts
    on every call."""
    secret = settings.sentinel_password.get_secret_value() if settings.sentinel_password else ""
    key = (settings.model_dump_json(), secret)  # the dump masks the secret
    client = _CLIENTS.get(key)
    if client is None:
        timeout = settings.socket_timeout_seconds
        client = connect(
            settings,
            health_check_interval=30,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        if len(_CLIENTS) >= 8:  # tests make many settings; a worker has one
            _CLIENTS.clear()
        _CLIENTS[key] = client
    return client


_CLIENTS: dict[tuple[str, str], redis.Redis] = {}


def stop_reason(client: redis.Redis, run: Run, stage: str) -> Stopped | None:
    """Why ``run`` must stop before (or during) ``stage``: a newer event, or a close."""
    latest = coordination.current_generation(client, repo=run.repo, pr=run.pr)
    if latest > run.generation:
        return Superseded(
            f"A newer event (generation {latest}) replaced this run (generation {run.generation})."
        )
    closes = run.action is Action.DESTROY
    if (
        stage_table.spec(stage).stopped_by_close
        and not closes
        and coordination.is_closed(client, repo=run.repo, pr=run.pr)
    ):
        return Closed("The pull request was closed; the deploy stops.")
    return None


def ended(client: redis.Redis, run: Run) -> str | None:
    """The terminal status ``run`` already reached, or None.

    A stage's message can come again after its run ended: its acknowledgement was lost (a
    worker killed after the stage, a failover that dropped the ack), and the broker hands it
    out again after the visibility timeout. Running it again would redo the rest of the chain
    (build, deploy, comment) for an event that was already done.
    """
    record = state.get(client, repo=run.repo, pr=run.pr) or {}
    status = str(record.get("status") or "")
    if record.get("run_id") == run.run_id and status in TERMINAL_STATUSES:
        return status
    return None


#: Statuses a run ends in (``run.TERMINAL``), as stored on the record.
TERMINAL_STATUSES = frozenset(s.value for s in TERMINAL)


def stop_probe(
    client: redis.Redis, run: Run, stage: str, rlog: logging.LoggerAdapter[logging.Logger]
) -> Callable[[], bool]:
    """A cheap ``should_stop`` for long steps: asks Redis at most once a second.

    A Redis that does not answer means "unknown", so the tool goes on; the next question is
    asked ``PROBE_BACKOFF_SECONDS`` later, so a stalled Redis costs the tool's output loop one
    socket timeout now and then, not every poll.
    """
    next_check = [0.0]
    stopped = [False]

    def should_stop() -> bool:
        now = time.monotonic()
        if stopped[0] or now < next_check[0]:
            return stopped[0]
        try:
            stopped[0] = stop_reason(client, run, stage) is not None
            next_check[0] = now + STOP_CHECK_INTERVAL_SECONDS
        except UNANSWERED as exc:
            rlog.warning("Redis did not answer the newer-event check (%s); going on.", exc)
            next_check[0] = time.monotonic() + PROBE_BACKOFF_SECONDS
        return stopped[0]

    return should_stop


def log_recorder(
    client: redis.Redis, run: Run, settings: PlatformSettings
) -> Callable[[str], None]:
    """Keeps tool output lines in Redis; while Redis does not answer, lines are dropped."""
    redact = redactor(settings)
    quiet_until = [0.0]

    def record(line: str) -> None:
        if time.monotonic() < quiet_until[0]:
            return
        try:
            state.append_log(
                client,
                run_id=run.run_id,
                line=redact(line),
                ttl_seconds=settings.redis.record_ttl_seconds,
            )
        except UNANSWERED:
            quiet_until[0] = time.monotonic() + PROBE_BACKOFF_SECONDS

    return record


def tolerant(
    action: Callable[[], None], rlog: logging.LoggerAdapter[logging.Logger], what: str
) -> Callable[[], None]:
    """``action`` that skips a turn when Redis does not answer; other errors still raise
    (a lease renewal that finds the lease taken still stops the stage: fencing).

    One warning per outage, not per turn (a renewal runs on every helm poll, every ~2 s), and
    one line when Redis answers again saying how many turns were skipped.
    """
    skipped = 0

    def skipping() -> None:
        nonlocal skipped
        try:
            action()
        except UNANSWERED as exc:
            if not skipped:
                rlog.warning("Redis did not answer %s (%s); going on.", what, exc)
            skipped += 1
            return
        if skipped:
            rlog.info("Redis answered %s again, after %d skipped.", what, skipped)
            skipped = 0

    return skipping


def until_redis_answers(
    action: Callable[[], T],
    *,
    what: str,
    tolerance_seconds: float,
    rlog: logging.LoggerAdapter[logging.Logger],
) -> T:
    """Run ``action`` (Redis reads and writes), again while Redis does not answer.

    Raises:
        Reject: Redis did not answer for ``tolerance_seconds``; the message goes back to the
            broker (or, if the broker is unreachable too, stays unacknowledged and is
            redelivered after its visibility timeout).
    """
    deadline = time.monotonic() + tolerance_seconds
    delay = 0.5
    while True:
        try:
            return action()
        except UNANSWERED as exc:
            if time.monotonic() + delay > deadline:
                rlog.error("Redis did not answer to %s for %.0fs; the stage's message goes back "
                           "to the queue.", what, tolerance_seconds)  # fmt: skip
                raise Reject(exc, requeue=True) from exc
            rlog.warning("Redis did not answer to %s (%s); trying again in %.1fs.",
                         what, exc, delay)  # fmt: skip
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


#: How long a stage's delivery claim lives without renewal (``coordination.claim_stage``);
#: a delivery whose worker died is run again this long after at the latest.
CLAIM_TTL_SECONDS = 20.0
#: How long a second delivery of a stage waits before it looks at the claim again.
CLAIM_WAIT_SECONDS = 5.0


class ClaimRenewal:
    """Renews a stage's delivery claim from a thread while the stage runs; a Redis that does
    not answer skips a turn (the claim outlives a short stall, and expires with a dead worker)."""

    def __init__(self, client: redis.Redis, *, run_id: str, stage: str, token: str) -> None:
        self._stop = threading.Event()
        self._args = {"run_id": run_id, "stage": stage, "token": token}
        self._client = client
        self._thread = threading.Thread(target=self._loop, name="k8see-claim", daemon=True)

    def __enter__(self) -> ClaimRenewal:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(CLAIM_TTL_SECONDS / 4):
            try:
                coordination.renew_stage_claim(
                    self._client, ttl_seconds=CLAIM_TTL_SECONDS, **self._args
                )
            except UNANSWERED:
                continue
