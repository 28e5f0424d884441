"""Drill: Redis stops answering (SIGSTOP) for 40 s while a stage's subprocess runs.

Covers: a real redis-server is SIGSTOPped for longer than the workers' socket timeout (2 s
here) while a real Celery worker process runs a stage (``tests/drills/stall_app.py``: the real
``StageTask`` around a real subprocess) and is SIGCONTed 40 s later. The newer-event probe and
the log recorder meet timeouts mid-tool, and the stage finishes during the stall, so its
result must wait for Redis. Asserted end state: the run reaches ``ready``, the tool ran once
and to its end (never killed), the stage started once and was not retried, and its message
was acknowledged (nothing left queued or unacknowledged).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from k8see import coordination, state
from k8see.app import create_app
from k8see.run import Action, Run, Status
from k8see.settings import load_settings
from tests.conftest import RedisServer, celery_worker
from tests.drills.stall_app import marks_dir

pytestmark = pytest.mark.timeout(400)
STALL_SECONDS = 40
SOCKET_TIMEOUT_SECONDS = 2
REPO, PR = "acme/stall", 3


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    found = RedisServer(tmp_path / "redis")
    found.start()
    yield found
    if found.proc is not None:
        os.kill(found.proc.pid, signal.SIGCONT)
    found.stop()


@pytest.fixture
def worker(server: RedisServer, tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "K8SEE_REDIS__URL": server.url,
        "K8SEE_REDIS__SOCKET_TIMEOUT_SECONDS": str(SOCKET_TIMEOUT_SECONDS),
        "K8SEE_BUILD__WORKDIR": str(tmp_path / "work"),
    }
    with celery_worker("tests.drills.stall_app", queues="default", concurrency=1, env=env, log=log):
        yield log


def _wait_for(check: Callable[[], Any], log: Path, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out; worker log:\n{log.read_text()[-6000:]}")


def test_a_stage_survives_redis_stopped_longer_than_its_socket_timeout(
    server: RedisServer, worker: Path, tmp_path: Path
) -> None:
    assert server.proc is not None
    client = redis.Redis.from_url(server.url, socket_timeout=60)
    settings = load_settings(redis={"url": server.url})
    # Given a run admitted for the PR, and its stage running a tool
    generation = coordination.next_generation(client, repo=REPO, pr=PR)
    run = Run(repo=REPO, pr=PR, sha="a" * 40, generation=generation, action=Action.DEPLOY)
    state.set_status(client, repo=REPO, pr=PR, generation=generation, status=Status.QUEUED,
                     ttl_seconds=3600, run_id=run.run_id)  # fmt: skip
    sender = create_app(settings, name="drill-sender")
    sender.send_task("k8see.drill_deploy", args=[run.to_dict()], task_id=f"{run.run_id}-deploy")
    log_key = state.log_key(run.run_id)
    _wait_for(lambda: client.llen(log_key) >= 2, worker, timeout=120)

    # When Redis stops answering for 40 s, mid-tool, and then comes back
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(STALL_SECONDS)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)

    # Then the run reaches a terminal status: ready
    terminal = {"ready", "failed", "superseded", "skipped"}
    record = _wait_for(
        lambda: (r := state.get(client, repo=REPO, pr=PR)) and r["status"] in terminal and r,
        worker,
        timeout=240,
    )
    assert record["status"] == "ready", (record, worker.read_text()[-6000:])
    # And the tool ran once, to its end: the stall neither killed it nor ran it twice
    marks = marks_dir(str(tmp_path / "work"))
    assert (marks / "starts").read_text().split() == [run.run_id]
    assert (marks / "finished").read_text().split() == ["done"]
    stats = state.stats(client)
    assert stats.get("stage_started:deploy") == 1 and "retried:deploy" not in stats, stats
    # And the stage's message was acknowledged, not left for redelivery
    _wait_for(lambda: client.hlen("unacked") == 0 and client.llen("default") == 0, worker, 60)
    assert "Redis did not answer" in worker.read_text()
