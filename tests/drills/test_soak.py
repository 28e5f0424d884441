"""Soak: a steady stream of PR events with random pool kills and one Redis failover.

Covers: the highly available platform of the Sentinel drill (``tests/drills/ha_platform.py``:
a Sentinel group with one replica, real worker processes for every pool, beat and the real
watchdog, ``k8see enqueue`` with ``min_replica_acks`` 1) takes ``EVENTS`` PR events spread
evenly over ``SECONDS``. Meanwhile a random pool's process group is SIGKILLed (and started
again) at random moments, on average every ``KILL_EVERY_SECONDS``, and once, a third of the
way in, the Redis master is SIGKILLed, Sentinel fails over, and the killed node rejoins as
the replica. Counted: events accepted (exit 0; exit 3 is retried like a re-run workflow
step), terminal states reached, events with a stage run twice, leftovers (queued or
unacknowledged messages of runs not ended, leases, outbox entries, non-terminal records),
and, apart, stage bodies that ran again (a pool SIGKILLed after a stage's work but before it
was reported redoes that stage on redelivery; a re-driven run starts again at validate).
Asserted: 0 lost, 0 stuck, 0 duplicated (no event's chain ran to its end twice), 0 leftovers.

``make test`` runs a short version (40 events over 60 s, kills every 20 s); ``make soak``
runs the issue's: 300 events over 10 minutes (``K8SEE_SOAK_EVENTS``, ``K8SEE_SOAK_SECONDS``,
``K8SEE_SOAK_KILL_EVERY_SECONDS``). The figures go to ``bench/drills.json`` under ``soak``;
docs/benchmarks.md has the last full run.

A pool killed as a whole leaves its messages unacknowledged until the broker's visibility
timeout (``build.timeout_seconds`` + 300 s) hands them out again; the soak sets a 60 s build
limit so that happens within the run (360 s) instead of after 20 minutes.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.drills.common import record_figures
from tests.drills.ha_platform import POOLS, TERMINAL, HaPlatform, ha_platform

EVENTS = int(os.environ.get("K8SEE_SOAK_EVENTS", "40"))
SECONDS = float(os.environ.get("K8SEE_SOAK_SECONDS", "60"))
KILL_EVERY_SECONDS = float(os.environ.get("K8SEE_SOAK_KILL_EVERY_SECONDS", "20"))
#: After the last event: the visibility timeout (360 s) plus the drain.
SETTLE_SECONDS = 900
pytestmark = pytest.mark.timeout(int(SECONDS + SETTLE_SECONDS + 600))
SOAK_ENV = {"K8SEE_BUILD__TIMEOUT_SECONDS": "60"}


def test_a_soak_loses_nothing_leaves_nothing_stuck_and_runs_nothing_twice(
    tmp_path: Path,
) -> None:
    rng = random.Random(int(os.environ.get("K8SEE_SOAK_SEED", "16")))
    with ha_platform(tmp_path, extra_env=SOAK_ENV) as ha:
        started = time.monotonic()
        stop = threading.Event()
        chaos_log: list[str] = []
        chaos = threading.Thread(target=_chaos, args=(ha, rng, stop, chaos_log, started))
        chaos.start()
        try:
            # Given a steady stream of events, one every SECONDS / EVENTS (each enqueue is a
            # process of its own, as each workflow step is; several may be at work at once)
            with ThreadPoolExecutor(max_workers=8) as senders:
                sends = []
                for index in range(EVENTS):
                    due = started + index * SECONDS / EVENTS
                    time.sleep(max(0.0, due - time.monotonic()))
                    sends.append(senders.submit(ha.send, index + 1, deadline_seconds=300))
                for send in sends:
                    send.result()
        finally:
            stop.set()
            chaos.join(timeout=120)
        sent_seconds = time.monotonic() - started
        # Then every accepted event reaches a terminal state, commented
        try:
            ha.wait_until(ha.settled, timeout=SETTLE_SECONDS, what="every event terminal")
        except AssertionError:
            stuck = {pr: r.get("status") for pr, r in ha.records().items()
                     if r.get("status") not in TERMINAL}  # fmt: skip
            raise AssertionError(f"stuck: {stuck}; chaos: {chaos_log}") from None
        total = time.monotonic() - started
        records = ha.records()
        statuses = [r.get("status") for r in records.values()]
        runs = ha.stage_runs()
        # An event ran twice if its chain reached its end (the comment) twice. A stage body
        # that ran again because its pool was killed after the work but before reporting it,
        # or because the watchdog re-drove a run whose message was lost, is counted apart.
        twice = {run_id for run_id in ha.accepted.values() if runs[(run_id, "comment")] > 1}
        duplicated = len(twice)
        reruns = {key: n for key, n in runs.items() if n > 1}
        leftovers = ha.leftovers()
        figures = {
            "events": EVENTS,
            "seconds": SECONDS,
            "accepted": len(ha.accepted),
            "refused_then_retried": ha.refused,
            "terminal": sum(1 for s in statuses if s in TERMINAL),
            "ready": statuses.count("ready"),
            "lost": EVENTS - len(ha.accepted),
            "stuck": sum(1 for s in statuses if s not in TERMINAL),
            "duplicated": duplicated,
            "stage_reruns": sum(n - 1 for n in reruns.values()),
            "stage_reruns_by_stage": dict(sorted(Counter(k[1] for k in reruns).items())),
            "acks_lost": ha.acks_lost(),
            "leftovers": sum(leftovers.values()),
            "pool_kills": ha.pool_kills,
            "failovers": sum(1 for line in chaos_log if line.startswith("failover")),
            "redriven": _stat(ha, "redriven"),
            "send_seconds": round(sent_seconds, 1),
            "total_seconds": round(total, 1),
            "process_exits": ha.exits,
            "chaos": chaos_log,
        }
        record_figures("soak", figures)
        assert figures["lost"] == 0 and figures["stuck"] == 0, figures
        assert set(statuses) == {"ready"}, figures
        assert duplicated == 0, (figures, sorted(twice)[:5])
        assert leftovers == {"queued": 0, "unacked": 0, "leases": 0, "outbox": 0}, figures
        assert figures["failovers"] == 1 and ha.pool_kills >= 1, figures


def _chaos(
    ha: HaPlatform,
    rng: random.Random,
    stop: threading.Event,
    log: list[str],
    started: float,
) -> None:
    """Random pool kills until ``stop``; one failover a third of the way in."""
    try:
        _chaos_loop(ha, rng, stop, log, started)
    except (TimeoutError, AssertionError, OSError) as exc:  # reported by the soak's asserts
        log.append(f"chaos stopped: {exc!r}")


def _chaos_loop(
    ha: HaPlatform,
    rng: random.Random,
    stop: threading.Event,
    log: list[str],
    started: float,
) -> None:
    failover_at = started + SECONDS / 3
    failed_over = False
    while not stop.is_set():
        now = time.monotonic()
        if not failed_over and now >= failover_at:
            killed = ha.group.kill_master()
            took = ha.group.wait_for_failover()
            time.sleep(5)  # the pod's restart
            back = ha.group.rejoin(killed)
            log.append(f"failover at {now - started:.0f}s: {took:.1f}s, replica back {back:.1f}s")
            failed_over = True
            continue
        if stop.wait(rng.expovariate(1 / KILL_EVERY_SECONDS)):
            break
        pool = rng.choice(sorted(POOLS))
        ha.kill_pool(pool)
        log.append(f"kill {pool} at {time.monotonic() - started:.0f}s")


def _stat(ha: HaPlatform, name: str) -> int:
    from k8see import state

    client = ha.client()
    try:
        return int(state.stats(client).get(name, 0))
    finally:
        client.close()
