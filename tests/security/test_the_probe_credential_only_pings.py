"""Attack: the Redis probes' credential (``k8see-probe``, in every Redis pod's environment).

Covers, against the real redis-server of the tests (ACLs on, ``k8see.redis_acl``'s users): the
``k8see-probe`` user authenticates and gets PONG, and every other command of the server, each
subcommand included (``COMMAND LIST`` asked of the server itself, checked with
``ACL DRYRUN``), is refused: no key read or written (``GET``, ``SET``, ``KEYS``, ``SCAN``), no
``CONFIG``, ``ACL``, ``EVAL``, ``INFO``, ``ROLE``, ``CLIENT``, ``PUBLISH``/``SUBSCRIBE``,
``FLUSHALL`` or ``SHUTDOWN``; and nothing changed. Any rule broader than ``+ping`` lets at
least one more command through and fails the exhaustive check.
"""

from __future__ import annotations

import redis

from tests.security.test_the_enqueue_credential_only_submits import refused

#: What redis-cli sends: AUTH, then the probe's PING. AUTH, HELLO, QUIT and RESET are open to
#: every connection whatever its ACL (Redis's "no-auth" commands).
ALLOWED = {"ping", "auth", "hello", "quit", "reset"}


def dry_run(admin: redis.Redis, user: str, name: str, arity: int) -> bool:
    """Whether ``user`` may run command ``name`` (``config|get`` for a subcommand), asked with
    ``ACL DRYRUN`` and enough placeholder arguments for the command's arity."""
    words = name.split("|")
    words += ["x"] * max(0, abs(arity) - len(words))
    reply = admin.execute_command("ACL", "DRYRUN", user, *words)  # type: ignore[no-untyped-call]
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    return text == "OK"


def test_the_probe_credential_pings_and_does_nothing_else(redis_urls: dict[str, str]) -> None:
    # Given a record, a queued message and a run
    admin = redis.Redis.from_url(redis_urls["admin"])
    admin.set("k8see:record:acme/app:1", "ready")
    admin.lpush("build", "m1")
    admin.hset("k8see:run:0123456789ab", "run", "{}")
    before = {key: admin.dump(key) for key in admin.keys("*")}

    # When the probe connects as redis-cli does (AUTH k8see-probe <password>, then PING)
    url = redis_urls["probe"]
    assert "k8see-probe:" in url
    probe = redis.Redis.from_url(url)
    assert probe.ping()

    # Then every command the server has, but PING (and AUTH/HELLO, open to anyone), is refused
    # (raw replies: redis-py's parser of COMMAND replies does not know COMMAND LIST)
    raw = redis.Redis.from_url(redis_urls["admin"], decode_responses=True)
    raw.response_callbacks.clear()
    names = list(raw.execute_command("COMMAND", "LIST"))  # type: ignore[no-untyped-call]
    assert len(names) > 200 and "config|get" in names  # subcommands are listed too
    infos = raw.execute_command("COMMAND", "INFO", *names)  # type: ignore[no-untyped-call]
    arities = {str(info[0]): int(info[1]) for info in infos}
    assert set(arities) == set(names)
    containers = {n.split("|")[0] for n in names if "|" in n}  # CONFIG: run as its subcommands
    commands = [n for n in names if n not in containers]
    allowed = {n for n in commands if dry_run(admin, "k8see-probe", n, arities[n])}
    assert allowed <= ALLOWED and "ping" in allowed, allowed

    # ... no key or channel pattern either (harmless with PING alone, but it must stay so)
    user = raw.execute_command("ACL", "GETUSER", "k8see-probe")  # type: ignore[no-untyped-call]
    described = user if isinstance(user, dict) else dict(zip(user[::2], user[1::2], strict=True))
    assert described["commands"] == "-@all +ping"
    assert described["keys"] == "" and described["channels"] == ""

    # ... and, sent for real, the commands an intruder would try first
    attempts = [
        ("GET", "k8see:record:acme/app:1"), ("SET", "x", "1"), ("KEYS", "*"), ("SCAN", "0"),
        ("DEL", "build"), ("LPOP", "build"), ("LRANGE", "build", "0", "-1"),
        ("HGETALL", "k8see:run:0123456789ab"), ("CONFIG", "GET", "*"),
        ("CONFIG", "SET", "appendonly", "no"), ("ACL", "LIST"), ("ACL", "WHOAMI"),
        ("EVAL", "return 1", "0"), ("INFO",), ("INFO", "replication"), ("ROLE",),
        ("CLIENT", "LIST"), ("PUBLISH", "celeryev", "x"), ("FLUSHALL",), ("DBSIZE",),
        ("SELECT", "1"), ("MULTI",), ("SHUTDOWN", "NOSAVE"), ("REPLICAOF", "NO", "ONE"),
    ]  # fmt: skip
    for command in attempts:
        assert refused(probe, *command), command
    # Nothing changed, and Redis still runs
    assert {key: admin.dump(key) for key in admin.keys("*")} == before
    assert admin.ping()
