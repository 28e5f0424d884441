"""Bare Celery: tasks that do nothing, the baseline the k8see pipeline is judged against.

``register(app)`` adds two plain tasks to any Celery app: ``bare.noop`` (returns its
argument) and ``bare.done`` (counts a finished chain in Redis, so the benchmark sees it
end). ``trivial_app`` registers them too, so the very worker processes that run the
trivial-stage pipelines also run the bare chains (the throughput baseline). The ``app``
here is a plain Celery app with only the delivery settings k8see's app also uses (JSON,
late acknowledgement, prefetch 1, task events): the hand-off baseline's two workers run it.
Run with ``celery -A tests.benchmarks.bare_app worker -Q <queue>`` and ``K8SEE_REDIS__URL``.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery, chain

DONE_KEY = "bare:done"


def register(app: Celery) -> None:
    clients: dict[str, redis.Redis] = {}

    @app.task(name="bare.noop", shared=False)  # type: ignore[untyped-decorator]
    def noop(payload: Any) -> Any:
        return payload

    @app.task(name="bare.done", shared=False)  # type: ignore[untyped-decorator]
    def done(payload: Any, key: str = DONE_KEY) -> Any:
        url = str(app.conf.broker_url)
        if url not in clients:
            clients[url] = redis.Redis.from_url(url)
        clients[url].incr(key)
        return payload


def bare_chain(app: Celery, queues: list[str], payload: Any, key: str = DONE_KEY) -> Any:
    """A chain of ``bare.noop`` on ``queues[:-1]`` then ``bare.done`` on the last queue."""
    sigs = [app.signature("bare.noop", queue=q) for q in queues[:-1]]
    sigs.append(app.signature("bare.done", kwargs={"key": key}, queue=queues[-1]))
    first = sigs[0].clone(args=(payload,))
    return chain(first, *sigs[1:])


def make_app(redis_url: str) -> Celery:
    bare = Celery("k8see-bare", broker=redis_url)
    bare.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    register(bare)
    return bare


app = make_app(os.environ.get("K8SEE_REDIS__URL", "redis://127.0.0.1:6379/0"))
