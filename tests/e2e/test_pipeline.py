"""A PR event through the real pipeline: Redis, Celery worker processes, buildah, registry,
Trivy and helm, against the sandbox Kubernetes and GitHub servers.

Covers:
- opened → ready, with one PR comment carrying the URL; synchronize → redeployed at the new
  SHA, the same comment updated; closed → destroyed, namespace gone, comment says so.
- a bad k8s-ee.yaml → failed, the field named in the comment, nothing created in the cluster.
- closed while the build runs → nothing is left deployed.
- the same event delivered five times → one run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
ORG = "k8see-demo"


class Harness:
    """The platform plus helpers to make PRs and drive them through `k8see enqueue`."""

    def __init__(self, platform: Any, workdir: Path):
        self.platform = platform
        self.workdir = workdir
        self.redis = redis.Redis.from_url(platform.redis_url)

    def repo(self, name: str, files: dict[str, str] | None = None) -> tuple[str, Path, str]:
        """A git repository with examples/hello (plus ``files``); returns name, path, sha."""
        path = self.workdir / "repos" / name
        shutil.copytree(ROOT / "examples" / "hello", path)
        for rel, text in (files or {}).items():
            (path / rel).write_text(text)
        self._git(path, "init", "-q", "-b", "feature")
        return f"{ORG}/{name}", path, self.commit(path, "first")

    def commit(self, path: Path, message: str) -> str:
        self._git(path, "add", "-A")
        self._git(path, "commit", "-q", "--allow-empty", "-m", message)
        return self._git(path, "rev-parse", "HEAD").strip()

    def _git(self, path: Path, *args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout

    def enqueue(self, *args: str, wait: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "k8see", "enqueue", *args]
        if wait:
            argv += ["--wait", "--timeout", "600"]
        return subprocess.run(
            argv, env=self.platform.process_env(), capture_output=True, text=True, timeout=700
        )

    def record(self, repo: str, pr: int) -> dict[str, Any]:
        from k8see import state

        return state.get(self.redis, repo=repo, pr=pr) or {}

    def namespaces(self) -> list[str]:
        from kubernetes import client, config

        api = client.CoreV1Api(config.new_client_from_config(str(self.platform.kubeconfig)))
        return [ns.metadata.name for ns in api.list_namespace().items]

    def wait_for(self, predicate: Any, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.25)
        raise AssertionError("condition not reached")


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    for name in ("redis-server", "buildah", "docker-registry", "helm", "trivy", "git"):
        require_tool(name)
    from k8see.sandbox.platform import Platform
    from k8see.sandbox.podruntime import PodRuntime

    workdir = tmp_path_factory.mktemp("e2e")
    platform = Platform(workdir=workdir).start()
    # The built image really runs (buildah), so the deploy's health check is real.
    runtime = PodRuntime(
        kube=platform.kube, registry_host=platform.registry_host, workdir=workdir / "pods"
    ).start()
    # One platform keeps the suite fast: build only the host platform here (the builder
    # tests cover two platforms), and retry quickly.
    platform.start_workers(
        extra_env={
            "K8SEE_BUILD__PLATFORMS": "linux/amd64",
            "K8SEE_QUEUES__RETRY_BACKOFF_SECONDS": "0.2",
        }
    )
    try:
        yield Harness(platform, workdir)
    finally:
        runtime.stop()
        platform.stop()


def _comments(h: Harness, repo: str, pr: int) -> list[dict[str, Any]]:
    return h.platform.github.comments(repo, pr)


def test_open_push_close_runs_the_whole_lifecycle(harness: Harness) -> None:
    h = harness
    repo, path, sha = h.repo("lifecycle")
    h.platform.github.add_repo(repo)
    h.platform.github.add_pull(repo, 1, head_sha=sha, head_ref="feature")

    # When the PR opens
    opened = h.enqueue(
        "--repo",
        repo,
        "--pr",
        "1",
        "--action",
        "opened",
        "--sha",
        sha,
        "--ref",
        "feature",
        "--source",
        str(path),
    )
    # Then the environment is ready, and one comment carries the URL
    assert opened.returncode == 0, opened.stderr + opened.stdout
    assert "ready: https://hello-pr-1." in opened.stdout
    record = h.record(repo, 1)
    assert record["status"] == "ready" and record["sha"] == sha
    assert record["digest"].startswith("sha256:")
    assert "hello-pr-1" in h.namespaces()
    h.wait_for(
        lambda: len(_comments(h, repo, 1)) == 1 and "hello-pr-1" in _comments(h, repo, 1)[0]["body"]
    )

    # When a new commit is pushed
    new_sha = h.commit(path, "second")
    h.platform.github.add_pull(repo, 1, head_sha=new_sha, head_ref="feature")
    pushed = h.enqueue(
        "--repo",
        repo,
        "--pr",
        "1",
        "--action",
        "synchronize",
        "--sha",
        new_sha,
        "--ref",
        "feature",
        "--source",
        str(path),
    )
    # Then it is redeployed at the new SHA and the same comment is updated
    assert pushed.returncode == 0, pushed.stderr + pushed.stdout
    assert h.record(repo, 1)["sha"] == new_sha
    h.wait_for(lambda: new_sha in _comments(h, repo, 1)[0]["body"])
    assert len(_comments(h, repo, 1)) == 1

    # When the PR closes
    closed = h.enqueue("--repo", repo, "--pr", "1", "--action", "closed", "--sha", new_sha)
    # Then everything is gone and the comment says so
    assert closed.returncode == 0, closed.stderr + closed.stdout
    h.wait_for(lambda: "hello-pr-1" not in h.namespaces())
    h.wait_for(lambda: "Destroyed" in _comments(h, repo, 1)[0]["body"])
    assert len(_comments(h, repo, 1)) == 1


def test_a_bad_config_fails_naming_the_field_and_creates_nothing(harness: Harness) -> None:
    h = harness
    repo, path, sha = h.repo(
        "badconfig", {"k8s-ee.yaml": "projectId: badcfg\napp:\n  port: 3000\nenv:\n  PORT: 8080\n"}
    )
    h.platform.github.add_repo(repo)
    h.platform.github.add_pull(repo, 2, head_sha=sha, head_ref="feature")

    result = h.enqueue(
        "--repo", repo, "--pr", "2", "--action", "opened", "--sha", sha, "--source", str(path)
    )

    assert result.returncode == 1
    assert "env.PORT" in result.stderr
    assert "Traceback" not in result.stderr
    assert h.record(repo, 2)["status"] == "failed"
    assert "badcfg-pr-2" not in h.namespaces()
    h.wait_for(lambda: len(_comments(h, repo, 2)) == 1)
    assert "env.PORT" in _comments(h, repo, 2)[0]["body"]


def test_closing_during_the_build_leaves_nothing_deployed(harness: Harness) -> None:
    h = harness
    repo, path, sha = h.repo("closedearly")
    h.platform.github.add_repo(repo)
    h.platform.github.add_pull(repo, 3, head_sha=sha, head_ref="feature")

    h.enqueue(
        "--repo",
        repo,
        "--pr",
        "3",
        "--action",
        "opened",
        "--sha",
        sha,
        "--source",
        str(path),
        wait=False,
    )
    h.wait_for(lambda: h.record(repo, 3).get("status") == "building")
    closed = h.enqueue("--repo", repo, "--pr", "3", "--action", "closed", "--sha", sha)

    assert closed.returncode == 0, closed.stderr + closed.stdout
    time.sleep(2)  # let the superseded chain notice and stop
    assert "hello-pr-3" not in h.namespaces()
    assert h.record(repo, 3)["status"] == "destroyed"


def test_a_redelivered_event_runs_once(harness: Harness) -> None:
    h = harness
    repo, path, sha = h.repo("dupes")
    args = (
        "--repo",
        repo,
        "--pr",
        "4",
        "--action",
        "opened",
        "--sha",
        sha,
        "--source",
        str(path),
        "--dry-run",
    )
    decision = h.enqueue(*args, wait=False)
    assert '"action": "deploy"' in decision.stdout
    ids = {h.enqueue(*args[:-1], wait=False).stdout.strip() for _ in range(5)}
    assert len(ids) == 1
