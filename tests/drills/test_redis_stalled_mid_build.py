"""Drill: Redis stops answering (SIGSTOP) for 40 s while buildah runs a real build, and while
helm runs a real deploy.

Covers the failure of issue 16: the platform's real redis-server is SIGSTOPped at the worst
moment of a build (the record says ``building`` and a buildah process of that run, below the
real build pool, is printing output, so the newer-event probe and the log recorder are polled
mid-tool), kept stopped 40 s (longer than the workers' 2 s socket timeout here), then
SIGCONTed. Before, the probe raised ``redis.TimeoutError`` into buildah's output loop,
buildah was killed, the retry could not be queued and the run stayed ``building`` for ever.

Asserted end state: the run reaches ``ready`` (or, if not, ``failed`` with a real error, which
the drill reports); the build was not killed by the stall (it started once, finished once, was
not retried; no stage ran twice); no lease, stage claim or buildah process is left behind; and
the registry holds one digest per tag (a rebuild would have pushed a second one). The same build
without a stall is timed first, for the figures in docs/benchmarks.md.

Mid-deploy: an app that takes 25 s to start keeps ``helm upgrade --wait`` waiting on its
readiness; Redis is stopped while the record says ``deploying`` and helm runs below the deploy
pool. The PR's lease (60 s, renewed every 20 s) cannot be renewed during the stall: the deploy
must still end ``ready``, once, with helm not killed, the lease free and no helm left behind.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.drills.common import (
    alive,
    cmdline,
    descendants,
    open_pr,
    record_figures,
)
from tests.e2e.harness import Harness, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]
STALL_SECONDS = 40
SOCKET_TIMEOUT_SECONDS = 2
ALIVE_CHECK_SECONDS = 10
TERMINAL = ("ready", "failed", "superseded", "skipped")


def _slow_build(marker: str, *, then: str = "true") -> dict[str, str]:
    """A Dockerfile whose RUN step prints a line a second for 20 s, then runs ``then``:
    buildah is busy, and talking, for half the stall. ``marker`` keeps one repository's
    layers out of another's cache."""
    dockerfile = (Path(__file__).resolve().parents[2] / "examples/hello/Dockerfile").read_text()
    step = (
        f'RUN echo "{marker}" && for i in $(seq 20); do echo "compiling $i"; sleep 1; done'
        f" && {then}\nCOPY www/ /www/\n"
    )
    slow = dockerfile.replace("COPY www/ /www/\n", step, 1)
    assert slow != dockerfile, "examples/hello/Dockerfile has no COPY www/ line to extend"
    return {"Dockerfile": slow}


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    extra = {"K8SEE_REDIS__SOCKET_TIMEOUT_SECONDS": str(SOCKET_TIMEOUT_SECONDS)}
    with running_platform(tmp_path_factory.mktemp("drill-stall-build"), extra_env=extra) as h:
        yield h


def _tools(h: Harness, pool: str, tool: str, subcommand: str | None = None) -> list[int]:
    """The ``tool`` processes (running ``subcommand``, if given) below ``pool``'s worker."""
    worker = h.platform.processes[f"worker-{pool}"].pid
    found = []
    for pid in descendants(worker):
        argv = cmdline(pid)  # empty once the process is gone
        wanted = subcommand is None or subcommand in argv[1:]
        if argv and Path(argv[0]).name == tool and wanted and alive(pid):
            found.append(pid)
    return found


def _buildahs(h: Harness, subcommand: str | None = None) -> list[int]:
    return _tools(h, "build", "buildah", subcommand)


def _record(h: Harness, repo: str, pr: int) -> dict[str, Any]:
    return h.record(repo, pr)


