"""``POST /github/webhooks`` over real HTTP, signed by the GitHub stand-in, against real Redis.

Covers: a signed ``pull_request`` becomes the same run ``k8see enqueue`` makes (generation,
queued record, one chain message); either of two secrets verifies (rotation); unsigned, wrongly
signed and secret-less deliveries are 401; a replayed delivery is 202 with nothing queued; a
body over the limit is 413 (declared or streamed); malformed JSON 400; unknown events and
no-op actions 202-ignored; ``ping`` 200; Redis down or stalled is 503 inside GitHub's 10 s, with
nothing marked, so the redelivery is then accepted; installation events keep the repository →
installation map; no log line holds the payload's text or the secrets.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from k8see.api import inbox
from k8see.api.webhooks import INSTALLATIONS_KEY
from k8see_sandbox.github import GitHubSandbox
from tests.api.conftest import OLD_SECRET, SECRET, ApiServer, make_settings
from tests.api.helpers import SHA, call, generation, queued_messages, record, wait_for
from tests.conftest import free_port

REPO = "acme/shop"


@pytest.fixture
def hub(github: GitHubSandbox) -> GitHubSandbox:
    github.add_repo(REPO, collaborators={"alice": "write"})
    github.add_pull(REPO, 7, head_sha=SHA, head_ref="feature")
    return github


@pytest.fixture
def rds(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _hook(api: ApiServer) -> str:
    return f"{api.url}/github/webhooks"


def test_a_signed_pull_request_becomes_a_queued_run(
    start_api: Callable[..., ApiServer], hub: GitHubSandbox, rds: redis.Redis
) -> None:
    api = start_api()
    sender = hub.webhook_sender(SECRET)
    sent = sender.deliver(_hook(api), "pull_request", hub.pull_request_event(REPO, 7, "opened"))

    assert (sent.status, sent.body["status"]) == (202, "queued")
    found = wait_for(lambda: record(rds, REPO, 7), what="the queued record")
    assert found["status"] == "queued" and found["trigger"] == "pull_request:opened"
    wait_for(lambda: rds.xlen(inbox.INBOX_KEY) == 0, what="the inbox to drain")
    assert generation(rds, REPO, 7) == 1
    assert queued_messages(rds) == 1


def test_the_old_secret_still_verifies_during_rotation(
    start_api: Callable[..., ApiServer], hub: GitHubSandbox, rds: redis.Redis
) -> None:
    api = start_api()
    sent = hub.webhook_sender(OLD_SECRET).deliver(
        _hook(api), "pull_request", hub.pull_request_event(REPO, 7, "opened")
    )
    assert sent.status == 202
    wait_for(lambda: generation(rds, REPO, 7) == 1, what="the run")


@pytest.mark.parametrize("how", ["unsigned", "another secret", "tampered body", "sha1 only"])
def test_a_delivery_not_signed_with_a_configured_secret_is_401_and_queues_nothing(
    how: str, start_api: Callable[..., ApiServer], hub: GitHubSandbox, rds: redis.Redis
) -> None:
    api = start_api(drain=False)
    body = json.dumps(hub.pull_request_event(REPO, 7, "opened")).encode()
    headers = {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "d-1"}
    from k8see.api.signatures import sign

    if how == "another secret":
        headers["X-Hub-Signature-256"] = sign(body, "not-the-secret")
    elif how == "tampered body":
        headers["X-Hub-Signature-256"] = sign(body, SECRET)
        body = body.replace(b'"opened"', b'"closed"')
    elif how == "sha1 only":
        headers["X-Hub-Signature"] = "sha1=" + "0" * 40
    status, answer = call("POST", _hook(api), body, headers)

    assert status == 401
    assert "X-Hub-Signature-256" in answer["message"] and answer["hint"]
    assert rds.exists(inbox.INBOX_KEY) == 0 or rds.xlen(inbox.INBOX_KEY) == 0
    assert generation(rds, REPO, 7) == 0


def test_without_a_configured_secret_every_delivery_is_401(
    start_api: Callable[..., ApiServer], hub: GitHubSandbox, rds: redis.Redis
) -> None:
    api = start_api(webhook_secrets=[])
    sent = hub.webhook_sender("").deliver(
        _hook(api), "pull_request", hub.pull_request_event(REPO, 7, "opened")
    )
    assert sent.status == 401
    assert generation(rds, REPO, 7) == 0


def test_a_replayed_delivery_is_202_and_queues_nothing(
    start_api: Callable[..., ApiServer], hub: GitHubSandbox, rds: redis.Redis
) -> None:
    api = start_api()
    sender = hub.webhook_sender(SECRET)
    payload = hub.pull_request_event(REPO, 7, "opened")
    first = sender.deliver(_hook(api), "pull_request", payload)
    wait_for(lambda: record(rds, REPO, 7), what="the first run")
    replay = sender.deliver(_hook(api), "pull_request", payload, delivery=first.delivery)

    assert (replay.status, replay.body["status"]) == (202, "duplicate")
    time.sleep(1.5)  # a drainer would have had the time to act on a queued entry
    assert generation(rds, REPO, 7) == 1
    assert queued_messages(rds) == 1


def test_the_same_event_under_two_delivery_ids_makes_one_run(
    start_api: Callable[..., ApiServer], hub: GitHubSandbox, rds: redis.Redis
) -> None:
    """Two deliveries of one event (App webhook and a workflow, or GitHub's retry with a new
    id) are deduplicated by the enqueue client's own delivery mark."""
    api = start_api()
    sender = hub.webhook_sender(SECRET)
    payload = hub.pull_request_event(REPO, 7, "opened")
    for _ in range(2):
        assert sender.deliver(_hook(api), "pull_request", payload).status == 202
    wait_for(lambda: rds.xlen(inbox.INBOX_KEY) == 0, what="the inbox to drain")
    assert generation(rds, REPO, 7) == 1
    assert queued_messages(rds) == 1


