"""Intake in Redis: an accepted event becomes the PR's latest run exactly once.

An enqueue does four things: it marks the delivery seen, bumps the PR's generation, writes the
``queued`` record and sends the chain. Redis can fail between any two, and a retried enqueue
must then finish the job, not report a duplicate of a run that was never sent. So:

1. ``admit`` is one Lua script: it checks the delivery mark, sets or clears the close mark,
   bumps the generation and stores the run under ``k8see:run:<run_id>`` in state ``admitted``,
   and puts the run id in the outbox (``k8see:outbox``, scored by Redis's clock). All or none.
2. The caller writes the record and sends the chain with deterministic task ids
   (``<run_id>-<stage>``), then ``advance`` moves the run to ``sent`` and out of the outbox.
3. A retry that meets the mark finds the earlier run: ``admitted`` means "finish sending it"
   (same run id, generation and task ids); ``sent`` means a real duplicate.
4. The watchdog job sends what sat in the outbox longer than ``queues.outbox_grace_seconds``,
   so a client that died after step 1 still gets its run.
5. With Redis replicas (Sentinel), ``confirm`` then waits until ``redis.min_replica_acks``
   replicas hold all of it (``WAIT``), so a failover right after an accepted enqueue cannot
   take the event with the old master.

A comment command is stored the same way in state ``commanded`` (no generation bump) until its
``k8see.command`` message is sent (``command-sent``); the command task admits it later with the
same script, keyed by the same run id, so a redelivered command task never bumps twice.

Delivery of a chain is at least once: a send whose reply was lost is sent again. Stages are
idempotent (docs/architecture.md, "A run's path"), and ``pending_task_ids`` lets re-senders
skip a run whose message is visibly queued or being worked on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from k8see.coordination import PREFIX, pr_key
from k8see.run import Run

OUTBOX_KEY = f"{PREFIX}:outbox"
#: States of a stored run.
COMMANDED = "commanded"
COMMAND_SENT = "command-sent"
ADMITTED = "admitted"
SENT = "sent"
#: Kombu's Redis transport: one list per queue and priority step, and the unacked hash.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)
_UNACKED_KEY = "unacked"

# KEYS: run, generation, closed, outbox[, delivery mark]
# ARGV: run id, run JSON, mark ttl, run ttl, kind ("command" | "pipeline"), close ("1" | "0")
_ADMIT = """
local run_id = ARGV[1]
if #KEYS >= 5 then
  local earlier = redis.call('GET', KEYS[5])
  if earlier and earlier ~= run_id then return {'duplicate', earlier, ''} end
  if not earlier then redis.call('SET', KEYS[5], run_id, 'EX', ARGV[3]) end
end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'admitted' or state == 'sent' then
  return {'own', state, redis.call('HGET', KEYS[1], 'generation')}
end
if ARGV[5] == 'command' then
  if state then return {'own', state, redis.call('HGET', KEYS[1], 'generation')} end
  local current = redis.call('GET', KEYS[2]) or '0'
  redis.call('HSET', KEYS[1], 'run', ARGV[2], 'state', 'commanded', 'generation', current)
  state = 'commanded'
else
  if ARGV[6] == '1' then redis.call('SET', KEYS[3], '1') else redis.call('DEL', KEYS[3]) end
  local generation = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], 'run', ARGV[2], 'state', 'admitted', 'generation', generation)
  state = 'admitted'
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[4], redis.call('TIME')[1], run_id)
return {'new', state, redis.call('HGET', KEYS[1], 'generation')}
"""

# Move a stored run from one state to the next, and out of the outbox; nothing if it moved on.
_ADVANCE = """
if redis.call('HGET', KEYS[1], 'state') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'state', ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[3])
  return 1
