"""The webhook inbox: a Redis stream that an accepted delivery is in before GitHub hears 202.

GitHub waits 10 seconds for an answer and does not retry on its own, so a delivery is
accepted in ONE Redis call and the slow part (deciding the run, bumping the generation,
sending the chain) happens after the answer:

1. ``accept`` is one Lua script: if the delivery id (``X-GitHub-Delivery``) was not seen, it
   marks it seen for ``api.delivery_ttl_seconds`` and appends the entry to the stream
   ``k8see:api:inbox``. Both or neither. A replay finds the mark and appends nothing.
   Only when the script has returned does the API answer 202; if Redis fails or stalls past
   ``api.redis_timeout_seconds`` it answers 503 and nothing is marked, so GitHub's
   redelivery (by hand or through its API) is accepted later.
2. ``Drainer`` reads the stream as a consumer group (``XREADGROUP``): an entry stays in the
   group's pending list until its handler returned, then it is acknowledged and deleted.
   An API process that dies mid-entry leaves it pending; any API process takes it over after
   ``api.inbox_claim_idle_seconds`` (``XAUTOCLAIM``). Handlers are idempotent (the enqueue
   client deduplicates the event), so taking an entry over twice is harmless.
3. An entry whose handler raised ``MAX_ATTEMPTS`` times is moved, whole, to the dead-letter
   stream ``k8see:api:inbox-dead`` and logged, never dropped: an operator can read it with
   ``XRANGE`` and replay it.

So an accepted delivery is lost only if Redis loses a write it acknowledged; the platform's
Redis runs with the append-only file (``appendfsync everysec``), the same guarantee every
queued run and environment record has.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from k8see.coordination import PREFIX

__all__ = ["DEAD_KEY", "INBOX_KEY", "MAX_ATTEMPTS", "Drainer", "Entry", "accept", "ensure_group"]

INBOX_KEY = f"{PREFIX}:api:inbox"
DEAD_KEY = f"{PREFIX}:api:inbox-dead"
GROUP = "k8see-api"
#: Handler failures of one entry before it moves to the dead-letter stream.
MAX_ATTEMPTS = 5
_ATTEMPTS_KEY = f"{PREFIX}:api:inbox-attempts"

log = logging.getLogger(__name__)

# KEYS: delivery mark, inbox. ARGV: mark ttl, delivery id, event, kind, data.
_ACCEPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return false end
local id = redis.call('XADD', KEYS[2], '*', 'delivery', ARGV[2], 'event', ARGV[3],
                      'kind', ARGV[4], 'data', ARGV[5])
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
return id
"""


def delivery_key(delivery: str) -> str:
    return f"{PREFIX}:api:delivery:{delivery}"


@dataclass(frozen=True)
class Entry:
    """One accepted delivery: what it is (``kind``) and what the handler needs (``data``)."""

    delivery: str
    event: str
    kind: str
    data: dict[str, Any]
    id: str = ""


def accept(client: redis.Redis, entry: Entry, *, ttl_seconds: int) -> str | None:
    """Append ``entry`` unless its delivery was seen; the stream id, or None for a replay.

    Raises:
        redis.RedisError: Redis failed or did not answer in time; nothing was stored.
    """
    found = client.eval(
        _ACCEPT,
        2,
        delivery_key(entry.delivery),
        INBOX_KEY,
        ttl_seconds,
        entry.delivery,
        entry.event,
        entry.kind,
        json.dumps(entry.data, separators=(",", ":")),
    )
    return _text(found) if found else None


def ensure_group(client: redis.Redis) -> None:
    """Create the inbox stream and its consumer group if missing (idempotent)."""
    try:
        client.xgroup_create(INBOX_KEY, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class Drainer:
    """Hands every inbox entry to ``handle``, at least once, in a background thread.

    Args:
        client: Redis (the API's connection).
        handle: Called with each entry; returning means done (the entry is deleted).
        claim_idle_seconds: Take over entries another consumer left pending this long.
        block_seconds: How long one read waits for new entries.
    """

    def __init__(
        self,
        client: redis.Redis,
        handle: Callable[[Entry], None],
        *,
        claim_idle_seconds: float,
        block_seconds: float = 1.0,
    ) -> None:
        self._client = client
        self._handle = handle
        self._claim_idle_ms = int(claim_idle_seconds * 1000)
        self._block_ms = int(block_seconds * 1000)
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="k8see-inbox", daemon=True)
        self._thread.start()

    def stop(self, timeout_seconds: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)

    def drain_once(self) -> int:
        """Handle what is there now (claimed-over entries first); how many were handled."""
        entries = self._claim() or self._read()
        for entry in entries:
            self._process(entry)
        return len(entries)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ensure_group(self._client)
                while not self._stop.is_set():
                    self.drain_once()
            except redis.RedisError as exc:
                log.warning("The webhook inbox cannot reach Redis (%s); retrying.", exc)
                self._stop.wait(1.0)

    def _claim(self) -> list[Entry]:
        answer: Any = self._client.xautoclaim(
            INBOX_KEY, GROUP, self.consumer, min_idle_time=self._claim_idle_ms, count=10
        )
        return [_entry(i, f) for i, f in answer[1] if f]

    def _read(self) -> list[Entry]:
        answer: Any = self._client.xreadgroup(
            GROUP, self.consumer, {INBOX_KEY: ">"}, count=10, block=self._block_ms
        )
        return [_entry(i, f) for _stream, items in answer or [] for i, f in items if f]

    def _process(self, entry: Entry) -> None:
        try:
            self._handle(entry)
        except redis.RedisError:
            raise  # left pending: taken over again once Redis answers
        except Exception:
            attempts = int(self._client.hincrby(_ATTEMPTS_KEY, entry.id, 1))
            log.exception(
                "Delivery %s (%s) failed (attempt %d of %d).",
                entry.delivery,
                entry.event,
                attempts,
                MAX_ATTEMPTS,
            )
            if attempts < MAX_ATTEMPTS:
                return  # left pending: retried after claim_idle_seconds
            fields = {
                "delivery": entry.delivery,
                "event": entry.event,
                "kind": entry.kind,
                "data": json.dumps(entry.data, separators=(",", ":")),
            }
            self._client.xadd(DEAD_KEY, fields)  # type: ignore[arg-type]
            log.error(
                "Delivery %s moved to %s after %d failures; replay it from there.",
                entry.delivery,
                DEAD_KEY,
                attempts,
            )
        self._done(entry)

    def _done(self, entry: Entry) -> None:
        with self._client.pipeline(transaction=True) as pipe:
            pipe.xack(INBOX_KEY, GROUP, entry.id)
            pipe.xdel(INBOX_KEY, entry.id)
            pipe.hdel(_ATTEMPTS_KEY, entry.id)
            pipe.execute()


def _entry(entry_id: Any, fields: dict[Any, Any]) -> Entry:
    values = {_text(k): _text(v) for k, v in fields.items()}
    try:
        data = json.loads(values.get("data") or "{}")
    except ValueError:
        data = {}
    return Entry(
        delivery=values.get("delivery", ""),
        event=values.get("event", ""),
        kind=values.get("kind", ""),
        data=data if isinstance(data, dict) else {},
        id=_text(entry_id),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
