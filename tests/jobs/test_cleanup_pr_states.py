"""``PrStates.prefetch``: PR states from list requests, against the sandbox GitHub and a real Redis.

Covers:
- open PRs are answered from the open list, one request per page of 100, and the list stops
  below the oldest PR wanted;
- closed and merged PRs are told apart (list items carry ``merged_at``, not ``merged``);
- a PR in neither list (it never existed) ends ``missing`` through its own lookup;
- list pages and single lookups share ``max_calls``: past it, PRs are ``deferred``;
- a second pass within the cache window asks GitHub nothing;
- a repository with a single PR to ask about, or only close-marked ones, is not listed;
- a listing that fails (repository gone, rate limit) falls back to single lookups.
"""

from __future__ import annotations

import pytest
import redis

from k8see.integrations.github import GitHubClient
from k8see.jobs.pr_states import PrStates
from k8see_sandbox.github import GitHubSandbox

REPO = "acme/fleet"
LIST = ("GET", f"/repos/{REPO}/pulls")


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def states(
    github_client: GitHubClient, client: redis.Redis, *, max_calls: int = 200, closed: int = 0
) -> PrStates:
    return PrStates(
        github=github_client,
        redis_client=client,
        cache_seconds=300,
        max_calls=max_calls,
        is_closed=lambda repo, pr: pr <= closed,
    )


def seed(github: GitHubSandbox, prs: range, *, state: str = "open", merged: bool = False) -> None:
    if github.state.repo(REPO) is None:
        github.add_repo(REPO)
    for pr in prs:
        github.add_pull(REPO, pr, head_sha="a" * 40, head_ref=f"f{pr}", state=state, merged=merged)


def test_open_prs_are_answered_from_the_open_list_one_request_per_page(
    github: GitHubSandbox, github_client: GitHubClient, client: redis.Redis
) -> None:
    # Given 150 open PRs, two pages of 100
    seed(github, range(1, 151))
    lookup = states(github_client, client)

    # When all of them are prefetched and then asked about
    lookup.prefetch((REPO, pr) for pr in range(1, 151))
    answers = {lookup(REPO, pr) for pr in range(1, 151)}

    # Then two list requests answered every one
    assert answers == {"open"}
    assert lookup.calls == 2
    assert github.calls == [LIST, LIST]


def test_the_open_list_stops_below_the_oldest_pr_wanted(
    github: GitHubSandbox, github_client: GitHubClient, client: redis.Redis
) -> None:
    # Given 250 open PRs, and environments only for PRs on the first page (newest first)
    seed(github, range(1, 251))
    lookup = states(github_client, client)

    # When they are prefetched
    lookup.prefetch([(REPO, 240), (REPO, 200), (REPO, 160)])

    # Then one page is read: the PRs on later pages are all older than every PR wanted
    assert [lookup(REPO, pr) for pr in (240, 200, 160)] == ["open"] * 3
    assert lookup.calls == 1 and github.calls == [LIST]


def test_closed_and_merged_prs_are_told_apart(
    github: GitHubSandbox, github_client: GitHubClient, client: redis.Redis
) -> None:
    # Given closed, merged and open PRs, one of them merged after it was opened
    seed(github, range(1, 4), state="closed")
    seed(github, range(4, 6), state="closed", merged=True)
    seed(github, range(6, 9))
    github.set_pull_state(REPO, 8, merged=True)
    lookup = states(github_client, client)

    # When they are prefetched
    lookup.prefetch((REPO, pr) for pr in range(1, 9))

    # Then a page of open and a page of closed pulls tell each one's state
    got = {pr: lookup(REPO, pr) for pr in range(1, 9)}
    assert got == {1: "closed", 2: "closed", 3: "closed", 4: "merged", 5: "merged",
                   6: "open", 7: "open", 8: "merged"}  # fmt: skip
    assert lookup.calls == 2 and github.calls == [LIST, LIST]


def test_a_pr_in_neither_list_ends_missing_through_its_own_lookup(
    github: GitHubSandbox, github_client: GitHubClient, client: redis.Redis
) -> None:
    # Given an open and a closed PR, and an environment for PR 99, which never existed
    seed(github, range(1, 2))
    seed(github, range(2, 3), state="closed")
    lookup = states(github_client, client)

    # When they are prefetched and asked about
    lookup.prefetch([(REPO, 1), (REPO, 2), (REPO, 99)])
    got = [lookup(REPO, pr) for pr in (1, 2, 99)]

    # Then PR 99 is asked about on its own after both lists, and GitHub's 404 means missing
    assert got == ["open", "closed", "missing"]
    assert github.calls == [LIST, LIST, ("GET", f"/repos/{REPO}/pulls/99")]
    assert lookup.calls == 3


