"""k8see's real GitHub client against the sandbox GitHub server, over real HTTP.

The GitHub App's JWT is signed by PyJWT and checked by the stand-in's own RS256 verifier (not
PyJWT), with the key as GitHub downloads it (PKCS#1) or re-encoded (PKCS#8); unusable keys are
refused at start with a hint.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from k8see.errors import GitHubError
from k8see.integrations.github import GitHubClient, StaticToken, make_client
from k8see.integrations.github_auth import AppInstallationTokens
from k8see.settings import PlatformSettings
from k8see_sandbox.github import GitHubSandbox
from tests.conftest import free_port
from tests.fixtures.github import SANDBOX_TOKEN, RecordingSleep

MARKER = "<!-- k8s-ee-pr-env -->"
SHA = "a" * 40


@pytest.fixture
def shop(github: GitHubSandbox) -> GitHubSandbox:
    github.add_repo("acme/shop", collaborators={"alice": "write", "carol": "admin"})
    github.add_pull("acme/shop", 7, head_sha=SHA, head_ref="feature/x")
    return github


@pytest.fixture(autouse=True)
def _no_token_in_logs(caplog: pytest.LogCaptureFixture) -> object:
    """Every test here also proves the token never reaches a log record."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        assert SANDBOX_TOKEN not in record.getMessage()
        assert SANDBOX_TOKEN not in str(record.args)


def client_for(url: str, sleep: RecordingSleep, *, max_retries: int = 4) -> GitHubClient:
    return GitHubClient(
        api_url=url,
        token_provider=StaticToken(SANDBOX_TOKEN),
        timeout_seconds=5.0,
        max_retries=max_retries,
        backoff_seconds=0.01,
        log=logging.getLogger("k8see.test.github"),
        sleep=sleep,
    )


def assert_clean(exc: GitHubError) -> None:
    text = f"{exc.message} {exc.hint} {exc!r} {exc.__cause__!r} {exc.__context__!r}"
    assert SANDBOX_TOKEN not in text
    assert "requests" not in type(exc.__cause__).__module__


def test_get_pull_reads_head_and_fork(shop: GitHubSandbox, github_client: GitHubClient) -> None:
    pull = github_client.get_pull("acme/shop", 7)
    assert (pull.head_sha, pull.head_ref, pull.state, pull.fork) == (
        SHA,
        "feature/x",
        "open",
        False,
    )
    shop.add_pull("acme/shop", 8, head_sha="b" * 40, head_ref="patch-1", fork=True)
    assert github_client.get_pull("acme/shop", 8).fork is True


def test_list_pulls_pages_by_100_and_reads_merges_from_merged_at(
    shop: GitHubSandbox, github_client: GitHubClient
) -> None:
    # Given 150 open pulls besides PR 7, and two closed ones, one merged
    for number in range(8, 158):
        shop.add_pull("acme/shop", number, head_sha=SHA, head_ref=f"f{number}")
    shop.add_pull("acme/shop", 200, head_sha=SHA, head_ref="merged", state="closed", merged=True)
    shop.add_pull("acme/shop", 201, head_sha=SHA, head_ref="closed", state="closed")

    # When the open pulls are listed
    pages = list(github_client.list_pulls("acme/shop", state="open"))

    # Then two pages of 100 and 51 come back, newest first, one request each
    assert [len(page) for page in pages] == [100, 51]
    numbers = [pull.number for page in pages for pull in page]
    assert numbers == sorted(range(7, 158), reverse=True)
    assert shop.calls == [("GET", "/repos/acme/shop/pulls")] * 2
    # ... and the closed list tells a merge from ``merged_at`` (list items have no ``merged``)
    (closed,) = github_client.list_pulls("acme/shop", state="closed", sort="updated")
    assert [(p.number, p.state, p.merged) for p in closed] == [
        (201, "closed", False),
        (200, "closed", True),
    ]


