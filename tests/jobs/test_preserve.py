"""Preserve limits and expiry against the sandbox cluster and GitHub, with a real Redis lock.

Covers:
- the default 48 hours, the reference's labels and annotations, a request above the project's
  maximum refused, a per-project maximum above the global one;
- the absolute lifetime cap: re-preserving shortens to it, and refuses once it is used up;
- the cluster-wide quota (3): a fourth PR refused, extending a preserved one allowed, and two
  concurrent /preserve for the last slot: exactly one wins (the lock);
- expiry: one warning within the hour (not repeated), and at the deadline the label goes and a
  closed PR's environment is destroyed at once (destroy chain queued); an open one is kept.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import redis

from k8see import names, state
from k8see.errors import PolicyError
from k8see.jobs import preserve
from k8see.jobs.preserve_expiry import run_expiry
from k8see.jobs.times import iso
from k8see.settings import PlatformSettings
from k8see_sandbox.github import GitHubSandbox
from tests.jobs.test_cleanup import add_namespace, make_settings

HOUR = 3600.0


@pytest.fixture
def settings(redis_url: str, kubeconfig: str, github: GitHubSandbox) -> PlatformSettings:
    return make_settings(redis_url=redis_url, kubeconfig=kubeconfig, github_url=github.url)


@pytest.fixture
def limits() -> preserve.Limits:
    return preserve.Limits(default_hours=48, max_hours=48, lifetime_hours=72, max_preserved=3,
                           project_max_hours={"acme/big": 96})  # fmt: skip


def labels_of(api: Any, name: str) -> tuple[dict[str, str], dict[str, str]]:
    from kubernetes import client

    ns = client.CoreV1Api(api).read_namespace(name)
    return dict(ns.metadata.labels or {}), dict(ns.metadata.annotations or {})


def clear_preserves(api: Any) -> None:
    """The quota is cluster-wide: release preserves other tests left in the shared sandbox."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    for ns in core.list_namespace(label_selector="preserve=true").items:
        core.patch_namespace(ns.metadata.name, {"metadata": {"labels": {"preserve": None}}})


def env(api: Any, repo: str, pr: int) -> str:
    name = f"p{uuid.uuid4().hex[:8]}-pr-{pr}"
    add_namespace(api, name, repo=repo, pr=pr, last_updated=time.time())
    return name


def test_preserve_limits_and_lifetime(
    kube_api_client: Any, redis_url: str, limits: preserve.Limits
) -> None:
    clear_preserves(kube_api_client)
    lock = redis.Redis.from_url(redis_url).lock("k8see:lock:preserve-quota", timeout=10)
    now = time.time()
    name = env(kube_api_client, "acme/shop", 7)

    # Default hours, with the reference's label and annotations
    done = preserve.preserve(api=kube_api_client, lock=lock, repo="acme/shop", pr=7, hours=None,
                             actor="alice", limits=limits, now=now)  # fmt: skip
    labels, annotations = labels_of(kube_api_client, name)
    assert labels["preserve"] == "true"
    assert annotations[names.ANN_PRESERVE_UNTIL] == iso(now + 48 * HOUR) == done.until
    assert annotations[names.ANN_PRESERVED_BY] == "alice"
    assert annotations[preserve.ANN_PRESERVE_WARNING_SENT] == "false"
    assert not done.extended

    # Above the maximum: refused with a hint
    with pytest.raises(PolicyError, match="maximum of 48 hours") as refused:
        preserve.preserve(api=kube_api_client, lock=lock, repo="acme/shop", pr=7, hours=49,
                          actor="alice", limits=limits, now=now)  # fmt: skip
    assert "/preserve" in (refused.value.hint or "")

    # Re-preserving a day later cannot pass the 72-hour lifetime from the first preserve
    later = preserve.preserve(api=kube_api_client, lock=lock, repo="acme/shop", pr=7, hours=48,
                              actor="bob", limits=limits, now=now + 40 * HOUR)  # fmt: skip
    assert later.extended and later.capped_by == "lifetime"
    assert later.until == iso(now + 72 * HOUR)
    with pytest.raises(PolicyError, match="used up its preserve lifetime"):
        preserve.preserve(api=kube_api_client, lock=lock, repo="acme/shop", pr=7, hours=1,
                          actor="bob", limits=limits, now=now + 72 * HOUR)  # fmt: skip

    # A project with a larger maximum gets it
    env(kube_api_client, "acme/big", 1)
    big = preserve.preserve(api=kube_api_client, lock=lock, repo="acme/big", pr=1, hours=60,
                            actor="alice", limits=limits, now=now)  # fmt: skip
    assert big.hours == 60


