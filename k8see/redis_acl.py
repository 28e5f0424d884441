"""Redis ACL users per role: the one place their rules are written.

Every process that reaches Redis connects as the user of its role, and each user can do only
what that role needs (issue 14, "least privilege in Redis"):

- ``enqueue`` (``k8see enqueue`` in a workflow or a runner): appends a request to the intake
  list (``RPUSH k8see:intake``, write-only) and reads progress keys
  (``GET k8see:progress:<token>``, read-only). The token is random, made by the client and
  printed by ``k8see enqueue``, so a credential reads the progress of the runs it submitted and
  nothing else: no record, no queue, no ``KEYS``, ``FLUSHALL`` or ``CONFIG``. Workers admit the
  request and send its chain (``k8see.submission``).
- ``worker`` (every pool, and the metrics server): every key and channel, every command but
  the ``@dangerous`` ones (``FLUSHALL``, ``CONFIG``, ``KEYS``, ``DEBUG``, ``ACL``, ...).
- ``beat``: sends the maintenance jobs to the ``maintenance`` queue, nothing else.
- ``flower``: Celery's events, queue lengths and worker control (it can revoke tasks; that is
  what admins use it for), never a ``k8see:*`` key.
- ``scaler``: KEDA's Redis scaler (``autoscaling.keda`` in the platform chart) reads the
  length of each queue's lists and nothing else: its one script (``EVAL``) calls ``TYPE`` and
  ``LLEN`` on a queue's list. No record, no message, no other command (``LRANGE``, ``GET``,
  ``FLUSHALL``, ...). ``EVAL`` still lets it run a busy script (Redis's ``busy-reply-threshold``
  then answers BUSY until ``SCRIPT KILL``), so its password stays in the Secret KEDA reads.
- ``probe``: the platform chart's liveness and readiness probes of Redis (``redis-cli
  --user k8see-probe -e ping``): ``PING`` and nothing else, no key, no channel. A probe that
  proves Redis answers needs no more, and its password sits in every Redis pod's environment.
  Readiness does not ask ``ROLE``/``INFO replication`` whether a replica finished its sync: a
  replica whose master is gone would then never be ready, and the StatefulSet (OrderedReady)
  would not recreate the other Redis pod until it was (docs/operations.md, "Probes").
- ``admin``: everything; ``k8see status`` without ``--repo`` names this user.

The default user cannot be used (``DEFAULT_USER``). ``aclfile`` writes a Redis ``aclfile``
(the platform chart, the compose file and the sandbox use it), ``apply`` sets the users on a
running server (tests).
The chart cannot import Python, so ``charts/k8see-platform/files/acl-rules.txt`` holds a copy
of ``rules_file()``, kept equal by ``tests/security/test_redis_acl_roles.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from urllib.parse import quote, urlsplit, urlunsplit

import redis

from k8see.app import QUEUES

__all__ = [
    "INTAKE_KEY",
    "PROGRESS_PREFIX",
    "ROLES",
    "aclfile",
    "apply",
    "progress_key",
    "role_of",
    "rules",
    "rules_file",
    "url_for",
    "username",
]

#: The roles, each one Redis user ``k8see-<role>``.
ROLES = ("enqueue", "worker", "beat", "flower", "scaler", "probe", "admin")
#: Where ``k8see enqueue`` appends its requests (a list, write-only for the enqueue user).
INTAKE_KEY = "k8see:intake"
#: ``<prefix><token>``: one submission's progress, readable by the enqueue user.
PROGRESS_PREFIX = "k8see:progress:"

#: Kombu's Redis transport keeps a queue's messages in a list named after it, one list per
#: priority step (``<queue>\x06\x16<n>``, so ``~<queue>*``), and an exchange's bindings in a set.
_BINDINGS = "_kombu.binding*"

# Connection housekeeping redis-py and kombu send on every connection: HELLO/AUTH, CLIENT
# SETNAME, PING, SELECT where a URL names a db, and QUIT/RESET.
# (redis-py's CLIENT SETINFO is Redis 7.2's; 7.0 lacks it and redis-py ignores the refusal).
_CONNECTION = ["+@connection", "-client", "+client|setname", "+client|id"]

_RULES: dict[str, list[str]] = {
    "enqueue": [
        *_CONNECTION,
        "+rpush",
        "+hgetall",
        f"%W~{INTAKE_KEY}",
        f"%R~{PROGRESS_PREFIX}*",
    ],
    "worker": ["+@all", "-@dangerous", "~*", "&*"],
    "beat": [
        *_CONNECTION,
        # Publishing a job: the queue's binding set, the queue's lists (LPUSH in a MULTI with
        # a length check) and Celery's event channel for the "sent" event. The keys are the
        # bound: nothing of k8see's state, no other queue.
        "+@read",
        "+@write",
        "+@transaction",
        "+@pubsub",
        "-@dangerous",
        f"~{_BINDINGS}",
        "~maintenance*",
        "&*",
    ],
    "flower": [
        *_CONNECTION,
        # Queue lengths for the broker page, worker control (inspect, revoke, pool resize)
        # with its reply queues, and the events every worker publishes.
        "+@read",
        "+@write",
        "+@list",
        "+@set",
        "+@pubsub",
        "+@transaction",
        # Kombu's Redis transport runs its fanout and reply-queue steps as Lua scripts with
        # declared keys (the key patterns below still apply inside them).
        "+eval",
        "+evalsha",
        "+script|load",
        "+script|exists",
        "+time",
        "+@sortedset",
        "-@dangerous",
        f"~{_BINDINGS}",
        *(f"~{queue}*" for queue in QUEUES),
        "~celery",
        "~*.reply.celery.pidbox*",
        "~celeryev.*",
        "~celery-task-meta-*",
        "~unacked*",
        "&*",
    ],
    "scaler": [
        *_CONNECTION,
        # KEDA's redis scaler (pkg/scalers/redis_scaler.go) pings on connect, then sends one
        # Lua script per poll: TYPE of the list, then LLEN (ZCARD/SCARD/HLEN for other types,
        # which a queue never is). Its client, go-redis v9, also tries CLIENT SETINFO and
        # CLIENT MAINT_NOTIFICATIONS on connect and goes on without them when refused. EVAL
        # declares its key read-write, so the key patterns are full ones; the commands are
        # what keep them read-only.
        "+eval",
        "+type",
        "+llen",
        *(f"~{queue}*" for queue in QUEUES),
    ],
    # redis-cli sends AUTH (always allowed) and then the probe's PING: nothing else.
    "probe": ["+ping"],
    "admin": ["+@all", "~*", "&*"],
}


def username(role: str) -> str:
    """The Redis user of ``role``: ``k8see-<role>``."""
    if role not in ROLES:
        raise ValueError(f"unknown Redis role {role!r}; one of {', '.join(ROLES)}")
    return f"k8see-{role}"


def role_of(url: str) -> str | None:
    """The role whose user a Redis URL names, or None (the default user, or another)."""
    user = urlsplit(url).username or ""
    return next((role for role in ROLES if username(role) == user), None)


def rules(role: str) -> list[str]:
    """The ACL rules of ``role`` (what follows ``ACL SETUSER <user> reset on <password>``)."""
    username(role)
    return ["resetkeys", "resetchannels", "-@all", *_RULES[role]]


def rules_file() -> str:
    """``<role> <rules>`` per line: what the platform chart builds its aclfile from."""
    return "".join(f"{role} {' '.join(rules(role))}\n" for role in ROLES)


#: The default user: on, but with no password and no ``nopass``, so no connection can use it
#: (every unauthenticated command gets NOAUTH, and ``AUTH default ...`` always fails). It is not
#: ``off`` because Redis 7.0 (Debian's 7.0.15) replays the append-only file as the default
#: user and re-checks its permissions at each ``EXEC``: with the default user off, a restart
#: refused every MULTI/EXEC in the file ("-NOPERM ACLs rules changed ...") and lost every
#: record and admission while plain queue pushes came back
#: (tests/drills/test_redis_restarted_with_queued_runs.py).
DEFAULT_USER = "user default on resetpass ~* &* +@all"


def aclfile(passwords: Mapping[str, str]) -> str:
    """A Redis ``aclfile``: the default user unusable (``DEFAULT_USER``), and one user per role
    in ``passwords``.

    Passwords are stored as SHA-256 hashes, so the file itself does not hold them.
    """
    lines = [DEFAULT_USER]
    for role in ROLES:
        if role in passwords:
            digest = hashlib.sha256(passwords[role].encode()).hexdigest()
            quoted = " ".join(rules(role))
            lines.append(f"user {username(role)} reset on #{digest} {quoted}")
    return "\n".join(lines) + "\n"


def apply(client: redis.Redis, passwords: Mapping[str, str], *, default_off: bool) -> None:
    """Create (or reset) the role users on a running server; optionally turn ``default`` off.

    ``client`` must be allowed ``ACL`` (the admin, or the default user before it is turned off).
    """
    for role in ROLES:
        if role in passwords:
            client.execute_command(  # type: ignore[no-untyped-call]
                "ACL", "SETUSER", username(role), "reset", "on", f">{passwords[role]}",
                *rules(role),
            )  # fmt: skip
    if default_off:
        client.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", *DEFAULT_USER.split()[1:]
        )


def url_for(url: str, role: str, password: str) -> str:
    """``url`` with the user of ``role`` and ``password`` in it (any user in it replaced)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(username(role), safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def progress_key(token: str) -> str:
    """The key of one submission's progress."""
    return f"{PROGRESS_PREFIX}{token}"
