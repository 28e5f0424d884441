"""Two deliveries of one stage of one run at once run it once.

Covers: the same stage message delivered twice while the first delivery still runs (what
kombu does when a worker's broker connection drops mid-stage: it hands the unacknowledged
message back to the queue while the stage goes on; found by tests/drills/test_redis_killed.py,
where two builds of one run pushed the same tag). Through a real worker process with two pool
processes and the real ``StageTask`` (``tests/drills/stall_app.py``, a 12 s tool): the tool
runs once, the stage finishes once, the second delivery waits for the first and then ends
(``duplicate_delivery:deploy``), and the run is ready.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from k8see import coordination, state
from k8see.app import create_app
from k8see.run import Action, Run, Status
from k8see.settings import load_settings
from tests.conftest import RedisServer, celery_worker
from tests.drills.stall_app import marks_dir

pytestmark = pytest.mark.timeout(300)
REPO, PR = "acme/twice", 5


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    found = RedisServer(tmp_path / "redis")
    found.start()
    yield found
    found.stop()


@pytest.fixture
def worker(server: RedisServer, tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "worker.log"
    env = {**os.environ, "K8SEE_REDIS__URL": server.url, "K8SEE_BUILD__WORKDIR": str(tmp_path)}
    with celery_worker("tests.drills.stall_app", queues="default", concurrency=2, env=env, log=log):
        yield log


def test_a_stage_delivered_twice_at_once_runs_once(
    server: RedisServer, worker: Path, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(server.url)
    settings = load_settings(redis={"url": server.url})
    generation = coordination.next_generation(client, repo=REPO, pr=PR)
    run = Run(repo=REPO, pr=PR, sha="b" * 40, generation=generation, action=Action.DEPLOY)
    state.set_status(client, repo=REPO, pr=PR, generation=generation, status=Status.QUEUED,
                     ttl_seconds=3600, run_id=run.run_id)  # fmt: skip
    sender = create_app(settings, name="twice-sender")
    # When the same stage message is delivered twice, the second while the first runs
    for _ in range(2):
        sender.send_task("k8see.drill_deploy", args=[run.to_dict()], task_id=f"{run.run_id}-deploy")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        stats = state.stats(client)
        ended = stats.get("duplicate_delivery:deploy") or stats.get("delivered_after_end:deploy")
        if ended or stats.get("stage_finished:deploy", 0) > 1:
            break
        time.sleep(0.5)
    time.sleep(1)
    # Then the tool ran once, the stage finished once, and the second delivery ended
    stats = state.stats(client)
    marks = marks_dir(str(tmp_path))
    log = worker.read_text()[-6000:]
    assert (marks / "starts").read_text().split() == [run.run_id], log
    assert stats.get("stage_finished:deploy") == 1, (stats, log)
    # (the second delivery ends itself either when it sees the first's claim released, or,
    # if the run's record is already terminal by then, as a delivery after the run's end)
    ended = stats.get("duplicate_delivery:deploy", 0) + stats.get("delivered_after_end:deploy", 0)
    assert ended == 1, (stats, log)
    assert (state.get(client, repo=REPO, pr=PR) or {}).get("status") == "ready"
