"""Webhook payloads held to ``@octokit/webhooks-schemas`` (one JSON Schema, draft 7, with a
definition per event and action, e.g. ``pull_request$opened``)."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match

from tests.contracts.specs import MISSING_HINT, webhooks_path


class WebhookSchemas:
    def __init__(self, path: Path) -> None:
        self.definitions: dict[str, Any] = json.loads(path.read_text())["definitions"]
        self._validators: dict[str, Draft7Validator] = {}

    def errors(self, event: str, payload: Any) -> list[str]:
        """What makes ``payload`` not a ``event`` webhook (``payload["action"]`` picks the
        definition); empty when it is one."""
        action = payload.get("action") if isinstance(payload, dict) else None
        name = f"{event}${action}"
        if name not in self.definitions:
            return [f"GitHub sends no {event} webhook with action {action!r}"]
        if name not in self._validators:
            schema = {"$ref": f"#/definitions/{name}", "definitions": self.definitions}
            self._validators[name] = Draft7Validator(schema)
        out = []
        for error in self._validators[name].iter_errors(payload):
            error = best_match([error]) if error.context else error
            out.append(f"{name} at {error.json_path}: {error.message[:300]} [{error.validator}]")
        return out


@cache
def schemas() -> WebhookSchemas:
    return WebhookSchemas(webhooks_path())


def available() -> bool:
    return webhooks_path().is_file()


def assert_webhook(event: str, payload: Any) -> None:
    """Fail unless ``payload`` is a webhook GitHub could send; skip the test when the schemas
    are missing (fail under ``K8SEE_REQUIRE_TOOLS=1``)."""
    if not available():
        import pytest

        message = f"{webhooks_path()} is missing; {MISSING_HINT}"
        if os.environ.get("K8SEE_REQUIRE_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    found = schemas().errors(event, payload)
    assert not found, "not a GitHub webhook payload:\n" + "\n".join(found[:20])


def comment_webhook(repo: str, pr: int, body: str, *, login: str) -> dict[str, Any]:
    """The ``issue_comment`` (created) payload GitHub sends for ``login`` writing ``body`` on
    PR ``pr`` of ``repo``: built by the stand-in's code, without a server, and checked."""
    from k8see_sandbox.github_state import Actor, GitHubState
    from k8see_sandbox.github_webhooks import issue_comment_event

    state = GitHubState(token="unused", base_url="https://api.github.com")
    state.add_repo(repo, private=False, collaborators={})
    state.add_pull(
        repo,
        pr,
        head_sha="f" * 40,
        head_ref="feature",
        state="open",
        merged=False,
        fork=False,
        base_ref="main",
        author=login,
    )
    comment = state.add_comment(repo, pr, body, actor=Actor(login=login))
    payload = issue_comment_event(state, repo, comment["id"])
    if available() or os.environ.get("K8SEE_REQUIRE_TOOLS") == "1":
        # Without the schemas the payload is still the stand-in's (test_events checks it).
        assert_webhook("issue_comment", payload)
    return payload
