"""Hostile or mistaken input to the CLI ends in one clean error, never a traceback.

Covers, each through the real ``k8see`` process: a number too large to print in k8s-ee.yaml
(``validate`` fails at its line; ``enqueue --action closed`` still queues the destroy, since a
destroy needs no config); an event or allowlist nested 100,000 levels deep; a Redis that
accepts connections and never answers (exit 3, as unreachable, with a hint); an unknown
``--log-level`` (a usage error, exit 2); ``enqueue`` without an event name (says it is missing
and how to give it). Each error names the file or line where it can, and changes nothing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from k8see.cli import EXIT_UNREACHABLE, EXIT_USAGE, EXIT_USER_ERROR
from k8see.config.policy import load_allowlist
from k8see.errors import PolicyError

HUGE_PORT = "projectId: shop\napp:\n  port: 0x" + "f" * 3700 + "\n"
DEEP = "[" * 100_000


def _cli(*args: str, redis_url: str = "redis://127.0.0.1:1/0", cwd: Path | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    full_env = {**os.environ, "K8SEE_REDIS__URL": redis_url, **(env or {})}
    full_env.pop("GITHUB_EVENT_NAME", None)
    return subprocess.run(
        [sys.executable, "-m", "k8see", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=120,
    )


def _clean(out: subprocess.CompletedProcess[str], code: int) -> None:
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout, out.stderr
    assert "Hint:" in out.stderr, out.stderr


def test_a_huge_number_in_the_config_fails_validate_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "k8s-ee.yaml").write_text(HUGE_PORT)
    out = _cli("validate", "k8s-ee.yaml", cwd=tmp_path)
    _clean(out, EXIT_USER_ERROR)
    assert out.stderr.startswith("Error: k8s-ee.yaml:3: the number ") and "too large" in out.stderr
    assert len(out.stderr) < 600


def test_a_close_is_queued_even_when_the_config_is_broken(tmp_path: Path, redis_url: str) -> None:
    # Given a checkout whose k8s-ee.yaml cannot be loaded
    (tmp_path / "k8s-ee.yaml").write_text(HUGE_PORT)
    # When the PR closes
    out = _cli(
        "enqueue", "--repo", "acme/shop", "--pr", "4", "--action", "closed",
        "--config", "k8s-ee.yaml", "--json", redis_url=redis_url, cwd=tmp_path,
    )  # fmt: skip
    # Then the destroy is queued anyway, with a warning that names the problem
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "too large" in out.stderr
    assert json.loads(out.stdout)["action"] == "destroy"
    client = redis.Redis.from_url(redis_url)
    (message,) = [json.loads(m) for m in client.lrange("deploy", 0, -1)]
    assert message["headers"]["task"] == "k8see.destroy"


def test_a_deeply_nested_event_is_refused(tmp_path: Path, redis_url: str) -> None:
    event = tmp_path / "event.json"
    event.write_text(DEEP)
    out = _cli(
        "enqueue", "--event-path", str(event), "--event-name", "pull_request",
        redis_url=redis_url,
    )  # fmt: skip
    _clean(out, EXIT_USER_ERROR)
    assert "nested too deeply" in out.stderr and str(event) in out.stderr
    assert redis.Redis.from_url(redis_url).dbsize() == 0


def test_a_deeply_nested_allowlist_refuses_everyone(tmp_path: Path) -> None:
    path = tmp_path / "allowed-orgs.json"
    path.write_text('{"mode": "allowlist", "organizations": ' + DEEP)
    with pytest.raises(PolicyError) as refused:
        load_allowlist(path)
    assert "nested too deeply" in refused.value.message
    assert refused.value.where is not None and refused.value.where.file == str(path)
    assert refused.value.hint


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_a_redis_that_never_answers_is_unreachable(silent_server: int) -> None:
    url = f"redis://127.0.0.1:{silent_server}/0"
    for args in (
        ("enqueue", "--repo", "a/b", "--pr", "1", "--action", "closed"),
        ("status", "--repo", "a/b"),  # without --repo, status refuses before connecting
    ):
        out = _cli(*args, redis_url=url)
        _clean(out, EXIT_UNREACHABLE)
        assert out.stderr.startswith("Error: Redis did not answer in time")
        assert "K8SEE_REDIS__URL" in out.stderr


def test_an_unknown_log_level_is_a_usage_error() -> None:
    out = _cli("--log-level", "bogus", "schema")
    assert out.returncode == EXIT_USAGE and "Traceback" not in out.stderr
    assert "Invalid value for '--log-level'" in out.stderr and "'bogus'" in out.stderr
    # Any case of a real level still works.
    assert _cli("--log-level", "debug", "schema").returncode == 0


def test_enqueue_without_an_event_name_says_it_is_missing(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text('{"action": "opened"}')
    out = _cli("enqueue", "--event-path", str(event))
    _clean(out, EXIT_USAGE)
    assert "The event name is missing" in out.stderr
    assert "--event-name pull_request" in out.stderr and "GITHUB_EVENT_NAME" in out.stderr
    assert "''" not in out.stderr
