"""Benchmarks of the light side: the enqueue CLI's cold start, and the framework's throughput
with stage bodies that only record (real Redis, real worker processes, the real StageTask).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from tests.benchmarks.measure import Baseline, Result, wait_until
from tests.conftest import RedisServer

ROOT = Path(__file__).resolve().parents[2]
SHA_PLACEHOLDER = "0" * 40
REPO = "k8see-demo/bench"
TIME = "/usr/bin/time"
BARE_QUEUE = "bare"


def _git_repo(path: Path) -> str:
    """A one-commit repository with a k8s-ee.yaml; returns its SHA."""
    path.mkdir(parents=True)
    (path / "k8s-ee.yaml").write_text("projectId: bench\napp:\n  port: 3000\n")

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(path), "-c", "user.name=b", "-c", "user.email=b@b.invalid", *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q", "-b", "feature")
    git("add", "-A")
    git("commit", "-q", "-m", "bench")
    return git("rev-parse", "HEAD")


def enqueue_cold_start(*, runs: int = 20) -> list[Result]:
    """Wall time and peak RSS of `k8see enqueue` started fresh, against a running Redis."""
    with tempfile.TemporaryDirectory(prefix="k8see-bench-") as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            sha = _git_repo(Path(tmp) / "repo")
            env = {**os.environ, "K8SEE_REDIS__URL": server.url}
            k8see = str(Path(sys.executable).parent / "k8see")
            walls, rss = [], []
            bare_walls, bare_rss = [], []
            bare = [sys.executable, str(ROOT / "tests" / "benchmarks" / "bare_send.py")]
            bare += [server.url, BARE_QUEUE]
            for pr in range(1, runs + 1):
                argv = [k8see, "enqueue", "--repo", REPO, "--pr", str(pr), "--action", "opened"]
                argv += ["--sha", sha, "--source", str(Path(tmp) / "repo")]
                # Interleaved with its baseline, so a change of load hits both alike.
                wall, kib = _timed(argv, env)
                walls.append(wall)
                rss.append(kib / 1024)
                wall, kib = _timed(bare, env)
                bare_walls.append(wall)
                bare_rss.append(kib / 1024)
            queued = redis.Redis.from_url(server.url).llen("default")
            bare_queued = redis.Redis.from_url(server.url).llen(BARE_QUEUE)
        finally:
            server.stop()
    params = {
        "runs": runs,
        "queued_messages": int(queued),
        "command": "k8see enqueue (console script), no --wait",
    }
    base = {
        "runs": runs,
        "queued_messages": int(bare_queued),
        "command": "python tests/benchmarks/bare_send.py (Celery only, one send_task)",
    }
    name = "bare Celery send_task script, fresh process"
    return [
        Result(
            "enqueue cold start: wall time",
            "s",
            walls,
            params,
            baseline=Baseline(name, bare_walls, base),
        ),
        Result(
            "enqueue cold start: peak RSS",
            "MiB",
            rss,
            params,
            baseline=Baseline(name, bare_rss, base),
        ),
    ]


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one fresh process."""
    # /usr/bin/time reports the peak RSS of the command alone (a child forked from this
    # big process would count the parent's pages until its exec).
    started = time.perf_counter()
    done = subprocess.run(
        [TIME, "-f", "maxrss_kib=%M", *argv],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stderr}")
    return wall, int(done.stderr.rsplit("maxrss_kib=", 1)[1].split()[0])


