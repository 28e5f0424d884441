"""The environment record: one per PR in Redis, the user-facing truth.

It feeds the PR comment, ``k8see status``, the metrics and the cleanup job. Only the task layer
and the enqueue client write it. A run may only update the record of its own or an older
generation, so a superseded run that finishes late never overwrites a newer one.

A run submitted with the enqueue credential (``k8see.submission``) cannot read records; the
record names its submissions' progress tokens (``progress_tokens``) and every update is
copied, in the same transaction, to each token's progress key, which that credential may
read. A token the record drops (a newer run took the PR) gets the newer record once, so its
follower sees it was superseded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import redis

from k8see.coordination import PREFIX
from k8see.redis_acl import progress_key
from k8see.run import Action, Run, Status

INDEX_KEY = f"{PREFIX}:envs"
LOG_LINES_KEPT = 200


def record_key(repo: str, pr: int) -> str:
    return f"{PREFIX}:env:{repo.lower()}:{pr}"


def log_key(run_id: str) -> str:
    return f"{PREFIX}:log:{run_id}"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def get(client: redis.Redis, *, repo: str, pr: int) -> dict[str, Any] | None:
    raw = client.get(record_key(repo, pr))
    if raw is None:
        return None
    data = json.loads(raw)
    return data if isinstance(data, dict) else None


def update(
    client: redis.Redis,
    *,
    repo: str,
    pr: int,
    generation: int,
    changes: dict[str, Any],
    ttl_seconds: int,
) -> dict[str, Any] | None:
    """Merge ``changes`` into the record unless a newer generation owns it.

    Returns the new record, or None when the write was refused as stale. ``timings`` and
    ``results`` are merged one level deep so stages add to them.
    """
    key = record_key(repo, pr)
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                raw = pipe.get(key)
                record: dict[str, Any] = json.loads(raw) if raw else {}
                if int(record.get("generation") or 0) > generation:
                    pipe.unwatch()
                    return None
                merged = _merge(record, changes)
                merged.update(repo=repo, pr=pr, generation=generation, updated_at=now_iso())
                merged.setdefault("created_at", merged["updated_at"])
                pipe.multi()
                pipe.set(key, json.dumps(merged, sort_keys=True), ex=ttl_seconds)
                pipe.zadd(INDEX_KEY, {key: time.time()})
                followers = {*_tokens(record), *_tokens(merged)}
                if followers:
                    copy = json.dumps(public(merged), sort_keys=True)
                    for token in sorted(followers):
                        _write_progress(pipe, token, {"record": copy})
                pipe.execute()
                return merged
            except redis.WatchError:
                continue


#: How long a submission's progress is kept after its last update, in seconds.
PROGRESS_TTL_SECONDS = 86400


def _tokens(record: dict[str, Any]) -> list[str]:
    found = record.get("progress_tokens") or []
    return [str(t) for t in found] if isinstance(found, list) else []


def _write_progress(pipe: Any, token: str, fields: dict[str, str]) -> None:
    pipe.hset(progress_key(token), mapping=fields)
    pipe.expire(progress_key(token), PROGRESS_TTL_SECONDS)


def write_progress(client: redis.Redis, *, token: str, **fields: Any) -> None:
    """Set fields (``admission``, ``record``, ``outcome``; JSON) of one submission's progress."""
    with client.pipeline(transaction=True) as pipe:
        _write_progress(pipe, token, {k: json.dumps(v, sort_keys=True) for k, v in fields.items()})
        pipe.execute()


def read_progress(client: redis.Redis, *, token: str) -> dict[str, Any]:
    """One submission's progress: ``admission``, ``record`` and ``outcome``, each if written."""
    raw = client.hgetall(progress_key(token))
    return {(k.decode() if isinstance(k, bytes) else str(k)): json.loads(v) for k, v in raw.items()}


def public(record: dict[str, Any]) -> dict[str, Any]:
    """The record as shown to people: without the progress tokens (read capabilities)."""
    return {k: v for k, v in record.items() if k != "progress_tokens"}


