"""Per-PR coordination in Redis: what replaces GitHub's workflow concurrency groups.

- **Generation.** Every accepted event for a PR increments its generation. A run carries the
  generation it was enqueued with and stops as superseded once a newer one exists, so the
  latest push wins and a burst of pushes costs at most one extra build.
- **Close mark.** A close or destroy sets it; a deploy that starts later stops. A reopen or an
  explicit ``/deploy-preview`` clears it.
- **Lease.** Deploy and destroy hold a per-PR lease with a TTL, renewed while they run, with a
  fencing token that grows on every acquisition. A stage that finds the lease taken retries
  later instead of blocking a worker slot. The same run re-executing after a crash (redelivery)
  takes its own lease over instead of waiting for the TTL.
  The wait is bounded in time (``queues.lease_wait_seconds``), counted here, never in the
  task's retries.
- **Dedupe.** The same event delivered twice (same action, SHA and comment) enqueues once;
  the delivery mark is set with the generation bump, in one script (``k8see.admission``).

Lua is used only where atomicity needs it (renew and release compare the owner first).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from k8see.errors import Superseded

PREFIX = "k8see"

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Take the lease if it is free or already held by the same run (redelivery after a crash).
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, -string.len(ARGV[1])) ~= ARGV[1] then
  return nil
end
local token = redis.call('INCR', KEYS[2])
local value = token .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""


# Note one more wait for the lease: the first wait's time (Redis's clock, so workers' clocks
# need not agree) and how many waits so far.
_LEASE_WAIT = """
local now = redis.call('TIME')
redis.call('HSETNX', KEYS[1], 'since', now[1] .. '.' .. string.format('%06d', now[2]))
local waits = redis.call('HINCRBY', KEYS[1], 'waits', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
local since = redis.call('HGET', KEYS[1], 'since')
return {since, tostring(waits), now[1] .. '.' .. string.format('%06d', now[2])}
"""


def pr_key(repo: str, pr: int, what: str) -> str:
    """The Redis key of one per-PR value; repo names are case-insensitive on GitHub."""
    return f"{PREFIX}:pr:{repo.lower()}:{pr}:{what}"


def next_generation(client: redis.Redis, *, repo: str, pr: int) -> int:
    return int(client.incr(pr_key(repo, pr, "generation")))


def current_generation(client: redis.Redis, *, repo: str, pr: int) -> int:
    value = client.get(pr_key(repo, pr, "generation"))
    return int(value) if value else 0


def mark_closed(client: redis.Redis, *, repo: str, pr: int) -> None:
    client.set(pr_key(repo, pr, "closed"), "1")


def clear_closed(client: redis.Redis, *, repo: str, pr: int) -> None:
    client.delete(pr_key(repo, pr, "closed"))


def is_closed(client: redis.Redis, *, repo: str, pr: int) -> bool:
    return bool(client.exists(pr_key(repo, pr, "closed")))


@dataclass
class Lease:
    """A held per-PR lease. ``token`` is the fencing token: larger means newer."""

    client: redis.Redis
    key: str
    value: str
    ttl_seconds: float

    @property
    def token(self) -> int:
        return int(self.value.split(":", 1)[0])

    def renew(self) -> None:
        """Extend the lease; raise ``Superseded`` if another run took it (we were fenced off)."""
        ok = self.client.eval(_RENEW, 1, self.key, self.value, int(self.ttl_seconds * 1000))
        if not ok:
            raise Superseded(
                "Another run took over this pull request's environment; this one stops.",
            )

    def release(self) -> None:
        self.client.eval(_RELEASE, 1, self.key, self.value)


def acquire_lease(
    client: redis.Redis, *, repo: str, pr: int, owner: str, ttl_seconds: float
) -> Lease | None:
    """Take the PR's lease for ``owner`` (a run id and stage), or None if someone else has it."""
    key = pr_key(repo, pr, "lease")
    value = client.eval(_ACQUIRE, 2, key, pr_key(repo, pr, "fence"), owner, int(ttl_seconds * 1000))
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    return Lease(client=client, key=key, value=text, ttl_seconds=ttl_seconds)


def lease_holder(client: redis.Redis, *, repo: str, pr: int) -> str | None:
    value = client.get(pr_key(repo, pr, "lease"))
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class LeaseWait:
    """How long one stage of one run has been waiting for the PR's lease."""

    waited_seconds: float
    #: Waits so far, this one included.
    waits: int


def note_lease_wait(
    client: redis.Redis, *, repo: str, pr: int, owner: str, ttl_seconds: int
) -> LeaseWait:
    """Count one more wait of ``owner`` (a run id and stage) for the PR's lease.

    The count lives in Redis, not in the task message, so waiting never uses up the task's
    retries; ``forget_lease_wait`` clears it once the lease is taken.
    """
    key = pr_key(repo, pr, f"leasewait:{owner}")
    since, waits, now = client.eval(_LEASE_WAIT, 1, key, ttl_seconds)
    return LeaseWait(waited_seconds=float(now) - float(since), waits=int(waits))


def forget_lease_wait(client: redis.Redis, *, repo: str, pr: int, owner: str) -> None:
    client.delete(pr_key(repo, pr, f"leasewait:{owner}"))


# -- one delivery of a run's stage at a time ---------------------------------------------------
#
# A broker connection that drops while a stage runs makes kombu hand the stage's message back
# to the queue at once, while the stage goes on running: a second delivery of the same stage
# of the same run, at the same time (seen in tests/drills/test_redis_killed.py: two builds of
# one run pushing the same tag, one deploy refused for the other's image). A delivery claims
# the stage first; a second delivery waits while the claim is renewed, and ends without
# running once the stage is marked done. A claim not renewed (its worker died) expires, and
# a redelivery then runs the stage.

_CLAIM = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 'done'
end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 'held'
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 'claimed'
"""

_DONE = """
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"""


def stage_keys(run_id: str, stage: str) -> tuple[str, str]:
    """The claim and done keys of one stage of one run."""
    base = f"{PREFIX}:delivery:{run_id}:{stage}"
    return f"{base}:claim", f"{base}:done"


def claim_stage(
    client: redis.Redis, *, run_id: str, stage: str, token: str, ttl_seconds: float
) -> str:
    """Claim a run's stage for one delivery: ``claimed``, ``held`` (another delivery runs it)
    or ``done`` (it finished already)."""
    claim, done = stage_keys(run_id, stage)
    found = client.eval(_CLAIM, 2, claim, done, token, int(ttl_seconds * 1000))
    return found.decode() if isinstance(found, bytes) else str(found)


def renew_stage_claim(
    client: redis.Redis, *, run_id: str, stage: str, token: str, ttl_seconds: float
) -> None:
    client.eval(_RENEW, 1, stage_keys(run_id, stage)[0], token, int(ttl_seconds * 1000))


def release_stage(client: redis.Redis, *, run_id: str, stage: str, token: str) -> None:
    """Give the claim up without marking the stage done (it failed, stopped or is retried)."""
    client.eval(_RELEASE, 1, stage_keys(run_id, stage)[0], token)


def stage_done(
    client: redis.Redis, *, run_id: str, stage: str, token: str, ttl_seconds: int
) -> None:
    """Mark the stage done for the run (later deliveries end without running it)."""
    claim, done = stage_keys(run_id, stage)
    client.eval(_DONE, 2, claim, done, token, ttl_seconds)


def forget_stages(client: redis.Redis, *, run_id: str, stages: tuple[str, ...]) -> None:
    """Clear the done marks of a run sent again from its first stage (the watchdog)."""
    client.delete(*(key for stage in stages for key in stage_keys(run_id, stage)))
