"""JSON logs: every line a worker writes while it runs a stage names the run.

Covers:
- the time of a line is ISO 8601 in UTC with milliseconds and says so (``Z``);
- fields a caller passes with ``extra=`` are kept (JSON-safe), redacted like the message, and
  never overwrite the line's own keys; the record's internals (args, pathname, ...) stay out;
- Celery's "received" line, logged by the worker's main process before any task code runs,
  gets the run from the task's arguments (``pipeline.describe``), parsed back exactly;
- end to end (marker e2e): one real worker process started with ``--log-format json`` takes a
  PR through validate, build, scan, deploy and comment, then destroy; every line of its log
  stream (stderr) is one JSON object, and every line written while a task runs (Celery's
  received and succeeded lines, the stage and integration lines) carries run_id, repo, pr and
  stage; the lines without a run are the worker's own start and stop lines, listed here by
  logger. Celery's banner is left out (``-q``); its "Warm shutdown" notice is printed to
  stdout from a signal handler, not logged, so stdout holds that line and nothing else.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from k8see import logs
from k8see.pipeline import describe
from k8see.run import Action, Run
from tests.conftest import require_tool
from tests.e2e.harness import ROOT, TOOLS, Harness

CONTEXT = ("run_id", "repo", "pr", "stage")
#: Loggers that write while no task runs: start-up, connection, shutdown. Nothing else may
#: write a line without the run context.
WORKER_LOGGERS = (
    "celery.apps.worker",
    "celery.worker.consumer",
    "celery.worker.control",
    "celery.bootsteps",
    "celery.pool",
    "celery.redirected",
    "k8see.metrics",
    "py.warnings",
)


def test_received_line_carries_the_run_from_the_task_arguments() -> None:
    # Given the worker's JSON handler and a run as a chain describes it
    run = Run(repo="acme/shop", pr=42, sha="a" * 40, generation=3, action=Action.DEPLOY,
              ref="feature", trigger="push", run_id="r-123")  # fmt: skip
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.RunContextFilter())
    logger = logging.getLogger("celery.worker.strategy")
    logger.addHandler(handler)
    try:
        # When Celery logs its received line the way celery.worker.strategy does
        context = {"id": "t-1", "name": "k8see.build", "args": describe(run), "kwargs": "{}",
                   "eta": None}  # fmt: skip
        logger.warning("Task %(name)s[%(id)s] received", context, extra={"data": context})
        logger.warning("Task %(name)s[%(id)s] received", {**context, "args": "()"},
                       extra={"data": {**context, "args": "()"}})  # fmt: skip
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in buffer.getvalue().splitlines())
    # Then the line names the run, the stage and the task
    assert {k: first.get(k) for k in (*CONTEXT, "generation", "task_id")} == {
        "run_id": "r-123", "repo": "acme/shop", "pr": 42, "stage": "build", "generation": 3,
        "task_id": "t-1"}  # fmt: skip
    # And arguments that are not a run give the stage and task only, never a wrong run
    assert second["stage"] == "build" and "run_id" not in second and "repo" not in second


def _json_line(log: Any, *, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """Log one line through the JSON handler ``configure`` builds, and parse it back."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.RunContextFilter())
    handler.addFilter(logs.RedactingFilter(secrets))
    logger = logging.getLogger("k8see.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        log(logger)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    (line,) = buffer.getvalue().splitlines()
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_the_time_is_utc_with_milliseconds() -> None:
    before = datetime.now(UTC)
    line = _json_line(lambda log: log.warning("Build finished."))
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]), line["time"]
    when = datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
    assert when.utcoffset() == timedelta(0)
    assert before - timedelta(milliseconds=1) <= when <= after


def test_extra_fields_are_kept_redacted_and_never_overwrite_the_line() -> None:
    token = "ghp_" + "x" * 36
    extra = {
        "image": "registry.example/acme/shop@sha256:abc",
        "seconds": 12.5,
        "platforms": ["linux/amd64", "linux/arm64"],
        "url": f"https://example.org/?auth={token}",
        "detail": {"header": f"Bearer {token}", "count": 2},
        "level": "not-the-level",
        "when": datetime(2026, 3, 14, tzinfo=UTC),
    }
    line = _json_line(lambda log: log.warning("Pushed %s.", "x", extra=extra))
    assert line["image"] == extra["image"] and line["seconds"] == 12.5
    assert line["platforms"] == ["linux/amd64", "linux/arm64"]
    assert line["url"] == "https://example.org/?auth=[redacted]"
    assert line["detail"] == {"header": "[redacted]", "count": 2}
    assert token not in json.dumps(line)
    assert line["level"] == "warning" and line["message"] == "Pushed x."
    assert line["when"].startswith("2026-03-14")
    internals = {"args", "msg", "levelno", "pathname", "lineno", "created", "thread", "exc_text"}
    assert not internals & set(line)