def _wait_terminal(h: Harness, repo: str, pr: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = _record(h, repo, pr)
        if record.get("status") in TERMINAL:
            return record
        time.sleep(0.5)
    log = (h.platform.workdir / "worker-build.log").read_text()[-6000:]
    raise AssertionError(f"{repo}#{pr} stuck at {_record(h, repo, pr)}; build log:\n{log}")


def _digests_per_tag(h: Harness, image_repository: str) -> dict[str, set[str]]:
    """Every digest each tag of the repository ever pointed at, from the registry's storage
    (the ``index`` of a tag keeps one entry per digest pushed under it)."""
    tags = (
        h.platform.workdir / "registry/docker/registry/v2/repositories" / image_repository
    ) / "_manifests/tags"
    return {
        tag.name: {f"sha256:{d.name}" for d in (tag / "index/sha256").iterdir()}
        for tag in tags.iterdir()
    }


def _run_to_end(
    h: Harness, repo: str, path: Path, sha: str, pr: int
) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    open_pr(h, repo, path, sha, pr)
    return _wait_terminal(h, repo, pr, timeout=600), time.monotonic() - started


@dataclass
class Stall:
    run_id: str
    #: The tool's processes (``buildah build``, ``helm upgrade``) when Redis stopped.
    tools: list[int]
    #: Those still running ten seconds into the stall.
    alive_in_stall: list[int]
    started: float
    resumed: float


def _stall_during(
    h: Harness,
    repo: str,
    path: Path,
    sha: str,
    pr: int,
    *,
    status: str,
    tool: Callable[[], list[int]],
) -> Stall:
    """Open the PR; once its record says ``status`` and ``tool()`` finds the tool running,
    SIGSTOP Redis for ``STALL_SECONDS``, then SIGCONT it."""
    redis_server = h.platform.processes["redis"]
    started = time.monotonic()
    open_pr(h, repo, path, sha, pr)
    deadline = time.monotonic() + 400
    while not (_record(h, repo, pr).get("status") == status and tool()):
        assert time.monotonic() < deadline, f"the tool never ran: {_record(h, repo, pr)}"
        assert _record(h, repo, pr).get("status") not in TERMINAL, _record(h, repo, pr)
        time.sleep(0.1)
    running = tool()
    run_id = str(_record(h, repo, pr)["run_id"])
    os.kill(redis_server.pid, signal.SIGSTOP)
    try:
        # The probe meets its first timeout within ~3 s; a raising probe kills the tool then,
        # while it still has more than 15 s of work.
        time.sleep(ALIVE_CHECK_SECONDS)
        alive_in_stall = [p for p in running if alive(p)]
        time.sleep(STALL_SECONDS - ALIVE_CHECK_SECONDS)
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)
    return Stall(run_id, running, alive_in_stall, started, time.monotonic())


def _stall_mid_build(h: Harness, repo: str, path: Path, sha: str, pr: int) -> Stall:
    """The stall while ``buildah build`` runs (the record says ``building``)."""
    return _stall_during(h, repo, path, sha, pr, status="building",
                         tool=lambda: _buildahs(h, "build"))  # fmt: skip


def test_a_build_survives_redis_stopped_40s_while_buildah_runs(harness: Harness) -> None:
    from k8see import coordination, state

    h = harness
    # The same build without a stall, for the figures
    repo, path, sha = h.repo("stall-baseline", _slow_build("baseline"))
    h.platform.github.add_repo(repo)
    baseline, baseline_seconds = _run_to_end(h, repo, path, sha, 1)
    assert baseline["status"] == "ready", baseline.get("error")

    # Given a PR whose build is running buildah
    repo, path, sha = h.repo("stall-build", _slow_build("stalled"))
    h.platform.github.add_repo(repo)
    pr = 2
    before = state.stats(h.redis)

    # When Redis stops answering for 40 s, mid-buildah, and then comes back
    stall = _stall_mid_build(h, repo, path, sha, pr)

    # Then the run ends with its real reason: ready
    record = _wait_terminal(h, repo, pr, timeout=600)
    ended = time.monotonic()
    stalled_seconds = ended - stall.started
    build_log = (h.platform.workdir / "worker-build.log").read_text()
    assert record["status"] == "ready", (record.get("error"), build_log[-6000:])
    assert record["run_id"] == stall.run_id
    # And the stall was met (the probes said "unknown"), but buildah was not killed: the build
    # started once, finished once and was not retried; no stage ran twice
    assert "Redis did not answer" in build_log
    stats = state.stats(h.redis)
    ran = {k: stats.get(k, 0) - before.get(k, 0) for k in stats}
    for stage in ("validate", "build", "scan", "deploy"):
        assert ran.get(f"stage_started:{stage}") == 1, (stage, ran)
        assert ran.get(f"stage_finished:{stage}") == 1, (stage, ran)
    assert not ran.get("retried:build"), ran
    assert stall.alive_in_stall == stall.tools, f"buildah build {stall.tools} killed in the stall"
    # And nothing is left behind: no lease, no stage claim, no buildah process
    assert coordination.lease_holder(h.redis, repo=repo, pr=pr) is None
    claims = [k for k in h.redis.scan_iter(match=f"*:delivery:{stall.run_id}:*:claim")]
    assert claims == [], claims
    assert not _buildahs(h)
    # And the image was pushed once: each of its tags names one digest, the run's own
    image, digest = str(record["image"]).split("@")
    assert digest == record["digest"], record
    per_tag = _digests_per_tag(h, image.split("/", 1)[1])
    pushed = record["pushed_tags"]
    assert isinstance(pushed, list) and pushed, record
    assert {tag: per_tag.get(tag) for tag in pushed} == {tag: {digest} for tag in pushed}, per_tag

    record_figures(
        "redis_sigstop_mid_build",
        {
            "stall_seconds": STALL_SECONDS,
            "socket_timeout_seconds": SOCKET_TIMEOUT_SECONDS,
            "run_seconds_without_stall": round(baseline_seconds, 1),
            "run_seconds_with_stall": round(stalled_seconds, 1),
            "ready_seconds_after_sigcont": round(ended - stall.resumed, 1),
            "builds_started": ran.get("stage_started:build"),
            "unit": "s",
        },
    )


