"""The endpoints of the sandbox GitHub server, one function each, with GitHub's real shapes.

Each route takes a ``Request`` (the authenticated actor, path groups, query and JSON body) and
returns a ``Reply``. Only the endpoints k8see calls exist; anything else is GitHub's 404.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlencode

from k8see_sandbox import github_shapes as shapes
from k8see_sandbox.github_state import (
    COMMIT_STATES,
    DEPLOYMENT_STATES,
    REACTIONS,
    Actor,
    GitHubState,
    RepoState,
    iso,
    public,
)

DOCS = "https://docs.github.com/rest"
#: What the sandbox's App installations may do (GitHub's ``app-permissions``).
INSTALLATION_PERMISSIONS = {
    "pull_requests": "write", "issues": "write", "contents": "read", "deployments": "write",
    "statuses": "write", "security_events": "write", "metadata": "read",
}  # fmt: skip
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
REF_RE = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")


@dataclass
class Request:
    state: GitHubState
    method: str
    path: str
    groups: dict[str, str]
    query: dict[str, str]
    body: Any
    actor: Actor | None
    base_url: str


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, message: str, **extra: Any) -> Reply:
    return Reply(status, {"message": message, "documentation_url": DOCS, **extra})


def not_found() -> Reply:
    return Reply(404, {"message": "Not Found", "documentation_url": DOCS, "status": "404"})


def invalid(field_name: str, code: str = "invalid") -> Reply:
    return error(422, "Validation Failed", errors=[{"field": field_name, "code": code}])


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def paginate(req: Request, items: list[dict[str, Any]]) -> Reply:
    """GitHub pagination: ``per_page`` (default 30, max 100), ``page``, and a ``Link`` header."""
    # GitHub ignores a per_page or page that is not a number (the description lists no 400).
    per_page = max(1, min(100, _int(req.query.get("per_page"), 30)))
    page = max(1, _int(req.query.get("page"), 1))
    last = max(1, -(-len(items) // per_page))
    chunk = items[(page - 1) * per_page : page * per_page]

    def link(n: int, rel: str) -> str:
        query = {**req.query, "per_page": str(per_page), "page": str(n)}
        return f'<{req.base_url}{req.path}?{urlencode(query)}>; rel="{rel}"'

    links = []
    if page < last:
        links += [link(page + 1, "next"), link(last, "last")]
    if page > 1:
        links += [link(1, "first"), link(page - 1, "prev")]
    headers = {"Link": ", ".join(links)} if links else {}
    return Reply(200, chunk, headers)


def _repo(req: Request) -> RepoState | None:
    repo = req.state.repo(f"{req.groups['owner']}/{req.groups['repo']}")
    if repo is None:
        return None
    actor = req.actor
    if actor is not None and actor.repos is not None and repo.full_name.lower() not in actor.repos:
        return None  # an installation token sees only its repositories, as on GitHub
    return repo


def _comment(req: Request, repo: RepoState) -> dict[str, Any] | None:
    comment = req.state.comments.get(int(req.groups["id"]))
    if comment is None or comment["_repo"] != repo.full_name.lower():
        return None
    return comment


def _user(req: Request) -> dict[str, Any]:
    """The authenticated actor as GitHub's ``simple-user``."""
    assert req.actor is not None
    return shapes.user(req.base_url, req.actor.login, type=req.actor.type)


def get_repo(req: Request) -> Reply:
    repo = _repo(req)
    if repo is None:
        return not_found()
    updated = [p["head"]["repo"]["pushed_at"] for p in repo.pulls.values()]
    return Reply(
        200,
        shapes.repository(
            req.base_url, repo.full_name, id=repo.id, private=repo.private,
            default_branch=repo.default_branch, pushed_at=max(updated, default=repo.created_at),
            created_at=repo.created_at, full=True,
        ),
    )  # fmt: skip


def get_pull(req: Request) -> Reply:
    repo = _repo(req)
    pull = repo.pulls.get(int(req.groups["number"])) if repo else None
    return Reply(200, pull) if pull else not_found()


