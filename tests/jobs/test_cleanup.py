"""The stale-environment reconciler against the sandbox cluster, GitHub and a real Redis.

Covers:
- 40 environments mixing open, closed, merged, preserved, expired-preserve, orphaned, stale and
  unlabelled ones: exactly the closed, merged, expired, orphaned and stale ones get a destroy
  chain (through the enqueue client: generation bumped, close mark, queued record), with one
  page each of open and closed pulls and a single lookup only for the PRs in neither list,
  none for preserved, stale or unlabelled namespaces.
- a second run within the cache window asks GitHub nothing; a dry run sends nothing.
- a record whose namespace vanished is marked destroyed.
- ``max_github_calls`` (list pages included) defers the PRs beyond it to the next run.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis

from k8see import coordination, names, state
from k8see.jobs.cleanup import run_cleanup
from k8see.jobs.times import iso
from k8see.settings import PlatformSettings, load_settings
from k8see_sandbox.github import GitHubSandbox
from tests.fixtures.github import SANDBOX_TOKEN

DAY = 86400.0


def make_settings(
    *, redis_url: str, kubeconfig: str, github_url: str, **cleanup: Any
) -> PlatformSettings:
    return load_settings(
        redis={"url": redis_url},
        deploy={"kubeconfig": kubeconfig},
        github={"api_url": github_url, "token": SANDBOX_TOKEN},
        queues={"max_retries": 1, "retry_backoff_seconds": 0.01},
        cleanup=cleanup,
    )


@pytest.fixture
def settings(redis_url: str, kubeconfig: str, github: GitHubSandbox) -> PlatformSettings:
    return make_settings(redis_url=redis_url, kubeconfig=kubeconfig, github_url=github.url)


def add_namespace(
    api: Any,
    name: str,
    *,
    repo: str | None,
    pr: int,
    last_updated: float,
    preserve_until: float | None = None,
) -> None:
    from kubernetes import client

    labels = {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_TYPE: "ephemeral",
        names.LABEL_PR: str(pr),
    }
    annotations = {
        names.ANN_LAST_UPDATED: iso(last_updated),
        names.ANN_CREATED_AT: iso(last_updated),
    }
    if repo:
        annotations[names.ANN_REPOSITORY] = repo
    if preserve_until is not None:
        labels[names.LABEL_PRESERVE] = "true"
        annotations[names.ANN_PRESERVE_UNTIL] = iso(preserve_until)
    client.CoreV1Api(api).create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels=labels, annotations=annotations)
        )
    )


#: kind → (count, PR state in GitHub or None for no PR, expected reason)
MIX = {
    "open": (8, "open", "open"),
    "closed": (8, "closed", "closed"),
    "merged": (6, "merged", "merged"),
    "preserved": (5, "closed", "preserved"),
    "expired": (4, "closed", "closed"),
    "orphaned": (4, None, "orphaned"),
    "stale": (3, "open", "stale"),
    "unlabelled": (2, "closed", "safety"),
}


def seed(api: Any, github: GitHubSandbox, repo: str, prefix: str) -> dict[str, tuple[int, str]]:
    """The 40 environments; returns namespace → (PR, expected reason)."""
    github.add_repo(repo)
    now = time.time()
    expected: dict[str, tuple[int, str]] = {}
    pr = 0
    for kind, (count, pr_state, reason) in MIX.items():
        for _ in range(count):
            pr += 1
            if pr_state is not None:
                github.add_pull(repo, pr, head_sha="a" * 40, head_ref=f"f{pr}",
                                state="open" if pr_state == "open" else "closed",
                                merged=pr_state == "merged")  # fmt: skip
            ns = f"{prefix}-pr-{pr}"
            add_namespace(
                api,
                ns,
                repo=None if kind == "unlabelled" else repo,
                pr=pr,
                last_updated=now - (30 * DAY if kind == "stale" else 3600),
                preserve_until={"preserved": now + DAY, "expired": now - 60}.get(kind),
            )
            expected[ns] = (pr, reason)
    assert len(expected) == 40
    return expected


def pull_calls(github: GitHubSandbox, repo: str) -> list[str]:
    return [
        path for method, path in github.calls if method == "GET" and f"/repos/{repo}/pulls/" in path
    ]


def list_calls(github: GitHubSandbox, repo: str) -> int:
    return github.calls.count(("GET", f"/repos/{repo}/pulls"))


def test_forty_environments_exactly_the_right_ones_are_destroyed(
    settings: PlatformSettings, github: GitHubSandbox, kube_api_client: Any
) -> None:
    # Given 40 environments of every kind, and a record whose namespace is gone
    prefix = f"c{uuid.uuid4().hex[:6]}"
    repo = f"acme/{prefix}"
    expected = seed(kube_api_client, github, repo, prefix)
    client = redis.Redis.from_url(settings.redis.url)
    state.update(client, repo=repo, pr=99, generation=1, ttl_seconds=600,
                 changes={"status": "ready", "namespace": f"{prefix}-pr-99"})  # fmt: skip

    # When the reconciler runs
    report = run_cleanup(settings=settings, client=client)

    # Then exactly the closed, merged, expired, orphaned and stale ones get a destroy chain
    mine = {d["namespace"]: d for d in report["destroyed"] if d["repo"] == repo}
    want = {
        ns
        for ns, (_, reason) in expected.items()
        if reason in ("closed", "merged", "orphaned", "stale")
    }
    assert set(mine) == want
    assert len(want) == 25
    for ns, entry in mine.items():
        pr, reason = expected[ns]
        assert entry["reason"] == reason
        record = state.get(client, repo=repo, pr=pr) or {}
        assert record["action"] == "destroy" and record["status"] == "queued"
        assert record["trigger"] == f"maintenance:{reason}"
        assert coordination.is_closed(client, repo=repo, pr=pr)
    kept = {
        k["namespace"]: k["reason"]
        for k in report["kept_namespaces"]
        if k["namespace"].startswith(prefix)
    }
    assert kept == {ns: r for ns, (_, r) in expected.items() if ns not in want}
    # ... with a page of open and a page of closed pulls, then one call for each PR in neither
    # list (the orphaned ones), none for preserved, stale or unlabelled ones: 6 requests where
    # asking one by one took 8 + 8 + 6 + 4 + 4
    assert list_calls(github, repo) == 2
    calls = pull_calls(github, repo)
    assert len(calls) == len(set(calls)) == 4
    asked = {int(path.rsplit("/", 1)[1]) for path in calls}
    assert asked == {pr for pr, r in expected.values() if r == "orphaned"}
    # ... and the vanished record is marked destroyed
    assert f"{repo}#99" in report["vanished"]
    assert (state.get(client, repo=repo, pr=99) or {})["status"] == "destroyed"

    # When it runs again within the cache window, in dry-run mode
    before = len(github.calls)
    again = run_cleanup(settings=settings, client=client, dry_run=True)
    # Then GitHub is not asked again, and nothing is sent
    assert pull_calls(github, repo) == calls and len(github.calls) == before
    assert all("run_id" not in d for d in again["destroyed"])


def test_github_calls_are_bounded_per_run(
    redis_url: str, kubeconfig: str, github: GitHubSandbox, kube_api_client: Any
) -> None:
    settings = make_settings(redis_url=redis_url, kubeconfig=kubeconfig, github_url=github.url,
                             max_github_calls=5)  # fmt: skip
    prefix = f"0{uuid.uuid4().hex[:6]}"  # sorts before every other namespace
    repo = f"acme/{prefix}"
    github.add_repo(repo)
    for pr in range(1, 9):
        github.add_pull(repo, pr, head_sha="b" * 40, head_ref="x", state="closed")
        add_namespace(
            kube_api_client, f"{prefix}-pr-{pr}", repo=repo, pr=pr, last_updated=time.time()
        )
    # A busy repository: 600 newer open pulls, so listing them takes the whole budget
    for pr in range(9, 609):
        github.add_pull(repo, pr, head_sha="b" * 40, head_ref="x")
    client = redis.Redis.from_url(redis_url)
    report = run_cleanup(settings=settings, client=client, dry_run=True)
    assert report["github_calls"] <= 5
    mine = [k for k in report["kept_namespaces"] if k["namespace"].startswith(prefix)]
    assert len(mine) == 8 and {k["reason"] for k in mine} == {"deferred"}
    assert list_calls(github, repo) == 5 and pull_calls(github, repo) == []


def test_a_later_pass_gets_unchanged_pages_as_304(
    redis_url: str, kubeconfig: str, github: GitHubSandbox, kube_api_client: Any
) -> None:
    # Given three open PRs with environments, and no reuse of answers between passes
    settings = make_settings(redis_url=redis_url, kubeconfig=kubeconfig, github_url=github.url,
                             pr_state_cache_seconds=0)  # fmt: skip
    prefix = f"e{uuid.uuid4().hex[:6]}"
    repo = f"acme/{prefix}"
    github.add_repo(repo)
    for pr in (1, 2, 3):
        github.add_pull(repo, pr, head_sha="c" * 40, head_ref="x")
        add_namespace(kube_api_client, f"{prefix}-pr-{pr}", repo=repo, pr=pr,
                      last_updated=time.time())  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    run_cleanup(settings=settings, client=client, dry_run=True)
    first, before = list_calls(github, repo), github.not_modified
    assert first >= 1

    # When the next pass runs in the same worker process
    again = run_cleanup(settings=settings, client=client, dry_run=True)

    # Then it asks for the same pages, conditionally, and GitHub answers each with a 304
    assert list_calls(github, repo) == 2 * first
    assert github.not_modified - before == first
    kept = [k for k in again["kept_namespaces"] if k["namespace"].startswith(prefix)]
    assert {k["reason"] for k in kept} == {"open"} and len(kept) == 3
