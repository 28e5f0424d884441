"""The API's own endpoints over real HTTP: health, readiness (Redis answers) and metrics; and
the signature check alone (rotation, constant-time over every secret)."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from k8see.api.signatures import sign, verify
from k8see_sandbox.github import GitHubSandbox
from tests.api.conftest import SECRET, ApiServer, make_settings
from tests.api.helpers import call
from tests.conftest import free_port


def test_health_readiness_and_metrics(
    start_api: Callable[..., ApiServer], github: GitHubSandbox
) -> None:
    api = start_api()
    assert call("GET", f"{api.url}/healthz")[0] == 200
    assert call("GET", f"{api.url}/readyz") == (200, {"status": "ready"})
    hub = github
    hub.add_repo("acme/shop")
    hub.webhook_sender(SECRET).deliver(f"{api.url}/github/webhooks", "push", {})
    status, body = call("GET", f"{api.url}/metrics")
    assert status == 200
    text = body["raw"]
    assert 'k8see_api_webhooks_total{event="other",outcome="ignored"}' in text
    assert "k8see_api_webhook_seconds_bucket" in text


def test_not_ready_while_redis_does_not_answer(
    start_api: Callable[..., ApiServer], github: GitHubSandbox
) -> None:
    gone = f"redis://127.0.0.1:{free_port()}/0"
    api = start_api(settings=make_settings(gone, github), drain=False)
    assert call("GET", f"{api.url}/healthz")[0] == 200  # alive: do not restart it
    status, body = call("GET", f"{api.url}/readyz")
    assert status == 503 and body["status"] == "unavailable"


@given(body=st.binary(max_size=500), secret=st.text(min_size=1, max_size=40))
def test_a_signature_verifies_under_its_secret_only(body: bytes, secret: str) -> None:
    header = sign(body, secret)
    assert verify(body, header, [secret])
    assert verify(body, header, ["another", secret])  # rotation: any listed secret
    assert verify(body, header.upper().replace("SHA256=", "sha256="), [secret])
    assert not verify(body + b"x", header, [secret])
    assert not verify(body, header, [secret + "x"])
    assert not verify(body, header, [])
    assert not verify(body, header.replace("sha256=", "sha1="), [secret])
    assert not verify(body, None, [secret])
