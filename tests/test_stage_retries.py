"""Stage retries do what the settings say, through a real Celery worker process and Redis.

Covers: a transient platform error (GitHub or the Kubernetes API answering 503) is retried
exactly ``queues.max_retries`` times (5 here, more than Celery's default of 3), then the run
fails with that error's own message on the environment record; a permanent one (GitHub 403)
is not retried at all; a busy lease makes the stage wait, more times than Celery's default
retries, without using up a retry, and a lease never freed fails the run after
``queues.lease_wait_seconds`` saying so; ``is_transient`` per error type.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu.exceptions import OperationalError

from k8see import coordination, pipeline, state
from k8see.app import create_app
from k8see.errors import (
    BuildFailed,
    ConfigError,
    GitHubError,
    HelmError,
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeTooManyRequests,
    PlatformError,
    RegistryError,
    RetryLater,
    Superseded,
    ToolMissing,
)
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from k8see.worker.failures import is_transient

MAX_RETRIES = 5  # more than Celery's default of 3, so the setting is seen to win
LEASE_WAIT_SECONDS = 4.0
REPO, PR, SHA = "acme/shop", 7, "a" * 40


class Answering:
    """A stand-in HTTP API (GitHub, or the Kubernetes API server) that answers every request
    with one status, and counts the requests."""

    def __init__(self) -> None:
        self.status = 503
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.requests += 1
                body = json.dumps({"message": f"stand-in answers {outer.status}"}).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[Answering]:
    server = Answering()
    yield server
    server.close()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, api: Answering) -> PlatformSettings:
    allowlist = tmp_path / "allowed-orgs.json"
    allowlist.write_text(json.dumps({"mode": "allowlist", "organizations": ["acme"]}))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: '{api.url}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    return PlatformSettings(
        redis={"url": redis_url},
        github={"api_url": api.url, "token": "ghp_standinTOKEN0123456789"},
        policy={"allowlist_path": str(allowlist)},
        deploy={"kubeconfig": str(kubeconfig), "helm_api_retries": 0},
        build={"workdir": str(tmp_path / "work")},
        queues={
            "max_retries": MAX_RETRIES,
            "retry_backoff_seconds": 0.01,
            "lease_retry_seconds": 0.1,
            "lease_wait_seconds": LEASE_WAIT_SECONDS,
        },
    )


def _env(settings: PlatformSettings) -> dict[str, str]:
    queues = settings.queues
    return {
        **os.environ,
        "K8SEE_REDIS__URL": settings.redis.url,
        "K8SEE_GITHUB__API_URL": settings.github.api_url,
        "K8SEE_GITHUB__TOKEN": "ghp_standinTOKEN0123456789",
        "K8SEE_POLICY__ALLOWLIST_PATH": settings.policy.allowlist_path,
        "K8SEE_DEPLOY__KUBECONFIG": settings.deploy.kubeconfig,
        "K8SEE_DEPLOY__HELM_API_RETRIES": "0",
        "K8SEE_BUILD__WORKDIR": settings.build.workdir,
        "K8SEE_QUEUES__MAX_RETRIES": str(queues.max_retries),
        "K8SEE_QUEUES__RETRY_BACKOFF_SECONDS": str(queues.retry_backoff_seconds),
        "K8SEE_QUEUES__LEASE_RETRY_SECONDS": str(queues.lease_retry_seconds),
        "K8SEE_QUEUES__LEASE_WAIT_SECONDS": str(queues.lease_wait_seconds),
    }


@pytest.fixture
def worker(settings: PlatformSettings, tmp_path: Path) -> Iterator[Path]:
    """A real ``k8see worker`` process consuming every queue; yields its log file."""
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "k8see", "--log-format", "full", "worker", "--pool", "all",
             "--concurrency", "1"],
            env=_env(settings), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    yield log
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _admit(settings: PlatformSettings, action: Action, trigger: str) -> Run:
    draft = Run(repo=REPO, pr=PR, sha=SHA, generation=0, action=action, trigger=trigger)
    client = redis.Redis.from_url(settings.redis.url)
    return pipeline.admit(draft, app=create_app(settings), settings=settings, client=client)


def _wait_for(check: Callable[[], Any], log: Path, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out; worker log:\n{log.read_text()[-4000:]}")


def _failed_record(settings: PlatformSettings, log: Path) -> dict[str, Any]:
    client = redis.Redis.from_url(settings.redis.url)

    def failed() -> dict[str, Any] | None:
        record = state.get(client, repo=REPO, pr=PR) or {}
        return record if record.get("status") == "failed" else None

    record: dict[str, Any] = _wait_for(failed, log)
    return record


def _stats(settings: PlatformSettings) -> dict[str, int]:
    return dict(state.stats(redis.Redis.from_url(settings.redis.url)))


def test_a_transient_error_is_retried_exactly_max_retries_times_then_fails_with_itself(
    settings: PlatformSettings, api: Answering, worker: Path
) -> None:
    # Given GitHub answering 503 to everything
    api.status = 503
    # When a deploy is admitted
    run = _admit(settings, Action.DEPLOY, "pull_request:opened")
    record = _failed_record(settings, worker)
    # Then validate ran once and was retried exactly 5 times, not Celery's default 3
    stats = _stats(settings)
    assert stats.get("retried:validate") == MAX_RETRIES, stats
    assert stats.get("stage_started:validate") == MAX_RETRIES + 1, stats
    # And the run failed with GitHub's own error, not a generic sentence
    error = record["error"]
    assert record["run_id"] == run.run_id and error["stage"] == "validate"
    assert "503" in error["message"] and "internal error" not in error["message"]
    assert error["reason"] == "github" and run.run_id in error["hint"]


def test_a_permanent_platform_error_is_not_retried(
    settings: PlatformSettings, api: Answering, worker: Path
) -> None:
    # Given GitHub refusing the token (403, no rate limit): asking again changes nothing
    api.status = 403
    _admit(settings, Action.DEPLOY, "pull_request:opened")
    record = _failed_record(settings, worker)
    stats = _stats(settings)
    assert stats.get("stage_started:validate") == 1 and "retried:validate" not in stats, stats
    assert "403" in record["error"]["message"], record["error"]


def test_a_busy_lease_waits_without_using_up_retries(
    settings: PlatformSettings, api: Answering, worker: Path
) -> None:
    client = redis.Redis.from_url(settings.redis.url)
    # Given another run holding the PR's lease, and an API server answering 503
    api.status = 503
    other = coordination.acquire_lease(
        client, repo=REPO, pr=PR, owner="other-run:deploy", ttl_seconds=600
    )
    assert other is not None
    # When a destroy is admitted, it waits for the lease more often than Celery's 3 retries
    _admit(settings, Action.DESTROY, "pull_request:closed")
    _wait_for(lambda: _stats(settings).get("lease_waited:destroy", 0) >= 5, worker)
    assert "stage_started:destroy" not in _stats(settings)
    # And once the lease is free, the stage still has every one of its retries
    other.release()
    record = _failed_record(settings, worker)
    stats = _stats(settings)
    assert stats.get("retried:destroy") == MAX_RETRIES, stats
    assert stats.get("stage_started:destroy") == MAX_RETRIES + 1, stats
    assert record["error"]["stage"] == "destroy" and "503" in record["error"]["message"]


def test_a_lease_never_freed_fails_the_run_after_the_wait_bound(
    settings: PlatformSettings, worker: Path
) -> None:
    client = redis.Redis.from_url(settings.redis.url)
    held = coordination.acquire_lease(
        client, repo=REPO, pr=PR, owner="stuck-run:deploy", ttl_seconds=600
    )
    assert held is not None
    started = time.monotonic()
    _admit(settings, Action.DESTROY, "pull_request:closed")
    record = _failed_record(settings, worker)
    assert time.monotonic() - started >= LEASE_WAIT_SECONDS
    error = record["error"]
    assert error["stage"] == "destroy" and "lease" in error["message"]
    assert "stuck-run" in error["message"] and "LEASE_WAIT_SECONDS" in error["hint"]
    stats = _stats(settings)
    assert stats.get("lease_waited:destroy", 0) > 3 and "stage_started:destroy" not in stats


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (RetryLater("Namespace is still being deleted.", delay_seconds=10), True),
        (KubeError("The API server did not answer.", status=None), True),
        (KubeError("The API server failed.", status=503), True),
        (KubeError("Bad request.", status=400), False),
        (KubeConflict("Modified meanwhile.", status=409), True),
        (KubeTooManyRequests("Throttled.", retry_after_seconds=1), True),
        (KubeForbidden("No RBAC for that.", status=403), False),
        (KubeNotFound("Gone.", status=404), False),
        (GitHubError("GitHub could not be reached."), True),
        (GitHubError("GitHub failed.", status=502), True),
        (GitHubError("Rate limited.", status=429), True),
        (GitHubError("Bad credentials.", status=401), False),
        (GitHubError("Forbidden.", status=403), False),
        (HelmError("helm timed out."), True),
        (RegistryError("The registry answered 500."), True),
        (PlatformError("Something on the platform failed."), True),
        (ToolMissing("buildah is not installed."), False),
        (ConfigError("k8s-ee.yaml is invalid."), False),
        (BuildFailed("The Dockerfile did not build."), False),
        (Superseded("A newer event."), False),
        (redis.exceptions.ConnectionError("Redis went away."), True),
        (redis.exceptions.TimeoutError("Redis did not answer."), True),
        (OperationalError("The broker went away."), True),
        (ConnectionResetError("reset by peer"), True),
        (TimeoutError("timed out"), True),
        (KeyError("config"), False),
        (TypeError("a bug"), False),
        (FileNotFoundError("no such file"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_which_errors_are_transient(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient
