"""Attack: a leaked enqueue credential, used as a Redis client; and each role's bounds.

Covers, against the real redis-server of the tests (ACLs on, ``k8see.redis_acl``'s users):
with the enqueue credential ``FLUSHALL``, ``CONFIG``, ``KEYS``, ``SCAN``, ``ACL``, reading any
record, run, approval or outcome key of any repository, ``LPUSH``/``DEL``/``LRANGE`` on every
Celery queue, and writing anything but the intake list are refused (``NOPERM``); another
submission's progress cannot be found (no ``SCAN``/``KEYS``) and a guessed token reads
nothing. The beat's credential only reaches the maintenance queue, Flower's none of k8see's
keys. End to end, with a real worker (the workers' credential): ``k8see enqueue --wait`` with
the enqueue credential is admitted by the worker, runs validate, and follows the run to its
end through its progress token; ``k8see status --progress`` shows that run and nothing else,
and ``k8see status --repo`` is refused for the enqueue credential. A submission with the
platform's own (``maintenance:*``) trigger is refused by the worker, and ``--wait`` says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from k8see import coordination, state
from k8see.app import QUEUES
from k8see.cli import EXIT_USAGE
from k8see.client import enqueue, follow
from k8see.events import decide_from_flags
from k8see.run import Status
from k8see_sandbox.github import GitHubSandbox
from tests.security.common import REPO, platform_settings, source_repo, worker

VICTIM = "victim/secret-app"
ON_DEMAND = "projectId: shop\ntrigger: on-demand\napp:\n  port: 3000\n"


def refused(client: redis.Redis, *command: str) -> bool:
    """Whether Redis answers ``command`` with NOPERM."""
    try:
        client.execute_command(*command)
    except redis.exceptions.NoPermissionError:
        return True
    return False


def k8see(redis_url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "K8SEE_REDIS__URL": redis_url}
    return subprocess.run(
        [sys.executable, "-m", "k8see", *args], capture_output=True, text=True, env=env,
        timeout=300, check=False, cwd=cwd,
    )  # fmt: skip


def test_a_leaked_enqueue_credential_can_only_submit(redis_urls: dict[str, str]) -> None:
    # Given another repository's record, run, approval and a submission's progress
    admin = redis.Redis.from_url(redis_urls["admin"])
    state.set_status(admin, repo=VICTIM, pr=1, generation=1, status=Status.READY, ttl_seconds=60)
    admin.hset("k8see:run:0123456789ab", "run", "{}")
    admin.set(f"k8see:pr:{VICTIM}:1:approval", "{}")
    admin.lpush("default", "a queued message")
    state.write_progress(admin, token="victims-token-0123456789abc", admission={"run_id": "x"})
    enqueue = redis.Redis.from_url(redis_urls["enqueue"])

    # When the enqueue credential tries the server's, the queues' and the records' commands
    dangerous = [
        ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("CONFIG", "SET", "appendonly", "no"),
        ("KEYS", "*"), ("SCAN", "0", "MATCH", "k8see:progress:*"), ("ACL", "LIST"),
        ("INFO",),
    ]  # fmt: skip
    records = [
        ("GET", state.record_key(VICTIM, 1)), ("ZRANGE", state.INDEX_KEY, "0", "-1"),
        ("HGETALL", "k8see:run:0123456789ab"), ("GET", f"k8see:pr:{VICTIM}:1:approval"),
        ("SET", f"k8see:pr:{VICTIM}:1:approval", "{}"), ("INCR", f"k8see:pr:{VICTIM}:1:generation"),
        ("SET", f"k8see:pr:{VICTIM}:1:closed", "1"), ("DEL", state.record_key(VICTIM, 1)),
        ("HSET", "k8see:progress:victims-token-0123456789abc", "record", "{}"),
        ("LRANGE", "k8see:intake", "0", "-1"), ("LPOP", "k8see:intake"),
    ]  # fmt: skip
    queues = [
        cmd for queue in (*QUEUES, "unacked")
        for cmd in (("LPUSH", queue, "{}"), ("DEL", queue), ("LRANGE", queue, "0", "-1"),
                    ("RPOPLPUSH", queue, queue), ("HGETALL", queue))
    ]  # fmt: skip
    # Then every one is refused, and nothing changed
    for command in (*dangerous, *records, *queues):
        assert refused(enqueue, *command), command
    assert admin.llen("default") == 1 and admin.get(f"k8see:pr:{VICTIM}:1:closed") is None
    # and without its token another submission's progress reads as nothing at all
    assert enqueue.hgetall("k8see:progress:guessed-token-0123456789ab") == {}
    # while submitting (the one write) is allowed
    assert enqueue.rpush("k8see:intake", "{}") == 1


def test_beat_and_flower_reach_only_what_they_need(redis_urls: dict[str, str]) -> None:
    beat = redis.Redis.from_url(redis_urls["beat"])
    flower = redis.Redis.from_url(redis_urls["flower"])
    record = state.record_key(VICTIM, 1)
    forbidden = [
        ("GET", record), ("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*"),
        ("HGETALL", "k8see:run:0123456789ab"), ("RPUSH", "k8see:intake", "{}"),
    ]  # fmt: skip
    for client in (beat, flower):
        for command in forbidden:
            assert refused(client, *command), command
    # Beat sends scheduled jobs to the maintenance queue, and to no other queue
    assert not refused(beat, "LPUSH", "maintenance", "{}")
    for queue in ("default", "build", "deploy"):
        assert refused(beat, "LPUSH", queue, "{}"), queue
    # Workers may do their work but not the dangerous commands
    workers = redis.Redis.from_url(redis_urls["worker"])
    assert not refused(workers, "GET", record)
    for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("ACL", "LIST")):
        assert refused(workers, *command), command


def test_enqueue_and_wait_work_with_the_enqueue_credential_alone(
    github: GitHubSandbox, redis_urls: dict[str, str], tmp_path: Path
) -> None:
    # Given a worker with the workers' credential, and an on-demand repository whose PR opens
    settings = platform_settings(tmp_path, redis_url=redis_urls["worker"], github_url=github.url)
    sha = source_repo(tmp_path, files={"k8s-ee.yaml": ON_DEMAND})
    github.add_repo(REPO)
    github.add_source(REPO, tmp_path / "sources" / REPO)
    github.add_pull(REPO, 4, head_sha=sha, head_ref="feature")
    admin = redis.Redis.from_url(redis_urls["admin"])
    state.set_status(admin, repo=VICTIM, pr=1, generation=1, status=Status.READY, ttl_seconds=60)
    enqueue_url = redis_urls["enqueue"]
    with worker(settings):
        # When the workflow step enqueues with the enqueue credential and waits
        out = k8see(
            enqueue_url, "enqueue", "--repo", REPO, "--pr", "4", "--action", "opened",
            "--sha", sha, "--wait", "--timeout", "120", "--json", cwd=tmp_path,
        )  # fmt: skip
    # Then the worker admitted it, validate re-decided it under the repository's trigger
    # mode (on-demand: an opened PR waits for /deploy-preview), and --wait saw the end
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["status"] == Status.SKIPPED.value and not summary["timed_out"]
    token = summary["progress"]
    record = state.get(admin, repo=REPO, pr=4)
    assert record is not None and record["run_id"] == summary["run_id"]
    assert record["progress_tokens"] == [token]
    # and k8see status shows that run to its token, and nothing else to the credential
    mine = k8see(enqueue_url, "status", "--progress", token, "--json", cwd=tmp_path)
    assert mine.returncode == 0, mine.stderr
    shown = json.loads(mine.stdout)
    assert [r["repo"] for r in shown] == [REPO] and "progress_tokens" not in shown[0]
    for args in (("--repo", VICTIM), ("--repo", REPO), ()):
        listed = k8see(enqueue_url, "status", *args, cwd=tmp_path)
        assert listed.returncode == EXIT_USAGE and "--progress" in listed.stderr
        assert "victim" not in listed.stdout and "Traceback" not in listed.stderr
    guessed = k8see(enqueue_url, "status", "--progress", "x" * 22, "--json", cwd=tmp_path)
    assert guessed.returncode == 0 and json.loads(guessed.stdout) == []


def test_a_submission_cannot_use_the_platforms_own_triggers(
    github: GitHubSandbox, redis_urls: dict[str, str], tmp_path: Path
) -> None:
    # Given an environment, and a leaked enqueue credential that submits an age-based destroy
    # (the cleanup job's trigger, which the destroy stage takes as the platform's decision)
    admin = redis.Redis.from_url(redis_urls["admin"])
    state.set_status(admin, repo=REPO, pr=4, generation=1, status=Status.READY, ttl_seconds=60)
    settings = platform_settings(tmp_path, redis_url=redis_urls["worker"], github_url=github.url)
    submitter = settings.model_copy(
        update={"redis": settings.redis.model_copy(update={"url": redis_urls["enqueue"]})}
    )
    decision = decide_from_flags(
        repo=REPO, pr=4, action="closed", sha="c" * 40, ref="", trigger="automatic"
    )
    with worker(settings):
        sent = enqueue(decision, settings=submitter, trigger="maintenance:stale")
        outcome = follow(
            settings=submitter, repo=REPO, pr=4, run_id=sent.run_id, generation=0,
            timeout_seconds=60, progress=sent.progress,
        )  # fmt: skip
    # Then the worker refused it: nothing admitted, no generation, the record untouched
    assert outcome.skipped and "platform's own" in outcome.record["reason"]
    assert coordination.current_generation(admin, repo=REPO, pr=4) == 0
    assert not coordination.is_closed(admin, repo=REPO, pr=4)
    record = state.get(admin, repo=REPO, pr=4)
    assert record is not None and record["status"] == Status.READY.value


def test_a_refusal_by_redis_is_one_readable_error(
    redis_urls: dict[str, str], tmp_path: Path
) -> None:
    # The beat's credential is not the enqueue one, so the client admits in-process: Redis
    # refuses the admission, and the user reads one error with a hint, not a traceback.
    out = k8see(
        redis_urls["beat"], "enqueue", "--repo", REPO, "--pr", "4", "--action", "opened",
        "--sha", "c" * 40, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "Error: Redis refused this credential" in out.stderr and "Hint:" in out.stderr
    assert "Traceback" not in out.stderr and "beat-pw" not in out.stderr
