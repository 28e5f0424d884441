"""GitHub event → action, with strict commands (docs/configuration.md "Trigger modes").

Covered: the trigger table for both modes, from payloads and from flags; close → destroy in
both modes with ``merged`` carried; strict command parsing (first line, exact word);
/preserve, /unpreserve and /help decided as ``command`` (never a generation bump);
/deploy-preview counting in automatic mode (fork approval, retry); comments on plain issues, edited
comments and closed PRs; fork detection; validation of every identifier with PolicyError
and a hint; random payloads of any shape never raise anything but PolicyError.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k8see.errors import PolicyError
from k8see.events import Decision, decide, decide_from_comment, decide_from_flags, parse_command
from k8see.run import Action
from k8see_sandbox.github_state import Actor, GitHubState
from k8see_sandbox.github_webhooks import issue_comment_event, pull_request_event
from tests.contracts.webhooks import assert_webhook

SHA = "a" * 40
OTHER_SHA = "0123456789abcdef0123456789abcdef01234567"


def pr_payload(
    action: str,
    *,
    number: int = 7,
    sha: str = SHA,
    head_repo: str | None = "acme/shop",
    merged: bool | None = None,
) -> dict[str, Any]:
    pull: dict[str, Any] = {
        "number": number,
        "head": {
            "sha": sha,
            "ref": "feature/x",
            "repo": {"full_name": head_repo} if head_repo else None,
        },
        "base": {"ref": "main", "repo": {"full_name": "acme/shop"}},
    }
    if merged is not None:
        pull["merged"] = merged
    return {
        "action": action,
        "number": number,
        "pull_request": pull,
        "repository": {"full_name": "acme/shop"},
    }


def comment_payload(
    body: str, *, on_pr: bool = True, action: str = "created", state: str = "open"
) -> dict[str, Any]:
    issue: dict[str, Any] = {"number": 7, "state": state}
    if on_pr:
        issue["pull_request"] = {"url": "https://api.github.com/repos/acme/shop/pulls/7"}
    return {
        "action": action,
        "issue": issue,
        "comment": {"id": 99, "body": body, "user": {"login": "octocat"}},
        "repository": {"full_name": "acme/shop"},
    }


# The reference's event table and its resolve-action table.
PR_TABLE = [
    ("automatic", "opened", Action.DEPLOY),
    ("automatic", "reopened", Action.DEPLOY),
    ("automatic", "synchronize", Action.DEPLOY),
    ("automatic", "closed", Action.DESTROY),
    ("on-demand", "opened", Action.SKIP),
    ("on-demand", "reopened", Action.SKIP),
    ("on-demand", "synchronize", Action.REDEPLOY_IF_EXISTS),
    ("on-demand", "closed", Action.DESTROY),
]
COMMENT_TABLE = [
    ("automatic", "/deploy-preview", Action.DEPLOY),
    ("automatic", "/destroy-preview", Action.SKIP),
    ("on-demand", "/deploy-preview", Action.DEPLOY),
    ("on-demand", "/destroy-preview", Action.DESTROY),
]


@pytest.mark.parametrize(("mode", "action", "expected"), PR_TABLE)
def test_pull_request_events_follow_the_reference_table(
    mode: str, action: str, expected: Action
) -> None:
    decision = decide(event_name="pull_request", payload=pr_payload(action), trigger=mode)
    assert decision.action is expected
    assert (decision.repo, decision.pr, decision.sha, decision.ref) == (
        "acme/shop",
        7,
        SHA,
        "feature/x",
    )
    assert decision.event == f"pull_request:{action}"
    assert decision.mode == mode
    assert decision.reason.endswith(".") and "#7" in decision.reason
    assert decision.is_fork is False
    assert decision.command == "" and decision.comment_id == 0


@pytest.mark.parametrize(("mode", "action", "expected"), PR_TABLE)
def test_flags_follow_the_same_table(mode: str, action: str, expected: Action) -> None:
    decision = decide_from_flags(
        repo="acme/shop", pr=7, action=action, sha=SHA, ref="main", trigger=mode
    )
    assert decision.action is expected
    assert decision.sha == SHA and decision.ref == "main"


@pytest.mark.parametrize(("mode", "body", "expected"), COMMENT_TABLE)
def test_commands_follow_the_reference_table(mode: str, body: str, expected: Action) -> None:
    decision = decide(event_name="issue_comment", payload=comment_payload(body), trigger=mode)
    assert decision.action is expected
    assert decision.command == body[1:]
    assert decision.sha == ""  # the worker resolves the PR's head
    assert decision.is_fork is None
    assert (decision.comment_id, decision.commenter) == (99, "octocat")
    assert decision.event == f"issue_comment:{body}"
    if mode == "automatic" and expected is Action.SKIP:
        assert "ignored in automatic mode" in decision.reason


@pytest.mark.parametrize("merged", [True, False])
def test_close_carries_merged(merged: bool) -> None:
    decision = decide(
        event_name="pull_request", payload=pr_payload("closed", merged=merged), trigger="automatic"
    )
    assert decision.action is Action.DESTROY and decision.merged is merged
    assert ("merged" in decision.reason) is merged


def test_close_without_a_sha_is_fine_but_deploys_need_one() -> None:
    decision = decide_from_flags(
        repo="acme/shop", pr=3, action="closed", sha="", ref="", trigger="on-demand"
    )
    assert decision.action is Action.DESTROY and decision.sha == "" and decision.merged is None
    with pytest.raises(PolicyError) as info:
        decide_from_flags(
            repo="acme/shop", pr=3, action="opened", sha="", ref="", trigger="automatic"
        )
    assert info.value.hint is not None and "--sha" in info.value.hint


def test_other_pull_request_actions_are_skipped() -> None:
    for action in ("labeled", "edited", "ready_for_review", "assigned"):
        decision = decide(
            event_name="pull_request", payload=pr_payload(action), trigger="automatic"
        )
        assert decision.action is Action.SKIP
        assert action in decision.reason


def test_pull_request_target_is_read_like_pull_request() -> None:
    decision = decide(
        event_name="pull_request_target", payload=pr_payload("opened"), trigger="automatic"
    )
    assert decision.action is Action.DEPLOY


@pytest.mark.parametrize(
    ("head_repo", "is_fork"),
    [("acme/shop", False), ("ACME/Shop", False), ("mallory/shop", True), (None, True)],
)
def test_fork_detection(head_repo: str | None, is_fork: bool) -> None:
    payload = pr_payload("opened", head_repo=head_repo)
    assert (
        decide(event_name="pull_request", payload=payload, trigger="automatic").is_fork is is_fork
    )


@pytest.mark.parametrize(
    "body",
    [
        "/deploy-previewx",
        "please /deploy-preview",
        "/Deploy-Preview",
        "/deploy_preview",
        "deploy-preview",
        "> /deploy-preview",
        "`/deploy-preview`",
        "LGTM\n/deploy-preview",
        "",
        "   ",
        "/",
        "/preservex",
        "/helpme",
    ],
)
def test_only_exact_first_line_words_are_commands(body: str) -> None:
    decision = decide_from_comment(
        repo="acme/shop", pr=7, body=body, trigger="on-demand", commenter="octocat"
    )
    assert decision.action is Action.SKIP
    assert decision.command == ""
    assert decision.reason == "The comment is not a command."


@pytest.mark.parametrize(
    "body",
    [
        "/deploy-preview",
        "  /deploy-preview  ",
        "/deploy-preview\r\nthanks",
        "/deploy-preview now",
        "\ufeff/deploy-preview",
        "/deploy-preview\n\nmore text",
    ],
)
def test_command_on_the_first_line_counts(body: str) -> None:
    decision = decide_from_comment(
        repo="acme/shop", pr=7, body=body, trigger="on-demand", commenter="octocat"
    )
    assert decision.action is Action.DEPLOY and decision.command == "deploy-preview"


@pytest.mark.parametrize(
    ("body", "command", "args"),
    [
        ("/preserve", "preserve", ()),
        ("/preserve 24", "preserve", ("24",)),
        ("/preserve 007", "preserve", ("7",)),
        ("/unpreserve", "unpreserve", ()),
        ("/help", "help", ()),
    ],
)
@pytest.mark.parametrize("mode", ["automatic", "on-demand"])
def test_other_commands_are_recognised_and_left_to_their_handlers(
    body: str, command: str, args: tuple[str, ...], mode: str
) -> None:
    decision = decide(event_name="issue_comment", payload=comment_payload(body), trigger=mode)
    assert decision.action is Action.COMMAND
    assert (decision.command, decision.command_args) == (command, args)
    assert "queued work is untouched" in decision.reason


@pytest.mark.parametrize(
    "body",
    [
        "/preserve forever",
        "/preserve 0",
        "/preserve 1 2",
        "/preserve -3",
        "/preserve 99999999",
        "/preserve ２４",
    ],
)
def test_bad_preserve_arguments_are_explained(body: str) -> None:
    decision = decide_from_comment(
        repo="acme/shop", pr=7, body=body, trigger="automatic", commenter="octocat"
    )
    assert decision.action is Action.SKIP and decision.command == ""
    assert "/preserve takes" in decision.reason


def test_parse_command_directly() -> None:
    assert parse_command("/help") == ("help", (), "")
    assert parse_command("/preserve 12\nbody") == ("preserve", ("12",), "")
    assert parse_command("hello") == ("", (), "")


def test_comment_on_a_plain_issue_is_skipped() -> None:
    payload = comment_payload("/deploy-preview", on_pr=False)
    decision = decide(event_name="issue_comment", payload=payload, trigger="on-demand")
    assert decision.action is Action.SKIP and "not a pull request" in decision.reason


@pytest.mark.parametrize("action", ["edited", "deleted"])
def test_edited_or_deleted_comments_are_skipped(action: str) -> None:
    payload = comment_payload("/deploy-preview", action=action)
    decision = decide(event_name="issue_comment", payload=payload, trigger="on-demand")
    assert decision.action is Action.SKIP and action in decision.reason


def test_deploy_command_on_a_closed_pr_is_skipped_but_destroy_is_not() -> None:
    closed = comment_payload("/deploy-preview", state="closed")
    decision = decide(event_name="issue_comment", payload=closed, trigger="on-demand")
    assert decision.action is Action.SKIP and "closed" in decision.reason
    destroy = comment_payload("/destroy-preview", state="closed")
    assert decide(event_name="issue_comment", payload=destroy, trigger="on-demand").action is (
        Action.DESTROY
    )


def test_decision_to_dict_is_json() -> None:
    decision = decide(
        event_name="issue_comment", payload=comment_payload("/preserve 5"), trigger="on-demand"
    )
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["action"] == "command" and data["command_args"] == ["5"]
    assert set(data) >= {
        "action",
        "repo",
        "pr",
        "sha",
        "reason",
        "comment_id",
        "commenter",
        "merged",
        "command",
        "command_args",
        "is_fork",
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"repo": "acme"},
        {"repo": "acme/shop/x"},
        {"repo": "acme/sh op"},
        {"repo": "a/b;rm -rf /"},
        {"repo": 5},
        {"pr": 0},
        {"pr": -1},
        {"pr": True},
        {"pr": "7"},
        {"sha": "abc"},
        {"sha": SHA.upper()},
        {"sha": SHA + "0"},
        {"sha": "$(id)" + SHA[5:]},
        {"action": "merged"},
        {"trigger": "manual"},
        {"ref": "x\ny"},
        {"ref": "r" * 256},
    ],
)
def test_bad_flags_raise_policy_errors(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {
        "repo": "acme/shop",
        "pr": 7,
        "action": "opened",
        "sha": SHA,
        "ref": "",
        "trigger": "automatic",
    }
    args.update(kwargs)
    with pytest.raises(PolicyError) as info:
        decide_from_flags(**args)
    assert info.value.message.endswith(".")


def test_bad_comment_inputs_raise_policy_errors() -> None:
    ok = {"repo": "acme/shop", "pr": 7, "body": "/help", "trigger": "on-demand", "commenter": "x"}
    for bad in (
        {"commenter": "a b"},
        {"commenter": "x;y"},
        {"body": None},
        {"comment_id": -1},
        {"trigger": "Automatic"},
    ):
        with pytest.raises(PolicyError):
            decide_from_comment(**{**ok, **bad})  # type: ignore[arg-type]
    assert decide_from_comment(**{**ok, "commenter": "dependabot[bot]"}).commenter == (
        "dependabot[bot]"
    )


@pytest.mark.parametrize("event_name", ["push", "", "workflow_dispatch", None, ["pull_request"]])
def test_unhandled_events_are_refused_with_a_hint(event_name: Any) -> None:
    with pytest.raises(PolicyError) as info:
        decide(event_name=event_name, payload=pr_payload("opened"), trigger="automatic")
    assert info.value.hint is not None and "issue_comment" in info.value.hint


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "x",
        {},
        {"action": "opened"},
        {"action": "opened", "pull_request": []},
        {"action": "opened", "pull_request": {"number": "7"}},
        {"action": "opened", "pull_request": {"number": 7}, "repository": {"full_name": 1}},
        {"action": "opened", "pull_request": {"number": 7, "head": {"sha": SHA}}},
        {**pr_payload("opened"), "repository": {"full_name": "evil"}},
        {**pr_payload("opened", sha="not-a-sha")},
    ],
)
def test_malformed_pull_request_payloads_raise_policy_errors(payload: Any) -> None:
    with pytest.raises(PolicyError) as info:
        decide(event_name="pull_request", payload=payload, trigger="automatic")
    assert info.value.message.endswith(".") and info.value.hint


# --- property tests: any JSON shape gives a Decision or a PolicyError -------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = [
    "action",
    "number",
    "pull_request",
    "head",
    "base",
    "repo",
    "full_name",
    "sha",
    "ref",
    "merged",
    "issue",
    "comment",
    "body",
    "id",
    "user",
    "login",
    "repository",
    "state",
]


def shaped(leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Payload-like nests: GitHub's own keys with values of any type."""
    return st.recursive(
        leaf,
        lambda inner: st.dictionaries(st.sampled_from(KEYS), inner, max_size=6),
        max_leaves=25,
    )