def test_404_is_a_github_error_with_status(
    shop: GitHubSandbox, github_client: GitHubClient
) -> None:
    with pytest.raises(GitHubError) as caught:
        github_client.get_pull("acme/shop", 99)
    assert caught.value.status == 404
    assert "GET /repos/acme/shop/pulls/99" in caught.value.message
    assert caught.value.hint
    assert_clean(caught.value)
    assert shop.calls == [("GET", "/repos/acme/shop/pulls/99")]  # a 404 is not retried


def test_bad_token_is_401_without_the_token_in_the_error(shop: GitHubSandbox) -> None:
    client = GitHubClient(
        api_url=shop.url,
        token_provider=StaticToken("ghp_wrongSECRET"),
        timeout_seconds=5.0,
        max_retries=2,
        backoff_seconds=0.01,
        log=logging.getLogger("k8see.test.github"),
    )
    with pytest.raises(GitHubError) as caught:
        client.get_pull("acme/shop", 7)
    assert caught.value.status == 401
    assert "ghp_wrongSECRET" not in f"{caught.value.message} {caught.value.hint}"


def test_network_errors_are_retried_then_wrapped(github_sleep: RecordingSleep) -> None:
    client = client_for(f"http://127.0.0.1:{free_port()}", github_sleep, max_retries=3)
    with pytest.raises(GitHubError) as caught:
        client.get_pull("acme/shop", 7)
    assert caught.value.status is None
    assert "could not be reached" in caught.value.message
    assert_clean(caught.value)
    assert len(github_sleep.delays) == 3
    # exponential with equal jitter: attempt n waits within [b*2^n/2, b*2^n]
    for n, delay in enumerate(github_sleep.delays):
        assert 0.01 * 2**n / 2 <= delay <= 0.01 * 2**n


def test_sticky_comment_on_page_3_of_250_is_updated_not_duplicated(
    shop: GitHubSandbox, github_client: GitHubClient
) -> None:
    for i in range(230):
        shop.add_comment("acme/shop", 7, f"review comment {i}, mentioning {MARKER} mid-text")
    sticky = shop.add_comment("acme/shop", 7, f"{MARKER}\nold status", login="k8see-bot")
    for i in range(19):
        shop.add_comment("acme/shop", 7, f"later comment {i}")
    assert len(shop.comments("acme/shop", 7)) == 250

    found = github_client.upsert_comment("acme/shop", 7, f"{MARKER}\nnew status", marker=MARKER)

    assert found == sticky["id"]
    comments = shop.comments("acme/shop", 7)
    assert len(comments) == 250
    assert [c["body"] for c in comments if c["id"] == sticky["id"]] == [f"{MARKER}\nnew status"]
    lists = [c for c in shop.calls if c == ("GET", "/repos/acme/shop/issues/7/comments")]
    assert len(lists) == 3
    assert ("PATCH", f"/repos/acme/shop/issues/comments/{sticky['id']}") in shop.calls
    assert not [c for c in shop.calls if c[0] == "POST"]


def test_upsert_creates_once_then_updates_in_place(
    shop: GitHubSandbox, github_client: GitHubClient
) -> None:
    first = github_client.upsert_comment("acme/shop", 7, f"{MARKER}\nqueued", marker=MARKER)
    second = github_client.upsert_comment("acme/shop", 7, f"{MARKER}\nready", marker=MARKER)
    calls_before = len(shop.calls)
    third = github_client.upsert_comment("acme/shop", 7, f"{MARKER}\nready", marker=MARKER)
    assert first == second == third
    assert [c["body"] for c in shop.comments("acme/shop", 7)] == [f"{MARKER}\nready"]
    # the unchanged body is not re-sent: one conditional list (answered 304), no PATCH
    assert shop.calls[calls_before:] == [("GET", "/repos/acme/shop/issues/7/comments")]


def test_secondary_rate_limit_is_retried_with_its_retry_after(
    shop: GitHubSandbox, github_client: GitHubClient, github_sleep: RecordingSleep
) -> None:
    shop.faults.secondary_rate_limit_next = 2
    shop.faults.retry_after_seconds = 1
    assert github_client.get_pull("acme/shop", 7).head_sha == SHA
    assert len(shop.calls) == 3
    assert len(github_sleep.delays) == 2
    assert all(delay >= 1 for delay in github_sleep.delays)


