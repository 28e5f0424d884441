"""Fuzzed webhook bodies and headers over real HTTP: every answer is one of the documented
codes, never a 500, and nothing unsigned is ever queued."""

from __future__ import annotations

import json
from collections.abc import Callable

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k8see.api import inbox
from k8see.api.signatures import sign
from tests.api.conftest import SECRET, ApiServer
from tests.api.helpers import call

EVENTS = st.sampled_from(
    ["pull_request", "issue_comment", "installation", "installation_repositories", "push", "ping"]
)
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=20,
)  # fmt: skip
PR_KEYS = st.fixed_dictionaries(
    {},
    optional={
        "action": st.sampled_from(["opened", "closed", "synchronize", "created", 3]) | JSONISH,
        "pull_request": JSONISH,
        "repository": st.fixed_dictionaries({"full_name": st.text(max_size=30) | JSONISH}),
        "issue": JSONISH,
        "comment": JSONISH,
        "installation": JSONISH,
        "repositories": JSONISH,
    },
)
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def test_unsigned_fuzz_is_refused_and_queues_nothing(
    start_api: Callable[..., ApiServer], redis_url: str
) -> None:
    api = start_api(drain=False)
    rds = redis.Redis.from_url(redis_url)

    @FUZZ
    @given(body=st.binary(max_size=2000), event=EVENTS | HEADER_TEXT, delivery=HEADER_TEXT,
           signature=HEADER_TEXT)  # fmt: skip
    def check(body: bytes, event: str, delivery: str, signature: str) -> None:
        headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
                   "X-Hub-Signature-256": signature}  # fmt: skip
        status, answer = call("POST", f"{api.url}/github/webhooks", body, headers)
        assert status == 401, answer

    check()
    assert not rds.exists(inbox.INBOX_KEY) or rds.xlen(inbox.INBOX_KEY) == 0


def test_signed_fuzz_gets_a_documented_answer(
    start_api: Callable[..., ApiServer], redis_url: str
) -> None:
    api = start_api(drain=False)

    @FUZZ
    @given(event=EVENTS, delivery=st.uuids(), payload=PR_KEYS | JSONISH,
           raw=st.none() | st.binary(max_size=300))  # fmt: skip
    def check(event: str, delivery: object, payload: object, raw: bytes | None) -> None:
        body = raw if raw is not None else json.dumps(payload).encode()
        headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": str(delivery),
                   "X-Hub-Signature-256": sign(body, SECRET)}  # fmt: skip
        status, answer = call("POST", f"{api.url}/github/webhooks", body, headers)
        assert status in (200, 202, 400), answer
        if status == 400:
            assert answer["message"]
        else:
            assert answer["status"] in ("queued", "ignored", "duplicate", "pong")

    check()
