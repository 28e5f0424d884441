"""Benchmarks through the real pipeline on the sandbox platform: buildah, the registry, Trivy,
helm, real worker pools at their default sizes, the local Kubernetes cluster (real
kube-apiserver and kubelet) and the GitHub stand-in.

- orchestration overhead: a full pipeline whose image is already built (full layer cache),
  minus the time inside the stages; and the hand-off latency between stages, beside bare
  Celery chains across two worker processes (``bare_handoffs``);
- GitHub API calls per event type (opened, push, comment command, closed), counted by the
  GitHub stand-in;
- time to URL for examples/hello: cold (empty build storage) and warm (a push to the PR);
- push storm: 50 synchronize events for one PR within 2 s;
- fan-out: many PRs opened at once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.benchmarks.measure import Baseline, Result, TaskEvents, handoffs, wait_until
from tests.drills.common import WORKER_ENV
from tests.e2e.harness import ROOT, Harness

STAGES = ("validate", "build", "scan", "deploy")


class Bench:
    """The platform plus what the pipeline benchmarks share."""

    def __init__(self, h: Harness, events: TaskEvents):
        from k8see.settings import load_settings

        self.h = h
        self.events = events
        self.settings = load_settings(redis={"url": h.platform.redis_url})
        self.repos = 0

    def repo(self, name: str, collaborators: dict[str, str] | None = None) -> tuple[str, Path, str]:
        """A new git repository, registered with the GitHub sandbox (once: it resets PRs)."""
        self.repos += 1
        name = f"{name}{self.repos}"
        # Its own projectId, so PR numbers may repeat across repositories.
        config = (ROOT / "examples" / "hello" / "k8s-ee.yaml").read_text()
        config = config.replace("projectId: hello", f"projectId: {name}")
        repo, path, sha = self.h.repo(name, {"k8s-ee.yaml": config})
        self.h.platform.github.add_repo(repo, collaborators=collaborators)
        return repo, path, sha

    def send(
        self, repo: str, path: Path, pr: int, sha: str, action: str = "opened", pull: bool = True
    ) -> None:
        from k8see.client import enqueue
        from k8see.events import decide_from_flags

        if pull:
            self.h.platform.github.add_pull(repo, pr, head_sha=sha, head_ref="feature")
        decision = decide_from_flags(
            repo=repo, pr=pr, action=action, sha=sha, ref="feature", trigger="automatic"
        )
        enqueue(
            decision,
            settings=self.settings,
            trigger=f"pull_request:{action}",
            client=self.h.redis,
        )

    def ready_at(self, repo: str, pr: int, sha: str, timeout: float = 900) -> float:
        def ready() -> bool:
            record = self.h.record(repo, pr)
            if record.get("status") == "failed":
                raise RuntimeError(f"{repo}#{pr} failed: {record.get('error')}")
            return record.get("status") == "ready" and record.get("sha") == sha

        return wait_until(ready, timeout=timeout)

    def one_run(
        self, repo: str, path: Path, pr: int, sha: str, action: str = "opened"
    ) -> dict[str, Any]:
        """One run, alone on the platform: wall time, the record's stage timings, hand-offs."""
        wall_start = time.time()
        started = time.monotonic()
        self.send(repo, path, pr, sha, action)
        seconds = self.ready_at(repo, pr, sha) - started
        time.sleep(1.0)  # the comment task and its events
        record = self.h.record(repo, pr)
        tasks = self.events.between(wall_start, time.time())
        return {
            "seconds": seconds,
            "timings": {k: float(v) for k, v in (record.get("timings") or {}).items()},
            "handoffs": handoffs(tasks),
        }

    def wait_workers(self, count: int = 4, timeout: float = 60) -> None:
        from k8see.app import create_app

        app = create_app(self.settings)
        wait_until(lambda: len(app.control.ping(timeout=0.5)) >= count, timeout=timeout, poll=0.5)