def test_rate_limit_retries_are_bounded(
    shop: GitHubSandbox, github_client: GitHubClient, github_sleep: RecordingSleep
) -> None:
    shop.faults.secondary_rate_limit_next = 100
    with pytest.raises(GitHubError) as caught:
        github_client.get_pull("acme/shop", 7)
    assert caught.value.status == 403
    assert caught.value.retry_after_seconds == 1
    assert len(shop.calls) == 5  # the call and max_retries=4 retries, no more
    assert_clean(caught.value)


def test_a_long_rate_limit_wait_is_handed_back_not_slept(
    shop: GitHubSandbox, github_client: GitHubClient, github_sleep: RecordingSleep
) -> None:
    shop.faults.primary_rate_limit_next = 1
    shop.faults.retry_after_seconds = 600
    with pytest.raises(GitHubError) as caught:
        github_client.get_pull("acme/shop", 7)
    assert caught.value.retry_after_seconds is not None
    assert caught.value.retry_after_seconds > 60
    assert github_sleep.delays == []
    assert len(shop.calls) == 1


def test_secondary_limit_without_retry_after_waits_a_minute(shop: GitHubSandbox) -> None:
    shop.faults.secondary_rate_limit_next = 1
    shop.faults.omit_retry_after = True
    sleep = RecordingSleep()
    client = client_for(shop.url, sleep)
    assert client.get_pull("acme/shop", 7).number == 7
    assert sleep.delays[0] >= 60


def test_primary_rate_limit_waits_until_reset(
    shop: GitHubSandbox, github_client: GitHubClient, github_sleep: RecordingSleep
) -> None:
    shop.faults.primary_rate_limit_next = 1
    shop.faults.retry_after_seconds = 2
    assert github_client.get_pull("acme/shop", 7).number == 7
    assert len(github_sleep.delays) == 1
    assert 0.5 <= github_sleep.delays[0] <= 2.5


def test_failing_comment_writes_land_once(shop: GitHubSandbox, github_client: GitHubClient) -> None:
    shop.faults.fail_comment_writes_count = 3
    cid = github_client.upsert_comment("acme/shop", 7, f"{MARKER}\nready", marker=MARKER)
    assert [c["id"] for c in shop.comments("acme/shop", 7)] == [cid]
    posts = [c for c in shop.calls if c[0] == "POST"]
    assert len(posts) == 4


def test_a_create_whose_response_is_lost_is_not_duplicated(
    shop: GitHubSandbox, github_client: GitHubClient
) -> None:
    shop.faults.lose_comment_write_responses = 1
    cid = github_client.upsert_comment("acme/shop", 7, f"{MARKER}\nready", marker=MARKER)
    assert [c["id"] for c in shop.comments("acme/shop", 7)] == [cid]
    assert len([c for c in shop.calls if c[0] == "POST"]) == 1  # found on re-check, not re-sent


def test_comment_writes_failing_for_a_while_then_landing(shop: GitHubSandbox) -> None:
    client = GitHubClient(
        api_url=shop.url,
        token_provider=StaticToken(SANDBOX_TOKEN),
        timeout_seconds=5.0,
        max_retries=8,
        backoff_seconds=0.25,
        log=logging.getLogger("k8see.test.github"),
    )
    cid = client.upsert_comment("acme/shop", 7, f"{MARKER}\nqueued", marker=MARKER)
    shop.faults.fail_comment_writes_until = time.time() + 1.5
    assert client.upsert_comment("acme/shop", 7, f"{MARKER}\nready", marker=MARKER) == cid
    assert [c["body"] for c in shop.comments("acme/shop", 7)] == [f"{MARKER}\nready"]
    assert len([c for c in shop.calls if c[0] == "PATCH"]) >= 2  # it failed, then landed


def test_persistent_write_failure_raises_after_bounded_attempts(
    shop: GitHubSandbox, github_client: GitHubClient
) -> None:
    shop.faults.fail_comment_writes_count = 100
    with pytest.raises(GitHubError) as caught:
        github_client.upsert_comment("acme/shop", 7, f"{MARKER}\nx", marker=MARKER)
    assert caught.value.status == 502
    assert len([c for c in shop.calls if c[0] == "POST"]) == 5
    assert shop.comments("acme/shop", 7) == []