def list_pulls(req: Request) -> Reply:
    """GitHub's pull list: ``state`` open (default), closed or all; ``sort`` created (default)
    or updated; ``direction`` desc by default when sorted by created, else asc."""
    repo = _repo(req)
    if repo is None:
        return not_found()
    wanted = req.query.get("state", "open")
    sort = req.query.get("sort", "created")
    direction = req.query.get("direction", "desc" if sort == "created" else "asc")
    if wanted not in ("open", "closed", "all"):
        return invalid("state")
    if sort not in ("created", "updated"):
        return invalid("sort")
    if direction not in ("asc", "desc"):
        return invalid("direction")
    rank = {
        n: p["id"] if sort == "created" else repo.pull_changes[n] for n, p in repo.pulls.items()
    }
    found = sorted(
        (p for p in repo.pulls.values() if wanted in ("all", p["state"])),
        key=lambda p: rank[p["number"]],
        reverse=direction == "desc",
    )
    # List items are GitHub's ``pull-request-simple``: no ``merged``; readers use ``merged_at``.
    return paginate(req, [shapes.pull_simple(public(p)) for p in found])


def list_comments(req: Request) -> Reply:
    repo = _repo(req)
    number = int(req.groups["number"])
    if repo is None or number not in repo.pulls:
        return not_found()
    return paginate(req, req.state.issue_comments(repo.full_name, number))


def create_comment(req: Request) -> Reply:
    repo = _repo(req)
    number = int(req.groups["number"])
    if repo is None or number not in repo.pulls or req.actor is None:
        return not_found()
    body = req.body.get("body") if isinstance(req.body, dict) else None
    if not isinstance(body, str) or not body:
        return invalid("body", "missing_field")
    if len(body) > 65536:
        return invalid("body", "too_long")
    comment = req.state.add_comment(repo.full_name, number, body, actor=req.actor)
    return Reply(201, comment, {"Location": comment["url"]})


def comment_item(req: Request) -> Reply:
    """GET, PATCH and DELETE /repos/{o}/{r}/issues/comments/{id}."""
    repo = _repo(req)
    comment = _comment(req, repo) if repo else None
    if comment is None:
        return not_found()
    if req.method == "DELETE":
        del req.state.comments[comment["id"]]
        return Reply(204)
    if req.method == "PATCH":
        body = req.body.get("body") if isinstance(req.body, dict) else None
        if not isinstance(body, str) or not body:
            return invalid("body", "missing_field")
        comment["body"] = body
        comment["updated_at"] = iso()
    return Reply(200, public(comment))


def create_reaction(req: Request) -> Reply:
    repo = _repo(req)
    comment = _comment(req, repo) if repo else None
    if comment is None or req.actor is None:
        return not_found()
    content = req.body.get("content") if isinstance(req.body, dict) else None
    if content not in REACTIONS:
        return invalid("content")
    existing = req.state.reactions_by_comment.setdefault(comment["id"], [])
    for reaction in existing:
        if reaction["content"] == content and reaction["user"]["login"] == req.actor.login:
            return Reply(200, dict(reaction))  # GitHub answers 200 for an existing reaction
    rid = req.state.next_id()
    reaction = {
        "id": rid,
        "node_id": f"REA_sandbox{rid}",
        "user": _user(req),
        "content": content,
        "created_at": iso(),
    }
    existing.append(reaction)
    return Reply(201, dict(reaction))


def get_permission(req: Request) -> Reply:
    repo = _repo(req)
    if repo is None:
        return not_found()
    user = req.groups["user"]
    permission = repo.collaborators.get(user.lower())
    if permission is None:
        permission = "none" if repo.private else "read"
    return Reply(200, shapes.permission(req.base_url, user, permission))


def _resolve_ref(repo: RepoState, ref: str) -> str | None:
    if SHA_RE.fullmatch(ref):
        return ref
    for pull in repo.pulls.values():
        if pull["head"]["ref"] == ref:
            return str(pull["head"]["sha"])
    return None


def create_deployment(req: Request) -> Reply:
    repo = _repo(req)
    if repo is None or req.actor is None:
        return not_found()
    data = req.body if isinstance(req.body, dict) else {}
    ref = data.get("ref")
    if not isinstance(ref, str) or not ref:
        return invalid("ref", "missing_field")
    sha = _resolve_ref(repo, ref)
    if sha is None:
        return error(422, f"No ref found for: {ref}")
    did = req.state.next_id()
    deployment = {
        "id": did,
        "node_id": f"DE_sandbox{did}",
        "url": f"{req.base_url}/repos/{repo.full_name}/deployments/{did}",
        "sha": sha,
        "ref": ref,
        "task": data.get("task", "deploy"),
        "payload": data.get("payload", {}),
        "environment": data.get("environment", "production"),
        "original_environment": data.get("environment", "production"),
        "description": data.get("description"),
        "creator": _user(req),
        "created_at": iso(),
        "updated_at": iso(),
        "statuses_url": f"{req.base_url}/repos/{repo.full_name}/deployments/{did}/statuses",
        "repository_url": f"{req.base_url}/repos/{repo.full_name}",
        "transient_environment": bool(data.get("transient_environment", False)),
        "production_environment": bool(data.get("production_environment", False)),
        "_statuses": [],
    }
    repo.deployments.append(deployment)
    return Reply(201, public(deployment))