def test_a_body_over_the_limit_is_413_declared_or_streamed(
    start_api: Callable[..., ApiServer], hub: GitHubSandbox, rds: redis.Redis
) -> None:
    api = start_api(webhook_max_bytes=4096, drain=False)
    big = json.dumps({"action": "opened", "pad": "x" * 8000}).encode()
    sent = hub.webhook_sender(SECRET).deliver(_hook(api), "pull_request", {}, body=big)
    assert sent.status == 413
    assert "larger than 4096 bytes" in sent.body["message"]

    # Chunked, with no Content-Length: the limit holds while the body streams in.
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    chunks = (b"x" * 1024 for _ in range(64))
    headers = {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "d-big"}
    conn.request("POST", "/github/webhooks", body=chunks, headers=headers, encode_chunked=True)
    assert conn.getresponse().status == 413
    conn.close()
    assert generation(rds, REPO, 7) == 0


def test_the_default_limit_is_githubs_25_mb(
    start_api: Callable[..., ApiServer], hub: GitHubSandbox
) -> None:
    api = start_api(drain=False)
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    conn.putrequest("POST", "/github/webhooks")
    conn.putheader("Content-Length", str(25 * 1024 * 1024 + 1))
    conn.putheader("X-GitHub-Event", "pull_request")
    conn.endheaders()  # the answer comes on the declared length alone
    assert conn.getresponse().status == 413
    conn.close()


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{not json", 400), (b"[1, 2]", 400), (b"[" * 100_000, 400), (b'{"action": 1}', 400)],
)
def test_a_signed_body_that_is_not_an_event_is_400(
    body: bytes,
    status: int,
    start_api: Callable[..., ApiServer],
    hub: GitHubSandbox,
    rds: redis.Redis,
) -> None:
    api = start_api(drain=False)
    sent = hub.webhook_sender(SECRET).deliver(_hook(api), "pull_request", {}, body=body)
    assert sent.status == status
    assert sent.body["message"] and "hint" in sent.body
    assert rds.exists(inbox.INBOX_KEY) == 0 or rds.xlen(inbox.INBOX_KEY) == 0


def test_missing_event_or_delivery_headers_are_400(
    start_api: Callable[..., ApiServer], rds: redis.Redis
) -> None:
    from k8see.api.signatures import sign

    api = start_api(drain=False)
    body = b"{}"
    for headers in (
        {"X-GitHub-Delivery": "d-1"},
        {"X-GitHub-Event": "pull_request"},
        {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "../../etc"},
    ):
        status, _ = call(
            "POST", _hook(api), body, {**headers, "X-Hub-Signature-256": sign(body, SECRET)}
        )
        assert status == 400, headers


def test_unknown_events_and_no_op_actions_are_202_ignored_and_ping_is_200(
    start_api: Callable[..., ApiServer], hub: GitHubSandbox, rds: redis.Redis
) -> None:
    api = start_api(drain=False)
    sender = hub.webhook_sender(SECRET)
    push = sender.deliver(_hook(api), "push", {"ref": "refs/heads/main"})
    labeled = sender.deliver(_hook(api), "pull_request", hub.pull_request_event(REPO, 7, "labeled"))
    chatter = sender.deliver(
        _hook(api),
        "issue_comment",
        hub.issue_comment_event(REPO, 7, hub.add_comment(REPO, 7, "looks good")),
    )
    ping = sender.deliver(_hook(api), "ping", {"zen": "Design for failure."})

    assert (push.status, push.body["status"]) == (202, "ignored")
    assert (labeled.status, labeled.body["status"]) == (202, "ignored")
    assert "labeled" in labeled.body["reason"]
    assert (chatter.status, chatter.body["status"]) == (202, "ignored")
    assert ping.status == 200
    assert rds.exists(inbox.INBOX_KEY) == 0 or rds.xlen(inbox.INBOX_KEY) == 0


def test_a_deploy_preview_comment_is_queued_for_authorization(
    start_api: Callable[..., ApiServer], hub: GitHubSandbox, rds: redis.Redis
) -> None:
    api = start_api()
    comment = hub.add_comment(REPO, 7, "/deploy-preview", login="alice")
    sent = hub.webhook_sender(SECRET).deliver(
        _hook(api), "issue_comment", hub.issue_comment_event(REPO, 7, comment)
    )
    assert (sent.status, sent.body["status"]) == (202, "queued")
    # Commands go to k8see.command first: a worker checks the commenter's permission.
    wait_for(lambda: queued_messages(rds) == 1, what="the command message")
    message = json.loads(rds.lindex("default", 0))
    assert message["headers"]["task"] == "k8see.command"
    assert generation(rds, REPO, 7) == 0


def test_redis_down_is_503_and_the_redelivery_is_accepted_later(
    redis_url: str, github: GitHubSandbox, start_api: Callable[..., ApiServer], rds: redis.Redis
) -> None:
    github.add_repo(REPO)
    github.add_pull(REPO, 7, head_sha=SHA, head_ref="feature")
    closed = f"redis://127.0.0.1:{free_port()}/0"
    down = start_api(settings=make_settings(closed, github), drain=False)
    sender = github.webhook_sender(SECRET)
    sender.attempts = 2
    payload = github.pull_request_event(REPO, 7, "opened")
    refused = sender.deliver(_hook(down), "pull_request", payload)
    assert refused.status == 503 and refused.attempts == 2  # retried, as on 5xx
    assert "redeliver" in refused.body["hint"]

    up = start_api()
    again = sender.deliver(_hook(up), "pull_request", payload, delivery=refused.delivery)
    assert (again.status, again.body["status"]) == (202, "queued")
    wait_for(lambda: generation(rds, REPO, 7) == 1, what="the redelivered run")


@pytest.fixture
def stalled_redis() -> Iterator[str]:
    """A port that accepts connections and never answers: Redis stuck (loading, paused)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def test_a_stalled_redis_still_gets_github_an_answer_within_10_seconds(
    stalled_redis: str, github: GitHubSandbox, start_api: Callable[..., ApiServer]
) -> None:
    github.add_repo(REPO)
    github.add_pull(REPO, 7, head_sha=SHA, head_ref="feature")
    api = start_api(settings=make_settings(stalled_redis, github), drain=False)
    sender = github.webhook_sender(SECRET)
    sender.attempts = 1
    started = time.monotonic()
    sent = sender.deliver(_hook(api), "pull_request", github.pull_request_event(REPO, 7, "opened"))
    assert sent.status == 503
    assert time.monotonic() - started < 10  # GitHub's own deadline, not a speed target


def test_installation_events_keep_the_repository_map(
    start_api: Callable[..., ApiServer], hub: GitHubSandbox, rds: redis.Redis
) -> None:
    from k8see_sandbox.github_identity import installation_event

    api = start_api()
    sender = hub.webhook_sender(SECRET)
    created = installation_event("created", 42, ["acme/shop", "acme/api"])
    assert sender.deliver(_hook(api), "installation", created).status == 202
    wait_for(lambda: rds.hlen(INSTALLATIONS_KEY) == 2, what="the installation")
    removed = {
        "action": "removed",
        "installation": {"id": 42},
        "repositories_added": [],
        "repositories_removed": [{"full_name": "acme/api"}],
    }
    assert sender.deliver(_hook(api), "installation_repositories", removed).status == 202
    wait_for(lambda: rds.hlen(INSTALLATIONS_KEY) == 1, what="the removal")
    assert rds.hget(INSTALLATIONS_KEY, "acme/shop") == b"42"
    deleted = installation_event("deleted", 42, [])
    assert sender.deliver(_hook(api), "installation", deleted).status == 202
    wait_for(lambda: rds.hlen(INSTALLATIONS_KEY) == 0, what="the uninstall")
    assert queued_messages(rds) == 0


def test_no_log_line_holds_the_payload_or_a_secret(
    start_api: Callable[..., ApiServer],
    hub: GitHubSandbox,
    rds: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    api = start_api()
    payload = hub.pull_request_event(REPO, 7, "opened")
    payload["pull_request"]["title"] = "PAYLOAD-TEXT-must-not-be-logged"
    sender = hub.webhook_sender(SECRET)
    sender.deliver(_hook(api), "pull_request", payload)
    hub.webhook_sender("wrong-secret-value").deliver(_hook(api), "pull_request", payload)
    sender.deliver(_hook(api), "pull_request", {}, body=b"{PAYLOAD-TEXT broken")
    wait_for(lambda: generation(rds, REPO, 7) == 1, what="the run")

    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "accepted" in text and "refused" in text  # it did log each outcome
    for secret in ("PAYLOAD-TEXT", SECRET, OLD_SECRET, "wrong-secret-value"):
        assert secret not in text