def test_reactions_are_idempotent(shop: GitHubSandbox, github_client: GitHubClient) -> None:
    command = shop.add_comment("acme/shop", 7, "/deploy-preview", login="alice")
    github_client.add_reaction("acme/shop", command["id"], "eyes")
    github_client.add_reaction("acme/shop", command["id"], "eyes")
    github_client.add_reaction("acme/shop", command["id"], "rocket")
    assert [r["content"] for r in shop.reactions(command["id"])] == ["eyes", "rocket"]
    with pytest.raises(GitHubError):
        github_client.add_reaction("acme/shop", command["id"], "party")


def test_permissions(shop: GitHubSandbox, github_client: GitHubClient) -> None:
    assert github_client.get_permission("acme/shop", "alice") == "write"
    assert github_client.get_permission("acme/shop", "CAROL") == "admin"
    assert github_client.get_permission("acme/shop", "mallory") == "read"  # public repo
    shop.add_repo("acme/secret", private=True)
    assert github_client.get_permission("acme/secret", "mallory") == "none"


def test_deployments_converge_and_statuses(
    shop: GitHubSandbox, github_client: GitHubClient
) -> None:
    first = github_client.create_deployment("acme/shop", sha=SHA, environment="pr-7")
    assert github_client.create_deployment("acme/shop", sha=SHA, environment="pr-7") == first
    github_client.set_deployment_status("acme/shop", first, "in_progress")
    github_client.set_deployment_status(
        "acme/shop", first, "success", environment_url="https://hello-pr-7.example.dev"
    )
    second = github_client.create_deployment("acme/shop", sha="b" * 40, environment="pr-7")
    github_client.set_deployment_status("acme/shop", second, "success")
    old, new = shop.deployments("acme/shop")
    assert [s["state"] for s in old["statuses"]] == ["in_progress", "success", "inactive"]
    assert old["statuses"][1]["environment_url"] == "https://hello-pr-7.example.dev"
    assert [s["state"] for s in new["statuses"]] == ["success"]


def test_commit_status(shop: GitHubSandbox, github_client: GitHubClient) -> None:
    github_client.set_commit_status(
        "acme/shop", SHA, "failure", context="k8see/validate", description="bad config"
    )
    (status,) = shop.commit_statuses("acme/shop")
    assert (status["sha"], status["state"], status["context"]) == (SHA, "failure", "k8see/validate")


def test_download_tarball(
    shop: GitHubSandbox, github_client: GitHubClient, source_repo: tuple[Path, list[str]],
    tmp_path: Path,
) -> None:  # fmt: skip
    path, shas = source_repo
    shop.add_source("acme/shop", path)
    dest = github_client.download_tarball("acme/shop", shas[1], tmp_path / "src.tar.gz")
    assert dest.stat().st_size > 0
    with pytest.raises(GitHubError) as caught:
        github_client.download_tarball("acme/shop", "f" * 40, tmp_path / "nope.tar.gz")
    assert caught.value.status == 404
    assert not (tmp_path / "nope.tar.gz").exists()
    assert not (tmp_path / "nope.tar.gz.partial").exists()


def test_make_client_needs_credentials(github: GitHubSandbox) -> None:
    settings = PlatformSettings(github={"api_url": github.url, "token": None})
    with pytest.raises(GitHubError) as caught:
        make_client(settings, log=logging.getLogger("t"))
    assert "K8SEE_GITHUB__TOKEN" in (caught.value.hint or "")