def list_deployments(req: Request) -> Reply:
    """Newest first, filtered by ``sha``, ``ref``, ``environment`` and ``task`` as on GitHub."""
    repo = _repo(req)
    if repo is None:
        return not_found()
    found = [
        public(d)
        for d in reversed(repo.deployments)
        if all(
            req.query[k] == d[k] for k in ("sha", "ref", "environment", "task") if k in req.query
        )
    ]
    return paginate(req, found)


def _deployment(req: Request) -> tuple[RepoState | None, dict[str, Any] | None]:
    repo = _repo(req)
    if repo is None:
        return None, None
    wanted = int(req.groups["id"])
    return repo, next((d for d in repo.deployments if d["id"] == wanted), None)


def deployment_statuses(req: Request) -> Reply:
    repo, deployment = _deployment(req)
    if repo is None or deployment is None or req.actor is None:
        return not_found()
    if req.method == "GET":
        return paginate(req, [dict(s) for s in reversed(deployment["_statuses"])])
    data = req.body if isinstance(req.body, dict) else {}
    state = data.get("state")
    if state not in DEPLOYMENT_STATES:
        return invalid("state")
    status = _new_status(req, repo, deployment, state, data)
    if state == "success" and data.get("auto_inactive", True):
        for other in repo.deployments:  # GitHub marks older deployments of the env inactive
            latest = other["_statuses"][-1]["state"] if other["_statuses"] else None
            if (
                other is not deployment
                and other["environment"] == deployment["environment"]
                and not other["transient_environment"]
                and not other["production_environment"]
                and latest not in (None, "inactive")
            ):
                _new_status(req, repo, other, "inactive", {})
    return Reply(201, status)


def _new_status(
    req: Request, repo: RepoState, deployment: dict[str, Any], state: str, data: dict[str, Any]
) -> dict[str, Any]:
    sid = req.state.next_id()
    log_url = data.get("log_url") or data.get("target_url") or ""
    status = {
        "id": sid,
        "node_id": f"DES_sandbox{sid}",
        "url": f"{deployment['url']}/statuses/{sid}",
        "state": state,
        "creator": _user(req),
        "description": data.get("description", ""),
        "environment": data.get("environment", deployment["environment"]),
        "environment_url": data.get("environment_url", ""),
        "log_url": log_url,
        "target_url": log_url,
        "deployment_url": deployment["url"],
        "repository_url": f"{req.base_url}/repos/{repo.full_name}",
        "created_at": iso(),
        "updated_at": iso(),
    }
    deployment["_statuses"].append(status)
    return dict(status)


def create_commit_status(req: Request) -> Reply:
    repo = _repo(req)
    if repo is None or req.actor is None:
        return not_found()
    sha = req.groups["sha"]
    if not SHA_RE.fullmatch(sha):
        return error(422, f"No commit found for SHA: {sha}")
    data = req.body if isinstance(req.body, dict) else {}
    if data.get("state") not in COMMIT_STATES:
        return invalid("state")
    sid = req.state.next_id()
    creator = _user(req)
    status = {
        "id": sid,
        "node_id": f"SC_sandbox{sid}",
        "url": f"{req.base_url}/repos/{repo.full_name}/statuses/{sha}",
        "avatar_url": creator["avatar_url"],
        "sha": sha,
        "state": data["state"],
        "description": data.get("description"),
        "target_url": data.get("target_url"),
        "context": data.get("context", "default"),
        "creator": creator,
        "created_at": iso(),
        "updated_at": iso(),
    }
    repo.commit_statuses.append(status)
    return Reply(201, dict(status))


def get_tarball(req: Request) -> Reply:
    """GitHub answers 302 to codeload; the sandbox redirects to its own codeload path."""
    repo = _repo(req)
    ref = req.groups["ref"]
    if repo is None or not REF_RE.fullmatch(ref) or ".." in ref:
        return not_found()
    token = secrets.token_urlsafe(16)
    req.state.codeload_tokens.add(token)
    location = f"{req.base_url}/_codeload/{repo.full_name}/legacy.tar.gz/{ref}?token={token}"
    return Reply(302, None, {"Location": location})