def mutated_valid_payloads() -> st.SearchStrategy[tuple[str, Any]]:
    bases = [("pull_request", pr_payload(a)) for a in ("opened", "closed", "synchronize")] + [
        ("issue_comment", comment_payload(b)) for b in ("/deploy-preview", "/preserve 3", "hi")
    ]

    def mutate(base: tuple[str, Any], path_choice: int, value: Any) -> tuple[str, Any]:
        name, payload = base
        payload = json.loads(json.dumps(payload))
        paths = [
            ("action",),
            ("repository",),
            ("pull_request", "number"),
            ("pull_request", "head"),
            ("pull_request", "head", "sha"),
            ("pull_request", "head", "repo"),
            ("pull_request", "base"),
            ("issue",),
            ("issue", "number"),
            ("issue", "pull_request"),
            ("comment",),
            ("comment", "body"),
            ("comment", "user"),
            ("comment", "id"),
        ]
        path = paths[path_choice % len(paths)]
        node = payload
        for key in path[:-1]:
            if not isinstance(node, dict) or not isinstance(node.get(key), dict):
                return name, payload
            node = node[key]
        node[path[-1]] = value
        return name, payload

    return st.builds(mutate, st.sampled_from(bases), st.integers(0, 100), json_values)


def assert_only_policy_errors(event_name: Any, payload: Any, trigger: str) -> None:
    try:
        decision = decide(event_name=event_name, payload=payload, trigger=trigger)
    except PolicyError as exc:
        assert exc.message and "Traceback" not in exc.message
        return
    assert isinstance(decision, Decision)
    json.dumps(decision.to_dict())


