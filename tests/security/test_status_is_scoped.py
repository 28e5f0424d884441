"""Attack 9: ``k8see status`` with the shared Redis URL shows every repository's records.

Covers, with the real CLI and a real Redis with ACLs on: without ``--repo`` a non-admin
credential (the workers') gets a usage error and no record; with ``--repo`` only that
repository's records; the admin credential (a URL whose Redis ACL user is
``redis.admin_username``) lists every repository. The enqueue credential reads no record at
all (``test_the_enqueue_credential_only_submits.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from k8see import state
from k8see.cli import EXIT_USAGE
from k8see.state import Status


def status(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "K8SEE_REDIS__URL": redis_url}
    return subprocess.run(
        [sys.executable, "-m", "k8see", "status", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.fixture
def records(redis_urls: dict[str, str]) -> Iterator[redis.Redis]:
    """Two repositories' records, written with the admin credential."""
    client = redis.Redis.from_url(redis_urls["admin"])
    for repo in ("acme/shop", "victim/secret-app"):
        state.set_status(
            client, repo=repo, pr=1, generation=1, status=Status.READY, ttl_seconds=600
        )
    yield client
    client.close()


def test_the_shared_url_must_name_a_repository(
    records: redis.Redis, redis_urls: dict[str, str]
) -> None:
    redis_url = redis_urls["worker"]
    out = status(redis_url)
    assert out.returncode == EXIT_USAGE and "Traceback" not in out.stderr
    assert "--repo" in out.stderr and "victim" not in out.stdout + out.stderr
    # A PR alone does not widen it either
    assert status(redis_url, "--pr", "1").returncode == EXIT_USAGE


def test_a_repository_sees_only_its_own_records(
    records: redis.Redis, redis_urls: dict[str, str]
) -> None:
    out = status(redis_urls["worker"], "--repo", "acme/shop")
    assert out.returncode == 0, out.stderr
    assert {r["repo"] for r in json.loads(out.stdout)} == {"acme/shop"}


def test_the_admin_credential_lists_every_repository(
    records: redis.Redis, redis_urls: dict[str, str]
) -> None:
    out = status(redis_urls["admin"])
    assert out.returncode == 0, out.stderr
    assert {r["repo"] for r in json.loads(out.stdout)} == {"acme/shop", "victim/secret-app"}