def _merge(record: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    for name, value in changes.items():
        if name in ("timings",) and isinstance(value, dict):
            out[name] = {**(out.get(name) or {}), **value}
        else:
            out[name] = value
    return out


def set_status(
    client: redis.Redis,
    *,
    repo: str,
    pr: int,
    generation: int,
    status: Status,
    ttl_seconds: int,
    **changes: Any,
) -> dict[str, Any] | None:
    return update(
        client,
        repo=repo,
        pr=pr,
        generation=generation,
        changes={"status": status.value, **changes},
        ttl_seconds=ttl_seconds,
    )


def list_records(
    client: redis.Redis, *, repo: str | None = None, pr: int | None = None
) -> Iterator[dict[str, Any]]:
    """Records, most recently updated first, optionally filtered by repository and PR."""
    keys = [
        k.decode() if isinstance(k, bytes) else str(k) for k in client.zrevrange(INDEX_KEY, 0, -1)
    ]
    if not keys:
        return
    for key, raw in zip(keys, client.mget(keys), strict=True):
        if raw is None:
            client.zrem(INDEX_KEY, key)  # expired record: drop it from the index
            continue
        record = json.loads(raw)
        if repo and str(record.get("repo", "")).lower() != repo.lower():
            continue
        if pr is not None and record.get("pr") != pr:
            continue
        yield record


STATS_KEY = f"{PREFIX}:stats"
OUTCOME_TTL_SECONDS = 3600


def set_run_outcome(
    client: redis.Redis, *, run_id: str, outcome: dict[str, Any], progress: tuple[str, ...] = ()
) -> None:
    """How a run that never reached the record ended (a refused command), for ``--wait``;
    copied to the progress of the submissions in ``progress``."""
    client.set(f"{PREFIX}:outcome:{run_id}", json.dumps(outcome), ex=OUTCOME_TTL_SECONDS)
    for token in progress:
        write_progress(client, token=token, outcome=outcome)


def run_outcome(client: redis.Redis, *, run_id: str) -> dict[str, Any] | None:
    raw = client.get(f"{PREFIX}:outcome:{run_id}")
    data = json.loads(raw) if raw else None
    return data if isinstance(data, dict) else None


def count(client: redis.Redis, name: str, amount: int = 1) -> None:
    """Add to a platform-wide counter (stage starts, supersedes): cheap facts for operators."""
    client.hincrby(STATS_KEY, name, amount)


def stats(client: redis.Redis) -> dict[str, int]:
    raw = client.hgetall(STATS_KEY)
    return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}


def append_log(client: redis.Redis, *, run_id: str, line: str, ttl_seconds: int) -> None:
    """Keep the last lines of a run's tool output (already redacted by the caller)."""
    key = log_key(run_id)
    with client.pipeline(transaction=False) as pipe:
        pipe.rpush(key, line[:2000])
        pipe.ltrim(key, -LOG_LINES_KEPT, -1)
        pipe.expire(key, ttl_seconds)
        pipe.execute()


def log_tail(client: redis.Redis, *, run_id: str, lines: int = 20) -> list[str]:
    return [
        v.decode() if isinstance(v, bytes) else str(v)
        for v in client.lrange(log_key(run_id), -lines, -1)
    ]


def run_of(record: dict[str, Any]) -> Run:
    """The run a record stands for, enough to send its PR comment again (the watchdog, the
    capacity re-check): never to build or deploy from, which needs the run's own message."""
    return Run(
        repo=str(record["repo"]),
        pr=int(record["pr"]),
        sha=str(record.get("sha") or ""),
        generation=int(record.get("generation") or 0),
        action=Action(str(record.get("action") or Action.DEPLOY.value)),
        ref=str(record.get("ref") or ""),
        trigger=str(record.get("trigger") or ""),
        run_id=str(record.get("run_id") or "watchdog"),
    )