@settings(max_examples=200, deadline=None)
@given(
    event_name=st.sampled_from(["pull_request", "issue_comment", "push"]),
    payload=json_values | shaped(json_values),
    trigger=st.sampled_from(["automatic", "on-demand"]),
)
def test_any_payload_shape_gives_a_decision_or_a_policy_error(
    event_name: str, payload: Any, trigger: str
) -> None:
    assert_only_policy_errors(event_name, payload, trigger)


@settings(max_examples=200, deadline=None)
@given(case=mutated_valid_payloads(), trigger=st.sampled_from(["automatic", "on-demand"]))
def test_valid_payloads_with_one_field_broken(case: tuple[str, Any], trigger: str) -> None:
    assert_only_policy_errors(case[0], case[1], trigger)


@settings(max_examples=200, deadline=None)
@given(
    body=st.text(max_size=200)
    | st.sampled_from(["/deploy-preview", "/preserve", "/help"]).flatmap(
        lambda c: st.text(max_size=40).map(lambda tail: c + tail)
    )
)
def test_any_comment_body_is_decided(body: str) -> None:
    decision = decide_from_comment(
        repo="acme/shop", pr=1, body=body, trigger="on-demand", commenter="octocat"
    )
    first = body.lstrip("\ufeff").split("\n", 1)[0].split()
    if decision.command:
        assert first and first[0] == "/" + decision.command
    if decision.action is not Action.SKIP:
        assert decision.command  # only a parsed command ever becomes work
    if decision.action is Action.COMMAND:
        assert decision.command in {"help", "preserve", "unpreserve"}


