"""The highly available platform of the Sentinel drill and the soak, on loopback.

A real Sentinel group (``tests.fixtures.sentinel``: master, replica, three Sentinels), real
Celery worker processes for the default, build, deploy and maintenance pools and a real beat
(``tests.drills.ha_app``: k8see's framework with quick stage bodies), all pointed at the
Sentinels, and events sent through the real ``k8see enqueue`` console command with
``min_replica_acks`` 1. ``HaPlatform`` offers what a drill does to it (SIGKILL a pool's
main process, fail the master over) and counts what it finds (accepted events, terminal
records, stages run twice, leftovers).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from k8see import state
from k8see.redis_connect import connect
from k8see.settings import load_settings
from tests.conftest import ROOT, require_tool
from tests.fixtures.sentinel import SentinelGroup

REPO = "acme/ha"
POOLS = {"default": 2, "build": 2, "deploy": 2, "maintenance": 1}
TERMINAL = {"ready", "failed", "superseded", "skipped", "destroyed"}
#: The watchdog looks every 5 s and re-drives a run missing from the queues for 15 s: the
#: production values (120 s each) would make a drill wait minutes for what it checks.
ENV = {
    "K8SEE_REDIS__MIN_REPLICA_ACKS": "1",
    "K8SEE_REDIS__REPLICA_ACK_TIMEOUT_SECONDS": "2",
    "K8SEE_REDIS__SOCKET_TIMEOUT_SECONDS": "2",
    "K8SEE_REDIS__STALL_TOLERANCE_SECONDS": "60",
    "K8SEE_CLEANUP__INTERVAL_SECONDS": "0",
    "K8SEE_CLEANUP__EXPIRY_INTERVAL_SECONDS": "0",
    "K8SEE_REGISTRY__PULL_SECRET_REFRESH_SECONDS": "0",
    "K8SEE_CLEANUP__WATCHDOG_INTERVAL_SECONDS": "5",
    "K8SEE_CLEANUP__WATCHDOG_GRACE_SECONDS": "15",
    "K8SEE_CLEANUP__WATCHDOG_MAX_REDRIVES": "3",
    "K8SEE_QUEUES__OUTBOX_GRACE_SECONDS": "10",
    "K8SEE_QUEUES__RETRY_BACKOFF_SECONDS": "0.2",
    "K8SEE_METRICS__ENABLED": "false",
}


@dataclass
class HaPlatform:
    workdir: Path
    group: SentinelGroup
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    accepted: dict[int, str] = field(default_factory=dict)
    build_seconds: int = 3
    extra_env: dict[str, str] = field(default_factory=dict)
    #: ``send`` may run in several threads at once (the soak); ``supervise`` runs in one.
    lock: threading.RLock = field(default_factory=threading.RLock)
    exits: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    refused: int = 0
    pool_kills: int = 0

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.group.env(),
            **ENV,
            "K8SEE_BUILD__WORKDIR": str(self.workdir / "work"),
            "HA_BUILD_SECONDS": str(self.build_seconds),
            **self.extra_env,
            "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        }

    def client(self) -> redis.Redis:
        settings = load_settings(redis={"url": self.group.url, "sentinels": self.group.sentinels})
        return connect(settings.redis, socket_timeout=5, socket_connect_timeout=5)

    # --- processes ---------------------------------------------------------------------
    def start_pool(self, pool: str) -> None:
        argv = [sys.executable, "-m", "celery", "-A", "tests.drills.ha_app", "worker", "-Q", pool,
                "-c", str(POOLS[pool]), "-n", f"{pool}@%h", "--loglevel", "INFO"]  # fmt: skip
        self._spawn(f"worker-{pool}", argv)

    def start_beat(self) -> None:
        schedule = self.workdir / "beat-schedule"
        argv = [sys.executable, "-m", "celery", "-A", "tests.drills.ha_app", "beat",
                "-s", str(schedule), "--loglevel", "INFO"]  # fmt: skip
        self._spawn("beat", argv)

    def _spawn(self, name: str, argv: list[str]) -> None:
        with (self.workdir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                argv, env=self.env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def kill_pool(self, pool: str) -> None:
        """SIGKILL the pool's process group (the main process and its children at once, as
        when a container is killed), then start the pool again, as Kubernetes would."""
        with self.lock:
            proc = self.procs.pop(f"worker-{pool}")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            self.pool_kills += 1
            self.start_pool(pool)

    def supervise(self, stop: threading.Event) -> None:
        """Start again every pool or beat that exited on its own, as Kubernetes (restart
        policy Always) and Compose (``restart: unless-stopped``) do; each exit is noted in
        ``exits``. A Celery worker exits when its consumer meets an unrecoverable error,
        such as kombu's Sentinel channel failing to restore its unacknowledged messages
        after the master died (docs/benchmarks.md)."""
        while not stop.wait(1.0):
            with self.lock:
                for name, proc in list(self.procs.items()):
                    if proc.poll() is None:
                        continue
                    self.exits.append(f"{name} exited with {proc.returncode}")
                    del self.procs[name]
                    if name == "beat":
                        self.start_beat()
                    else:
                        self.start_pool(name.removeprefix("worker-"))

    def stop(self) -> None:
        self.stopping.set()
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    # --- events --------------------------------------------------------------------------
    def enqueue(self, pr: int, sha: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "k8see", "enqueue", "--repo", REPO, "--pr", str(pr),
                "--action", "opened", "--sha", sha, "--ref", "feature"]  # fmt: skip
        return subprocess.run(argv, env=self.env(), cwd=ROOT, capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    def send(self, pr: int, *, sha: str = "", deadline_seconds: float = 180.0) -> str:
        """Enqueue PR ``pr``'s event until it is accepted (exit 0), as a workflow step that is
        re-run after a failure would; exit 3 (Redis unreachable or unconfirmed) is retried."""
        sha = sha or f"{pr:040x}"
        deadline = time.monotonic() + deadline_seconds
        while True:
            done = self.enqueue(pr, sha)
            if done.returncode == 0:
                run_id = done.stdout.strip().splitlines()[-1]
                with self.lock:
                    self.accepted[pr] = run_id
                return run_id
            assert done.returncode == 3, done.stdout + done.stderr
            assert "Traceback" not in done.stderr, done.stderr
            with self.lock:
                self.refused += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"PR {pr} never accepted: {done.stderr}")
            time.sleep(0.5 + random.random())

    # --- counting --------------------------------------------------------------------------
    def records(self) -> dict[int, dict[str, Any]]:
        client = self.client()
        try:
            return {pr: state.get(client, repo=REPO, pr=pr) or {} for pr in self.accepted}
        finally:
            client.close()

    def settled(self) -> bool:
        try:
            records = self.records()
        except redis.exceptions.ConnectionError:
            return False
        return all(
            r.get("run_id") == self.accepted[pr]
            and r.get("status") in TERMINAL
            and r.get("commented") == r.get("status")
            for pr, r in records.items()
        )

    def stage_runs(self) -> Counter[tuple[str, str]]:
        """How often each (run id, stage) body ran to its end."""
        path = self.workdir / "work" / "ha" / "finished"  # ha_app.finished_file
        lines = path.read_text().split("\n") if path.exists() else []
        return Counter(tuple(line.split(" ", 1)) for line in lines if line)  # type: ignore[misc]

    def leftovers(self) -> dict[str, int]:
        """Messages still queued, or unacknowledged for a run that has not ended, leases still
        held, outbox entries.

        An unacknowledged message of a run that ended is not a leftover: its acknowledgement
        was lost (a pool killed after the stage, a failover that dropped the ack), and when
        the broker hands it out again after the visibility timeout the stage acknowledges it
        without running (``StageTask``: delivered after the end). ``acks_lost`` counts them.
        """
        client = self.client()
        try:
            queued = sum(int(client.llen(q)) for q in ("default", "build", "deploy"))
            open_unacked = 0
            ended = {
                r.get("run_id") for r in self.records().values() if r.get("status") in TERMINAL
            }
            for raw in client.hvals("unacked"):
                message = json.loads(raw)[0]
                task_id = str((message.get("headers") or {}).get("id") or "")
                run_id = task_id.rsplit("-", 1)[0]
                # (the watchdog's own messages are no run's: beat sends one every 5 s)
                if run_id in self.accepted.values() and run_id not in ended:
                    open_unacked += 1
            return {
                "queued": queued,
                "unacked": open_unacked,
                "leases": len(list(client.scan_iter("k8see:pr:*:lease"))),
                "outbox": int(client.zcard("k8see:outbox")),
            }
        finally:
            client.close()

    def acks_lost(self) -> int:
        """Unacknowledged messages of runs that ended (see ``leftovers``)."""
        client = self.client()
        try:
            ended = {
                r.get("run_id") for r in self.records().values() if r.get("status") in TERMINAL
            }
            found = 0
            for raw in client.hvals("unacked"):
                task_id = str((json.loads(raw)[0].get("headers") or {}).get("id") or "")
                found += task_id.rsplit("-", 1)[0] in ended
            return found
        finally:
            client.close()

    def wait_until(self, check: Any, timeout: float, what: str) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if check():
                return time.monotonic() - started
            time.sleep(0.5)
        raise AssertionError(f"{what} not reached in {timeout}s; logs in {self.workdir}")


@contextmanager
def ha_platform(
    workdir: Path, *, build_seconds: int = 3, extra_env: dict[str, str] | None = None
) -> Iterator[HaPlatform]:
    """A started Sentinel group, every pool and beat; all of it stops afterwards."""
    group = SentinelGroup(
        workdir / "sentinel",
        redis_server=require_tool("redis-server"),
        redis_sentinel=require_tool("redis-sentinel"),
    )
    platform = HaPlatform(
        workdir=workdir, group=group, build_seconds=build_seconds, extra_env=extra_env or {}
    )
    supervisor: threading.Thread | None = None
    try:
        group.start()
        for pool in POOLS:
            platform.start_pool(pool)
        platform.start_beat()
        supervisor = threading.Thread(target=platform.supervise, args=(platform.stopping,))
        supervisor.start()
        yield platform
    finally:
        platform.stopping.set()
        if supervisor is not None:
            supervisor.join(timeout=30)
        platform.stop()
        group.stop()
