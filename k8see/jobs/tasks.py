"""The Celery tasks of the beat jobs and the preserve command, each a thin wrapper over its job.

Task names and queues are a contract (messages in flight, the chart's KEDA scalers, beat's
schedule in ``k8see.app``): ``k8see.cleanup`` (then the registry GC), ``k8see.preserve_expiry``,
``k8see.watchdog``, ``k8see.pull_secret_refresh`` and ``k8see.preserve``, all on the
``maintenance`` queue (``k8see.app.ROUTES``). ``k8see.app`` lists this module in the app's
``include``, so a worker registers them and the enqueue client imports none of it.

Each scheduled job body runs under its Redis lock (``exclusive``) and counts its outcome
(``k8see_maintenance_runs_total``); see ``k8see.jobs`` on running one beat.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery import Celery, shared_task

from k8see import metrics
from k8see.app import settings_of
from k8see.errors import K8seeError
from k8see.jobs.cleanup import run_cleanup
from k8see.jobs.connections import redis_client
from k8see.jobs.preserve import run_preserve_command
from k8see.jobs.preserve_expiry import run_expiry
from k8see.jobs.pull_secret_refresh import run_pull_secret_refresh
from k8see.jobs.registry_gc import run_registry_gc
from k8see.jobs.watchdog import run_watchdog

__all__ = [
    "cleanup_task",
    "exclusive",
    "preserve_expiry_task",
    "preserve_task",
    "pull_secret_refresh_task",
    "watchdog_task",
]

log = logging.getLogger(__name__)


@contextmanager
def exclusive(client: redis.Redis, name: str, *, ttl_seconds: float) -> Iterator[bool]:
    """Hold ``k8see:lock:job:<name>`` while the body runs; yields False if another holds it."""
    lock = client.lock(f"k8see:lock:job:{name}", timeout=max(ttl_seconds, 1.0), blocking=False)
    acquired = bool(lock.acquire())
    try:
        yield acquired
    finally:
        if acquired:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("The %s job outlived its lock; another run may have overlapped.", name)


def _job(app: Celery, name: str, period_seconds: float, body: Callable[..., dict[str, Any]], /,
         **kwargs: Any) -> dict[str, Any]:  # fmt: skip
    settings = settings_of(app)
    client = redis_client(settings)
    with exclusive(client, name, ttl_seconds=period_seconds) as mine:
        if not mine:
            log.info("The %s job is already running elsewhere; this one skips.", name)
            return {"skipped": "locked"}
        try:
            report = body(settings=settings, client=client, **kwargs)
        except K8seeError as exc:
            log.error("The %s job failed: %s", name, exc.message)
            metrics.maintenance_run(name, "failed")
            raise
        metrics.maintenance_run(name, "ok")
        return report


@shared_task(bind=True, name="k8see.cleanup", acks_late=True)  # type: ignore[untyped-decorator]
def cleanup_task(self: Any, dry_run: bool = False) -> dict[str, Any]:
    settings = settings_of(self.app)
    report = _job(self.app, "cleanup", settings.cleanup.interval_seconds, run_cleanup,
                  dry_run=dry_run)  # fmt: skip
    if "skipped" not in report:
        report["registry"] = _job(self.app, "registry-gc", settings.cleanup.interval_seconds,
                                  run_registry_gc, dry_run=dry_run)  # fmt: skip
    return report


@shared_task(bind=True, name="k8see.preserve_expiry", acks_late=True)  # type: ignore[untyped-decorator]
def preserve_expiry_task(self: Any) -> dict[str, Any]:
    period = settings_of(self.app).cleanup.expiry_interval_seconds
    return _job(self.app, "preserve-expiry", period, run_expiry)


@shared_task(bind=True, name="k8see.watchdog", acks_late=True)  # type: ignore[untyped-decorator]
def watchdog_task(self: Any) -> dict[str, Any]:
    period = settings_of(self.app).cleanup.watchdog_interval_seconds
    return _job(self.app, "watchdog", period, run_watchdog, app=self.app)


@shared_task(bind=True, name="k8see.pull_secret_refresh", acks_late=True)  # type: ignore[untyped-decorator]
def pull_secret_refresh_task(self: Any) -> dict[str, Any]:
    period = settings_of(self.app).registry.pull_secret_refresh_seconds
    return _job(self.app, "pull-secret-refresh", period, run_pull_secret_refresh)


@shared_task(bind=True, name="k8see.preserve", acks_late=True)  # type: ignore[untyped-decorator]
def preserve_task(
    self: Any, payload: dict[str, Any], command: str = "", args: list[str] | None = None
) -> dict[str, Any]:
    """``payload``: a command dict (repo, pr, commenter, comment_id, command, args) or a Run."""
    settings = settings_of(self.app)
    merged = {**payload, **({"command": command} if command else {})}
    if args is not None:
        merged["args"] = list(args)
    return run_preserve_command(settings=settings, client=redis_client(settings), command=merged)
