"""Drill: the Redis master is SIGKILLed mid-run and Sentinel promotes the replica.

Covers: a real Sentinel group (master, one replica, three Sentinels with quorum 2), real
worker processes for every pool and a real beat (``tests/drills/ha_app.py``: the real
``StageTask`` and watchdog, with a build that runs a subprocess for 8 s), all reaching Redis
through the Sentinels. 12 PR events are accepted by the real ``k8see enqueue`` (which waits
for the replica's ``WAIT`` acknowledgement); while builds run, the master is SIGKILLed (no
clean shutdown), and 6 more events are sent during and after the failover, each retried on
exit 3 the way a re-run workflow step would be; 5 s after the failover the killed node starts
again (as its pod would) and the Sentinels make it the new master's replica. Asserted end
state: the Sentinels promoted the replica; every accepted event reaches a terminal status
with its real reason (``ready`` here: nothing made them fail) and its comment; no event was
deployed or commented twice; nothing is left queued, unacknowledged (for a run that has not
ended), leased or in the outbox. Stage bodies run again (a run the watchdog re-drove after
the failover dropped its next message) are counted in the figures.
"""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.drills.common import record_figures
from tests.drills.ha_platform import HaPlatform, ha_platform

pytestmark = pytest.mark.timeout(1200)
#: A pool that dies with a message in hand leaves it unacknowledged until the visibility
#: timeout (build.timeout_seconds + 300 s): 6 minutes here instead of 20.
EXTRA_ENV = {"K8SEE_BUILD__TIMEOUT_SECONDS": "60"}
BEFORE, DURING = 12, 6


def test_runs_in_flight_survive_a_sentinel_failover(tmp_path: Path) -> None:
    # (8 s builds, two at a time: the 12 runs keep the build pool busy for about 50 s)
    with ha_platform(tmp_path, build_seconds=8, extra_env=EXTRA_ENV) as ha:
        _drill(ha)


def _drill(ha: HaPlatform) -> None:
    # Given 12 events accepted (each confirmed by the replica), builds under way
    with ThreadPoolExecutor(max_workers=6) as senders:
        list(senders.map(ha.send, range(1, BEFORE + 1)))
    ha.wait_until(lambda: _building(ha), timeout=300, what="a build under way")
    old_master = ha.group.master_port()

    # When the master is SIGKILLed and more events arrive during the failover
    late: list[Exception] = []

    def send_late() -> None:
        try:
            for pr in range(BEFORE + 1, BEFORE + DURING + 1):
                ha.send(pr)
        except (AssertionError, OSError, subprocess.SubprocessError) as exc:  # asserted below
            late.append(exc)

    sender = threading.Thread(target=send_late)
    killed_at = time.monotonic()
    killed = ha.group.kill_master()
    sender.start()
    failover = ha.group.wait_for_failover()
    # (the killed node comes back, as its pod would, and becomes the new master's replica:
    # until then no replica can confirm an event, and enqueues exit 3 and are retried)
    time.sleep(5)
    rejoined = ha.group.rejoin(killed)
    sender.join(timeout=240)
    assert not sender.is_alive() and not late, late

    # Then the replica is the master, and every accepted event ends, commented
    assert ha.group.master_port() != old_master
    drained = ha.wait_until(ha.settled, timeout=720, what="every accepted event terminal")
    records = ha.records()
    statuses = {pr: r.get("status") for pr, r in records.items()}
    assert set(statuses.values()) == {"ready"}, (statuses, ha.workdir)
    assert len(ha.accepted) == BEFORE + DURING
    # And no event ran twice: each deployed and commented once
    runs = ha.stage_runs()
    for run_id in ha.accepted.values():
        assert runs[(run_id, "deploy")] == runs[(run_id, "comment")] == 1, (run_id, runs)
    # (a stage whose next message the failover dropped is re-driven from validate)
    twice = {key: n for key, n in runs.items() if n > 1}
    # And nothing is left behind: queues, unacknowledged messages, leases, the outbox
    clean = {"queued": 0, "unacked": 0, "leases": 0, "outbox": 0}
    ha.wait_until(lambda: ha.leftovers() == clean, timeout=60, what="no leftovers")
    record_figures(
        "sentinel_failover",
        {
            "accepted": len(ha.accepted),
            "refused_then_retried": ha.refused,
            "terminal": sum(1 for s in statuses.values() if s == "ready"),
            "duplicated": 0,
            "stage_reruns": sum(n - 1 for n in twice.values()),
            "acks_lost": ha.acks_lost(),
            "failover_seconds": round(failover, 1),
            "replica_back_seconds": round(rejoined, 1),
            "drain_after_kill_seconds": round(time.monotonic() - killed_at, 1),
            "settle_seconds": round(drained, 1),
            "process_exits": ha.exits,
        },
    )


def _building(ha: HaPlatform) -> bool:
    return any(r.get("status") == "building" for r in ha.records().values())
