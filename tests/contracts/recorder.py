"""The GitHub stand-in's observer in tests: checks each exchange, records what breaks the contract.

One ``ContractRecorder`` serves the whole session (``tests/fixtures/github.py`` makes it every
sandbox's default observer); the pytest hooks there take its violations after each test phase
and fail the test that caused them. The description is loaded on the first exchange, so a
session that never talks to GitHub pays nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from k8see_sandbox.github import Exchange
from tests.contracts.openapi import OpenApiContract, Violation

#: Paths the stand-in serves that are not api.github.com: its seeding API, its codeload
#: (GitHub's archives come from codeload.github.com) and the Actions OIDC issuer
#: (token.actions.githubusercontent.com and the runner's token endpoint): other hosts, which
#: the description does not cover.
OUTSIDE_THE_API = ("/_sandbox/", "/_codeload/", "/.well-known/", "/_actions/")


class ContractRecorder:
    """Checks exchanges against GitHub's OpenAPI description and keeps the violations.

    Args:
        spec: ``api.github.com.json``; when it is missing every exchange is counted unchecked
            (or, with ``required``, reported as a violation, as CI wants).
    """

    def __init__(self, spec: Path, *, required: bool = False) -> None:
        self.spec = spec
        self.required = required
        self._contract: OpenApiContract | None = None
        self._lock = threading.Lock()
        self._violations: list[Violation] = []
        self._expecting: list[list[Violation]] = []
        self.checked = 0
        self.unchecked = 0
        self.check_seconds = 0.0
        self.load_seconds = 0.0

    @property
    def contract(self) -> OpenApiContract | None:
        with self._lock:
            if self._contract is None and self.spec.is_file():
                started = time.perf_counter()
                self._contract = OpenApiContract(self.spec)
                self.load_seconds = time.perf_counter() - started
            return self._contract

    def __call__(self, exchange: Exchange) -> None:
        if any(exchange.target.startswith(p) for p in OUTSIDE_THE_API):
            return
        contract = self.contract
        if contract is None:
            self.unchecked += 1
            if self.required:
                path = exchange.target.split("?")[0]
                self._record(
                    [
                        Violation(
                            exchange.method,
                            path,
                            "request",
                            "operation",
                            "no-description",
                            f"{self.spec} is missing",
                        )
                    ]
                )
            return
        started = time.perf_counter()
        try:
            found = check_exchange(contract, exchange)
        except Exception as exc:  # noqa: BLE001 - in the server's thread: report, never raise
            path = exchange.target.split("?")[0]
            found = [
                Violation(
                    exchange.method,
                    path,
                    "request",
                    "check",
                    "checker-error",
                    f"the contract check itself failed: {type(exc).__name__}: {exc}",
                )
            ]
        with self._lock:
            self.checked += 1
            self.check_seconds += time.perf_counter() - started
        self._record(found)

    def _record(self, found: list[Violation]) -> None:
        if not found:
            return
        with self._lock:
            (self._expecting[-1] if self._expecting else self._violations).extend(found)

    def take(self) -> list[Violation]:
        """The violations recorded since the last ``take`` (and forget them)."""
        with self._lock:
            found, self._violations = self._violations, []
            return found

    @contextmanager
    def expect_violations(self) -> Iterator[list[Violation]]:
        """Collect the violations of the block in the list yielded instead of failing the test:
        for tests that break the contract on purpose, and assert what the check reported."""
        seen: list[Violation] = []
        with self._lock:
            self._expecting.append(seen)
        try:
            yield seen
        finally:
            with self._lock:
                self._expecting.remove(seen)


def check_exchange(contract: OpenApiContract, exchange: Exchange) -> list[Violation]:
    """Every violation of one request and its answer."""
    body: Any = None
    has_body = bool(exchange.body.strip())
    path = exchange.target.split("?")[0]
    if has_body:
        import json

        try:
            body = json.loads(exchange.body)
        except ValueError:
            return [
                Violation(
                    exchange.method, path, "request", "body", "json", "the request body is not JSON"
                )
            ]
    op, found = contract.check_request(exchange.method, exchange.target, body, has_body=has_body)
    if op is None:
        return found
    is_json = not isinstance(exchange.reply_body, bytes) and exchange.reply_body is not None
    found += contract.check_response(
        op,
        exchange.method,
        path.rstrip("/") or "/",
        exchange.status,
        exchange.reply_body,
        is_json=is_json,
    )
    return found