def test_github_app_installation_tokens_are_cached(shop: GitHubSandbox, tmp_path: Path) -> None:
    pem = shop.add_app("4242", repos={"acme/shop": 77})
    key = tmp_path / "app.pem"
    key.write_bytes(pem)
    settings = PlatformSettings(
        github={"api_url": shop.url, "app_id": "4242", "app_private_key_path": str(key)}
    )
    client = make_client(settings, log=logging.getLogger("k8see.test.github"))
    client.get_pull("acme/shop", 7)
    client.get_permission("acme/shop", "alice")
    mints = [c for c in shop.calls if c == ("POST", "/app/installations/77/access_tokens")]
    assert len(mints) == 1
    comment_id = client.upsert_comment("acme/shop", 7, f"{MARKER}\nhi", marker=MARKER)
    assert shop.comments("acme/shop", 7)[0]["user"]["login"] == "k8see-sandbox[bot]"
    assert comment_id

    shop.installation_token_ttl_seconds = 240  # inside the 5-minute margin: never reused
    fresh = make_client(settings, log=logging.getLogger("k8see.test.github"))
    fresh.get_pull("acme/shop", 7)
    fresh.get_pull("acme/shop", 7)
    mints = [c for c in shop.calls if c == ("POST", "/app/installations/77/access_tokens")]
    assert len(mints) == 3


def test_github_app_not_installed_is_404(shop: GitHubSandbox, tmp_path: Path) -> None:
    shop.add_repo("other/repo")
    shop.add_pull("other/repo", 1, head_sha=SHA, head_ref="x")
    key = tmp_path / "app.pem"
    key.write_bytes(shop.add_app("5", repos={"acme/shop": 9}))
    settings = PlatformSettings(
        github={"api_url": shop.url, "app_id": "5", "app_private_key_path": str(key)}
    )
    with pytest.raises(GitHubError) as caught:
        make_client(settings, log=logging.getLogger("t")).get_pull("other/repo", 1)
    assert caught.value.status == 404
    assert "installed" in (caught.value.hint or "")


def _pkcs1(pem: bytes) -> bytes:
    """The key as GitHub's App settings page downloads it ("BEGIN RSA PRIVATE KEY")."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def test_the_app_jwt_carries_what_github_asks_for(github: GitHubSandbox) -> None:
    import jwt
    from cryptography.hazmat.primitives import serialization

    pem = github.add_app("31337", repos={})
    tokens = AppInstallationTokens(
        app_id="31337", private_key_pem=pem, clock=lambda: 1_700_000_000.0
    )
    token = tokens.jwt()
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "typ": "JWT"}
    public = serialization.load_pem_private_key(pem, password=None).public_key()
    claims = jwt.decode(
        token,
        public,
        algorithms=["RS256"],
        options={"require": ["iat", "exp", "iss"], "verify_exp": False, "verify_iat": False},
    )
    # iat 60 s back for clock drift, and 10 minutes in all: GitHub's limit
    assert claims == {"iat": 1_699_999_940, "exp": 1_700_000_540, "iss": "31337"}


def test_a_key_as_github_downloads_it_is_accepted_by_the_stand_in(
    shop: GitHubSandbox, tmp_path: Path
) -> None:
    key = tmp_path / "app.pem"
    key.write_bytes(_pkcs1(shop.add_app("4243", repos={"acme/shop": 78})))
    assert key.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    settings = PlatformSettings(
        github={"api_url": shop.url, "app_id": "4243", "app_private_key_path": str(key)}
    )
    assert make_client(settings, log=logging.getLogger("t")).get_pull("acme/shop", 7)
    assert ("POST", "/app/installations/78/access_tokens") in shop.calls


def _ec_key() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_key(github: GitHubSandbox) -> bytes:
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(github.add_app("1", repos={}), password=None)
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    ("make_key", "fragment"),
    [
        (lambda github: b"not a key", "not a readable RSA key"),
        (lambda github: _ec_key(), "not a readable RSA key"),
        (_public_key, "public key"),
    ],
    ids=["garbage", "ec", "public"],
)
def test_an_unusable_app_key_is_refused_with_a_hint(
    github: GitHubSandbox, make_key: object, fragment: str
) -> None:
    pem = make_key(github)  # type: ignore[operator]
    with pytest.raises(GitHubError) as caught:
        AppInstallationTokens(app_id="1", private_key_pem=pem)
    assert fragment in caught.value.message
    assert "App's settings page" in (caught.value.hint or "")
    assert caught.value.__cause__ is None
