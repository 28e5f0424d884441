"""Prometheus metrics: what the reference never exported (its gap; docs/operations.md "Metrics").

Updated from ``StageTask`` hooks and the maintenance jobs; served by ``serve()``.

**Prefork and multiprocess mode.** Celery's prefork pool runs tasks in child processes, so a
metric changed in a child is invisible to a server in the parent. k8see uses prometheus_client's
multiprocess mode: with ``PROMETHEUS_MULTIPROC_DIR`` set (``k8see worker`` sets one per worker
when it is missing), every process writes its samples to files in that directory, and the
server aggregates them at scrape time. The worker's main process serves them on
``metrics.port`` (one server per worker pod; a second worker on the same host logs that the
port is taken), and ``k8see metrics --port`` serves any directory, e.g. one shared by all pools
on one machine. Without the variable (tests, one process) the default registry is used.

The environment gauges are not samples at all: a collector counts the environment records in
Redis at scrape time, so every replica reports the same truth and nothing drifts.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter as Tally
from collections.abc import Iterator
from typing import Any

import redis
from celery.signals import worker_ready
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from k8see import state
from k8see.app import settings_of
from k8see.redis_connect import connect
from k8see.run import Run
from k8see.settings import RedisSettings

__all__ = [
    "cleanup_action",
    "lease_contended",
    "maintenance_run",
    "make_registry",
    "run_stopped",
    "serve",
    "stage_failed",
    "stage_finished",
    "stage_started",
]

log = logging.getLogger(__name__)

#: Stage durations run from a second (comment) to a quarter of an hour (build).
STAGE_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1800)
#: Event to ready: the PRD's SLO is under 10 minutes for 95 % of PRs.
READY_BUCKETS = (10, 30, 60, 120, 180, 300, 450, 600, 900, 1200, 1800, 3600)
QUEUE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
HANDOFF_KEY = "k8see:metrics:handoff"
HANDOFF_TTL_SECONDS = 6 * 3600

STAGE_DURATION = Histogram(
    "k8see_stage_duration_seconds",
    "Time a stage took, by stage and outcome (ok, failed).",
    ["stage", "outcome"],
    buckets=STAGE_BUCKETS,
)
TIME_TO_READY = Histogram(
    "k8see_time_to_ready_seconds",
    "Time from the enqueued event to a ready environment.",
    buckets=READY_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "k8see_queue_wait_seconds",
    "Time a stage's message waited before a worker started it (from the enqueue for the "
    "first stage, from the previous stage's end otherwise).",
    ["stage"],
    buckets=QUEUE_BUCKETS,
)
RUNS = Counter(
    "k8see_runs_total",
    "Finished runs by action and outcome (ready, failed, destroyed, preserved, superseded, "
    "closed, skipped).",
    ["action", "outcome"],
)
FAILURES = Counter(
    "k8see_stage_failures_total",
    "Stage failures by stage and reason (the error's reason: config, build, scan, kube, stuck…).",
    ["stage", "reason"],
)
STOPS = Counter(
    "k8see_stage_stops_total",
    "Runs stopped before a stage by reason (superseded, closed, skip); superseded builds show "
    "as stage=build.",
    ["stage", "reason"],
)
LEASE_CONTENTION = Counter(
    "k8see_lease_contention_total",
    "Times a cluster stage found its PR's lease held by another run and retried later.",
    ["stage"],
)
CLEANUP_ACTIONS = Counter(
    "k8see_cleanup_actions_total",
    "What the maintenance jobs did: destroys by reason (closed, merged, orphaned, stale, "
    "preserve-expired, unpreserved), vanished records, deleted image tags.",
    ["action"],
)
HELM_API_RETRIES = Counter(
    "k8see_helm_api_retries_total",
    "helm's requests to the Kubernetes API that k8see's API proxy retried, by stage and the "
    "answer that caused it (429, 500, 502, 503, 504, or connection).",
    ["stage", "cause"],
)
MAINTENANCE_RUNS = Counter(
    "k8see_maintenance_runs_total",
    "Maintenance job runs by job_name and outcome (ok, failed).",
    # Not ``job``: Prometheus sets that label on every scraped series (the scrape job) and
    # would rename ours to ``exported_job``.
    ["job_name", "outcome"],
)


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def stage_started(client: redis.Redis, run: Run, stage: str) -> None:
    """Observe the stage's queue wait."""
    now = time.time()
    handoff = client.hget(HANDOFF_KEY, run.run_id)
    since = float(_decode(handoff)) if handoff is not None else run.enqueued_at
    if since > 0:
        QUEUE_WAIT.labels(stage=stage).observe(max(0.0, now - since))