def test_a_known_secret_in_an_extra_field_is_redacted() -> None:
    line = _json_line(
        lambda log: log.warning("Logged in.", extra={"login": "user:hunter2-secret"}),
        secrets=("hunter2-secret",),
    )
    assert line["login"] == "user:[redacted]"


@contextmanager
def json_worker_platform(workdir: Path) -> Iterator[tuple[Harness, Path]]:
    """The local platform with one worker for every queue, logging JSON to a file."""
    for name in TOOLS:
        require_tool(name)
    from k8see_sandbox.platform import Platform

    platform = Platform(workdir=workdir).start()
    assert platform.identities is not None
    # One worker serves every queue here; it needs the deploy pool's rights.
    deploy_kubeconfig = str(platform.identities.kubeconfigs["deploy"])
    env = platform.process_env(
        {
            "K8SEE_DEPLOY__KUBECONFIG": deploy_kubeconfig,
            "K8SEE_BUILD__PLATFORMS": "linux/amd64",
            "K8SEE_QUEUES__RETRY_BACKOFF_SECONDS": "0.2",
            "K8SEE_METRICS__ENABLED": "false",
        }
    )
    path = workdir / "worker.jsonl"
    k8see = str(Path(sys.executable).parent / "k8see")
    argv = [k8see, "--log-format", "json", "worker", "--pool", "all", "--concurrency", "2"]
    with path.open("wb") as err, path.with_suffix(".stdout").open("wb") as out:
        worker = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=ROOT,
                                  start_new_session=True)  # fmt: skip
        try:
            yield Harness(platform, workdir), path
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
            platform.stop()


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_every_worker_line_is_json_and_names_the_run(tmp_path: Path) -> None:
    with json_worker_platform(tmp_path) as (h, path):
        # Given a PR deployed and then closed, through one worker started with JSON logs
        repo, _, sha = h.repo("jsonlogs")
        h.platform.github.add_repo(repo)
        h.platform.github.add_pull(repo, 3, head_sha=sha, head_ref="feature")
        opened = h.enqueue("--repo", repo, "--pr", "3", "--action", "opened", "--sha", sha,
                           "--ref", "feature")  # fmt: skip
        assert opened.returncode == 0, opened.stderr + opened.stdout
        h.wait_for(lambda: h.record(repo, 3).get("commented") == "ready")
        # (destroy acts only on a PR that GitHub says is closed)
        h.platform.github.set_pull_state(repo, 3, state="closed")
        closed = h.enqueue("--repo", repo, "--pr", "3", "--action", "closed", "--sha", sha,
                           "--ref", "feature")  # fmt: skip
        assert closed.returncode == 0, closed.stderr + closed.stdout
        h.wait_for(lambda: h.record(repo, 3).get("commented") == "destroyed")
        run_ids = {h.record(repo, 3).get("run_id")}
    # Then stdout holds only Celery's shutdown notice, and every log line is one JSON object
    printed = path.with_suffix(".stdout").read_text().splitlines()
    assert [line for line in printed if line] == ["worker: Warm shutdown (MainProcess)"]
    lines = path.read_text().splitlines()
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"line {number} of the worker log is not JSON: {line[:300]!r}")
    assert all(isinstance(r, dict) and r.get("message") is not None for r in records)
    # And every line written while a task ran names the run, repo, PR and stage
    bare = [r for r in records if not all(r.get(k) not in (None, "") for k in CONTEXT)]
    strays = [r for r in bare if not r["logger"].startswith(WORKER_LOGGERS)]
    assert strays == [], json.dumps(strays[:5], indent=1)
    with_run = [r for r in records if r.get("run_id")]
    stages = {r["stage"] for r in with_run if r["repo"] == repo}
    assert {"validate", "build", "scan", "deploy", "comment", "destroy"} <= stages
    assert run_ids <= {r["run_id"] for r in with_run}
    assert any(r["logger"] == "celery.worker.strategy" and r.get("run_id") for r in records)
    assert any(r["logger"] == "celery.app.trace" and r.get("run_id") for r in records)
    assert all(r["pr"] == 3 for r in with_run if r["repo"] == repo)