@pytest.mark.parametrize("action", ["opened", "synchronize", "closed"])
def test_githubs_full_pull_request_payload_decides_like_the_short_one(action: str) -> None:
    # Given the stand-in's pull_request webhook, held to @octokit/webhooks-schemas
    state = GitHubState(token="t", base_url="https://api.github.com")
    state.add_repo("acme/shop", private=False, collaborators={})
    state.add_pull("acme/shop", 7, head_sha=SHA, head_ref="feature/x", state="open",
                   merged=False, fork=False, base_ref="main", author="octocat")  # fmt: skip
    if action == "closed":
        state.set_pull_state("acme/shop", 7, state="closed")
    full = pull_request_event(state, "acme/shop", 7, action=action)
    assert_webhook("pull_request", full)
    # Then k8see decides on it exactly as on the short payload these tests use
    short = pr_payload(action, merged=False if action == "closed" else None)
    assert decide(event_name="pull_request", payload=full, trigger="automatic") == decide(
        event_name="pull_request", payload=short, trigger="automatic"
    )


def test_githubs_full_issue_comment_payload_decides_like_the_short_one() -> None:
    state = GitHubState(token="t", base_url="https://api.github.com")
    state.add_repo("acme/shop", private=False, collaborators={})
    state.add_pull("acme/shop", 7, head_sha=SHA, head_ref="feature/x", state="open",
                   merged=False, fork=False, base_ref="main", author="octocat")  # fmt: skip
    comment = state.add_comment("acme/shop", 7, "/preserve 5", actor=Actor(login="octocat"))
    full = issue_comment_event(state, "acme/shop", comment["id"])
    assert_webhook("issue_comment", full)
    short = comment_payload("/preserve 5")
    short["comment"]["id"] = comment["id"]
    assert decide(event_name="issue_comment", payload=full, trigger="on-demand") == decide(
        event_name="issue_comment", payload=short, trigger="on-demand"
    )


def test_the_short_payloads_are_not_what_github_sends() -> None:
    # The check has teeth: the hand-made payloads above lack most of GitHub's fields
    with pytest.raises(AssertionError, match="'sender' is a required property"):
        assert_webhook("pull_request", pr_payload("opened"))
