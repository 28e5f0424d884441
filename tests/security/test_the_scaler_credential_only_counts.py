"""Attack: KEDA's scaler credential (``autoscaling.keda``), used as a Redis client.

Covers, against the real redis-server of the tests (ACLs on, ``k8see.redis_acl``'s users): the
``k8see-scaler`` user connects as KEDA's go-redis client does (HELLO 3 with AUTH, PING) and
gets each queue's length with a script as KEDA's redis scaler sends it (``EVAL``: ``TYPE``,
then ``LLEN``), including a priority step's list; everything else is refused with NOPERM,
whether sent directly or from inside a script: reading a record, a run or a queued message
(``GET``, ``HGETALL``, ``LRANGE``, ``LINDEX``), taking or adding messages (``LPOP``,
``LPUSH``, ``RPOPLPUSH``, ``DEL``), the length of a list that is not a queue, ``FLUSHALL``,
``CONFIG``, ``KEYS``, ``SCAN``, ``INFO``, ``ACL``, ``CLIENT LIST``, ``EVALSHA``, ``SCRIPT``,
``PUBLISH``;
and nothing changed.
"""

from __future__ import annotations

import redis

from k8see import state
from k8see.app import QUEUES
from k8see.run import Status
from tests.security.test_the_enqueue_credential_only_submits import VICTIM, refused

#: What KEDA's redis scaler sends each poll: the key's type, then its length.
LENGTH_SCRIPT = """
local kind = redis.call('type', KEYS[1]).ok
if kind == 'list' or kind == 'none' then return redis.call('llen', KEYS[1]) end
return redis.error_reply('not a list: ' .. kind)
"""
PRIORITY_LIST = "build\x06\x163"


def refused_in_script(client: redis.Redis, body: str, *keys: str) -> bool:
    """Whether Redis refuses a script's command for the user's ACL (not another error)."""
    try:
        client.eval(body, len(keys), *keys)  # type: ignore[no-untyped-call]
    except redis.exceptions.NoPermissionError:
        return True
    except redis.exceptions.ResponseError as exc:
        return "can't run this command" in str(exc) or "can't access" in str(exc)
    return False


def test_the_scaler_credential_reads_queue_lengths_and_nothing_else(
    redis_urls: dict[str, str],
) -> None:
    # Given queued messages, a priority step's list, a record and a run
    admin = redis.Redis.from_url(redis_urls["admin"])
    admin.lpush("build", "m1", "m2", "m3")
    admin.lpush(PRIORITY_LIST, "p1")
    admin.lpush("default", "d1")
    record = state.record_key(VICTIM, 1)
    state.set_status(admin, repo=VICTIM, pr=1, generation=1, status=Status.READY, ttl_seconds=60)
    admin.hset("k8see:run:0123456789ab", "run", "{}")
    before = {key: admin.dump(key) for key in admin.keys("*")}

    # When KEDA connects as the scaler (go-redis: HELLO 3 AUTH, then PING)
    url = redis_urls["scaler"]
    assert "k8see-scaler:" in url
    scaler = redis.Redis.from_url(url, protocol=3)
    assert scaler.ping()
    # Then it reads each queue's length the way KEDA's script does
    lengths = {q: scaler.eval(LENGTH_SCRIPT, 1, q) for q in QUEUES}  # type: ignore[no-untyped-call]
    assert lengths == {"default": 1, "build": 3, "deploy": 0, "maintenance": 0}
    assert scaler.eval(LENGTH_SCRIPT, 1, PRIORITY_LIST) == 1  # type: ignore[no-untyped-call]
    assert scaler.llen("build") == 3

    # And everything else is refused, directly...
    direct = [
        ("GET", record), ("HGETALL", "k8see:run:0123456789ab"), ("LLEN", "k8see:intake"),
        ("LRANGE", "build", "0", "-1"), ("LINDEX", "build", "0"), ("LPOP", "build"),
        ("LPUSH", "build", "{}"), ("RPOPLPUSH", "build", "deploy"), ("DEL", "build"),
        ("SET", "build-x", "1"), ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"),
        ("KEYS", "*"), ("SCAN", "0"), ("INFO",), ("ACL", "LIST"), ("PUBLISH", "celeryev", "x"),
        ("EVALSHA", "0" * 40, "0"), ("SCRIPT", "FLUSH"), ("CLIENT", "LIST"),
    ]  # fmt: skip
    for command in direct:
        assert refused(scaler, *command), command
    # ... and from inside a script, where the ACL applies to every call
    assert refused_in_script(scaler, "return redis.call('get', KEYS[1])", record)
    assert refused_in_script(scaler, "return redis.call('lrange', KEYS[1], 0, -1)", "build")
    assert refused_in_script(scaler, "return redis.call('lpop', KEYS[1])", "build")
    assert refused_in_script(scaler, "return redis.call('flushall')")
    assert refused_in_script(scaler, LENGTH_SCRIPT, record)  # a key outside the queues
    assert refused_in_script(scaler, "return redis.call('llen', KEYS[1])", "k8see:intake")
    # Nothing changed
    assert {key: admin.dump(key) for key in admin.keys("*")} == before