def test_list_pages_and_single_lookups_share_the_budget(
    github: GitHubSandbox, github_client: GitHubClient, client: redis.Redis
) -> None:
    # Given 250 open PRs (three pages) and a budget of two requests
    seed(github, range(1, 251))
    lookup = states(github_client, client, max_calls=2)

    # When all of them are prefetched and asked about
    lookup.prefetch((REPO, pr) for pr in range(1, 251))
    got = {pr: lookup(REPO, pr) for pr in range(1, 251)}

    # Then the two pages answer the 200 newest and the 50 oldest wait for the next run
    assert {got[pr] for pr in range(51, 251)} == {"open"}
    assert {got[pr] for pr in range(1, 51)} == {"deferred"}
    assert lookup.calls == 2 and github.calls == [LIST, LIST]

    # When the next run, with a budget of three, asks about PRs that never existed
    github.reset()
    seed(github, range(1, 2))
    lookup = states(github_client, client, max_calls=3)
    lookup.prefetch((REPO, pr) for pr in range(300, 304))
    got = {pr: lookup(REPO, pr) for pr in range(300, 304)}

    # Then both lists and one single lookup spend it, and the other PRs are deferred
    assert got == {300: "missing", 301: "deferred", 302: "deferred", 303: "deferred"}
    assert lookup.calls == 3
    assert github.calls == [LIST, LIST, ("GET", f"/repos/{REPO}/pulls/300")]


def test_a_second_pass_reuses_the_cached_answers(
    github: GitHubSandbox, github_client: GitHubClient, client: redis.Redis
) -> None:
    # Given a pass that answered open, closed and missing PRs
    seed(github, range(1, 121))
    seed(github, range(121, 131), state="closed")
    pairs = [(REPO, pr) for pr in range(1, 132)]
    first = states(github_client, client)
    first.prefetch(pairs)
    answers = [first(repo, pr) for repo, pr in pairs]
    assert first.calls == 2 + 1 + 1  # two open pages, one closed page, PR 131 on its own
    assert client.get(f"k8see:prstate:{REPO}:1") == b"open"
    assert 0 < client.ttl(f"k8see:prstate:{REPO}:130") <= 300

    # When another pass runs within the cache window
    before = len(github.calls)
    second = states(github_client, client)
    second.prefetch(pairs)

    # Then it gives the same answers without asking GitHub
    assert [second(repo, pr) for repo, pr in pairs] == answers
    assert second.calls == 0 and len(github.calls) == before


def test_a_single_pr_or_close_marked_ones_are_not_listed(
    github: GitHubSandbox, github_client: GitHubClient, client: redis.Redis
) -> None:
    # Given PRs 1-3 close-marked by k8see and PR 4 still open
    seed(github, range(1, 5))
    lookup = states(github_client, client, closed=3)

    # When they are prefetched and asked about
    lookup.prefetch((REPO, pr) for pr in range(1, 5))
    got = [lookup(REPO, pr) for pr in range(1, 5)]

    # Then the close marks answer without GitHub, and the one PR left is asked about alone
    assert got == ["closed", "closed", "closed", "open"]
    assert github.calls == [("GET", f"/repos/{REPO}/pulls/4")]


def test_a_repository_that_is_gone_is_asked_about_pr_by_pr(
    github: GitHubSandbox, github_client: GitHubClient, client: redis.Redis
) -> None:
    # Given environments of a repository GitHub no longer has
    lookup = states(github_client, client)

    # When they are prefetched and asked about
    lookup.prefetch([("acme/gone", 1), ("acme/gone", 2)])
    got = [lookup("acme/gone", pr) for pr in (1, 2)]

    # Then the failed listing counts, and each PR's own 404 says it is missing
    assert got == ["missing", "missing"]
    assert github.calls == [("GET", "/repos/acme/gone/pulls")] + [
        ("GET", f"/repos/acme/gone/pulls/{pr}") for pr in (1, 2)
    ]
    assert lookup.calls == 3


def test_a_listing_github_refuses_falls_back_to_single_lookups(
    github: GitHubSandbox, github_client: GitHubClient, client: redis.Redis
) -> None:
    # Given an open and a closed PR, and GitHub refusing the next request for an hour
    seed(github, range(1, 2))
    seed(github, range(2, 3), state="closed")
    github.faults.primary_rate_limit_next = 1
    github.faults.retry_after_seconds = 3600
    lookup = states(github_client, client)

    # When they are prefetched and asked about
    lookup.prefetch([(REPO, 1), (REPO, 2)])
    got = [lookup(REPO, pr) for pr in (1, 2)]

    # Then the pass goes on: each PR is asked about on its own
    assert got == ["open", "closed"]
    assert github.calls == [
        LIST,
        ("GET", f"/repos/{REPO}/pulls/1"),
        ("GET", f"/repos/{REPO}/pulls/2"),
    ]
    assert lookup.calls == 3