def test_quota_is_atomic_across_concurrent_commands(
    kube_api_client: Any, redis_url: str, limits: preserve.Limits
) -> None:
    clear_preserves(kube_api_client)
    client = redis.Redis.from_url(redis_url)
    now = time.time()
    repo = f"acme/q{uuid.uuid4().hex[:6]}"
    for pr in (1, 2):
        env(kube_api_client, repo, pr)
        preserve.preserve(api=kube_api_client, lock=client.lock("q", timeout=10), repo=repo, pr=pr,
                          hours=4, actor="a", limits=limits, now=now)  # fmt: skip
    env(kube_api_client, repo, 3)
    env(kube_api_client, repo, 4)

    # When two PRs ask for the last slot at the same moment
    outcomes: dict[int, str] = {}

    def ask(pr: int) -> None:
        lock = client.lock("k8see:lock:preserve-quota", timeout=10, blocking_timeout=10)
        try:
            preserve.preserve(api=kube_api_client, lock=lock, repo=repo, pr=pr, hours=4,
                              actor="a", limits=limits, now=now)  # fmt: skip
            outcomes[pr] = "ok"
        except PolicyError as exc:
            outcomes[pr] = exc.message

    threads = [threading.Thread(target=ask, args=(pr,)) for pr in (3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then exactly one wins, the other is told the quota is full
    assert sorted(outcomes.values())[0].startswith("The cluster already has 3 preserved")
    assert list(outcomes.values()).count("ok") == 1
    # ... and extending an already preserved one is still allowed at the limit
    again = preserve.preserve(api=kube_api_client, lock=client.lock("q", timeout=10), repo=repo,
                              pr=1, hours=8, actor="a", limits=limits, now=now)  # fmt: skip
    assert again.extended


def test_expiry_warns_once_and_destroys_closed_prs_at_the_deadline(
    settings: PlatformSettings, github: GitHubSandbox, kube_api_client: Any
) -> None:
    clear_preserves(kube_api_client)
    client = redis.Redis.from_url(settings.redis.url)
    repo = f"acme/e{uuid.uuid4().hex[:6]}"
    github.add_repo(repo)
    now = time.time()
    soon = env(kube_api_client, repo, 1)
    gone_closed = env(kube_api_client, repo, 2)
    gone_open = env(kube_api_client, repo, 3)
    github.add_pull(repo, 1, head_sha="c" * 40, head_ref="a")
    github.add_pull(repo, 2, head_sha="c" * 40, head_ref="b", state="closed")
    github.add_pull(repo, 3, head_sha="c" * 40, head_ref="c")
    lock = client.lock("k8see:lock:preserve-quota", timeout=10)
    limits = preserve.limits_of(settings)
    for pr in (1, 2, 3):
        hours, since = (2, now) if pr == 1 else (1, now - 2 * HOUR)
        preserve.preserve(api=kube_api_client, lock=lock, repo=repo, pr=pr, hours=hours,
                          actor="a", limits=limits, now=since)  # fmt: skip

    # When the expiry job runs 75 minutes later, with PR 1 ending within the hour
    report = run_expiry(settings=settings, client=client, now=now + 1.25 * HOUR)
    # Then PR 1 is warned, PRs 2 and 3 expired; only the closed PR 2 is destroyed at once
    assert report["warned"] == [soon]
    assert sorted(report["expired"]) == sorted([gone_closed, gone_open])
    assert report["destroyed"] == [gone_closed]
    record = state.get(client, repo=repo, pr=2) or {}
    assert record["action"] == "destroy" and record["trigger"] == "maintenance:preserve-expired"
    assert state.get(client, repo=repo, pr=3) is None
    assert "preserve" not in labels_of(kube_api_client, gone_open)[0]
    assert labels_of(kube_api_client, soon)[1][preserve.ANN_PRESERVE_WARNING_SENT] == "true"
    assert any("expiring soon" in c["body"] for c in github.comments(repo, 1))
    assert any("Preserve expired" in c["body"] for c in github.comments(repo, 2))

    # When it runs again, the warning is not repeated
    again = run_expiry(settings=settings, client=client, now=now + 1.3 * HOUR)
    assert again["warned"] == [] and again["expired"] == []
    assert len([c for c in github.comments(repo, 1) if "expiring soon" in c["body"]]) == 1