def time_to_url(b: Bench, *, cold_runs: int = 2, warm_runs: int = 3) -> list[Result]:
    """examples/hello from enqueue to ready: cold build storage, then pushes to the PR."""
    platform = b.h.platform
    cold, warm = [], []
    cold_stages: dict[str, list[float]] = {s: [] for s in STAGES}
    warm_stages: dict[str, list[float]] = {s: [] for s in STAGES}
    for i in range(cold_runs):
        # An empty buildah storage for the build pool: base image pulled, every step run.
        platform.stop_process("worker-build")
        storage = platform.workdir / f"cold-storage-{i}"
        platform.start_workers(
            pools=("build",), extra_env={**WORKER_ENV, "K8SEE_BUILD__STORAGE_DIR": str(storage)}
        )
        b.wait_workers()
        repo, path, sha = b.repo("cold")
        run = b.one_run(repo, path, 1, sha)
        cold.append(run["seconds"])
        for s in STAGES:
            cold_stages[s].append(run["timings"].get(s, 0.0))
        # Warm: the same PR gets pushes that change the served files (COPY layer rebuilt).
        if i == cold_runs - 1:
            for j in range(warm_runs):
                (path / "www" / "index.html").write_text(f"<p>push {j}</p>\n")
                new_sha = b.h.commit(path, f"push {j}")
                run = b.one_run(repo, path, 1, new_sha, action="synchronize")
                warm.append(run["seconds"])
                for s in STAGES:
                    warm_stages[s].append(run["timings"].get(s, 0.0))
    params = {"example": "hello", "platforms": WORKER_ENV["K8SEE_BUILD__PLATFORMS"]}
    results = [
        Result("time to URL: cold build", "s", cold, {**params, "runs": cold_runs}),
        Result("time to URL: warm rebuild (push)", "s", warm, {**params, "runs": warm_runs}),
    ]
    if cold:
        results[1].baseline = Baseline("time to URL: cold build", cold, results[0].parameters)
    for s in STAGES:
        results.append(Result(f"time to URL: cold, {s} stage", "s", cold_stages[s], params))
        results.append(Result(f"time to URL: warm, {s} stage", "s", warm_stages[s], params))
    return results


def orchestration_overhead(b: Bench, *, runs: int = 5) -> list[Result]:
    """A PR whose SHA is already built and scanned: wall time minus the stages' own time."""
    repo, path, sha = b.repo("overhead")
    b.one_run(repo, path, 1, sha)  # builds and scans the image once
    overheads, walls = [], []
    hand: dict[str, list[float]] = {}
    stage_sum = []
    for pr in range(2, runs + 2):
        run = b.one_run(repo, path, pr, sha)
        inside = sum(run["timings"].get(s, 0.0) for s in STAGES)
        walls.append(run["seconds"])
        stage_sum.append(inside)
        overheads.append(run["seconds"] - inside)
        for key, value in run["handoffs"].items():
            hand.setdefault(key, []).append(value)
    params = {"runs": runs, "cache": "image layers cached; same SHA as an earlier PR"}
    results = [
        Result("orchestration: pipeline wall time (cached)", "s", walls, params),
        Result("orchestration: time inside stages", "s", stage_sum, params),
        Result(
            "orchestration: overhead (wall - stages)",
            "s",
            overheads,
            params,
            notes="enqueue, queueing, hand-offs and record writes: everything not in a stage",
        ),
    ]
    for key, values in sorted(hand.items()):
        results.append(Result(f"hand-off latency {key}", "s", values, params))
    return results


BARE_QUEUES = ("bare-a", "bare-b")