end
return 0
"""


def run_key(run_id: str) -> str:
    return f"{PREFIX}:run:{run_id}"


@dataclass(frozen=True)
class Stored:
    """A run as admission stored it: the run (with its generation) and its state."""

    run: Run
    state: str
    #: How often the watchdog sent its chain again.
    redrives: int = 0
    #: Progress tokens of the submissions that asked for this run (``k8see.submission``).
    progress: tuple[str, ...] = ()


@dataclass(frozen=True)
class Admission:
    """What ``admit`` found: this run stored (``stored``) or an earlier run's id."""

    stored: Stored | None
    duplicate_of: str | None = None
    #: Stored by this call; False when an earlier call (a lost reply, a redelivery) did.
    fresh: bool = False


def admit(
    client: redis.Redis,
    *,
    run: Run,
    command: bool,
    fingerprint: str = "",
    mark_ttl_seconds: int = 3600,
    run_ttl_seconds: int,
) -> Admission:
    """Store ``run`` as admitted (or as a command to send), atomically; see the module docs.

    Args:
        client: Redis.
        run: The run; its generation is ignored (the script assigns it).
        command: Store it as a comment command to authorize first (no generation bump).
        fingerprint: The delivery's fingerprint; empty for a run with no delivery mark.
        mark_ttl_seconds: How long the delivery mark is remembered.
        run_ttl_seconds: How long the stored run is kept (the watchdog re-drives from it).

    Returns:
        The stored run, or the id of the earlier run the delivery mark names.
    """
    keys = [
        run_key(run.run_id),
        pr_key(run.repo, run.pr, "generation"),
        pr_key(run.repo, run.pr, "closed"),
        OUTBOX_KEY,
    ]
    if fingerprint:
        keys.append(pr_key(run.repo, run.pr, f"delivery:{fingerprint}"))
    closes = "1" if run.action.value == "destroy" else "0"
    kind = "command" if command else "pipeline"
    args = (run.run_id, run.to_json(), mark_ttl_seconds, run_ttl_seconds, kind, closes)
    answer = client.eval(_ADMIT, len(keys), *keys, *args)
    verdict, value, generation = (_text(v) for v in answer)
    if verdict == "duplicate":
        return Admission(stored=None, duplicate_of=value)
    admitted = Run.from_dict({**run.to_dict(), "generation": int(generation or 0)})
    if verdict == "own" and value in (ADMITTED, SENT):
        # Admitted before (a redelivered command task): the stored run is the one to send.
        earlier = stored(client, run_id=run.run_id)
        admitted = earlier.run if earlier else admitted
    return Admission(stored=Stored(run=admitted, state=value), fresh=verdict == "new")


def confirm(client: redis.Redis, *, run_id: str, replicas: int, timeout_seconds: float) -> int:
    """Wait until ``replicas`` Redis replicas hold everything written for ``run_id`` so far.

    ``WAIT`` counts the writes of the connection it is sent on, so it goes in one pipeline
    after a marker write (a key that expires by itself). The marker comes after every write of
    the enqueue (the admission, the record, the chain's message, the send mark), and a master
    replicates one ordered stream, so a replica holding the marker holds them all.

    Returns:
        How many replicas confirmed (at most ``replicas``: ``WAIT`` returns as soon as that
        many did); 0 and no wait when ``replicas`` is 0.
    """
    if replicas <= 0:
        return 0
    with client.pipeline(transaction=False) as pipe:
        pipe.set(f"{PREFIX}:confirm:{run_id}", "1", ex=CONFIRM_MARK_SECONDS)
        pipe.execute_command(  # type: ignore[no-untyped-call]
            "WAIT", replicas, max(1, int(timeout_seconds * 1000))
        )
        _set, confirmed = pipe.execute()
    return int(confirmed)


#: How long ``confirm``'s marker key lives; it only has to outlast its own ``WAIT``.
CONFIRM_MARK_SECONDS = 60


