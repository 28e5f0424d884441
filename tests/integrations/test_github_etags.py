"""The ETags shared by every worker through Redis (``k8see.integrations.github_etags``).

Real Redis, the real client, the GitHub stand-in over HTTP (ETags specific to the token, 304s
without a body and not counted against the rate limit, as GitHub documents). Two clients play
two worker processes: they share nothing but Redis.

Covers: a second process's read of an unchanged PR is a 304 served from the kept body, and
costs no rate limit; a changed PR is read again (never a stale head); another token neither
reads nor is served another token's entry; an entry whose body was swapped in Redis, or with
a huge ETag, is dropped and the request sent plain; a Redis that does not answer leaves plain
requests and one warning, no traceback; no token in Redis.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
import redis
import requests

from k8see.integrations.github import GitHubClient, StaticToken
from k8see.integrations.github_etags import KEY_PREFIX, MAX_ETAG_CHARS, SharedETags, _mac
from k8see_sandbox.github import GitHubSandbox
from k8see_sandbox.github_state import Actor
from tests.conftest import free_port
from tests.fixtures.github import SANDBOX_TOKEN, RecordingSleep

SHA = "a" * 40
OTHER_TOKEN = "ghs_otherINSTALLATIONtoken987654321"
LOG = logging.getLogger("k8see.test.etags")


@pytest.fixture
def shop(github: GitHubSandbox) -> GitHubSandbox:
    github.add_repo("acme/shop")
    github.add_pull("acme/shop", 7, head_sha=SHA, head_ref="feature/x")
    return github


def worker(github: GitHubSandbox, redis_url: str, token: str = SANDBOX_TOKEN) -> GitHubClient:
    """A client as one worker process makes it: its own connection, only Redis shared."""
    return GitHubClient(
        api_url=github.url,
        token_provider=StaticToken(token),
        timeout_seconds=5.0,
        max_retries=1,
        backoff_seconds=0.01,
        log=LOG,
        sleep=RecordingSleep(),
        etags=SharedETags(redis.Redis.from_url(redis_url), log=LOG),
    )


def entries(redis_url: str) -> dict[str, dict[str, Any]]:
    store = redis.Redis.from_url(redis_url)
    try:
        return {
            key.decode(): json.loads(store.get(key) or b"{}")
            for key in store.scan_iter(match=f"{KEY_PREFIX}*")
        }
    finally:
        store.close()


def test_a_second_worker_reads_an_unchanged_pr_for_free(
    shop: GitHubSandbox, redis_url: str
) -> None:
    # When validate's process reads the PR, then build's and deploy's
    first = worker(shop, redis_url).get_pull("acme/shop", 7)
    used = shop.rate_limited_calls
    again = [worker(shop, redis_url).get_pull("acme/shop", 7) for _ in range(2)]
    # Then both re-reads were 304s, free of the rate limit, and gave the same PR
    assert again == [first, first] and first.head_sha == SHA
    assert shop.not_modified == 2
    assert shop.rate_limited_calls == used == 1
    assert [c for c in shop.calls if c[1].endswith("/pulls/7")] == [
        ("GET", "/repos/acme/shop/pulls/7")
    ] * 3
    # And Redis holds GitHub's body, never the token
    (entry,) = entries(redis_url).values()
    assert SANDBOX_TOKEN not in json.dumps(entry)


def test_a_push_is_seen_at_once(shop: GitHubSandbox, redis_url: str) -> None:
    worker(shop, redis_url).get_pull("acme/shop", 7)
    # When the PR's head moves after the entry was kept
    shop.set_pull_state("acme/shop", 7, head_sha="b" * 40)
    # Then the next worker gets the new head (the ETag no longer matches), at full price
    assert worker(shop, redis_url).get_pull("acme/shop", 7).head_sha == "b" * 40
    assert shop.not_modified == 0 and shop.rate_limited_calls == 2


def test_another_token_never_gets_this_tokens_body(shop: GitHubSandbox, redis_url: str) -> None:
    shop.state.tokens[OTHER_TOKEN] = Actor(login="other-installation")
    worker(shop, redis_url).get_pull("acme/shop", 7)
    # When a client with another token reads the same URL
    shop.set_pull_state("acme/shop", 7, head_sha="c" * 40)
    other = worker(shop, redis_url, OTHER_TOKEN).get_pull("acme/shop", 7)
    # Then it sent no ETag of the first token's and got GitHub's answer, not the kept one
    assert other.head_sha == "c" * 40 and shop.not_modified == 0
    # And each token has its own entry
    assert len(entries(redis_url)) == 2


def test_a_swapped_body_is_dropped_and_read_again(
    shop: GitHubSandbox, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    worker(shop, redis_url).get_pull("acme/shop", 7)
    # When someone with Redis access swaps the kept body for another PR's (a forged head)
    store = redis.Redis.from_url(redis_url)
    (key,) = entries(redis_url)
    entry = json.loads(store.get(key) or b"{}")
    forged = json.loads(base64.b64decode(entry["body"]))
    forged["head"]["sha"] = "f" * 40
    entry["body"] = base64.b64encode(json.dumps(forged).encode()).decode()
    store.set(key, json.dumps(entry))
    # Then the entry fails its check, is dropped, and GitHub is asked plainly
    with caplog.at_level(logging.WARNING):
        assert worker(shop, redis_url).get_pull("acme/shop", 7).head_sha == SHA
    assert shop.not_modified == 0
    assert "failed its check" in caplog.text
    assert all(r.exc_info is None for r in caplog.records)
    # And the plain answer was kept again, intact
    assert worker(shop, redis_url).get_pull("acme/shop", 7).head_sha == SHA
    assert shop.not_modified == 1
    store.close()


def test_a_huge_etag_is_neither_kept_nor_sent(shop: GitHubSandbox, redis_url: str) -> None:
    etags = SharedETags(redis.Redis.from_url(redis_url), log=LOG)
    secret = SharedETags.secret(SANDBOX_TOKEN)
    url = f"{shop.url}/repos/acme/shop/pulls/7"
    huge = 'W/"' + "a" * (MAX_ETAG_CHARS * 100) + '"'
    # When an answer comes with a huge (or header-breaking) ETag
    etags.remember(secret, url, etag=huge, link="", body=b"{}")
    etags.remember(secret, url, etag='W/"x"\r\nX-Evil: 1', link="", body=b"{}")
    # Then nothing is kept
    assert entries(redis_url) == {}
    # When such an entry is planted in Redis anyway (with a valid MAC: the worst case)
    body = b'{"planted": true}'
    store = redis.Redis.from_url(redis_url)
    planted = {"etag": huge, "link": "", "body": "eyJwbGFudGVkIjogdHJ1ZX0=", "mac": ""}
    planted["mac"] = _mac(secret, huge, "", body)
    store.set(SharedETags.key(secret, url), json.dumps(planted))
    # Then it is refused and the read goes to GitHub plainly, with no huge header
    assert worker(shop, redis_url).get_pull("acme/shop", 7).head_sha == SHA
    assert shop.not_modified == 0
    store.close()


def test_redis_down_means_plain_requests_and_one_warning(
    shop: GitHubSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    client = worker(shop, down)
    with caplog.at_level(logging.WARNING):
        pulls = [client.get_pull("acme/shop", 7) for _ in range(3)]
    assert [p.head_sha for p in pulls] == [SHA] * 3
    assert shop.rate_limited_calls == 3
    warnings = [r for r in caplog.records if "ETag cache is off" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    assert "Traceback" not in caplog.text


def test_the_stand_in_counts_like_github(shop: GitHubSandbox) -> None:
    """x-ratelimit-* on every answer; a 304 has no body and leaves ``remaining`` as it was."""
    url = f"{shop.url}/repos/acme/shop/pulls/7"
    auth = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}
    first = requests.get(url, headers=auth, timeout=5)
    etag = first.headers["ETag"]
    second = requests.get(url, headers={**auth, "If-None-Match": etag}, timeout=5)
    assert (first.status_code, second.status_code) == (200, 304)
    assert second.content == b""
    assert second.headers["x-ratelimit-remaining"] == first.headers["x-ratelimit-remaining"]
    assert int(first.headers["x-ratelimit-remaining"]) == 5000 - 1
    # Another credential's ETag for the same PR differs (GitHub's ETags are per token)
    shop.state.tokens[OTHER_TOKEN] = Actor(login="other")
    other = requests.get(
        url, headers={"Authorization": f"Bearer {OTHER_TOKEN}", "If-None-Match": etag}, timeout=5
    )
    assert other.status_code == 200 and other.headers["ETag"] != etag
