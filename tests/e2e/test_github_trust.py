"""GitHub that reviewers trust, through real worker processes against the sandbox GitHub.

Covers:
- a non-collaborator's ``/deploy-preview`` and ``/destroy-preview`` are refused before they touch
  the PR (no generation bump, so they cannot supersede queued work), with one polite
  reply, no 👎, nothing built or destroyed, and the environment's status untouched;
- ``/help`` from a maintainer is answered with the commands and the trigger mode, without
  touching the PR's generation;
- a maintainer's run: 👀 then 🚀, a ``k8see/validate`` commit status, a GitHub Deployment going
  ``in_progress`` → ``success`` (with ``environment_url``) → ``inactive`` on close, and the
  number of GitHub calls per stage (printed, and bounded);
- a fork PR is not deployed until a maintainer approves it, is then deployed at exactly the
  approved SHA, and a later push is not deployed without a new approval;
- a missing allowlist refuses everything, with a comment saying how to get access;
- after all of it, the GitHub token is nowhere in Redis (every key) or the worker logs.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k8see import coordination, state
from k8see.approvals import FORK_MARKER, reply_marker
from k8see_sandbox.platform import SANDBOX_TOKEN
from tests.contracts.webhooks import assert_webhook
from tests.e2e.harness import ROOT, Harness, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def _config(name: str, trigger: str = "automatic") -> dict[str, str]:
    """examples/hello's k8s-ee.yaml under another projectId (and trigger mode)."""
    text = (ROOT / "examples" / "hello" / "k8s-ee.yaml").read_text()
    text = text.replace("projectId: hello", f"projectId: {name}\ntrigger: {trigger}")
    return {"k8s-ee.yaml": text}


ACCESS_URL = "https://platform.example.test/request-access"


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    workdir = tmp_path_factory.mktemp("trust")
    allowlist = workdir / "allowed-orgs.json"
    shutil.copy(ROOT / "config" / "allowed-orgs.json", allowlist)
    env = {
        "K8SEE_POLICY__ALLOWLIST_PATH": str(allowlist),
        "K8SEE_POLICY__ACCESS_REQUEST_URL": ACCESS_URL,
        # Everything GitHub can show, to check each of it: the validate status on success
        # and the Deployment's in_progress (both off by default, to keep a push at 5 calls)
        "K8SEE_GITHUB__COMMIT_STATUS": "always",
        "K8SEE_GITHUB__DEPLOYMENTS": "progress",
    }
    with running_platform(workdir, extra_env=env) as h:
        yield h


def _comment_event(h: Harness, repo: str, pr: int, body: str, login: str) -> Path:
    """Post ``body`` as ``login`` on the sandbox PR and write the issue_comment event for it."""
    posted = h.platform.github.add_comment(repo, pr, body, login=login)
    payload = h.platform.github.issue_comment_event(repo, pr, posted)
    assert_webhook("issue_comment", payload)
    path = h.workdir / f"event-{posted['id']}.json"
    path.write_text(json.dumps(payload))
    return path


def _command(h: Harness, repo: str, pr: int, body: str, login: str, src: Path) -> tuple[Any, int]:
    event = _comment_event(h, repo, pr, body, login)
    comment_id = int(event.stem.split("-")[1])
    done = h.enqueue(
        "--event-path", str(event), "--event-name", "issue_comment", "--source", str(src)
    )
    return done, comment_id


def _reactions(h: Harness, comment_id: int) -> list[str]:
    return [r["content"] for r in h.platform.github.reactions(comment_id)]


def _bodies(h: Harness, repo: str, pr: int) -> list[str]:
    return [str(c["body"]) for c in h.platform.github.comments(repo, pr)]


def _stats(h: Harness) -> dict[str, int]:
    return state.stats(h.redis)


def _calls_since(h: Harness, start: int) -> Counter[str]:
    """GitHub calls since ``start``, by kind (method and the path's last word)."""
    kinds: Counter[str] = Counter()
    for method, path in h.platform.github.calls[start:]:
        words = [w for w in path.split("/") if w and not w.isdigit() and len(w) < 40]
        kinds[f"{method} {words[-1] if words else path}"] += 1
    return kinds


