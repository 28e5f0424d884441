"""The sandbox GitHub server speaks GitHub's protocol: auth, pagination, ETags, faults, archives.

These use plain ``requests`` (not k8see's client) so the server's behaviour is pinned on its own.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import requests

from k8see_sandbox.github import GitHubSandbox
from tests.contracts.recorder import ContractRecorder
from tests.fixtures.github import SANDBOX_TOKEN

AUTH = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}


def seed(hub: GitHubSandbox, comments: int = 0) -> None:
    hub.add_repo("acme/shop", collaborators={"alice": "write"})
    hub.add_pull("acme/shop", 7, head_sha="a" * 40, head_ref="feature/x")
    for i in range(comments):
        hub.add_comment("acme/shop", 7, f"comment {i}")


def test_requests_without_valid_credentials_get_401(github: GitHubSandbox) -> None:
    seed(github)
    url = f"{github.url}/repos/acme/shop/pulls/7"
    assert requests.get(url, timeout=5).status_code == 401
    bad = requests.get(url, headers={"Authorization": "token nope"}, timeout=5)
    assert bad.status_code == 401
    assert bad.json()["message"] == "Bad credentials"
    ok = requests.get(url, headers={"Authorization": f"token {SANDBOX_TOKEN}"}, timeout=5)
    assert ok.status_code == 200
    head = ok.json()["head"]
    # GitHub sets pushed_at on the head repository itself (k8see binds fork approvals to it)
    assert head["repo"]["pushed_at"].endswith("Z")
    assert (head["ref"], head["sha"], head["label"]) == ("feature/x", "a" * 40, "acme:feature/x")
    assert (head["repo"]["full_name"], head["repo"]["fork"]) == ("acme/shop", False)


def test_unknown_repo_and_route_answer_githubs_404(github: GitHubSandbox) -> None:
    seed(github)
    for path in ("/repos/acme/nope", "/repos/acme/shop/pulls/99", "/repos/acme/shop/forks"):
        answer = requests.get(github.url + path, headers=AUTH, timeout=5)
        assert answer.status_code == 404
        assert answer.json()["message"] == "Not Found"


def test_comments_paginate_with_link_headers_and_cap_per_page(github: GitHubSandbox) -> None:
    seed(github, comments=250)
    url = f"{github.url}/repos/acme/shop/issues/7/comments"
    first = requests.get(url, params={"per_page": 500}, headers=AUTH, timeout=5)
    assert len(first.json()) == 100
    assert first.links["next"]["url"].endswith("page=2")
    assert first.links["last"]["url"].endswith("page=3")
    third = requests.get(first.links["last"]["url"], headers=AUTH, timeout=5)
    assert [c["body"] for c in third.json()] == [f"comment {i}" for i in range(200, 250)]
    assert "next" not in third.links
    assert third.links["prev"]["url"].endswith("page=2")
    default = requests.get(url, headers=AUTH, timeout=5)
    assert len(default.json()) == 30


def test_pulls_list_by_state_and_update_in_githubs_list_shape(
    github: GitHubSandbox, github_contract: ContractRecorder
) -> None:
    seed(github)
    for number in range(8, 12):
        github.add_pull("acme/shop", number, head_sha="b" * 40, head_ref=f"f{number}")
    url = f"{github.url}/repos/acme/shop/pulls"

    # Open pulls by default, newest first, two per page with the query kept in the links
    first = requests.get(url, params={"per_page": 2}, headers=AUTH, timeout=5)
    assert [p["number"] for p in first.json()] == [11, 10]
    assert "merged" not in first.json()[0] and first.json()[0]["merged_at"] is None
    following = requests.get(first.links["next"]["url"], headers=AUTH, timeout=5)
    assert [p["number"] for p in following.json()] == [9, 8]

    # Closing and merging move a pull to the closed list, most recently updated first
    before = requests.get(f"{url}/9", headers=AUTH, timeout=5).json()
    github.set_pull_state("acme/shop", 9, merged=True)
    github.set_pull_state("acme/shop", 11, state="closed")
    github.set_pull_state("acme/shop", 7, state="closed")
    newest = {"state": "closed", "sort": "updated", "direction": "desc"}
    closed = requests.get(url, params=newest, headers=AUTH, timeout=5).json()
    assert [p["number"] for p in closed] == [7, 11, 9]
    assert [p["merged_at"] is not None for p in closed] == [False, False, True]
    assert all(p["state"] == "closed" and p["closed_at"] for p in closed)
    after = requests.get(f"{url}/9", headers=AUTH, timeout=5).json()
    assert after["merged"] is True and after["updated_at"] >= before["updated_at"]
    oldest = {"state": "all", "sort": "created", "direction": "asc"}
    every = requests.get(url, params=oldest, headers=AUTH, timeout=5).json()
    assert [p["number"] for p in every] == [7, 8, 9, 10, 11]

    # Unknown values are GitHub's 422 (and break its description); every request is counted
    with github_contract.expect_violations() as seen:
        answer = requests.get(url, params={"state": "merged"}, headers=AUTH, timeout=5)
    assert answer.status_code == 422
    assert [(v.where, v.rule) for v in seen] == [("query parameter 'state'", "enum")]
    assert github.calls.count(("GET", "/repos/acme/shop/pulls")) == 5


def test_comment_pages_answer_304_to_a_matching_etag(github: GitHubSandbox) -> None:
    seed(github, comments=3)
    url = f"{github.url}/repos/acme/shop/issues/7/comments"
    first = requests.get(url, headers=AUTH, timeout=5)
    etag = first.headers["ETag"]
    again = requests.get(url, headers={**AUTH, "If-None-Match": etag}, timeout=5)
    assert again.status_code == 304
    assert again.content == b""
    github.add_comment("acme/shop", 7, "a new one")
    changed = requests.get(url, headers={**AUTH, "If-None-Match": etag}, timeout=5)
    assert changed.status_code == 200
    assert len(changed.json()) == 4


def test_comment_crud_and_reactions(
    github: GitHubSandbox, github_contract: ContractRecorder
) -> None:
    seed(github)
    base = f"{github.url}/repos/acme/shop"
    made = requests.post(f"{base}/issues/7/comments", json={"body": "hi"}, headers=AUTH, timeout=5)
    assert made.status_code == 201
    cid = made.json()["id"]
    assert made.json()["user"]["login"] == "k8see-bot"
    patched = requests.patch(
        f"{base}/issues/comments/{cid}", json={"body": "edited"}, headers=AUTH, timeout=5
    )
    assert patched.json()["body"] == "edited"
    react = f"{base}/issues/comments/{cid}/reactions"
    assert (
        requests.post(react, json={"content": "rocket"}, headers=AUTH, timeout=5).status_code == 201
    )
    assert (
        requests.post(react, json={"content": "rocket"}, headers=AUTH, timeout=5).status_code == 200
    )
    with github_contract.expect_violations() as seen:
        party = requests.post(react, json={"content": "party"}, headers=AUTH, timeout=5)
    assert party.status_code == 422
    assert [(v.where, v.rule) for v in seen] == [("body at $.content", "enum")]
    assert [r["content"] for r in github.reactions(cid)] == ["rocket"]
    gone = requests.delete(f"{base}/issues/comments/{cid}", headers=AUTH, timeout=5)
    assert gone.status_code == 204
    assert github.comments("acme/shop", 7) == []


def test_faults_answer_like_github(github: GitHubSandbox) -> None:
    seed(github)
    github.faults.secondary_rate_limit_next = 1
    github.faults.retry_after_seconds = 7
    limited = requests.get(f"{github.url}/repos/acme/shop", headers=AUTH, timeout=5)
    assert limited.status_code == 403
    assert limited.headers["Retry-After"] == "7"
    assert "secondary rate limit" in limited.json()["message"]
    assert requests.get(f"{github.url}/repos/acme/shop", headers=AUTH, timeout=5).ok
    github.faults.fail_comment_writes_count = 1
    url = f"{github.url}/repos/acme/shop/issues/7/comments"
    assert requests.post(url, json={"body": "x"}, headers=AUTH, timeout=5).status_code == 502
    assert requests.post(url, json={"body": "x"}, headers=AUTH, timeout=5).status_code == 201
    assert github.calls[-1] == ("POST", "/repos/acme/shop/issues/7/comments")


def test_tarball_redirects_to_codeload_with_githubs_prefix(
    github: GitHubSandbox, source_repo: tuple[Path, list[str]]
) -> None:
    seed(github)
    path, shas = source_repo
    github.add_source("acme/shop", path)
    answer = requests.get(
        f"{github.url}/repos/acme/shop/tarball/{shas[0]}",
        headers=AUTH,
        timeout=5,
        allow_redirects=False,
    )
    assert answer.status_code == 302
    archive = requests.get(answer.headers["Location"], timeout=5)
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        names = tar.getnames()
    prefix = f"acme-shop-{shas[0][:7]}"
    assert f"{prefix}/k8s-ee.yaml" in names
    assert f"{prefix}/NEW.md" not in names  # only in the second commit
    unknown = requests.get(
        f"{github.url}/repos/acme/shop/tarball/{'f' * 40}", headers=AUTH, timeout=5
    )
    assert unknown.status_code == 404


def test_deployments_statuses_and_auto_inactive(github: GitHubSandbox) -> None:
    seed(github)
    base = f"{github.url}/repos/acme/shop/deployments"
    ids = []
    for sha in ("a" * 40, "b" * 40):
        made = requests.post(
            base,
            json={"ref": sha, "environment": "pr-7"},
            headers=AUTH,
            timeout=5,
        )
        assert made.status_code == 201
        ids.append(made.json()["id"])
        status = requests.post(
            f"{base}/{ids[-1]}/statuses",
            json={"state": "success", "environment_url": "https://x"},
            headers=AUTH,
            timeout=5,
        )
        assert status.status_code == 201
    first, second = github.deployments("acme/shop")
    assert [s["state"] for s in first["statuses"]] == ["success", "inactive"]
    assert second["statuses"][0]["environment_url"] == "https://x"
    missing = requests.post(base, json={"ref": "nope"}, headers=AUTH, timeout=5)
    assert missing.status_code == 422


def test_main_serves_until_sigterm_and_can_be_seeded(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "k8see_sandbox.github", "--port", "0", "--token", "t0k"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        auth = {"Authorization": "token t0k"}
        repo = {"full_name": "acme/shop", "collaborators": {"bob": "admin"}}
        assert requests.post(f"{url}/_sandbox/repos", json=repo, headers=auth, timeout=5).ok
        pull = {"full_name": "acme/shop", "number": 3, "head_sha": "c" * 40, "head_ref": "b"}
        assert requests.post(f"{url}/_sandbox/pulls", json=pull, headers=auth, timeout=5).ok
        got = requests.get(f"{url}/repos/acme/shop/pulls/3", headers=auth, timeout=5)
        assert got.json()["head"]["sha"] == "c" * 40
        perm = requests.get(f"{url}/repos/acme/shop/collaborators/bob/permission", headers=auth,
                            timeout=5)  # fmt: skip
        assert json.loads(perm.text)["permission"] == "admin"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_app_endpoints_need_a_valid_app_jwt(github: GitHubSandbox) -> None:
    seed(github)
    github.add_app("11", repos={"acme/shop": 5})
    for auth in (AUTH, {"Authorization": "Bearer a.b.c"}, {}):
        answer = requests.post(
            f"{github.url}/app/installations/5/access_tokens", headers=auth, timeout=5
        )
        assert answer.status_code == 401


def test_ensure_pull_creates_then_moves_the_head(github: GitHubSandbox) -> None:
    github.ensure_pull("demo/hello", 1, head_sha="a" * 40, head_ref="main")
    github.ensure_pull("demo/hello", 1, head_sha="b" * 40, head_ref="main")
    answer = requests.get(f"{github.url}/repos/demo/hello/pulls/1", headers=AUTH, timeout=5)
    assert answer.json()["head"]["sha"] == "b" * 40
