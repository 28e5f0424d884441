"""GHCR package-version deletion and SARIF upload, k8see's client against the sandbox GitHub.

Covers: an org package's versions tagged only with the PR's tags are deleted, another PR's
version stays, a version that also carries a foreign tag is kept and reported failed with
why, a second run converges (everything absent); a user-owned package is found through
``/user/...``; deleting the last version deletes the package (GitHub's rule); a missing
package is absent; a rejected token fails every tag without the token in the reason. SARIF:
an upload carries gzip+base64 SARIF, the commit and the PR ref, and one category per
platform; a private repository without code scanning is a ``GitHubError`` (403).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from k8see.errors import GitHubError
from k8see.integrations.codescanning import repo_is_public, upload_sarif
from k8see.integrations.ghcr import GhcrPackages
from k8see.integrations.github import GitHubClient
from k8see.integrations.registry_access import tag_remover
from k8see.settings import PlatformSettings
from k8see_sandbox.github import GitHubSandbox
from tests.fixtures.github import SANDBOX_TOKEN

LOG = logging.getLogger("test-ghcr")
SHA_A = "sha-" + "a" * 40
SHA_B = "sha-" + "b" * 40


def packages(github: GitHubSandbox, token: str = SANDBOX_TOKEN) -> GhcrPackages:
    return GhcrPackages(api_url=github.url, token=token, log=LOG, backoff_seconds=0.01)


def remaining(
    github: GitHubSandbox, owner: str, package: str, kind: str = "org"
) -> list[list[str]] | None:
    versions = github.state.packages.get((kind, owner, package))
    if versions is None:
        return None
    return sorted(v["metadata"]["container"]["tags"] for v in versions)


def test_org_package_versions_of_the_pr_are_deleted(github: GitHubSandbox) -> None:
    # Given the PR's current image (pr-3 + its commit), an older commit of it, another PR's
    # image, and a commit shared with another PR (also tagged pr-4)
    state = github.state
    state.add_package_version("acme", "shop/web", ["pr-3", SHA_A])
    state.add_package_version("acme", "shop/web", [SHA_B])
    state.add_package_version("acme", "shop/web", ["pr-9", "sha-" + "9" * 40])
    state.add_package_version("acme", "shop/web", ["pr-4", "sha-" + "4" * 40])
    wanted = ["pr-3", SHA_A, SHA_B, "sha-" + "4" * 40]
    # When the PR's tags are removed, twice
    first = packages(github).remove_tags("acme/shop/web", wanted)
    second = packages(github).remove_tags("acme/shop/web", ["pr-3", SHA_A, SHA_B])
    # Then its versions are gone, the shared one is kept and says why, the rest converges
    assert first.deleted == ("pr-3", SHA_A, SHA_B)
    assert list(first.failed) == ["sha-" + "4" * 40]
    assert "pr-4" in first.failed["sha-" + "4" * 40]
    assert remaining(github, "acme", "shop/web") == [
        ["pr-4", "sha-" + "4" * 40],
        ["pr-9", "sha-" + "9" * 40],
    ]
    assert (second.deleted, second.failed) == ((), {})
    assert set(second.absent) == {"pr-3", SHA_A, SHA_B}
    # The versions were listed and deleted through the org endpoints.
    assert ("DELETE", "/orgs/acme/packages/container/shop%2Fweb/versions/") not in github.calls
    assert any(
        m == "DELETE" and p.startswith("/orgs/acme/packages/container/shop%2Fweb/versions/")
        for m, p in github.calls
    )


def test_user_package_and_the_last_version(github: GitHubSandbox) -> None:
    # Given a package of the token's own user (k8see-bot) holding only the PR's image
    github.state.add_package_version("k8see-bot", "tool/cli", ["pr-1", SHA_A], org=False)
    # When its tags are removed through the settings' remover (registry type ghcr)
    settings = PlatformSettings(
        registry={"type": "ghcr", "password": SANDBOX_TOKEN},
        github={"api_url": github.url},
        queues={"retry_backoff_seconds": 0.01},
    )
    outcome = tag_remover(settings, log=LOG).remove_tags("k8see-bot/tool/cli", ["pr-1", SHA_A])
    # Then GitHub's "last version" rule made it delete the package itself
    assert outcome.deleted == ("pr-1", SHA_A)
    assert remaining(github, "k8see-bot", "tool/cli", "user") is None
    assert ("DELETE", "/user/packages/container/tool%2Fcli") in github.calls
    # and a package that does not exist has every tag absent
    missing = packages(github).remove_tags("acme/none/app", ["pr-1"])
    assert (missing.deleted, missing.absent, missing.failed) == ((), ("pr-1",), {})


def test_a_rejected_token_fails_every_tag_without_leaking_it(github: GitHubSandbox) -> None:
    github.state.add_package_version("acme", "shop/web", ["pr-3"])
    bad = "ghp_" + "wrongTOKEN" * 3
    outcome = packages(github, token=bad).remove_tags("acme/shop/web", ["pr-3"])
    assert list(outcome.failed) == ["pr-3"]
    assert "401" in outcome.failed["pr-3"]
    assert bad not in json.dumps(outcome.failed)
    assert remaining(github, "acme", "shop/web") == [["pr-3"]]


def test_sarif_upload_per_platform(github: GitHubSandbox, github_client: GitHubClient,
                                   tmp_path: Path) -> None:  # fmt: skip
    github.add_repo("acme/shop")
    github.add_repo("acme/secret", private=True)
    sarif = tmp_path / "amd64.sarif"
    sarif.write_text(json.dumps({"version": "2.1.0", "runs": [{"tool": {"driver": {}}}]}))
    assert repo_is_public(github_client, "acme/shop") is True
    assert repo_is_public(github_client, "acme/secret") is False
    # When a platform's SARIF is uploaded for the PR's head commit
    upload_id = upload_sarif(
        github_client,
        repo="acme/shop",
        sha="c" * 40,
        ref="refs/pull/3/head",
        sarif_file=sarif,
        category="k8see-trivy/linux/amd64",
    )
    # Then GitHub got the decoded analysis for that commit, ref and category
    [stored] = github.state.sarifs["acme/shop"]
    assert stored["id"] == upload_id
    assert (stored["commit_sha"], stored["ref"]) == ("c" * 40, "refs/pull/3/head")
    assert stored["sarif"]["runs"][0]["automationDetails"] == {"id": "k8see-trivy/linux/amd64/"}
    # A private repository without Advanced Security refuses.
    with pytest.raises(GitHubError) as caught:
        upload_sarif(
            github_client,
            repo="acme/secret",
            sha="c" * 40,
            ref="refs/pull/3/head",
            sarif_file=sarif,
            category="k8see-trivy/linux/amd64",
        )
    assert caught.value.status == 403