def bare_handoffs(redis_url: str, logdir: Path, *, chains: int = 5, length: int = 5) -> Baseline:
    """The hand-off baseline: bare Celery chains of ``length`` no-op tasks alternating between
    two real worker processes on two queues, one chain at a time; next task's
    ``task-started`` minus its ``task-sent`` (the same events and clock as the pipeline's)."""
    import os
    import subprocess
    import sys

    import redis

    from tests.benchmarks.bare_app import bare_chain, make_app
    from tests.benchmarks.bench_client import _stop

    env = {
        **os.environ,
        "K8SEE_REDIS__URL": redis_url,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    procs = []
    app = make_app(redis_url)
    client = redis.Redis.from_url(redis_url)
    samples: list[float] = []
    try:
        for queue in BARE_QUEUES:
            log = (logdir / f"bare-{queue}.log").open("ab")
            argv = [sys.executable, "-m", "celery", "-A", "tests.benchmarks.bare_app", "worker"]
            argv += ["-Q", queue, "-c", "2", "-n", f"{queue}@%h", "-E", "--loglevel", "WARNING"]
            procs.append(
                subprocess.Popen(
                    argv,
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        names = {f"{q}@" for q in BARE_QUEUES}

        def up() -> bool:
            replies = app.control.ping(timeout=0.5)
            seen = {n.split("@")[0] + "@" for r in replies for n in r}
            return names <= seen

        wait_until(up, timeout=90, poll=0.5)
        queues = [BARE_QUEUES[i % 2] for i in range(length)]
        with TaskEvents(app) as events:
            for i in range(-1, chains):  # the first chain warms both workers up
                key = f"bare:handoff:{i}"
                wall_start = time.time()
                bare_chain(app, queues, {"chain": i}, key).apply_async()
                wait_until(lambda k=key: int(client.get(k) or 0) >= 1, timeout=60)  # type: ignore[misc]
                time.sleep(0.5)  # the last task's events
                tasks = events.between(wall_start, time.time())
                if i >= 0 and len(tasks) == length:
                    # As ``handoffs``, per pair (its keys would merge noop->noop pairs).
                    samples += [
                        t["task-started"] - t["task-sent"]
                        for t in tasks[1:]
                        if "task-sent" in t and "task-started" in t
                    ]
    finally:
        _stop(procs)
    return Baseline(
        "bare Celery chain across two pools",
        samples,
        {"chains": chains, "length": length, "queues": list(BARE_QUEUES), "concurrency": 2},
    )


def push_storm(b: Bench, *, pushes: int = 50) -> list[Result]:
    """50 synchronize events for one PR in under 2 s; what ran, and whether the last SHA won."""
    from k8see import state

    repo, path, _ = b.repo("storm")
    shas = [b.h.commit(path, f"push {i}") for i in range(pushes)]
    before = state.stats(b.h.redis)
    b.h.platform.github.add_pull(repo, 1, head_sha=shas[-1], head_ref="feature")
    started = time.monotonic()
    for sha in shas:
        b.send(repo, path, 1, sha, action="synchronize", pull=False)
    spread = time.monotonic() - started
    ready = b.ready_at(repo, 1, shas[-1]) - started
    time.sleep(3)  # stragglers: a superseded stage that still starts would count
    after = state.stats(b.h.redis)
    record = b.h.record(repo, 1)

    def delta(name: str) -> int:
        return after.get(name, 0) - before.get(name, 0)

    params = {"pushes": pushes, "enqueue_spread_seconds": round(spread, 3)}
    extra = {
        "builds_started": delta("stage_started:build"),
        "deploys_run": delta("stage_started:deploy"),
        "validates_started": delta("stage_started:validate"),
        "last_sha_won": record.get("sha") == shas[-1] and record.get("status") == "ready",
    }
    return [
        Result("push storm: time until last SHA ready", "s", [ready], params, extra=extra),
        Result("push storm: builds started", "builds", [extra["builds_started"]], params),
        Result("push storm: deploys run", "deploys", [extra["deploys_run"]], params),
        Result(
            "push storm: last SHA won (1 = yes)", "bool", [float(extra["last_sha_won"])], params
        ),
    ]


def _path_shape(path: str) -> str:
    """``/repos/o/r/issues/12/comments`` -> ``/repos/{repo}/issues/{n}/comments``, and a
    commit's SHA -> ``{sha}``."""
    parts = path.split("/")
    if len(parts) > 3 and parts[1] == "repos":
        parts[2:4] = ["{repo}"]

    def shape(part: str) -> str:
        if part.isdigit():
            return "{n}"
        if len(part) == 40 and all(c in "0123456789abcdef" for c in part):
            return "{sha}"
        return part

    return "/".join(shape(p) for p in parts)


def github_calls(b: Bench, *, cycles: int = 2) -> list[Result]:
    """Requests the GitHub stand-in receives per event type, from the event until the run's
    record and comment are final and no request came for 2 s: opened, synchronize (a
    push), ``/deploy-preview`` (a comment command), closed; ``cycles`` PRs each get all four."""
    from collections import Counter

    github = b.h.platform.github
    repo, path, _ = b.repo("calls", collaborators={"maintainer": "write"})
    counts: dict[str, list[float]] = {e: [] for e in ("opened", "synchronize", "comment", "closed")}
    # Counted against GitHub's primary rate limit (all but the 304s), and the 304s
    limited: dict[str, list[float]] = {e: [] for e in counts}
    not_modified: dict[str, list[float]] = {e: [] for e in counts}
    which: dict[str, Counter[str]] = {e: Counter() for e in counts}

    def settled(pr: int, status: str, want_sha: str | None) -> None:
        def final() -> bool:
            record = b.h.record(repo, pr)
            if record.get("status") == "failed":
                raise RuntimeError(f"{repo}#{pr} failed: {record.get('error')}")
            return (
                record.get("status") == status
                and record.get("commented") == status
                and (want_sha is None or record.get("sha") == want_sha)
            )

        wait_until(final, timeout=600)
        last, quiet_since = len(github.calls), time.monotonic()
        while time.monotonic() - quiet_since < 2.0:
            time.sleep(0.2)
            if len(github.calls) != last:
                last, quiet_since = len(github.calls), time.monotonic()

    def opened(pr: int, head: str) -> None:
        b.send(repo, path, pr, head)

    def pushed(pr: int, head: str) -> None:
        b.send(repo, path, pr, head, action="synchronize")

    def command(pr: int, head: str) -> None:
        done = b.h.command(repo, pr, "/deploy-preview", login="maintainer")
        if done.returncode != 0:
            raise RuntimeError(f"/deploy-preview failed: {done.stderr}")

    def closed(pr: int, head: str) -> None:
        github.add_pull(repo, pr, head_sha=head, head_ref="feature", state="closed")
        b.send(repo, path, pr, head, action="closed", pull=False)

    steps = (
        ("opened", opened, "ready"),
        ("synchronize", pushed, "ready"),
        ("comment", command, "ready"),
        ("closed", closed, "destroyed"),
    )
    for pr in range(1, cycles + 1):
        head = ""
        for event, act, status in steps:
            if event in ("opened", "synchronize"):
                head = b.h.commit(path, f"PR {pr} {event}")
            before = len(github.calls)
            rate_before, free_before = github.rate_limited_calls, github.not_modified
            act(pr, head)
            settled(pr, status, head if status == "ready" else None)
            calls = github.calls[before:]
            counts[event].append(float(len(calls)))
            limited[event].append(float(github.rate_limited_calls - rate_before))
            not_modified[event].append(float(github.not_modified - free_before))
            which[event].update(f"{m} {_path_shape(p)}" for m, p in calls)
    labels = {
        "opened": "pull_request opened",
        "synchronize": "pull_request synchronize (push)",
        "comment": "issue_comment /deploy-preview",
        "closed": "pull_request closed",
    }
    results = []
    for event, samples in counts.items():
        per = {k: round(v / len(samples), 2) for k, v in sorted(which[event].items())}
        results.append(
            Result(
                f"GitHub API calls: {labels[event]}",
                "requests",
                samples,
                {"cycles": cycles, "goal_per_push": 5},
                notes="requests the GitHub stand-in received, per event",
                extra={"requests_per_event": per, "not_modified_total": github.not_modified},
            )
        )
        results.append(
            Result(
                f"GitHub API calls against the rate limit: {labels[event]}",
                "requests",
                limited[event],
                {"cycles": cycles, "goal_per_push": 5},
                notes="all requests but the 304 answers to conditional ones (GitHub's rule)",
                extra={"not_modified_per_event": not_modified[event]},
            )
        )
    return results


def fan_out(b: Bench, *, prs: int, per_pr_seconds: float) -> list[Result]:
    """``prs`` PRs opened at once, each its own commit; all ready, queue waits, vs ideal."""
    repo, path, _ = b.repo("fanout")
    shas = []
    for pr in range(1, prs + 1):
        (path / "www" / "index.html").write_text(f"<p>PR {pr}</p>\n")
        shas.append(b.h.commit(path, f"PR {pr}"))
    wall_start = time.time()
    started = time.monotonic()
    for pr, sha in enumerate(shas, start=1):
        b.send(repo, path, pr, sha)
    done = max(b.ready_at(repo, pr, sha, timeout=1800) for pr, sha in enumerate(shas, start=1))
    elapsed = done - started
    time.sleep(2)
    tasks = [t for t in b.events.snapshot() if t.get("task-sent", 0) >= wall_start - 1]
    waits = [
        t["task-started"] - t["task-sent"]
        for t in tasks
        if "task-started" in t and "task-sent" in t
    ]
    concurrency = b.settings.queues.build_concurrency
    ideal = per_pr_seconds * prs / concurrency
    params = {
        "prs": prs,
        "pools": {
            "default": b.settings.queues.default_concurrency,
            "build": concurrency,
            "deploy": b.settings.queues.deploy_concurrency,
        },
        "per_pr_seconds": round(per_pr_seconds, 2),
        "ideal_seconds": round(ideal, 1),
        "ideal": "per-PR time x PRs / build-pool concurrency (build and scan share that pool)",
    }
    return [
        Result(
            "fan-out: time until all ready",
            "s",
            [elapsed],
            params,
            baseline=Baseline(
                "ideal: warm per-PR time x PRs / build slots (computed, not run)", [ideal], params
            ),
        ),
        Result("fan-out: queue wait per task", "s", waits, params),
    ]
