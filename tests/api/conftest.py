"""``k8see api`` served by uvicorn on a loopback port, against the session's real Redis and the
GitHub stand-in (its OIDC issuer). Real HTTP end to end; nothing of the API is replaced."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn

from k8see.api.server import create_api
from k8see.settings import PlatformSettings, load_settings
from k8see_sandbox.github import GitHubSandbox
from tests.conftest import free_port

SECRET = "whsec-new-0123456789"
OLD_SECRET = "whsec-old-9876543210"


class ApiServer:
    """One API process's worth: the Starlette app on uvicorn in a thread."""

    def __init__(self, settings: PlatformSettings, *, drain: bool = True) -> None:
        self.settings = settings
        self.port = free_port()
        config = uvicorn.Config(
            create_api(settings, drain=drain),
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


def make_settings(redis_url: str, github: GitHubSandbox, **api: Any) -> PlatformSettings:
    fields: dict[str, Any] = {
        "webhook_secrets": [SECRET, OLD_SECRET],
        "oidc_issuer": github.url,
        "redis_timeout_seconds": 2.0,
        **api,
    }
    return load_settings(redis={"url": redis_url}, github={"api_url": github.url}, api=fields)


@pytest.fixture
def start_api(redis_url: str, github: GitHubSandbox) -> Iterator[Callable[..., ApiServer]]:
    started: list[ApiServer] = []

    def start(
        *, drain: bool = True, settings: PlatformSettings | None = None, **api: Any
    ) -> ApiServer:
        server = ApiServer(settings or make_settings(redis_url, github, **api), drain=drain)
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()
