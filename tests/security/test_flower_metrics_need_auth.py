"""Attack: Flower's ``/metrics`` answered anyone (Flower 2.2 does not authenticate it).

Covers, with the real ``k8see flower`` (basic auth) on the real Redis, connected as the
``flower`` ACL user: ``/metrics`` without credentials or with wrong ones is refused (401), as
the pages are; with the UI's credentials it serves Flower's metrics; ``/healthcheck`` stays
open for probes and says only ``OK``.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for_port

AUTH = "admin:flower-pw-for-tests"


@pytest.fixture
def flower(redis_urls: dict[str, str], tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = {**os.environ, "K8SEE_REDIS__URL": redis_urls["flower"], "FLOWER_BASIC_AUTH": AUTH}
    log = (tmp_path / "flower.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "k8see", "flower", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port(port, timeout_seconds=60)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def get(port: int, path: str, auth: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Basic {base64.b64encode(auth.encode()).decode()}"} if auth else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, ""


def test_metrics_need_the_same_authentication_as_the_pages(flower: int) -> None:
    for path in ("/metrics", "/tasks"):
        assert get(flower, path)[0] == 401, path
        assert get(flower, path, "admin:wrong")[0] == 401, path
    status, text = get(flower, "/metrics", AUTH)
    assert status == 200 and "flower_" in text
    assert get(flower, "/healthcheck") == (200, "OK")
