"""The Celery app's contract (``k8see/app.py``): which pool runs which task, what beat sends and
how often, and the delivery settings every stage relies on.

A route that moved a stage to another pool would run it with the wrong credentials (the build
pool holds no Kubernetes token; the deploy pool no registry push rights), so the table is
pinned here; the worker pools of the platform chart consume exactly these queues.
"""

from __future__ import annotations

import pytest

from k8see import app as app_module
from k8see.app import QUEUES, ROUTES, beat_schedule, create_app
from k8see.settings import load_settings

#: Pool of every task, as docs/operations.md "Processes" describes them.
EXPECTED_POOLS = {
    "k8see.validate": "default",
    "k8see.comment": "default",
    "k8see.command": "default",
    "k8see.build": "build",
    "k8see.scan": "build",
    "k8see.untag": "build",
    "k8see.deploy": "deploy",
    "k8see.destroy": "deploy",
    "k8see.cleanup": "maintenance",
    "k8see.preserve_expiry": "maintenance",
    "k8see.watchdog": "maintenance",
    "k8see.pull_secret_refresh": "maintenance",
    "k8see.preserve": "maintenance",
}


def _registered(celery_app: object) -> set[str]:
    import k8see.jobs.tasks
    import k8see.tasks  # noqa: F401  (registers the stages)

    tasks = celery_app.tasks  # type: ignore[attr-defined]
    # The product's tasks only: tests register tasks of their own (``k8see.drill_deploy``).
    return {
        name
        for name, task in tasks.items()
        if name.startswith("k8see.") and task.__module__.startswith("k8see.")
    }


def _queue_of(celery_app: object, task: str) -> str:
    routed = celery_app.amqp.router.route({}, task)  # type: ignore[attr-defined]
    return str(routed["queue"].name)


def test_every_task_runs_on_the_pool_the_docs_name() -> None:
    celery_app = create_app(load_settings(), name="k8see-routes")
    registered = _registered(celery_app)
    assert registered == set(EXPECTED_POOLS), "a task was added or removed: route it and pin it"
    assert {task: _queue_of(celery_app, task) for task in registered} == EXPECTED_POOLS
    assert set(ROUTES.values()) <= set(QUEUES)


def test_beat_sends_each_job_to_maintenance_at_its_period_and_drops_a_late_one() -> None:
    settings = load_settings(
        cleanup={
            "interval_seconds": 600,
            "expiry_interval_seconds": 60,
            "watchdog_interval_seconds": 30,
        },
        registry={"pull_secret_refresh_seconds": 3600},
    )
    schedule = beat_schedule(settings)
    assert {name: (e["task"], e["schedule"]) for name, e in schedule.items()} == {
        "cleanup": ("k8see.cleanup", 600.0),
        "preserve-expiry": ("k8see.preserve_expiry", 60.0),
        "watchdog": ("k8see.watchdog", 30.0),
        "pull-secret-refresh": ("k8see.pull_secret_refresh", 3600.0),
    }
    for entry in schedule.values():
        # a job nobody ran within its period is dropped, not piled up behind a stalled pool
        assert entry["options"] == {"queue": "maintenance", "expires": entry["schedule"]}


def test_a_period_of_zero_turns_a_job_off() -> None:
    settings = load_settings(
        cleanup={"watchdog_interval_seconds": 0}, registry={"pull_secret_refresh_seconds": 0}
    )
    assert set(beat_schedule(settings)) == {"cleanup", "preserve-expiry"}


@pytest.mark.parametrize("sender_only", [False, True])
def test_delivery_settings_every_stage_relies_on(sender_only: bool) -> None:
    conf = create_app(load_settings(), name="k8see-conf", sender_only=sender_only).conf
    # JSON only: a pickled message would run code on the worker
    assert (conf.task_serializer, conf.accept_content) == ("json", ["json"])
    assert conf.result_accept_content == ["json"]
    # a crash redelivers, never loses; one message at a time per worker process
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost) == (True, True)
    assert conf.worker_prefetch_multiplier == 1
    # the sender (the enqueue client) waits for no result, so it has no backend to wait on
    assert (conf.result_backend is None) is sender_only


def test_the_module_app_is_built_from_the_environment() -> None:
    assert app_module.app.conf.task_default_queue == "default"
    assert [q.name for q in app_module.app.conf.task_queues] == list(QUEUES)