def test_commands_need_write_access_and_maintainers_get_the_whole_conversation(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    h = harness
    gh = h.platform.github
    repo, path, sha = h.repo("trust", _config("trust", "on-demand"))
    gh.add_repo(repo, collaborators={"maintainer": "write", "viewer": "read"})
    gh.add_pull(repo, 1, head_sha=sha, head_ref="feature")

    # When a reader asks for a preview
    before = _stats(h)
    generation = coordination.current_generation(h.redis, repo=repo, pr=1)
    refused, stranger_comment = _command(h, repo, 1, "/deploy-preview", "viewer", path)

    # Then one polite reply, no reactions, nothing built or deployed
    assert refused.returncode == 0 and "skipped" in refused.stdout, refused.stderr
    replies = [b for b in _bodies(h, repo, 1) if b.startswith(reply_marker(stranger_comment))]
    assert len(replies) == 1 and "write access" in replies[0] and "@viewer" in replies[0]
    assert _reactions(h, stranger_comment) == []
    after = _stats(h)
    # the command task refused it before the PR was touched: no pipeline stage ran at all
    assert after.get("stage_started:validate", 0) == before.get("stage_started:validate", 0)
    assert after.get("stage_started:build", 0) == before.get("stage_started:build", 0)
    assert after.get("stopped:refused:command", 0) == before.get("stopped:refused:command", 0) + 1
    assert "trust-pr-1" not in h.namespaces()
    assert coordination.current_generation(h.redis, repo=repo, pr=1) == generation

    # When a maintainer asks for help
    helped, help_comment = _command(h, repo, 1, "/help", "maintainer", path)
    assert helped.returncode == 0, helped.stderr
    h.wait_for(lambda: any(b.startswith(reply_marker(help_comment)) for b in _bodies(h, repo, 1)))
    (answer,) = [b for b in _bodies(h, repo, 1) if b.startswith(reply_marker(help_comment))]
    assert "**on-demand**" in answer and "/destroy-preview" in answer and "/preserve" in answer
    assert _reactions(h, help_comment) == ["eyes"]
    # a command never bumps the generation: it cannot disturb queued work
    assert coordination.current_generation(h.redis, repo=repo, pr=1) == generation

    # When a maintainer asks for a preview
    start = len(gh.calls)
    deployed, maintainer_comment = _command(h, repo, 1, "/deploy-preview", "maintainer", path)
    assert deployed.returncode == 0 and "ready" in deployed.stdout, deployed.stderr
    h.wait_for(lambda: h.record(repo, 1).get("commented") == "ready")
    deploy_calls = _calls_since(h, start)

    # Then 👀 then 🚀, a validate status, and a Deployment in_progress → success with the URL
    assert _reactions(h, maintainer_comment) == ["eyes", "rocket"]
    statuses = gh.commit_statuses(repo)
    assert [(s["context"], s["state"]) for s in statuses] == [("k8see/validate", "success")]
    (deployment,) = gh.deployments(repo)
    assert deployment["sha"] == sha and deployment["environment"] == "preview/trust-pr-1"
    assert [s["state"] for s in deployment["statuses"]] == ["in_progress", "success"]
    assert deployment["statuses"][-1]["environment_url"] == h.record(repo, 1)["preview_url"]

    # When a reader asks to destroy it
    gone, destroy_comment = _command(h, repo, 1, "/destroy-preview", "viewer", path)
    # Then it is refused and the live environment is untouched, close mark included
    assert gone.returncode == 0 and "skipped" in gone.stdout, gone.stderr
    assert h.record(repo, 1)["status"] == "ready"
    assert "trust-pr-1" in h.namespaces()
    assert not coordination.is_closed(h.redis, repo=repo, pr=1)
    assert _reactions(h, destroy_comment) == []

    # When a push redeploys it (on-demand mode, the environment exists)
    start = len(gh.calls)
    new_sha = h.commit(path, "second")
    gh.set_pull_state(repo, 1, head_sha=new_sha)
    pushed = h.enqueue(
        "--repo", repo, "--pr", "1", "--action", "synchronize", "--sha", new_sha, "--source",
        str(path),
    )  # fmt: skip
    assert pushed.returncode == 0 and "ready" in pushed.stdout, pushed.stderr
    h.wait_for(lambda: h.record(repo, 1).get("commented") == "ready")
    push_calls = _calls_since(h, start)

    # When the PR closes
    start = len(gh.calls)
    gh.set_pull_state(repo, 1, state="closed")
    closed = h.enqueue("--repo", repo, "--pr", "1", "--action", "closed", "--source", str(path))
    assert closed.returncode == 0 and "destroyed" in closed.stdout, closed.stderr
    h.wait_for(lambda: h.record(repo, 1).get("commented") == "destroyed")
    destroy_calls = _calls_since(h, start)
    first, second = gh.deployments(repo)
    assert (first["sha"], second["sha"]) == (sha, new_sha)
    assert [s["state"] for s in first["statuses"]] == ["in_progress", "success", "inactive"]
    assert [s["state"] for s in second["statuses"]] == ["in_progress", "success", "inactive"]

    # Frugal: a few calls per stage. Printed for the report (pytest -s), and bounded.
    with capsys.disabled():
        print(f"\nGitHub calls, /deploy-preview → ready: {sum(deploy_calls.values())} "
              f"{dict(deploy_calls)}")  # fmt: skip
        print(f"GitHub calls, push → ready: {sum(push_calls.values())} {dict(push_calls)}")
        print(f"GitHub calls, closed → destroyed: {sum(destroy_calls.values())} "
              f"{dict(destroy_calls)}")  # fmt: skip
    # "A few per stage": at most 3 on average over the five deploy stages, 3 over destroy's two
    # 15 until issue 14: validate now reads the comment and its author's permission from
    # GitHub again, and reacts itself (a validate message may come without the command
    # task): 3 calls, since a message's word on who commanded proves nothing.
    assert sum(deploy_calls.values()) <= 18
    assert sum(push_calls.values()) <= 15
    assert sum(destroy_calls.values()) <= 6


def test_a_fork_is_deployed_only_at_the_sha_a_maintainer_approved(harness: Harness) -> None:
    h = harness
    gh = h.platform.github
    repo, path, sha = h.repo("forked", _config("forked"))
    gh.add_repo(repo, collaborators={"maintainer": "maintain"})
    gh.add_pull(repo, 2, head_sha=sha, head_ref="patch-1", fork=True)
    src = ("--source", str(path))

    # When the fork PR opens (automatic mode)
    opened = h.enqueue("--repo", repo, "--pr", "2", "--action", "opened", "--sha", sha, *src)
    # Then nothing is built; a comment says a maintainer must approve
    assert opened.returncode == 0 and "skipped" in opened.stdout, opened.stderr
    assert "forked-pr-2" not in h.namespaces()
    (waiting,) = [b for b in _bodies(h, repo, 2) if b.startswith(FORK_MARKER)]
    assert "/deploy-preview" in waiting and sha[:12] in waiting

    # When a maintainer approves with /deploy-preview
    approved, _ = _command(h, repo, 2, "/deploy-preview", "maintainer", path)
    # Then exactly the head SHA of that moment is deployed
    assert approved.returncode == 0 and "ready" in approved.stdout, approved.stderr
    assert h.record(repo, 2)["sha"] == sha
    assert "forked-pr-2" in h.namespaces()

    # When the fork pushes again
    builds = _stats(h).get("stage_started:build", 0)
    new_sha = h.commit(path, "unreviewed change")
    gh.set_pull_state(repo, 2, head_sha=new_sha)
    pushed = h.enqueue(
        "--repo", repo, "--pr", "2", "--action", "synchronize", "--sha", new_sha, *src
    )
    # Then it is not deployed: the approved SHA stays, and the comment asks for a new approval
    assert pushed.returncode == 0 and "skipped" in pushed.stdout, pushed.stderr
    record = h.record(repo, 2)
    assert (record["status"], record["sha"]) == ("ready", sha)
    assert _stats(h).get("stage_started:build", 0) == builds
    assert {d["sha"] for d in gh.deployments(repo)} == {sha}
    forks = [b for b in _bodies(h, repo, 2) if b.startswith(FORK_MARKER)]
    assert len(forks) == 1 and new_sha[:12] in forks[0] and "new approval" in forks[0]


def test_a_missing_allowlist_refuses_everything_with_a_comment(harness: Harness) -> None:
    h = harness
    gh = h.platform.github
    allowlist = h.workdir / "allowed-orgs.json"
    kept = allowlist.read_text()
    repo, path, sha = h.repo("locked", _config("locked"))
    gh.add_repo(repo)
    gh.add_pull(repo, 3, head_sha=sha, head_ref="feature")
    allowlist.unlink()
    try:
        run = h.enqueue(
            "--repo", repo, "--pr", "3", "--action", "opened", "--sha", sha, "--source", str(path)
        )
    finally:
        allowlist.write_text(kept)
    assert run.returncode == 1 and "allowlist" in run.stderr, run.stderr
    assert "locked-pr-3" not in h.namespaces()
    h.wait_for(lambda: h.record(repo, 3).get("commented") == "failed")
    (body,) = _bodies(h, repo, 3)
    assert "missing" in body and ACCESS_URL in body
    assert "Traceback" not in body


def test_no_token_in_redis_or_worker_logs(harness: Harness) -> None:
    h = harness
    found = []
    for key in h.redis.scan_iter(count=500):
        kind = h.redis.type(key).decode()
        if kind == "string":
            values = [h.redis.get(key)]
        elif kind == "hash":
            values = [*h.redis.hkeys(key), *h.redis.hvals(key)]
        elif kind == "list":
            values = h.redis.lrange(key, 0, -1)
        elif kind == "set":
            values = list(h.redis.smembers(key))
        elif kind == "zset":
            values = h.redis.zrange(key, 0, -1)
        else:
            values = []
        if any(SANDBOX_TOKEN.encode() in (v or b"") for v in [key, *values]):
            found.append(key)
    assert h.redis.dbsize() > 10  # the runs above really left state behind
    assert found == []
    logs = sorted(h.workdir.glob("worker-*.log"))
    assert logs and all(SANDBOX_TOKEN not in p.read_text(errors="replace") for p in logs)
