"""The objects the GitHub stand-in answers with, in the shapes GitHub's OpenAPI description gives.

One builder per schema of ``@octokit/openapi``'s ``api.github.com`` description that the
stand-in serves (``simple-user``, ``repository``, ``pull-request``, ``issue-comment``, ...),
with every field the schema requires, so a client written against the stand-in reads what
GitHub really sends. The tests hold every answer to the description (``tests/contracts``);
a builder that drifts fails them.

``api`` is the stand-in's base URL (API links point back at it); ``html`` links use
``https://github.com`` as GitHub's do.
"""

from __future__ import annotations

import zlib
from typing import Any

HTML = "https://github.com"


def stable_id(name: str) -> int:
    """A stable positive id for a name (GitHub's ids are integers, fixed per object)."""
    return zlib.crc32(name.lower().encode()) or 1


def user(api: str, login: str, *, type: str = "User") -> dict[str, Any]:
    """GitHub's ``simple-user``."""
    uid = stable_id(login)
    base = f"{api}/users/{login}"
    return {
        "login": login,
        "id": uid,
        "node_id": f"U_sandbox{uid}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
        "gravatar_id": "",
        "url": base,
        "html_url": f"{HTML}/{login}",
        "followers_url": f"{base}/followers",
        "following_url": f"{base}/following{{/other_user}}",
        "gists_url": f"{base}/gists{{/gist_id}}",
        "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{base}/subscriptions",
        "organizations_url": f"{base}/orgs",
        "repos_url": f"{base}/repos",
        "events_url": f"{base}/events{{/privacy}}",
        "received_events_url": f"{base}/received_events",
        "type": type,
        "site_admin": False,
    }


def repository(
    api: str,
    full_name: str,
    *,
    id: int,
    private: bool,
    default_branch: str = "main",
    fork: bool = False,
    pushed_at: str,
    created_at: str,
    full: bool = False,
) -> dict[str, Any]:
    """GitHub's ``repository`` (``full``: ``full-repository``, what ``GET /repos/{o}/{r}``
    answers)."""
    owner, name = full_name.split("/", 1)
    url = f"{api}/repos/{full_name}"
    templated = {
        "archive_url": "/{archive_format}{/ref}",
        "assignees_url": "/assignees{/user}",
        "blobs_url": "/git/blobs{/sha}",
        "branches_url": "/branches{/branch}",
        "collaborators_url": "/collaborators{/collaborator}",
        "comments_url": "/comments{/number}",
        "commits_url": "/commits{/sha}",
        "compare_url": "/compare/{base}...{head}",
        "contents_url": "/contents/{+path}",
        "contributors_url": "/contributors",
        "deployments_url": "/deployments",
        "downloads_url": "/downloads",
        "events_url": "/events",
        "forks_url": "/forks",
        "git_commits_url": "/git/commits{/sha}",
        "git_refs_url": "/git/refs{/sha}",
        "git_tags_url": "/git/tags{/sha}",
        "hooks_url": "/hooks",
        "issue_comment_url": "/issues/comments{/number}",
        "issue_events_url": "/issues/events{/number}",
        "issues_url": "/issues{/number}",
        "keys_url": "/keys{/key_id}",
        "labels_url": "/labels{/name}",
        "languages_url": "/languages",
        "merges_url": "/merges",
        "milestones_url": "/milestones{/number}",
        "notifications_url": "/notifications{?since,all,participating}",
        "pulls_url": "/pulls{/number}",
        "releases_url": "/releases{/id}",
        "stargazers_url": "/stargazers",
        "statuses_url": "/statuses/{sha}",
        "subscribers_url": "/subscribers",
        "subscription_url": "/subscription",
        "tags_url": "/tags",
        "teams_url": "/teams",
        "trees_url": "/git/trees{/sha}",
    }
    repo: dict[str, Any] = {
        "id": id,
        "node_id": f"R_sandbox{id}",
        "name": name,
        "full_name": full_name,
        "owner": user(api, owner, type="Organization"),
        "private": private,
        "visibility": "private" if private else "public",
        "html_url": f"{HTML}/{full_name}",
        "description": None,
        "fork": fork,
        "url": url,
        **{key: url + suffix for key, suffix in templated.items()},
        "git_url": f"git://github.com/{full_name}.git",
        "ssh_url": f"git@github.com:{full_name}.git",
        "clone_url": f"{HTML}/{full_name}.git",
        "svn_url": f"{HTML}/{full_name}",
        "mirror_url": None,
        "homepage": None,
        "language": None,
        "license": None,
        "size": 0,
        "default_branch": default_branch,
        "forks": 0,
        "forks_count": 0,
        "open_issues": 0,
        "open_issues_count": 0,
        "stargazers_count": 0,
        "watchers": 0,
        "watchers_count": 0,
        "has_issues": True,
        "has_projects": True,
        "has_wiki": True,
        "has_pages": False,
        "has_downloads": True,
        "archived": False,
        "disabled": False,
        "pushed_at": pushed_at,
        "created_at": created_at,
        "updated_at": pushed_at,
    }
    if full:
        repo |= {"has_discussions": False, "network_count": 0, "subscribers_count": 0}
    return repo


