"""A stage message delivered again after its run ended is acknowledged, not run again.

Covers: through a real Celery worker process (``tests/drills/ha_app.py``: the real
``StageTask`` with quick stage bodies) and a real Redis, a run enqueued by the real client ends
``ready`` and commented; then its build message is delivered again with the same task id, as
the broker does after the visibility timeout when the first acknowledgement was lost (a
worker SIGKILLed after the stage, a Sentinel failover that dropped the ack: both seen in the
soak). The build does not run again, nor do scan, deploy and comment after it; the record
stays ``ready`` for that run; the redelivery is counted. A redelivered ``comment`` of an ended
run still runs (it comes after the terminal status by design, and is idempotent).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from k8see import state
from k8see.app import create_app
from k8see.client import enqueue
from k8see.events import decide_from_flags
from k8see.settings import load_settings
from tests.conftest import ROOT, celery_worker

REPO, PR, SHA = "acme/ha", 4, "b" * 40
pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def worker(redis_url: str, tmp_path: Path) -> Iterator[Path]:
    env = {**os.environ, "K8SEE_REDIS__URL": redis_url, "HA_BUILD_SECONDS": "1",
           "K8SEE_BUILD__WORKDIR": str(tmp_path / "work"),
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}  # fmt: skip
    log = tmp_path / "worker.log"
    with celery_worker(
        "tests.drills.ha_app", queues="default,build,deploy", concurrency=2, env=env, log=log
    ):
        yield tmp_path


def _runs(workdir: Path) -> Counter[str]:
    path = workdir / "work" / "ha" / "finished"
    return Counter(line.split(" ", 1)[1] for line in path.read_text().splitlines() if line)


def _wait(check: object, workdir: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError((workdir / "worker.log").read_text()[-4000:])


def test_a_build_delivered_again_after_the_run_ended_is_not_run(
    redis_url: str, worker: Path
) -> None:
    settings = load_settings(redis={"url": redis_url})
    client = redis.Redis.from_url(redis_url)
    decision = decide_from_flags(
        repo=REPO, pr=PR, action="opened", sha=SHA, ref="feature", trigger="automatic"
    )
    # Given a run that ended ready, commented
    run = enqueue(decision, settings=settings, trigger="pull_request:opened", client=client).run
    _wait(lambda: (state.get(client, repo=REPO, pr=PR) or {}).get("commented") == "ready", worker)
    assert _runs(worker) == dict.fromkeys(("validate", "build", "scan", "deploy", "comment"), 1)
    # When its build message is delivered again (same task id, the run as build received it)
    sender = create_app(settings, name="redeliver")
    sender.send_task("k8see.build", args=[run.to_dict()], task_id=f"{run.run_id}-build",
                     queue="build")  # fmt: skip
    key = "delivered_after_end:build"
    _wait(lambda: state.stats(client).get(key) == 1, worker)
    time.sleep(2)  # (anything it would have chained has had time to run)
    # Then nothing ran again, and the record still shows the run ready
    assert _runs(worker) == dict.fromkeys(("validate", "build", "scan", "deploy", "comment"), 1)
    record = state.get(client, repo=REPO, pr=PR) or {}
    assert (record["run_id"], record["status"]) == (run.run_id, "ready")
    assert client.llen("build") == 0 and client.hlen("unacked") == 0
    # And a comment delivered again still runs: it comes after the terminal status
    sender.send_task("k8see.comment", args=[run.to_dict()], task_id=f"{run.run_id}-comment",
                     queue="default")  # fmt: skip
    _wait(lambda: _runs(worker)["comment"] == 2, worker)
