"""HTTP helpers of the API tests: plain urllib, as any client would call."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import redis

from k8see import coordination, state

SHA = "a" * 40


def call(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, _json(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _json(exc.read())


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {"raw": raw.decode(errors="replace")}
    return data if isinstance(data, dict) else {"value": data}


def wait_for(check: Callable[[], Any], *, timeout: float = 20.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def record(client: redis.Redis, repo: str, pr: int) -> dict[str, Any] | None:
    return state.get(client, repo=repo, pr=pr)


def generation(client: redis.Redis, repo: str, pr: int) -> int:
    return coordination.current_generation(client, repo=repo, pr=pr)


def queued_messages(client: redis.Redis) -> int:
    return sum(int(client.llen(q)) for q in ("default", "build", "deploy", "maintenance"))
