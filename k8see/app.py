"""The Celery app: queues, routes, serialisation and delivery guarantees, in one place.

``create_app(settings)`` builds it; the module-level ``app`` (from the environment) is what
``celery -A k8see.app worker`` and ``k8see worker`` use. Creating the app connects to nothing,
and the task modules are only listed (``include``), not imported, so the enqueue client stays
light and sends tasks by name.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue  # type: ignore[attr-defined]

from k8see import liveness, stage_table
from k8see.redis_connect import celery_redis, celery_ssl
from k8see.settings import PlatformSettings, load_settings

#: Queue of each scheduled job and the preserve command (k8see.jobs); the stages'
#: queues are their rows of ``k8see.stage_table``.
JOB_ROUTES: dict[str, str] = {
    "k8see.cleanup": "maintenance",
    "k8see.preserve_expiry": "maintenance",
    "k8see.watchdog": "maintenance",
    "k8see.pull_secret_refresh": "maintenance",
    "k8see.preserve": "maintenance",
}


def routes() -> dict[str, str]:
    """The queue of each task, by explicit name: the stage table's, then the jobs'."""
    return {**stage_table.routes(), **JOB_ROUTES}


#: The routes of k8see's own tasks (a stage added to the table later is in ``routes()``).
ROUTES: dict[str, str] = routes()

QUEUES: tuple[str, ...] = ("default", "build", "deploy", "maintenance")


def create_app(
    settings: PlatformSettings, *, name: str = "k8see", sender_only: bool = False
) -> Celery:
    """A Celery app configured for k8see's pipelines.

    Args:
        settings: Platform settings; only the Redis and queue groups are read here.
        name: The app's main name (tests give each app their own).
        sender_only: An app that only sends (the enqueue client): no result backend and
            Celery's short publish retries. It never waits for a result, and with a backend
            every send also subscribed for one, a connection that kept retrying for 20 s
            when Redis went away; and a client should fail fast (exit 3) on a Redis that is
            gone, where a worker holding finished work should wait for it.

    Returns:
        The configured app; the tasks in ``k8see.tasks`` register on first worker import.
    """
    app = Celery(name, include=["k8see.tasks", "k8see.jobs.tasks"])
    # One server, or Sentinel URLs plus the master's name (k8see.redis_connect).
    redis_url, sentinel_options = celery_redis(settings.redis)
    conf: dict[str, Any] = {
        "broker_url": redis_url,
        "result_backend": None if sender_only else redis_url,
        "result_backend_transport_options": dict(sentinel_options),
        # JSON only: messages carry ids and digests, never pickled objects.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "result_expires": settings.redis.result_expires_seconds,
        # A stage may run twice; acknowledging late means a crash redelivers, never loses.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "default",
        "task_queues": [Queue(q, routing_key=q) for q in QUEUES],  # type: ignore[no-untyped-call]
        "task_routes": {task: {"queue": queue} for task, queue in routes().items()},
        # Flower and metrics need events; the "sent" event shows queued tasks too.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # Unacked messages of a worker that vanished are redelivered after this long;
            # it must exceed the longest stage (a build) or a slow build would run twice.
            "visibility_timeout": visibility_timeout_seconds(settings),
            **sentinel_options,
        },
        # One beat replica sends these; each job body also holds a Redis lock, so a second
        # beat (a rollout overlap) only sends harmless duplicates (k8see.jobs.tasks).
        "beat_schedule": beat_schedule(settings),
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
    }
    if not sender_only:
        # A stage that finished while Redis stalled still sends the chain's next task and
        # stores its result: both retry for about redis.stall_tolerance_seconds, not ~1 s.
        conf["task_publish_retry_policy"] = {
            "max_retries": _stall_retries(settings),
            "interval_start": 0,
            "interval_step": 1,
            "interval_max": _STALL_RETRY_INTERVAL_SECONDS,
        }
        conf["result_backend_always_retry"] = True
        conf["result_backend_max_retries"] = _stall_retries(settings)
    tls = celery_ssl(settings.redis)
    if tls is not None:
        conf["broker_use_ssl"] = conf["redis_backend_use_ssl"] = tls
    app.conf.update(conf)
    app.k8see_settings = settings
    # The worker's heartbeat file for its liveness probe, off until --heartbeat-file.
    liveness.install(app)
    return app


_STALL_RETRY_INTERVAL_SECONDS = 5


def visibility_timeout_seconds(settings: PlatformSettings) -> int:
    """``queues.visibility_timeout_seconds``, or when 0 the build's limit plus 5 minutes."""
    configured = settings.queues.visibility_timeout_seconds
    return configured if configured > 0 else settings.build.timeout_seconds + 300


def _stall_retries(settings: PlatformSettings) -> int:
    """Retries, at most 5 s apart, that cover ``redis.stall_tolerance_seconds``."""
    return int(settings.redis.stall_tolerance_seconds // _STALL_RETRY_INTERVAL_SECONDS) + 5


def beat_schedule(settings: PlatformSettings) -> dict[str, dict[str, Any]]:
    """The maintenance jobs and their periods, in seconds, from ``settings.cleanup``.

    Each entry expires after one period: a job nobody ran in time is dropped, not piled up.
    """
    periods = {
        "cleanup": ("k8see.cleanup", settings.cleanup.interval_seconds),
        "preserve-expiry": ("k8see.preserve_expiry", settings.cleanup.expiry_interval_seconds),
        "watchdog": ("k8see.watchdog", settings.cleanup.watchdog_interval_seconds),
        "pull-secret-refresh": (
            "k8see.pull_secret_refresh",
            settings.registry.pull_secret_refresh_seconds,
        ),
    }
    return {
        name: {
            "task": task,
            "schedule": float(seconds),
            "options": {"queue": "maintenance", "expires": float(seconds)},
        }
        for name, (task, seconds) in periods.items()
        if seconds > 0
    }


def settings_of(app: Celery) -> PlatformSettings:
    """The settings an app was created with."""
    settings = getattr(app, "k8see_settings", None)
    if not isinstance(settings, PlatformSettings):
        settings = load_settings()
        app.k8see_settings = settings
    return settings


def __getattr__(name: str) -> Any:
    """``app``: the app from the environment's settings, created on first use (what ``celery
    -A k8see.app`` and ``k8see worker`` find), so importing this module for its tables
    (``QUEUES``, ``routes``) never reads the settings: a bad setting then fails where the
    CLI turns it into a clear error, not at import."""
    if name == "app":
        found = create_app(load_settings())
        globals()["app"] = found
        return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
