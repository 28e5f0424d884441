"""The environment record in a real Redis.

Covers: merge of changes and timings; a stale generation cannot overwrite a newer record;
listing with filters, most recent first; the run log keeps only the last lines.
"""

from __future__ import annotations

import redis

from k8see import state
from k8see.run import Status


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def test_updates_merge_and_timings_accumulate(redis_url: str) -> None:
    c = _client(redis_url)
    state.set_status(c, repo="a/b", pr=1, generation=1, status=Status.QUEUED, ttl_seconds=60)
    state.update(
        c, repo="a/b", pr=1, generation=1, changes={"timings": {"build": 2.0}}, ttl_seconds=60
    )
    record = state.update(
        c, repo="a/b", pr=1, generation=1, changes={"timings": {"deploy": 1.0}}, ttl_seconds=60
    )
    assert record is not None
    assert record["timings"] == {"build": 2.0, "deploy": 1.0}
    assert record["status"] == "queued"
    assert record["created_at"] <= record["updated_at"]


def test_a_stale_generation_does_not_overwrite_a_newer_record(redis_url: str) -> None:
    c = _client(redis_url)
    state.set_status(c, repo="a/b", pr=1, generation=2, status=Status.BUILDING, ttl_seconds=60)
    refused = state.set_status(
        c, repo="a/b", pr=1, generation=1, status=Status.READY, ttl_seconds=60
    )
    assert refused is None
    record = state.get(c, repo="a/b", pr=1)
    assert record is not None and record["status"] == "building" and record["generation"] == 2


def test_list_filters_by_repo_and_pr_case_insensitively(redis_url: str) -> None:
    c = _client(redis_url)
    for repo, pr in (("a/b", 1), ("a/b", 2), ("c/d", 1)):
        state.set_status(c, repo=repo, pr=pr, generation=1, status=Status.READY, ttl_seconds=60)
    assert [r["pr"] for r in state.list_records(c, repo="A/B")] == [2, 1]
    assert [r["repo"] for r in state.list_records(c, pr=1)] == ["c/d", "a/b"]
    assert len(list(state.list_records(c))) == 3


def test_the_run_log_keeps_the_last_lines(redis_url: str) -> None:
    c = _client(redis_url)
    for i in range(state.LOG_LINES_KEPT + 10):
        state.append_log(c, run_id="r", line=f"line {i}", ttl_seconds=60)
    tail = state.log_tail(c, run_id="r", lines=3)
    assert tail == [
        f"line {state.LOG_LINES_KEPT + 7}",
        f"line {state.LOG_LINES_KEPT + 8}",
        f"line {state.LOG_LINES_KEPT + 9}",
    ]
