"""Heartbeat files: a liveness signal from a worker's or beat's main loop, free of the broker.

A Kubernetes liveness probe should prove the process still does its job without asking Redis
(``celery inspect ping`` goes through the broker and every worker, each probe, each pod).
So the process touches a file from its own main loop and the probe only reads the file's age
(charts/k8see-platform, ``livenessProbe``):

- a worker: ``HeartbeatFile``, a bootstep of the consumer, touches it from the worker's event
  loop timer, the loop that takes deliveries and hands them to the pool. A main process that
  hangs (a deadlock, a loop that stopped turning, a consumer that never came back after Redis
  did) stops touching it; long tasks do not, they run in the pool's child processes. While the
  consumer reconnects to Redis, the loop does not turn either, so an outage longer than the
  probe's window restarts the worker (docs/operations.md, "Probes");
- beat: ``HeartbeatScheduler``, the default persistent scheduler that touches it on every tick
  and ticks at least every ``interval`` seconds.

The file's path and interval are the app's ``k8see_heartbeat_file`` and
``k8see_heartbeat_interval`` (``k8see worker|beat --heartbeat-file``); without a path nothing
is written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery import Celery, bootsteps
from celery.beat import PersistentScheduler

log = logging.getLogger(__name__)

#: Seconds between two touches unless ``--heartbeat-interval`` says otherwise.
DEFAULT_INTERVAL_SECONDS = 10.0


def configure(app: Celery, path: Path | None, interval_seconds: float) -> None:
    """Have ``app``'s worker or beat touch ``path`` every ``interval_seconds``."""
    app.conf.k8see_heartbeat_file = str(path) if path is not None else None
    app.conf.k8see_heartbeat_interval = float(interval_seconds)


def _settings(app: Celery) -> tuple[str | None, float]:
    path = app.conf.get("k8see_heartbeat_file")
    interval = float(app.conf.get("k8see_heartbeat_interval") or DEFAULT_INTERVAL_SECONDS)
    return (str(path) if path else None), interval


def touch(path: str) -> None:
    """Set the file's modification time to now, creating it; a failure is logged, not raised
    (a full or read-only disk must not stop the worker; the probe then restarts it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.utime(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("The heartbeat file %s cannot be touched: %s.", path, exc.strerror)


class HeartbeatFile(bootsteps.StartStopStep):  # type: ignore[misc]
    """A consumer bootstep: touch the heartbeat file from the worker's event loop timer."""

    label = "k8see heartbeat file"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._timer_entry: Any = None

    def start(self, parent: Any) -> None:
        path, interval = _settings(parent.app)
        if path is None:
            return
        touch(path)
        self._timer_entry = parent.timer.call_repeatedly(interval, touch, (path,))

    def stop(self, parent: Any) -> None:
        if self._timer_entry is not None:
            self._timer_entry.cancel()
            self._timer_entry = None

    shutdown = stop


class HeartbeatScheduler(PersistentScheduler):  # type: ignore[misc]
    """Celery's default scheduler (``-s`` schedule file) that touches the heartbeat file on
    each tick of beat's loop and ticks at least every interval."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        next_tick = float(super().tick(*args, **kwargs))
        path, interval = _settings(self.app)
        if path is None:
            return next_tick
        touch(path)
        return min(next_tick, interval)


def install(app: Celery) -> None:
    """Add the worker's heartbeat step to ``app`` (it writes nothing until ``configure``)."""
    app.steps["consumer"].add(HeartbeatFile)
