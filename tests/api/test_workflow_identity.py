"""``POST /v1/enqueue`` and ``GET /v1/runs``: workflow tokens from the stand-in's OIDC issuer,
verified over real HTTP (discovery, JWKS), and ``k8see enqueue --api`` as a job runs it.

Covers: a token of repository A enqueues A's event; naming repository B is 403 with nothing
queued; another audience 403; expired, unsigned (alg none), garbage, missing, another
issuer's or an unpublished key's token 401; a rotated key verifies at once; an unreachable
issuer is 503; a run is visible to its own repository only; the CLI gets its token from the
runner's endpoint and follows only its own repository's run.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable

import jwt
import pytest
import redis

from k8see_sandbox.github import GitHubSandbox
from k8see_sandbox.github_identity import OidcIssuer
from tests.api.conftest import ApiServer
from tests.api.helpers import SHA, call, generation, queued_messages
from tests.conftest import free_port

REPO, OTHER = "acme/shop", "acme/bank"


def _event(repo: str, pr: int = 7, action: str = "opened") -> bytes:
    return json.dumps({"repo": repo, "pr": pr, "action": action, "sha": SHA, "ref": "f"}).encode()


def _enqueue(api: ApiServer, token: str | None, body: bytes) -> tuple[int, dict]:  # type: ignore[type-arg]
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return call("POST", f"{api.url}/v1/enqueue", body, headers)


def test_a_token_of_the_repository_enqueues_its_event(
    start_api: Callable[..., ApiServer], github: GitHubSandbox, redis_url: str
) -> None:
    api = start_api(drain=False)
    status, answer = _enqueue(api, github.oidc.token(REPO), _event(REPO))

    assert status == 202, answer
    assert answer["run_id"] and answer["generation"] == 1 and answer["action"] == "deploy"
    rds = redis.Redis.from_url(redis_url)
    assert generation(rds, REPO, 7) == 1 and queued_messages(rds) == 1


def test_a_token_of_repository_a_naming_repository_b_is_403_and_queues_nothing(
    start_api: Callable[..., ApiServer], github: GitHubSandbox, redis_url: str
) -> None:
    api = start_api(drain=False)
    status, answer = _enqueue(api, github.oidc.token(REPO), _event(OTHER))

    assert status == 403
    assert f"for {REPO}, not {OTHER}" in answer["message"] and answer["hint"]
    rds = redis.Redis.from_url(redis_url)
    assert generation(rds, OTHER, 7) == 0 and queued_messages(rds) == 0


def _unsigned(token: str) -> str:
    _head, payload, _sig = token.split(".")
    none = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    return f"{none}.{payload}."


@pytest.mark.parametrize(
    ("make", "status", "words"),
    [
        (lambda hub: hub.oidc.token(REPO, audience="sts.amazonaws.com"), 403, "audience"),
        (lambda hub: hub.oidc.token(REPO, issued_at=0), 401, "expired"),
        (lambda hub: _unsigned(hub.oidc.token(REPO)), 401, "RS256"),
        (lambda hub: "not-a-jwt", 401, "not a JWT"),
        (lambda hub: hub.oidc.token(REPO, issuer="https://evil.example"), 401, "issued"),
        (lambda hub: OidcIssuer(hub.url).token(REPO), 401, "does not publish"),
        (lambda hub: hub.oidc.token("acme/../x"), 401, "repository claim"),
        (lambda hub: hub.oidc.token(REPO)[:-4] + "AAAA", 401, "not valid"),
    ],
    ids=[
        "audience",
        "expired",
        "unsigned",
        "garbage",
        "issuer",
        "unpublished-key",
        "bad-repo",
        "signature",
    ],
)
def test_tokens_that_prove_nothing_are_refused(
    make: Callable[[GitHubSandbox], str],
    status: int,
    words: str,
    start_api: Callable[..., ApiServer],
    github: GitHubSandbox,
    redis_url: str,
) -> None:
    api = start_api(drain=False)
    got, answer = _enqueue(api, make(github), _event(REPO))

    assert got == status, answer
    assert words in answer["message"]
    assert queued_messages(redis.Redis.from_url(redis_url)) == 0


def test_no_token_is_401(start_api: Callable[..., ApiServer]) -> None:
    api = start_api(drain=False)
    status, answer = _enqueue(api, None, _event(REPO))
    assert status == 401 and "id-token: write" in answer["hint"]


def test_a_rotated_key_verifies_at_once_and_a_retired_one_no_longer(
    start_api: Callable[..., ApiServer], github: GitHubSandbox
) -> None:
    api = start_api(drain=False, jwks_cache_seconds=1, jwks_refetch_seconds=0)
    before = github.oidc.token(REPO)
    assert _enqueue(api, before, _event(REPO, pr=1))[0] == 202
    github.oidc.rotate()
    # The cache holds only the old key: the new kid makes the API fetch the keys again.
    assert _enqueue(api, github.oidc.token(REPO), _event(REPO, pr=2))[0] == 202
    github.oidc.retire()
    import time

    time.sleep(1.2)  # past the key cache's lifetime
    status, answer = _enqueue(api, before, _event(REPO, pr=3))
    assert status == 401 and "does not publish" in answer["message"]


def test_an_unreachable_issuer_is_503(
    start_api: Callable[..., ApiServer], github: GitHubSandbox
) -> None:
    gone = f"http://127.0.0.1:{free_port()}"
    api = start_api(drain=False, oidc_issuer=gone, http_timeout_seconds=2)
    status, answer = _enqueue(api, OidcIssuer(gone).token(REPO), _event(REPO))
    assert status == 503 and answer["hint"]


def test_a_run_is_visible_to_its_own_repository_only(
    start_api: Callable[..., ApiServer], github: GitHubSandbox
) -> None:
    api = start_api(drain=False)
    _, sent = _enqueue(api, github.oidc.token(REPO), _event(REPO))
    own = call("GET", f"{api.url}/v1/runs/{sent['run_id']}",
               headers={"Authorization": f"Bearer {github.oidc.token(REPO)}"})  # fmt: skip
    other = call("GET", f"{api.url}/v1/runs/{sent['run_id']}",
                 headers={"Authorization": f"Bearer {github.oidc.token(OTHER)}"})  # fmt: skip

    assert own[0] == 200 and own[1]["record"]["status"] == "queued"
    assert other[0] == 404


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("K8SEE_", "ACTIONS_"))}
    return subprocess.run(
        [sys.executable, "-m", "k8see", "enqueue", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_enqueue_api_sends_the_event_with_the_jobs_token(
    start_api: Callable[..., ApiServer], github: GitHubSandbox, redis_url: str, tmp_path
) -> None:
    api = start_api(drain=False)
    event = tmp_path / "event.json"
    github.add_repo(REPO)
    github.add_pull(REPO, 7, head_sha=SHA, head_ref="feature")
    event.write_text(json.dumps(github.pull_request_event(REPO, 7, "opened")))
    job = github.oidc.job_environment(REPO)
    # No Redis URL anywhere: the job reaches only the API.
    done = _cli(["--api", api.url, "--event-path", str(event), "--event-name", "pull_request",
                 "--json"], job)  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["run_id"]
    assert generation(redis.Redis.from_url(redis_url), REPO, 7) == 1


def test_enqueue_api_for_another_repository_is_refused(
    start_api: Callable[..., ApiServer], github: GitHubSandbox, redis_url: str
) -> None:
    api = start_api(drain=False)
    job = github.oidc.job_environment(REPO)
    done = _cli(["--api", api.url, "--repo", OTHER, "--pr", "7", "--action", "opened",
                 "--sha", SHA], job)  # fmt: skip

    assert done.returncode == 1
    assert f"for {REPO}, not {OTHER}" in done.stderr and "Traceback" not in done.stderr
    assert queued_messages(redis.Redis.from_url(redis_url)) == 0


def test_enqueue_api_without_id_token_permission_says_what_to_add(
    start_api: Callable[..., ApiServer],
) -> None:
    api = start_api(drain=False)
    done = _cli(["--api", api.url, "--repo", REPO, "--pr", "7", "--action", "opened",
                 "--sha", SHA], {})  # fmt: skip
    assert done.returncode == 1
    assert "id-token: write" in done.stderr and "Traceback" not in done.stderr


def test_enqueue_api_unreachable_exits_3(github: GitHubSandbox) -> None:
    job = github.oidc.job_environment(REPO)
    done = _cli(["--api", f"http://127.0.0.1:{free_port()}", "--repo", REPO, "--pr", "7",
                 "--action", "opened", "--sha", SHA], job)  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "cannot reach the k8see API" in done.stderr


def test_the_issuer_serves_githubs_documents(github: GitHubSandbox) -> None:
    _, config = call("GET", f"{github.url}/.well-known/openid-configuration")
    _, keys = call("GET", config["jwks_uri"])
    token = github.oidc.token(REPO)
    key = jwt.PyJWKSet.from_dict(keys)[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience="k8see")
    assert config["issuer"] == github.url
    assert claims["repository"] == REPO and claims["sub"] == f"repo:{REPO}:pull_request"
    assert {"repository_owner", "run_id", "actor", "workflow", "event_name"} <= set(claims)