def test_a_build_that_fails_in_the_stall_fails_with_its_own_error(harness: Harness) -> None:
    from k8see import coordination, state

    h = harness
    # Given a PR whose RUN step fails after 20 s, while Redis does not answer
    repo, path, sha = h.repo(
        "stall-broken", _slow_build("broken", then="echo 'error: broken on purpose' && exit 3")
    )
    h.platform.github.add_repo(repo)
    pr = 3
    before = state.stats(h.redis)

    # When Redis stops answering for 40 s, mid-buildah, and then comes back
    stall = _stall_mid_build(h, repo, path, sha, pr)

    # Then the run ends failed with the build's own error, not a Redis timeout
    record = _wait_terminal(h, repo, pr, timeout=600)
    build_log = (h.platform.workdir / "worker-build.log").read_text()
    assert record["status"] == "failed", (record, build_log[-6000:])
    assert record["run_id"] == stall.run_id
    error = record["error"]
    assert error["stage"] == "build" and error["reason"] == "build", error
    assert "did not build" in error["message"], error
    assert "broken on purpose" in error["hint"], error
    # And buildah ran to its own end, once: the build started once and was not retried
    assert stall.alive_in_stall == stall.tools, f"buildah build {stall.tools} killed early"
    stats = state.stats(h.redis)
    ran = {k: stats.get(k, 0) - before.get(k, 0) for k in stats}
    assert ran.get("stage_started:build") == 1 and not ran.get("retried:build"), ran
    assert not ran.get("stage_started:deploy"), ran
    # And nothing is left behind: no lease, no stage claim, no buildah process
    assert coordination.lease_holder(h.redis, repo=repo, pr=pr) is None
    claims = list(h.redis.scan_iter(match=f"*:delivery:{stall.run_id}:*:claim"))
    assert claims == [], claims
    assert not _buildahs(h)


def _slow_start(marker: str) -> dict[str, str]:
    """An app that serves only after 25 s: helm waits on its readiness meanwhile."""
    dockerfile = (Path(__file__).resolve().parents[2] / "examples/hello/Dockerfile").read_text()
    cmd = 'CMD ["sh", "-c", "exec httpd -f -v -p \\"${PORT:-3000}\\" -h /www"]'
    assert cmd in dockerfile, "examples/hello/Dockerfile's CMD changed"
    slow = dockerfile.replace(
        cmd, f'CMD ["sh", "-c", "echo {marker}; sleep 25; exec httpd -f -v -p 3000 -h /www"]'
    )
    return {"Dockerfile": slow}


def _helms(h: Harness, subcommand: str | None = None) -> list[int]:
    return _tools(h, "deploy", "helm", subcommand)


def test_a_deploy_survives_redis_stopped_40s_while_helm_waits(harness: Harness) -> None:
    from k8see import coordination, state

    h = harness
    # Given a PR whose deploy is waiting in helm for its slow app
    repo, path, sha = h.repo("stall-deploy", _slow_start("stall-deploy"))
    h.platform.github.add_repo(repo)
    pr = 4
    before = state.stats(h.redis)

    # When Redis stops answering for 40 s while helm waits, and then comes back
    stall = _stall_during(h, repo, path, sha, pr, status="deploying",
                          tool=lambda: _helms(h, "upgrade"))  # fmt: skip
    started, resumed, run_id = stall.started, stall.resumed, stall.run_id

    # Then the run ends ready, the same run, its deploy run once and not retried
    record = _wait_terminal(h, repo, pr, timeout=600)
    deploy_log = (h.platform.workdir / "worker-deploy.log").read_text()
    assert record["status"] == "ready", (record.get("error"), deploy_log[-6000:])
    assert record["run_id"] == run_id
    assert "Redis did not answer" in deploy_log
    assert stall.alive_in_stall == stall.tools, f"helm {stall.tools} killed in the stall"
    stats = state.stats(h.redis)
    ran = {k: stats.get(k, 0) - before.get(k, 0) for k in stats}
    assert ran.get("stage_started:deploy") == ran.get("stage_finished:deploy") == 1, ran
    assert not ran.get("retried:deploy"), ran
    # And nothing is left behind: no lease, no stage claim, no helm process
    assert coordination.lease_holder(h.redis, repo=repo, pr=pr) is None
    assert list(h.redis.scan_iter(match=f"*:delivery:{run_id}:*:claim")) == []
    assert not _helms(h)
    record_figures(
        "redis_sigstop_mid_deploy",
        {
            "stall_seconds": STALL_SECONDS,
            "run_seconds_with_stall": round(time.monotonic() - started, 1),
            "ready_seconds_after_sigcont": round(time.monotonic() - resumed, 1),
            "unit": "s",
        },
    )