def _start_pools(redis_url: str, workdir: Path, logdir: Path) -> list[subprocess.Popen[bytes]]:
    from k8see.settings import load_settings

    queues = load_settings().queues
    env = {
        **os.environ,
        "K8SEE_REDIS__URL": redis_url,
        "K8SEE_BUILD__WORKDIR": str(workdir),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    pools = {
        "default": queues.default_concurrency,
        "build": queues.build_concurrency,
        "deploy": queues.deploy_concurrency,
    }
    procs = []
    for queue, concurrency in pools.items():
        log = (logdir / f"trivial-{queue}.log").open("ab")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tests.benchmarks.trivial_app",
                    "worker",
                    "-Q",
                    queue,
                    "-c",
                    str(concurrency),
                    "-n",
                    f"{queue}@%h",
                    "-E",
                    "--loglevel",
                    "WARNING",
                ],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    import signal

    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _pipelines(settings: Any, client: redis.Redis, sha: str, prs: range) -> float:
    """Enqueue one pipeline per PR at once; seconds until every one is ready and commented."""
    from k8see import state
    from k8see.client import enqueue
    from k8see.events import decide_from_flags

    started = time.monotonic()
    for pr in prs:
        decision = decide_from_flags(
            repo=REPO, pr=pr, action="opened", sha=sha, ref="feature", trigger="automatic"
        )
        enqueue(decision, settings=settings, trigger="pull_request:opened", client=client)

    def done() -> bool:
        records = [state.get(client, repo=REPO, pr=pr) or {} for pr in prs]
        return all(r.get("commented") == "ready" for r in records)

    return wait_until(done, timeout=600, poll=0.1) - started


def _pipeline_queues() -> list[str]:
    """The queue of each stage of an opened PR's chain, in order."""
    from k8see.app import ROUTES

    return [ROUTES[f"k8see.{s}"] for s in ("validate", "build", "scan", "deploy", "comment")]


def _bare_chains(sender: Any, client: redis.Redis, count: int, key: str) -> float:
    """``count`` bare Celery chains (the pipeline's length and queues) sent at once; seconds
    until every one has ended."""
    from tests.benchmarks.bare_app import bare_chain

    queues = _pipeline_queues()
    started = time.monotonic()
    for i in range(count):
        bare_chain(sender, queues, {"pr": i, "sha": SHA_PLACEHOLDER}, key).apply_async()

    def done() -> bool:
        return int(client.get(key) or 0) >= count

    return wait_until(done, timeout=600, poll=0.1) - started


def throughput(*, pipelines: int = 100, repeats: int = 3) -> list[Result]:
    """Pipelines per minute through the real framework with trivial stage bodies."""
    from k8see.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="k8see-bench-") as tmp:
        base = Path(tmp)
        server = RedisServer(base)
        server.start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            sha = _git_repo(base / "repo")
            settings = load_settings(redis={"url": server.url})
            client = redis.Redis.from_url(server.url)
            procs = _start_pools(server.url, base / "work", base)
            _pipelines(settings, client, sha, range(1, 6))  # warm-up
            from tests.benchmarks.bare_app import make_app

            sender = make_app(server.url)
            _bare_chains(sender, client, 5, "bare:done:warm-up")
            rates, latencies, bare_rates, bare_latencies = [], [], [], []
            for i in range(repeats):
                first = 1000 * (i + 1)
                seconds = _pipelines(settings, client, sha, range(first, first + pipelines))
                rates.append(pipelines / seconds * 60)
                latencies.append(seconds)
                # Its baseline right after, on the same pools (interleaved batches).
                seconds = _bare_chains(sender, client, pipelines, f"bare:done:{i}")
                bare_rates.append(pipelines / seconds * 60)
                bare_latencies.append(seconds)
        finally:
            _stop(procs)
            server.stop()
    params = {
        "pipelines_per_batch": pipelines,
        "repeats": repeats,
        "stages": "validate, build, scan, deploy, comment (bodies that only record)",
        "pools": "default, build, deploy at their default concurrency",
    }
    base_params = {
        "chains_per_batch": pipelines,
        "repeats": repeats,
        "chain": " -> ".join(_pipeline_queues()) + " (bare.noop x4, bare.done: one Redis INCR)",
        "pools": "the same worker processes as the pipelines",
    }
    name = "bare Celery chains, same length, same pools"
    return [
        Result(
            "throughput: trivial-stage pipelines",
            "per min",
            rates,
            params,
            baseline=Baseline(name, bare_rates, base_params),
        ),
        Result(
            "throughput: batch drain time",
            "s",
            latencies,
            params,
            baseline=Baseline(name, bare_latencies, base_params),
        ),
    ]
