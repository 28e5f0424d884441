"""What ``StageTask`` does for any stage, shown on one the test adds (``noop_app``).

A stage is its module and one row of ``k8see.stage_table``: ``tests/worker/noop_stage.py`` and
the row in ``noop_app``, run by a real worker process on real Redis that consumes only the
row's queue. Covers: the row routes the task, sets the running status, holds the lease, puts the
module's ``record_changes`` and the timing on the record; a newer event supersedes it; a close
stops it (close wins); a busy lease makes it wait, then it runs; its soft time limit becomes a
user error naming the row's setting; a user error fails the run at once, never retried, and
sends the reporting stage; a platform error is retried ``queues.max_retries`` times, then the
run fails with its own message.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from k8see import coordination, pipeline, state
from k8see.app import create_app
from k8see.run import Action, Run, Status
from k8see.settings import PlatformSettings, load_settings
from tests.conftest import RedisServer, celery_worker

pytestmark = pytest.mark.timeout(240)
REPO = "acme/noop"
MAX_RETRIES = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    workdir = tmp_path_factory.mktemp("redis")
    found = RedisServer(workdir)
    found.start()
    yield found
    found.stop()


@pytest.fixture(scope="module")
def worker(server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    workdir = tmp_path_factory.mktemp("noop")
    log = workdir / "worker.log"
    env = {
        **os.environ,
        "K8SEE_REDIS__URL": server.url,
        "K8SEE_BUILD__WORKDIR": str(workdir),
        "K8SEE_QUEUES__MAX_RETRIES": str(MAX_RETRIES),
        "K8SEE_QUEUES__RETRY_BACKOFF_SECONDS": "0.2",
        "K8SEE_QUEUES__LEASE_RETRY_SECONDS": "0.5",
    }
    with celery_worker("tests.worker.noop_app", queues="noop", concurrency=1, env=env, log=log):
        yield log


@pytest.fixture
def client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, decode_responses=True)


@pytest.fixture
def settings(server: RedisServer) -> PlatformSettings:
    return load_settings(redis={"url": server.url})


def send(client: redis.Redis, settings: PlatformSettings, pr: int, **plan: Any) -> Run:
    """A queued run of PR ``pr`` sent to the noop stage by its task name, as a chain would."""
    generation = coordination.next_generation(client, repo=REPO, pr=pr)
    run = Run(repo=REPO, pr=pr, sha="c" * 40, generation=generation, action=Action.DEPLOY)
    run = run.with_result("plan", plan)
    state.set_status(client, repo=REPO, pr=pr, generation=generation, status=Status.QUEUED,
                     ttl_seconds=3600, run_id=run.run_id)  # fmt: skip
    # The sender knows the stage only as a name: its queue comes from the row (noop_app).
    sender = create_app(settings, name="noop-sender", sender_only=True)
    # The limits a chain's signature carries (k8see.pipeline), from the row's time_limit of 2.
    sender.send_task("k8see.noop", args=[run.to_dict()], queue="noop", soft_time_limit=2,
                     time_limit=2 + pipeline.HARD_LIMIT_GRACE_SECONDS)  # fmt: skip
    return run


def wait_for(check: Callable[[], Any], log: Path, seconds: float = 90) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not reached in {seconds:.0f}s; worker log:\n{log.read_text()[-4000:]}")


def record(client: redis.Redis, pr: int) -> dict[str, Any]:
    return state.get(client, repo=REPO, pr=pr) or {}


def stats(client: redis.Redis) -> dict[str, int]:
    return state.stats(client)


def reporter_messages(client: redis.Redis) -> list[str]:
    """Task names of the messages waiting on the default queue (where the comment runs)."""
    return [json.loads(raw)["headers"]["task"] for raw in client.lrange("default", 0, -1)]


def test_the_row_and_the_module_make_a_stage(
    client: redis.Redis, settings: PlatformSettings, worker: Path
) -> None:
    send(client, settings, 1)
    found = wait_for(lambda: record(client, 1).get("noop_saw") and record(client, 1), worker)
    # The row set the running status before the module ran, and the module's changes landed
    assert found["noop_saw"] == Status.DEPLOYING.value
    assert found["stage"] == "noop" and "noop" in found["timings"]
    counts = stats(client)
    assert counts["stage_started:noop"] == counts["stage_finished:noop"] == 1
    # and the lease it held is free again
    assert coordination.lease_holder(client, repo=REPO, pr=1) is None


def test_a_newer_event_supersedes_it(
    client: redis.Redis, settings: PlatformSettings, worker: Path
) -> None:
    coordination.next_generation(client, repo=REPO, pr=2)  # the older run's generation
    run = Run(repo=REPO, pr=2, sha="d" * 40, generation=1, action=Action.DEPLOY)
    sender = create_app(settings, name="noop-sender", sender_only=True)
    coordination.next_generation(client, repo=REPO, pr=2)  # a newer event arrived
    sender.send_task("k8see.noop", args=[run.to_dict()], queue="noop")
    wait_for(lambda: stats(client).get("stopped:superseded:noop"), worker)
    assert "stage_started:noop" not in stats(client) or record(client, 2).get("noop_saw") is None


def test_a_close_stops_it(client: redis.Redis, settings: PlatformSettings, worker: Path) -> None:
    coordination.mark_closed(client, repo=REPO, pr=3)
    send(client, settings, 3)
    wait_for(lambda: stats(client).get("stopped:closed:noop"), worker)
    assert record(client, 3).get("noop_saw") is None


def test_a_busy_lease_makes_it_wait_then_run(
    client: redis.Redis, settings: PlatformSettings, worker: Path
) -> None:
    lease = coordination.acquire_lease(client, repo=REPO, pr=4, owner="other:deploy",
                                       ttl_seconds=60)  # fmt: skip
    assert lease is not None
    send(client, settings, 4)
    wait_for(lambda: stats(client).get("lease_waited:noop", 0) >= 2, worker)
    assert record(client, 4).get("status") == "queued"
    lease.release()
    wait_for(lambda: record(client, 4).get("noop_saw"), worker)
    assert "retried:noop" not in stats(client)  # waiting used up no retry


def test_its_time_limit_is_a_user_error_naming_its_setting(
    client: redis.Redis, settings: PlatformSettings, worker: Path
) -> None:
    send(client, settings, 5, sleep=6)
    found = wait_for(lambda: record(client, 5).get("status") == "failed" and record(client, 5),
                     worker)  # fmt: skip
    error = found["error"]
    assert error["stage"] == "noop"
    assert "did not finish within its time limit of 2 seconds" in error["message"]
    assert "K8SEE_NOOP_SECONDS" in error["hint"]


def test_a_user_error_fails_at_once_and_is_reported(
    client: redis.Redis, settings: PlatformSettings, worker: Path
) -> None:
    client.delete("default")
    send(client, settings, 6, refuse=True)
    found = wait_for(lambda: record(client, 6).get("status") == "failed" and record(client, 6),
                     worker)  # fmt: skip
    assert found["error"]["message"] == "The noop stage refuses this run."
    assert found["error"]["hint"] == "Ask it nicely."
    assert stats(client).get("retried:noop") is None
    # The reporting stage of the table was sent to tell the PR
    assert wait_for(lambda: "k8see.comment" in reporter_messages(client), worker)


def test_a_platform_error_is_retried_max_retries_times_then_fails_with_its_message(
    client: redis.Redis, settings: PlatformSettings, worker: Path
) -> None:
    before = stats(client).get("retried:noop", 0)
    send(client, settings, 7, fail=True)
    found = wait_for(lambda: record(client, 7).get("status") == "failed" and record(client, 7),
                     worker)  # fmt: skip
    assert stats(client).get("retried:noop", 0) - before == MAX_RETRIES
    assert found["error"]["message"] == "The noop stage's platform is down."
    assert found["error"]["hint"].startswith("Wait for it.")