def pull(
    api: str,
    full_name: str,
    *,
    id: int,
    number: int,
    state: str,
    author: str,
    head: dict[str, Any],
    base: dict[str, Any],
    merged_at: str | None,
    closed_at: str | None,
    created_at: str,
) -> dict[str, Any]:
    """GitHub's ``pull-request`` (``head``/``base``: ``label``, ``ref``, ``sha``, ``user`` and
    ``repo`` as ``repository`` gives them)."""
    url = f"{api}/repos/{full_name}/pulls/{number}"
    issue = f"{api}/repos/{full_name}/issues/{number}"
    html = f"{HTML}/{full_name}/pull/{number}"
    statuses = f"{api}/repos/{full_name}/statuses/{head['sha']}"
    links = {
        "self": url,
        "html": html,
        "issue": issue,
        "comments": f"{issue}/comments",
        "review_comments": f"{url}/comments",
        "review_comment": f"{api}/repos/{full_name}/pulls/comments{{/number}}",
        "commits": f"{url}/commits",
        "statuses": statuses,
    }
    merged = merged_at is not None
    return {
        "url": url,
        "id": id,
        "node_id": f"PR_sandbox{id}",
        "html_url": html,
        "diff_url": f"{html}.diff",
        "patch_url": f"{html}.patch",
        "issue_url": issue,
        "commits_url": links["commits"],
        "review_comments_url": links["review_comments"],
        "review_comment_url": links["review_comment"],
        "comments_url": links["comments"],
        "statuses_url": statuses,
        "number": number,
        "state": state,
        "locked": False,
        "title": f"Sandbox PR {number}",
        "user": user(api, author),
        "body": None,
        "labels": [],
        "milestone": None,
        "active_lock_reason": None,
        "created_at": created_at,
        "updated_at": created_at,
        "closed_at": closed_at,
        "merged_at": merged_at,
        "merge_commit_sha": None,
        "assignee": None,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": [],
        "head": head,
        "base": base,
        "_links": {key: {"href": href} for key, href in links.items()},
        "author_association": "CONTRIBUTOR",
        "auto_merge": None,
        "draft": False,
        "merged": merged,
        "mergeable": None,
        "rebaseable": None,
        "mergeable_state": "unknown",
        "merged_by": None,
        "comments": 0,
        "review_comments": 0,
        "maintainer_can_modify": False,
        "commits": 1,
        "additions": 0,
        "deletions": 0,
        "changed_files": 0,
    }


#: Fields of ``pull-request`` that ``pull-request-simple`` (a pull list's items) lacks.
FULL_PULL_ONLY = frozenset(
    {
        "merged",
        "mergeable",
        "rebaseable",
        "mergeable_state",
        "merged_by",
        "comments",
        "review_comments",
        "maintainer_can_modify",
        "commits",
        "additions",
        "deletions",
        "changed_files",
    }
)


def pull_simple(full: dict[str, Any]) -> dict[str, Any]:
    """A pull list's item (``pull-request-simple``): no ``merged``, readers use ``merged_at``."""
    return {k: v for k, v in full.items() if k not in FULL_PULL_ONLY}


#: GitHub's legacy ``permission`` field: ``maintain`` reads as ``write`` and ``triage`` as
#: ``read``; ``role_name`` carries the role itself.
LEGACY_PERMISSION = {"maintain": "write", "triage": "read"}


def permission(api: str, login: str, level: str) -> dict[str, Any]:
    """``repository-collaborator-permission`` of ``login`` with the role ``level``."""
    return {
        "permission": LEGACY_PERMISSION.get(level, level),
        "role_name": level,
        "user": {**user(api, login), "role_name": level},
    }