def codeload(req: Request) -> Reply:
    """The archive itself: ``git archive`` with GitHub's ``{owner}-{repo}-{sha7}/`` prefix."""
    if req.query.get("token") not in req.state.codeload_tokens:
        return not_found()
    repo = req.state.repo(f"{req.groups['owner']}/{req.groups['repo']}")
    ref = req.groups["ref"]
    if repo is None or not REF_RE.fullmatch(ref) or ref.startswith("-"):
        return not_found()
    if ref in repo.tarballs:
        return Reply(200, repo.tarballs[ref], {"Content-Type": "application/x-gzip"})
    if repo.source is None:
        return not_found()
    resolved = subprocess.run(
        ["git", "-C", str(repo.source), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    sha = resolved.stdout.strip()
    if resolved.returncode != 0 or not SHA_RE.fullmatch(sha):
        return not_found()
    prefix = f"{repo.full_name.replace('/', '-')}-{sha[:7]}/"
    archive = subprocess.run(
        ["git", "-C", str(repo.source), "archive", "--format=tar.gz", f"--prefix={prefix}", sha],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        return error(500, "Server Error")
    headers = {
        "Content-Type": "application/x-gzip",
        "Content-Disposition": f"attachment; filename={prefix[:-1]}.tar.gz",
    }
    return Reply(200, archive.stdout, headers)


def get_installation(req: Request) -> Reply:
    """GET /repos/{o}/{r}/installation, authenticated with the App's JWT (``req.actor`` None)."""
    app_id = req.groups.get("_app_id", "")
    full_name = f"{req.groups['owner']}/{req.groups['repo']}".lower()
    installs = req.state.apps.get(app_id, (b"", {}))[1]
    if full_name not in installs:
        return not_found()
    iid = installs[full_name]
    owner = req.groups["owner"]
    return Reply(
        200,
        {
            "id": iid,
            "app_id": int(app_id) if app_id.isdigit() else shapes.stable_id(app_id),
            "app_slug": f"k8see-sandbox-{app_id}",
            "target_id": shapes.stable_id(owner),
            "target_type": "Organization",
            "account": shapes.user(req.base_url, owner, type="Organization"),
            "repository_selection": "selected",
            "access_tokens_url": f"{req.base_url}/app/installations/{iid}/access_tokens",
            "repositories_url": f"{req.base_url}/installation/repositories",
            "html_url": f"{shapes.HTML}/organizations/{owner}/settings/installations/{iid}",
            "events": ["pull_request", "issue_comment"],
            "permissions": dict(INSTALLATION_PERMISSIONS),
            "single_file_name": None,
            "created_at": iso(),
            "updated_at": iso(),
            "suspended_by": None,
            "suspended_at": None,
        },
    )


def create_access_token(req: Request) -> Reply:
    app_id = req.groups.get("_app_id", "")
    installs = req.state.apps.get(app_id, (b"", {}))[1]
    installation = int(req.groups["installation"])
    repos = frozenset(name for name, iid in installs.items() if iid == installation)
    if not repos:
        return not_found()
    token = "ghs_" + secrets.token_urlsafe(27)
    expires = time.time() + req.state.installation_token_ttl_seconds
    req.state.tokens[token] = Actor(
        login="k8see-sandbox[bot]", type="Bot", repos=repos, expires_at=expires
    )
    return Reply(
        201,
        {
            "token": token,
            "expires_at": iso(expires),
            "permissions": dict(INSTALLATION_PERMISSIONS),
            "repository_selection": "selected",
        },
    )


def _package(req: Request) -> tuple[tuple[str, str, str], list[dict[str, Any]]] | None:
    """The package of an ``/orgs/{org}/...`` or ``/user/...`` path (the token's own)."""
    org = req.groups.get("org")
    owner = org or (req.actor.login if req.actor else "")
    key = ("org" if org else "user", owner.lower(), unquote(req.groups["package"]))
    versions = req.state.packages.get(key)
    return None if versions is None else (key, versions)


def package_versions(req: Request) -> Reply:
    found = _package(req)
    return paginate(req, found[1]) if found else not_found()


def delete_package_version(req: Request) -> Reply:
    found = _package(req)
    if found is None:
        return not_found()
    key, versions = found
    kept = [v for v in versions if v["id"] != int(req.groups["id"])]
    if len(kept) == len(versions):
        return not_found()
    if not kept:  # GitHub's rule: the package must be deleted instead
        return error(400, "You cannot delete the last tagged version of a package. "
                     "You must delete the package instead.")  # fmt: skip
    req.state.packages[key] = kept
    return Reply(204)


def delete_package(req: Request) -> Reply:
    found = _package(req)
    if found is None:
        return not_found()
    del req.state.packages[found[0]]
    return Reply(204)


def upload_sarif(req: Request) -> Reply:
    """``POST /repos/{o}/{r}/code-scanning/sarifs``: gzip + base64 SARIF, commit and ref."""
    import base64
    import gzip
    import json

    repo = _repo(req)
    if repo is None:
        return not_found()
    if repo.private:
        return error(403, "Advanced Security must be enabled for this repository to use "
                     "code scanning.")  # fmt: skip
    body = req.body if isinstance(req.body, dict) else {}
    if not SHA_RE.fullmatch(str(body.get("commit_sha", ""))):
        return invalid("commit_sha")
    if not str(body.get("ref", "")).startswith("refs/"):
        return invalid("ref")
    try:
        sarif = json.loads(gzip.decompress(base64.b64decode(str(body.get("sarif", "")))))
    except (ValueError, OSError):
        return error(400, "Invalid SARIF: it must be gzip-compressed and base64-encoded.")
    if not isinstance(sarif, dict) or sarif.get("version") != "2.1.0" or "runs" not in sarif:
        return error(400, "Invalid SARIF: version 2.1.0 with runs is required.")
    sid = f"sarif-{req.state.next_id()}"
    req.state.sarifs.setdefault(repo.full_name.lower(), []).append(
        {"id": sid, "commit_sha": body["commit_sha"], "ref": body["ref"], "sarif": sarif}
    )
    url = f"{req.base_url}/repos/{repo.full_name}/code-scanning/sarifs/{sid}"
    return Reply(202, {"id": sid, "url": url})


Route = tuple[str, re.Pattern[str], Callable[[Request], Reply], str]
_P = r"/(?:orgs/(?P<org>[^/]+)|user)/packages/container/(?P<package>[^/]+)"
_O = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"

#: (method, path pattern, handler, auth kind: "token", "jwt" or "none")
ROUTES: list[Route] = [
    (m, re.compile(p + r"$"), h, a)
    for m, p, h, a in [
        ("GET", _O, get_repo, "token"),
        ("GET", _O + r"/pulls", list_pulls, "token"),
        ("GET", _O + r"/pulls/(?P<number>\d+)", get_pull, "token"),
        ("GET", _O + r"/issues/(?P<number>\d+)/comments", list_comments, "token"),
        ("POST", _O + r"/issues/(?P<number>\d+)/comments", create_comment, "token"),
        ("GET", _O + r"/issues/comments/(?P<id>\d+)", comment_item, "token"),
        ("PATCH", _O + r"/issues/comments/(?P<id>\d+)", comment_item, "token"),
        ("DELETE", _O + r"/issues/comments/(?P<id>\d+)", comment_item, "token"),
        ("POST", _O + r"/issues/comments/(?P<id>\d+)/reactions", create_reaction, "token"),
        ("GET", _O + r"/collaborators/(?P<user>[^/]+)/permission", get_permission, "token"),
        ("GET", _O + r"/deployments", list_deployments, "token"),
        ("POST", _O + r"/deployments", create_deployment, "token"),
        ("GET", _O + r"/deployments/(?P<id>\d+)/statuses", deployment_statuses, "token"),
        ("POST", _O + r"/deployments/(?P<id>\d+)/statuses", deployment_statuses, "token"),
        ("POST", _O + r"/statuses/(?P<sha>[^/]+)", create_commit_status, "token"),
        ("GET", _O + r"/tarball/(?P<ref>.+)", get_tarball, "token"),
        ("POST", _O + r"/code-scanning/sarifs", upload_sarif, "token"),
        ("GET", _P + r"/versions", package_versions, "token"),
        ("DELETE", _P + r"/versions/(?P<id>\d+)", delete_package_version, "token"),
        ("DELETE", _P, delete_package, "token"),
        ("GET", _O + r"/installation", get_installation, "jwt"),
        (
            "POST",
            r"/app/installations/(?P<installation>\d+)/access_tokens",
            create_access_token,
            "jwt",
        ),
        (
            "GET",
            r"/_codeload/(?P<owner>[^/]+)/(?P<repo>[^/]+)/legacy\.tar\.gz/(?P<ref>.+)",
            codeload,
            "none",
        ),
    ]
]