def stored(client: redis.Redis, *, run_id: str) -> Stored | None:
    """The run admission stored under ``run_id``, or None (never stored, or expired)."""
    raw = client.hgetall(run_key(run_id))
    fields = {_text(k): _text(v) for k, v in raw.items()}
    if "run" not in fields:
        return None
    data = json.loads(fields["run"])
    run = Run.from_dict({**data, "generation": int(fields.get("generation") or 0)})
    return Stored(
        run=run,
        state=fields.get("state", ""),
        redrives=int(fields.get("redrives") or 0),
        progress=tuple(fields.get("progress", "").split()),
    )


def add_progress(client: redis.Redis, *, run_id: str, token: str) -> tuple[str, ...]:
    """Note one more submission following the stored run; returns every token noted.

    At most ``MAX_FOLLOWERS`` are kept (the latest): each is one more key written per update.
    """
    found = stored(client, run_id=run_id)
    earlier = [t for t in (found.progress if found else ()) if t != token]
    tokens = (*earlier, token)[-MAX_FOLLOWERS:]
    client.hset(run_key(run_id), "progress", " ".join(tokens))
    return tokens


#: Submissions followed per run: a retried enqueue and a few re-runs of a workflow.
MAX_FOLLOWERS = 8


def advance(client: redis.Redis, *, run_id: str, from_state: str, to_state: str) -> bool:
    """Move the stored run on (``admitted`` → ``sent``); False if it was not in ``from_state``."""
    moved = client.eval(_ADVANCE, 2, run_key(run_id), OUTBOX_KEY, from_state, to_state, run_id)
    return bool(moved)


def due(client: redis.Redis, *, older_than_seconds: float) -> list[str]:
    """Run ids in the outbox for longer than ``older_than_seconds`` (by Redis's clock)."""
    seconds, _micro = client.time()
    found = client.zrangebyscore(OUTBOX_KEY, "-inf", float(seconds) - older_than_seconds)
    return [_text(v) for v in found]


def forget(client: redis.Redis, *, run_id: str) -> None:
    """Drop a run id from the outbox (its stored run is gone or settled)."""
    client.zrem(OUTBOX_KEY, run_id)


def count_redrive(client: redis.Redis, *, run_id: str) -> int:
    """One more re-drive of the run by the watchdog; returns how many so far."""
    return int(client.hincrby(run_key(run_id), "redrives", 1))


def note_missing(client: redis.Redis, *, run_id: str, missing: bool) -> bool:
    """Whether the run's messages were already missing on the previous look.

    Kombu moves a message from its queue to the unacked hash in two commands, so one look
    can miss a message in flight; a run is taken as lost only when two looks in a row miss it.
    """
    key = run_key(run_id)
    if not missing:
        client.hdel(key, "missing")
        return False
    return not client.hsetnx(key, "missing", "1")


def pending_task_ids(client: redis.Redis, *, queues: tuple[str, ...]) -> set[str]:
    """Ids of the tasks in ``queues`` and of those delivered but not yet acknowledged.

    One MULTI, so the snapshot is consistent. An unacknowledged task is being worked on, or
    held for its countdown (a retry, a lease wait), or waiting for redelivery after its worker
    was lost; in every case it will run, so its run is not lost.
    """
    with client.pipeline(transaction=True) as pipe:
        for queue in queues:
            for step in _PRIORITY_STEPS:
                pipe.lrange(f"{queue}{_PRIORITY_SEPARATOR}{step}" if step else queue, 0, -1)
        pipe.hvals(_UNACKED_KEY)
        *lists, unacked = pipe.execute()
    ids = set()
    for raw in (m for found in lists for m in found):
        ids.add(_task_id(json.loads(raw)))
    for raw in unacked:
        entry = json.loads(raw)
        ids.add(_task_id(entry[0] if isinstance(entry, list) else entry))
    ids.discard("")
    return ids


def _task_id(message: dict[str, Any]) -> str:
    headers = message.get("headers") or {}
    return str(headers.get("id") or "")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")
