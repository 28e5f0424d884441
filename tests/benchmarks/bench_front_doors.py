"""Benchmark of the GitHub App front door: ``k8see api`` (a real uvicorn process) accepting
signed webhooks, beside the same events enqueued straight to Redis, in the same run.

- webhook accept latency: one delivery at a time, each a new PR's ``opened`` event with its own
  delivery id, signed (HMAC-SHA256) by the GitHub stand-in's sender over a new connection, as
  GitHub sends them: time from the POST to the 202 (the signature check, the decision and the
  one Redis call; the run is admitted after the answer);
- sustained deliveries per second: ``senders`` threads posting ``deliveries`` in all; and
  admitted runs per second, until the inbox is drained and every run is queued;
- straight to Redis: ``k8see.client.enqueue`` of the same decisions, one at a time (latency)
  and from ``senders`` threads (enqueues per second), what a self-hosted runner does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

from k8see import coordination
from k8see.api import inbox
from k8see.client import enqueue
from k8see.events import decide_labelled
from k8see.settings import load_settings
from k8see_sandbox.github import GitHubSandbox
from k8see_sandbox.platform import free_port, wait_for_port
from tests.benchmarks.measure import Baseline, Result, wait_until
from tests.conftest import RedisServer

SECRET = "bench-webhook-secret"
SHA = "b" * 40


def front_door(*, deliveries: int = 300, senders: int = 8) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="k8see-bench-api-") as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        hub = GitHubSandbox()
        hub.start()
        port = free_port()
        log = (Path(tmp) / "api.log").open("ab")
        env = {**os.environ, "K8SEE_REDIS__URL": server.url,
               "K8SEE_API__WEBHOOK_SECRETS": f'["{SECRET}"]'}  # fmt: skip
        api = subprocess.Popen(
            [str(Path(sys.executable).parent / "k8see"), "--log-level", "WARNING", "api",
             "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for_port(port, timeout_seconds=30)
            return _measure(hub, f"http://127.0.0.1:{port}", server.url, deliveries, senders)
        finally:
            api.terminate()
            api.wait(30)
            log.close()
            hub.stop()
            server.stop()


def _measure(
    hub: GitHubSandbox, api: str, redis_url: str, deliveries: int, senders: int
) -> list[Result]:
    client = redis.Redis.from_url(redis_url)
    settings = load_settings(redis={"url": redis_url})
    repo = "bench/app"
    hub.add_repo(repo)
    for pr in range(1, 4 * deliveries + 1):
        hub.add_pull(repo, pr, head_sha=SHA, head_ref="f")
    sender = hub.webhook_sender(SECRET)
    url = f"{api}/github/webhooks"

    def deliver(pr: int) -> float:
        started = time.perf_counter()
        sent = sender.deliver(url, "pull_request", hub.pull_request_event(repo, pr, "opened"))
        if sent.status != 202:
            raise RuntimeError(f"delivery refused: {sent.status} {sent.body}")
        return time.perf_counter() - started

    # One at a time: the accept latency.
    latency = [deliver(pr) for pr in range(1, deliveries + 1)]
    wait_until(lambda: client.xlen(inbox.INBOX_KEY) == 0, timeout=300)

    # Sustained: senders in parallel; then until every run is admitted.
    prs = list(range(deliveries + 1, 2 * deliveries + 1))
    started = time.monotonic()
    _parallel(senders, prs, deliver)
    accepted = time.monotonic() - started
    admitted = wait_until(lambda: _admitted(client, repo, prs), timeout=600, poll=0.1) - started

    # Straight to Redis, the same decisions.
    def straight(pr: int) -> float:
        payload = hub.pull_request_event(repo, pr, "opened")
        decision, trigger = decide_labelled(event_name="pull_request", payload=payload)
        t0 = time.perf_counter()
        enqueue(decision, settings=settings, trigger=trigger, client=client)
        return time.perf_counter() - t0

    base = 2 * deliveries
    direct = [straight(base + i) for i in range(1, deliveries // 2 + 1)]
    rest = list(range(base + deliveries // 2 + 1, base + 2 * deliveries + 1))
    started = time.perf_counter()
    _parallel(senders, rest, straight)
    direct_rate = len(rest) / (time.perf_counter() - started)

    params = {"deliveries": deliveries, "senders": senders, "signature": "HMAC-SHA256",
              "connection": "new per delivery (as GitHub)"}  # fmt: skip
    accept_rate = len(prs) / accepted
    straight_params = {**params, "deliveries": len(direct)}
    return [
        Result(
            "front door: webhook accept latency (202)",
            "s",
            latency,
            params,
            baseline=Baseline("k8see.client.enqueue straight to Redis", direct, straight_params),
        ),
        Result(
            "front door: webhooks accepted",
            "per s",
            [accept_rate],
            params,
            baseline=Baseline(
                "enqueues straight to Redis, 8 threads",
                [direct_rate],
                {**params, "deliveries": len(rest)},
            ),
        ),
        Result("front door: webhook runs admitted", "per s", [len(prs) / admitted], params),
    ]


def _parallel(senders: int, prs: list[int], work: object) -> None:
    chunks = [prs[i::senders] for i in range(senders)]
    errors: list[BaseException] = []

    def run(chunk: list[int]) -> None:
        try:
            for pr in chunk:
                work(pr)  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _admitted(client: redis.Redis, repo: str, prs: list[int]) -> bool:
    """Every delivery's run admitted: the inbox is empty and each PR's generation is 1."""
    if client.xlen(inbox.INBOX_KEY):
        return False
    return all(coordination.current_generation(client, repo=repo, pr=pr) == 1 for pr in prs)


def _median(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2]
