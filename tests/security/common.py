"""What the hostile-message tests share: platform settings pointed at the real Redis and the
GitHub stand-in, a source repository where the workers read sources from, and a real Celery
worker (in this process, the ``solo`` pool) that hostile messages are sent to by task name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery import Celery
from celery.contrib.testing.worker import start_worker

from k8see.app import QUEUES, create_app
from k8see.settings import PlatformSettings
from k8see.stages.context import StageContext
from tests.fixtures.github import SANDBOX_TOKEN, git

REPO = "acme/shop"
CONFIG = "projectId: shop\napp:\n  port: 3000\n"


def platform_settings(
    tmp_path: Path, *, redis_url: str, github_url: str, **groups: dict[str, Any]
) -> PlatformSettings:
    """Settings a worker would have: Redis, GitHub, an allowlist naming ``acme``, and sources
    read from ``<tmp_path>/sources/<owner>/<name>``."""
    allowlist = tmp_path / "allowed.json"
    allowlist.write_text(json.dumps({"mode": "allowlist", "organizations": ["acme", "evil"]}))
    build = {
        "workdir": str(tmp_path / "work"),
        "local_source_root": str(tmp_path / "sources"),
        **groups.pop("build", {}),
    }
    return PlatformSettings(
        github={"api_url": github_url, "token": SANDBOX_TOKEN},
        redis={"url": redis_url},
        policy={"allowlist_path": str(allowlist)},
        queues={"max_retries": 0, "retry_backoff_seconds": 0.01},
        build=build,
        **groups,
    )


def source_repo(tmp_path: Path, repo: str = REPO, files: dict[str, str] | None = None) -> str:
    """A git repository for ``repo`` where the workers read sources; returns its head SHA."""
    path = tmp_path / "sources" / repo
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for rel, text in {
        "k8s-ee.yaml": CONFIG,
        "Dockerfile": "FROM busybox\n",
        **(files or {}),
    }.items():
        (path / rel).write_text(text)
    return commit(path, "one")


def commit(path: Path, message: str) -> str:
    git(path, "add", "-A")
    git(path, "commit", "-q", "--allow-empty", "-m", message)
    return git(path, "rev-parse", "HEAD")


def stage_ctx(settings: PlatformSettings, tmp_path: Path) -> StageContext:
    workdir = tmp_path / "stage"
    workdir.mkdir(exist_ok=True)
    return StageContext(settings=settings, log=logging.getLogger("test.security"), workdir=workdir)


@contextmanager
def worker(settings: PlatformSettings) -> Iterator[Celery]:
    """A real Celery worker consuming every k8see queue from the real Redis."""
    app = create_app(settings)
    with start_worker(
        app, pool="solo", queues=list(QUEUES), perform_ping_check=False, loglevel="WARNING"
    ):
        yield app
