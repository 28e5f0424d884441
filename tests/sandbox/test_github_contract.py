"""The GitHub stand-in is held to GitHub's OpenAPI description, and the check can fail.

Covers: a request with a wrongly typed or unknown query parameter, a path GitHub has no
operation for, a body value outside the schema's enum, and a stand-in answer that lacks a
required field or has one of the wrong type are each reported with method, path, field and
rule; a test phase during which a violation happened fails with that message; every exchange
k8see's client makes is checked; the pins of ``scripts/fetch-github-specs.sh`` are the ones
the tests read.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from k8see.integrations.github import GitHubClient
from k8see_sandbox.github import GitHubSandbox
from tests.contracts import specs
from tests.contracts.openapi import Violation
from tests.contracts.recorder import ContractRecorder
from tests.contracts.webhooks import assert_webhook
from tests.fixtures.github import SANDBOX_TOKEN, GitHubContractViolation, _contract_phase

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}
SHA = "c" * 40


@pytest.fixture
def shop(github: GitHubSandbox) -> GitHubSandbox:
    github.add_repo("acme/shop", collaborators={"alice": "write"})
    github.add_pull("acme/shop", 7, head_sha=SHA, head_ref="feature")
    return github


def _get(hub: GitHubSandbox, path: str) -> requests.Response:
    return requests.get(hub.url + path, headers=AUTH, timeout=5)


def test_wrong_and_unknown_query_parameters_are_reported(
    shop: GitHubSandbox, github_contract: ContractRecorder
) -> None:
    with github_contract.expect_violations() as seen:
        _get(shop, "/repos/acme/shop/pulls?per_page=many&colour=blue")
    assert {(v.method, v.path, v.side, v.where, v.rule) for v in seen} == {
        ("GET", "/repos/acme/shop/pulls", "request", "query parameter 'per_page'", "type"),
        ("GET", "/repos/acme/shop/pulls", "request", "query parameter 'colour'", "unknown"),
    }
    assert all(v.operation == "pulls/list" for v in seen)


def test_a_path_github_does_not_have_is_reported(
    shop: GitHubSandbox, github_contract: ContractRecorder
) -> None:
    with github_contract.expect_violations() as seen:
        _get(shop, "/repos/acme/shop/previews/7")
    (violation,) = seen
    assert (violation.where, violation.rule) == ("operation", "unknown")
    assert "GitHub has no GET /repos/acme/shop/previews/7" in str(violation)


def test_a_body_outside_the_schema_is_reported(
    shop: GitHubSandbox, github_contract: ContractRecorder
) -> None:
    url = f"{shop.url}/repos/acme/shop/deployments"
    with github_contract.expect_violations() as seen:
        requests.post(url, json={"ref": SHA, "auto_merge": "no"}, headers=AUTH, timeout=5)
    assert [(v.where, v.rule) for v in seen] == [("body at $.auto_merge", "type")]


def test_an_answer_missing_or_mistyping_a_field_is_reported(
    shop: GitHubSandbox, github_contract: ContractRecorder
) -> None:
    # Given a stand-in whose pull has drifted from GitHub's shape
    with shop.state.lock:
        pull = shop.state.repos["acme/shop"].pulls[7]
        pull["number"] = "7"
        del pull["head"]["sha"]
    # When a client reads it, then both drifts are named, with the schema rule
    with github_contract.expect_violations() as seen:
        assert _get(shop, "/repos/acme/shop/pulls/7").status_code == 200
    found = {(v.side, v.where, v.rule) for v in seen}
    assert ("response", "200 body at $.number", "type") in found
    assert ("response", "200 body at $.head", "required") in found
    assert any("'sha'" in v.message for v in seen if v.where == "200 body at $.head")


def test_a_status_github_never_answers_is_reported(
    shop: GitHubSandbox, github_contract: ContractRecorder
) -> None:
    contract = github_contract.contract
    assert contract is not None
    op, found = contract.check_request("GET", "/repos/acme/shop/pulls/7", None, has_body=False)
    assert op is not None and found == []
    (violation,) = contract.check_response(op, "GET", "/x", 418, {}, is_json=True)
    assert (violation.where, violation.rule) == ("status", "undocumented")


def test_a_violation_fails_the_test_phase_it_happened_in(github_contract: ContractRecorder) -> None:
    phase = _contract_phase()
    next(phase)  # the phase runs ...
    github_contract._record(
        [
            Violation(
                "GET",
                "/repos/a/b/pulls",
                "request",
                "query parameter 'x'",
                "unknown",
                "pulls/list takes no query parameter 'x'",
                "pulls/list",
            )
        ]
    )
    with pytest.raises(GitHubContractViolation) as failed:
        phase.send(None)  # ... and ends: the hook raises
    message = str(failed.value)
    assert "GET /repos/a/b/pulls (pulls/list): request query parameter 'x'" in message
    assert "[unknown]" in message and specs.OPENAPI_VERSION in message
    assert github_contract.take() == []


def test_every_call_of_k8sees_client_is_checked(
    shop: GitHubSandbox, github_client: GitHubClient, github_contract: ContractRecorder
) -> None:
    before = github_contract.checked
    github_client.get_pull("acme/shop", 7)
    deployment = github_client.create_deployment("acme/shop", sha=SHA, environment="pr-7")
    github_client.set_deployment_status(
        "acme/shop", deployment, "success", environment_url="https://x.test"
    )
    github_client.upsert_comment("acme/shop", 7, "hello", marker="<!-- k8see -->")
    # pull, deployments list + create, status, comments list + create
    assert github_contract.checked - before == 6


def test_the_fetch_script_pins_what_the_tests_read() -> None:
    script = (ROOT / "scripts" / "fetch-github-specs.sh").read_text()
    assert re.search(rf'^OPENAPI_VERSION="{re.escape(specs.OPENAPI_VERSION)}"$', script, re.M)
    assert re.search(rf'^WEBHOOKS_VERSION="{re.escape(specs.WEBHOOKS_VERSION)}"$', script, re.M)


@pytest.mark.parametrize("action", ["opened", "reopened", "synchronize", "closed", "labeled"])
def test_the_stand_ins_webhook_payloads_are_githubs(shop: GitHubSandbox, action: str) -> None:
    # Given a pull that was pushed to (and closed, for closed)
    shop.set_pull_state("acme/shop", 7, head_sha="d" * 40)
    if action == "closed":
        shop.set_pull_state("acme/shop", 7, merged=True)
    # Then what the App would deliver is a payload @octokit/webhooks-schemas accepts
    payload = shop.pull_request_event("acme/shop", 7, action, installation_id=42)
    assert_webhook("pull_request", payload)
    assert payload["installation"]["id"] == 42
    if action == "synchronize":
        assert (payload["before"], payload["after"]) == (SHA, "d" * 40)
    comment = shop.add_comment("acme/shop", 7, "/deploy-preview", login="alice")
    assert_webhook("issue_comment", shop.issue_comment_event("acme/shop", 7, comment))
