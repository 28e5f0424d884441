"""Webhook payloads of the GitHub stand-in: what GitHub would send for its pulls and comments.

``pull_request`` (opened, reopened, synchronize, closed, ...) and ``issue_comment`` (created,
edited, deleted) events, built from the stand-in's own objects, so the payload a test hands to
``k8see enqueue`` says the same as the API the workers then ask. The tests hold each payload to
``@octokit/webhooks-schemas`` (``tests/contracts/webhooks.py``).
"""

from __future__ import annotations

import copy
from typing import Any

from k8see_sandbox import github_shapes as shapes
from k8see_sandbox.github_state import GitHubState, public

__all__ = ["issue_comment_event", "pull_request_event"]


def _repository(state: GitHubState, full_name: str) -> dict[str, Any]:
    """A webhook's ``repository``: GitHub's REST repository plus the webhook-only fields."""
    repo = state._need(full_name)
    pushed = max(
        (p["head"]["repo"]["pushed_at"] for p in repo.pulls.values()), default=repo.created_at
    )
    body = shapes.repository(
        state.base_url,
        repo.full_name,
        id=repo.id,
        private=repo.private,
        default_branch=repo.default_branch,
        pushed_at=pushed,
        created_at=repo.created_at,
    )
    return _webhook_repo(body)


def _webhook_repo(body: dict[str, Any]) -> dict[str, Any]:
    return body | {
        "is_template": False,
        "web_commit_signoff_required": False,
        "topics": [],
        "custom_properties": {},
    }


def _user(state: GitHubState, login: str, *, type: str = "User") -> dict[str, Any]:
    return shapes.user(state.base_url, login, type=type)


def _installation(installation_id: int) -> dict[str, Any]:
    """A webhook's ``installation`` (``installation-lite``): the App installation it is for."""
    return {
        "id": installation_id,
        "node_id": f"MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9u{installation_id}",
    }


def pull_request_event(
    state: GitHubState,
    full_name: str,
    number: int,
    *,
    action: str,
    sender: str = "",
    installation_id: int = 0,
) -> dict[str, Any]:
    """The ``pull_request`` event of PR ``number`` as it is now (``action``: opened,
    reopened, synchronize, closed, ...)."""
    with state.lock:
        stored = state._need(full_name).pulls[number]
        pull = public(stored)
        for side in ("head", "base"):
            pull[side]["repo"] = _webhook_repo(pull[side]["repo"])
            pull[side]["user"] = _user(state, pull[side]["user"]["login"])
        pull["user"] = _user(state, pull["user"]["login"])
        event = {
            "action": action,
            "number": number,
            "pull_request": pull,
            "repository": _repository(state, full_name),
            "sender": _user(state, sender or pull["user"]["login"]),
        }
        if installation_id:
            event["installation"] = _installation(installation_id)
        if action in ("labeled", "unlabeled"):  # the label added or removed
            event["label"] = _label(state.base_url, full_name)
        if action == "synchronize":  # the push: the head before and after it
            event |= {
                "before": stored.get("_before", pull["head"]["sha"]),
                "after": pull["head"]["sha"],
            }
        return event


def issue_comment_event(
    state: GitHubState,
    full_name: str,
    comment_id: int,
    *,
    action: str = "created",
    installation_id: int = 0,
) -> dict[str, Any]:
    """The ``issue_comment`` event of a comment on a pull request."""
    with state.lock:
        comment = copy.deepcopy(state.comments[comment_id])
        number = int(comment["_issue"])
        pull = state._need(full_name).pulls[number]
        author = comment["user"]["login"]
        comment = public(comment) | {
            "user": _user(state, author, type=comment["user"]["type"]),
            "reactions": _no_reactions(comment["url"]),
            "performed_via_github_app": None,
        }
        issue_url = f"{state.base_url}/repos/{full_name}/issues/{number}"
        issue = {
            "url": issue_url,
            "repository_url": f"{state.base_url}/repos/{full_name}",
            "labels_url": f"{issue_url}/labels{{/name}}",
            "comments_url": f"{issue_url}/comments",
            "events_url": f"{issue_url}/events",
            "html_url": pull["html_url"],
            "id": pull["id"],
            "node_id": f"I_sandbox{pull['id']}",
            "number": number,
            "title": pull["title"],
            "user": _user(state, pull["user"]["login"]),
            "labels": [],
            "state": pull["state"],
            "locked": False,
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "comments": len(state.issue_comments(full_name, number)),
            "created_at": pull["created_at"],
            "updated_at": pull["updated_at"],
            "closed_at": pull["closed_at"],
            "author_association": "CONTRIBUTOR",
            "active_lock_reason": None,
            "body": None,
            "reactions": _no_reactions(issue_url),
            "timeline_url": f"{issue_url}/timeline",
            "performed_via_github_app": None,
            "pull_request": {
                "url": pull["url"],
                "html_url": pull["html_url"],
                "diff_url": pull["diff_url"],
                "patch_url": pull["patch_url"],
                "merged_at": pull["merged_at"],
            },
        }
        event = {
            "action": action,
            "issue": issue,
            "comment": comment,
            "repository": _repository(state, full_name),
            "sender": comment["user"],
        }
        if installation_id:
            event["installation"] = _installation(installation_id)
        return event


def _label(api: str, full_name: str, name: str = "preview") -> dict[str, Any]:
    lid = shapes.stable_id(f"{full_name}:{name}")
    url = f"{api}/repos/{full_name}/labels/{name}"
    return {"id": lid, "node_id": f"LA_sandbox{lid}", "url": url, "name": name,
            "color": "0e8a16", "default": False, "description": None}  # fmt: skip


def _no_reactions(url: str) -> dict[str, Any]:
    return {
        "url": f"{url}/reactions",
        "total_count": 0,
        "+1": 0,
        "-1": 0,
        "laugh": 0,
        "confused": 0,
        "heart": 0,
        "hooray": 0,
        "eyes": 0,
        "rocket": 0,
    }