def stage_finished(
    client: redis.Redis, run: Run, stage: str, *, seconds: float, status: str | None = None
) -> None:
    """Observe a finished stage; ``status`` is the record's status the comment reported."""
    STAGE_DURATION.labels(stage=stage, outcome="ok").observe(seconds)
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        pipe.hset(HANDOFF_KEY, run.run_id, str(now))
        pipe.expire(HANDOFF_KEY, HANDOFF_TTL_SECONDS)
        pipe.execute()
    if stage == "deploy" and run.enqueued_at > 0:
        TIME_TO_READY.observe(max(0.0, now - run.enqueued_at))
    if stage == "comment":
        RUNS.labels(action=run.action.value, outcome=status or "unknown").inc()
        client.hdel(HANDOFF_KEY, run.run_id)


def stage_failed(*, stage: str, reason: str, seconds: float | None = None) -> None:
    FAILURES.labels(stage=stage, reason=reason).inc()
    if seconds is not None:
        STAGE_DURATION.labels(stage=stage, outcome="failed").observe(seconds)


def run_stopped(run: Run, *, stage: str, reason: str) -> None:
    STOPS.labels(stage=stage, reason=reason).inc()
    RUNS.labels(action=run.action.value, outcome=reason).inc()


def lease_contended(stage: str) -> None:
    LEASE_CONTENTION.labels(stage=stage).inc()


def cleanup_action(action: str, amount: int = 1) -> None:
    if amount:
        CLEANUP_ACTIONS.labels(action=action).inc(amount)


def helm_api_retried(stage: str, retried: dict[str, int]) -> None:
    for cause, amount in retried.items():
        if amount:
            HELM_API_RETRIES.labels(stage=stage, cause=cause).inc(amount)


def maintenance_run(job: str, outcome: str) -> None:
    MAINTENANCE_RUNS.labels(job_name=job, outcome=outcome).inc()


class EnvironmentCollector(Collector):
    """``k8see_environments{status}`` and ``k8see_preserved_environments`` from the records."""

    def __init__(self, redis_settings: RedisSettings | str) -> None:
        # A plain URL is one Redis; the settings may name Sentinels (k8see.redis_connect).
        if isinstance(redis_settings, str):
            redis_settings = RedisSettings(url=redis_settings)
        self.redis_settings = redis_settings

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # no Redis read when the collector is registered

    def collect(self) -> Iterator[GaugeMetricFamily]:
        client = connect(self.redis_settings, socket_timeout=5, socket_connect_timeout=5)
        try:
            records = list(state.list_records(client))
        except redis.exceptions.RedisError as exc:
            log.warning("Cannot read environment records for metrics: %s", exc)
            return
        finally:
            client.close()
        by_status = Tally(str(r.get("status") or "unknown") for r in records)
        gauge = GaugeMetricFamily(
            "k8see_environments", "Environment records by status.", labels=["status"]
        )
        for status, count in sorted(by_status.items()):
            gauge.add_metric([status], count)
        yield gauge
        preserved = sum(
            1 for r in records if r.get("preserve_until") or r.get("status") == "preserved"
        )
        yield GaugeMetricFamily(
            "k8see_preserved_environments", "Environments with a preserve.", value=preserved
        )


def make_registry(
    *, redis_settings: RedisSettings, multiproc_dir: str | None = None
) -> CollectorRegistry:
    """The registry to serve: every process's samples plus the environment gauges."""
    directory = multiproc_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    registry.register(EnvironmentCollector(redis_settings))
    return registry


def serve(*, port: int, redis_settings: RedisSettings, address: str = "127.0.0.1") -> bool:
    """Serve ``/metrics`` on ``port`` in a background thread; False when the port is taken."""
    try:
        start_http_server(port, addr=address, registry=make_registry(redis_settings=redis_settings))
    except OSError as exc:
        log.warning("Metrics are not served on port %d: %s.", port, exc.strerror)
        return False
    log.info("Metrics are served on %s:%d/metrics.", address, port)
    return True


@worker_ready.connect  # type: ignore[untyped-decorator]
def _serve_from_worker(sender: Any = None, **_: Any) -> None:
    """Serve from the worker's main process once its pool has forked (children never serve)."""
    app = getattr(sender, "app", None)
    if app is None:
        return
    settings = settings_of(app)
    if settings.metrics.enabled:
        serve(
            port=settings.metrics.port,
            redis_settings=settings.redis,
            address=settings.metrics.address,
        )
