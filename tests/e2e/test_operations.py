"""Operating k8see end to end: Flower with auth in a real browser, and the metrics endpoint.

Covers:
- Flower refuses to start without authentication (``k8see flower`` exits 2 with a hint);
- with basic auth, headless Chromium (Debian's package) logs into Flower after a finished
  pipeline and sees its tasks with repo, PR and commit in their arguments; a screenshot is
  saved in the test's tmp dir; without credentials Flower answers 401;
- ``k8see metrics`` serves the workers' metrics (multiprocess mode) after the run: stage
  durations, time to ready, queue wait, runs by outcome, and the environment gauges;
- a workflow holding only the enqueue credential (Redis ACL user ``k8see-enqueue``, while the
  pools, beat and Flower run as their own users) gets its environment ready and then
  destroyed with ``k8see enqueue --wait``, and reads it with ``k8see status --progress``,
  but not with ``k8see status --repo``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from k8see_sandbox.platform import free_port, wait_for_port
from tests.conftest import require_tool
from tests.e2e.harness import Harness, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
AUTH = "admin:flower-Pa55"


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    workdir = tmp_path_factory.mktemp("ops")
    metrics_dir = workdir / "prom"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "K8SEE_METRICS__ENABLED": "false"}
    with running_platform(workdir, extra_env=env) as h:
        h.metrics_dir = metrics_dir  # type: ignore[attr-defined]
        yield h


def test_flower_needs_authentication(harness: Harness) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "k8see", "flower", "--port", str(free_port())],
        env={k: v for k, v in harness.platform.process_env().items() if k != "FLOWER_BASIC_AUTH"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "without authentication" in done.stderr and "FLOWER_BASIC_AUTH" in done.stderr
    assert "Traceback" not in done.stderr


def test_flower_and_metrics_after_a_pipeline(harness: Harness, tmp_path: Path) -> None:
    chromium = require_tool("chromium")
    h = harness
    port = free_port()
    h.platform.start_flower(port=port, basic_auth=AUTH)
    repo, path, sha = h.repo("opsview")
    h.platform.github.add_repo(repo)
    h.platform.github.add_pull(repo, 7, head_sha=sha, head_ref="feature")

    # Given a pipeline that finished while Flower watched
    done = h.enqueue("--repo", repo, "--pr", "7", "--action", "opened", "--sha", sha,
                     "--ref", "feature", "--source", str(path))  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    h.wait_for(lambda: h.record(repo, 7).get("commented") == "ready")

    # Then Flower refuses anonymous requests
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/tasks", timeout=10)
    assert denied.value.code == 401

    # When an admin opens the task list in a browser with the credentials
    profile = tmp_path / "chromium-profile"
    shot = tmp_path / "flower-tasks.png"
    url = f"http://{AUTH}@127.0.0.1:{port}/tasks"
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
             "--virtual-time-budget=8000", "--window-size=1600,1000"]  # fmt: skip
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=120)

    # Then the finished pipeline's tasks show with repo, PR and commit
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert f"{repo}#7 gen" in page, page[-3000:]
    assert sha[:7] in page
    for stage in ("k8see.validate", "k8see.build", "k8see.deploy", "k8see.comment"):
        assert stage in page
    assert shot.is_file() and shot.stat().st_size > 10_000

    # And the metrics endpoint serves what the workers measured
    metrics_port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "k8see", "metrics", "--port", str(metrics_port)],
        env=h.platform.process_env({"PROMETHEUS_MULTIPROC_DIR": str(h.metrics_dir)}),  # type: ignore[attr-defined]
    )
    try:
        wait_for_port(metrics_port)
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    finally:
        server.terminate()
        server.wait(timeout=10)
    for line in (
        'k8see_stage_duration_seconds_count{outcome="ok",stage="deploy"}',
        'k8see_stage_duration_seconds_count{outcome="ok",stage="build"}',
        "k8see_time_to_ready_seconds_count",
        'k8see_queue_wait_seconds_count{stage="validate"}',
        'k8see_runs_total{action="deploy",outcome="ready"}',
        'k8see_environments{status="ready"}',
    ):
        assert line in text, line
    ready_runs = [x for x in text.splitlines() if x.startswith('k8see_runs_total{action="deploy"')]
    assert float(ready_runs[0].rsplit(" ", 1)[1]) >= 1.0


def test_a_workflow_with_the_enqueue_credential_alone(harness: Harness) -> None:
    h = harness
    repo, _path, sha = h.repo("submitted")
    h.platform.github.add_repo(repo)
    h.platform.github.add_pull(repo, 3, head_sha=sha, head_ref="feature")
    env = h.platform.process_env({"K8SEE_REDIS__URL": h.platform.role_url("enqueue")})

    def k8see(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "k8see", *args], env=env,
                              capture_output=True, text=True, timeout=700)  # fmt: skip

    # When the workflow step enqueues the opened PR with the enqueue credential and waits
    opened = k8see("enqueue", "--repo", repo, "--pr", "3", "--action", "opened", "--sha", sha,
                   "--ref", "feature", "--wait", "--timeout", "600", "--json")  # fmt: skip
    # Then a worker admitted it, the pipeline ran, and --wait followed it to ready
    assert opened.returncode == 0, opened.stderr + opened.stdout
    summary = json.loads(opened.stdout)
    assert summary["status"] == "ready" and "hello-pr-3." in summary["preview_url"]
    assert h.record(repo, 3)["status"] == "ready"
    # And the credential reads that run through its token, and no repository's records
    mine = k8see("status", "--progress", summary["progress"], "--json")
    assert mine.returncode == 0 and json.loads(mine.stdout)[0]["status"] == "ready", mine.stderr
    listed = k8see("status", "--repo", repo)
    assert listed.returncode == 2 and "--progress" in listed.stderr

    # When the PR closes on GitHub and the step enqueues the close
    h.platform.github.set_pull_state(repo, 3, state="closed")
    closed = k8see("enqueue", "--repo", repo, "--pr", "3", "--action", "closed", "--sha", sha,
                   "--wait", "--timeout", "600")  # fmt: skip
    # Then the environment is destroyed
    assert closed.returncode == 0 and "destroyed" in closed.stdout, closed.stderr
    h.wait_for(lambda: "hello-pr-3" not in h.namespaces())
