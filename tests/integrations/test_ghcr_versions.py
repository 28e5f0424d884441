"""GHCR package versions as the build-cache pruning reads and deletes them (sandbox GitHub).

Covers: ``list_versions`` reads every page (GitHub answers at most 100 per page) with each
version's id, digest, tags and ``updated_at``; a missing package has none; ``delete_versions``
deletes by id, counts ids already gone as done, and reports GitHub's refusal of the last
version as a failure instead of deleting the package; ``remove_tags`` asked for every version
of a package deletes them all (the last one through the package, GitHub's rule).
"""

from __future__ import annotations

import logging
import time

from k8see.integrations.ghcr import GhcrPackages
from k8see_sandbox.github import GitHubSandbox
from tests.fixtures.github import SANDBOX_TOKEN

LOG = logging.getLogger("test-ghcr-versions")


def packages(github: GitHubSandbox) -> GhcrPackages:
    return GhcrPackages(api_url=github.url, token=SANDBOX_TOKEN, log=LOG, backoff_seconds=0.01)


def test_every_page_of_versions_is_listed(github: GitHubSandbox) -> None:
    # Given a cache package with more versions than one page holds
    when = time.time() - 3 * 86400
    ids = [
        github.state.add_package_version("acme", "shop/web/cache", [f"k{n}"], updated_at=when)
        for n in range(105)
    ]
    # When its versions are listed
    versions = packages(github).list_versions("acme/shop/web/cache")
    # Then every one is there, with its tags, digest and GitHub's update time (to the second)
    assert sorted(v.id for v in versions) == sorted(ids)
    first = next(v for v in versions if v.id == ids[0])
    assert first.tags == ("k0",) and first.digest.startswith("sha256:")
    assert first.updated_at is not None and abs(first.updated_at - when) < 1
    assert sum(1 for m, p in github.calls if m == "GET" and "/versions" in p) == 2
    assert packages(github).list_versions("acme/none/cache") == []


def test_versions_are_deleted_by_id_and_the_last_one_is_refused(github: GitHubSandbox) -> None:
    state = github.state
    a = state.add_package_version("acme", "shop/api/cache", ["a"])
    b = state.add_package_version("acme", "shop/api/cache", ["b"])
    client = packages(github)
    # Deleting one, and one that is gone already, is done; the package is still there.
    assert client.delete_versions("acme/shop/api/cache", [a, 999999]) == {}
    assert [v.id for v in client.list_versions("acme/shop/api/cache")] == [b]
    # The last one is GitHub's to refuse: reported, and the package is not deleted instead.
    failed = client.delete_versions("acme/shop/api/cache", [b])
    assert list(failed) == [b] and "last one" in failed[b]
    assert [v.id for v in client.list_versions("acme/shop/api/cache")] == [b]


def test_removing_the_tags_of_every_version_empties_the_package(github: GitHubSandbox) -> None:
    # Given a package whose two versions both carry only the PR's tags
    github.state.add_package_version("acme", "solo/app", ["pr-2"])
    github.state.add_package_version("acme", "solo/app", ["sha-" + "e" * 40])
    # When they are removed
    outcome = packages(github).remove_tags("acme/solo/app", ["pr-2", "sha-" + "e" * 40])
    # Then both went: the second as the package's last version, through the package
    assert outcome.deleted == ("pr-2", "sha-" + "e" * 40) and outcome.failed == {}
    assert ("org", "acme", "solo/app") not in github.state.packages
