"""Capacity admission: platform-wide ceilings, and a fair queue for the deploys over them.

An *environment* (``<repo>#<pr>``) is admitted once, at the deploy stage of its first run;
redeploys of an admitted environment, and every destroy, pass without a look at the
ceilings. What counts (``capacity.*`` settings): the number of admitted environments and the
sum of their namespaces' ResourceQuota hard limits (``limits.cpu``, ``limits.memory``,
``requests.storage``), as the run's validated config sets them (``quota.quota_hard``).

Everything is decided in Redis by one Lua script per verb, so two deploys racing for the last
slot cannot both take it, and a worker decides only from state it can see there:

- ``k8see:capacity:admitted`` (hash): environment -> its demand and project;
- ``k8see:capacity:waiting`` (hash): environment -> project, demand and the waiting run;
- ``k8see:capacity:queue:<project>`` (list): the project's waiting environments, FIFO;
- ``k8see:capacity:projects`` (list): projects with waiters, in round-robin order.

The head of the queue is the first environment of the first project; once admitted, its
project moves to the end of the rotation. Admission is strictly in that order: a head that
does not fit holds the others back (no starvation of large environments). A newer run of a
waiting environment replaces the stored one and keeps its place; ``release`` (the destroy,
or a PR closed while waiting) takes the environment out of both and admits the heads that
fit now, returning their runs for the caller to send. Nothing is ever evicted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import redis

from k8see.coordination import PREFIX
from k8see.manifests import quota
from k8see.quantity import ceil_scaled
from k8see.settings import CapacitySettings

ADMITTED_KEY = f"{PREFIX}:capacity:admitted"
WAITING_KEY = f"{PREFIX}:capacity:waiting"
PROJECTS_KEY = f"{PREFIX}:capacity:projects"
QUEUE_PREFIX = f"{PREFIX}:capacity:queue:"
KEYS = [ADMITTED_KEY, WAITING_KEY, PROJECTS_KEY]
#: The dimensions counted, each in the unit the Lua script adds up.
DIMENSIONS = ("cpu_millicores", "memory_mib", "storage_mib")

# Shared by every script: the totals, the fit test, the position and the promotion loop.
_COMMON = """
local A, W, R = KEYS[1], KEYS[2], KEYS[3]
local QP = ARGV[1]
local limits = cjson.decode(ARGV[2])
local dims = {'cpu_millicores', 'memory_mib', 'storage_mib'}

local function fits(demand)
  local count = redis.call('HLEN', A)
  if limits.environments > 0 and count + 1 > limits.environments then return false end
  local totals = {0, 0, 0}
  for _, raw in ipairs(redis.call('HVALS', A)) do
    local held = cjson.decode(raw)
    for i, d in ipairs(dims) do totals[i] = totals[i] + (tonumber(held[d]) or 0) end
  end
  for i, d in ipairs(dims) do
    local ceiling = tonumber(limits[d]) or 0
    if ceiling > 0 and totals[i] + (tonumber(demand[d]) or 0) > ceiling then return false end
  end
  return true
end

-- Round robin: the k-th waiter of every project comes after the (k-1)-th of all of them.
local function position(env, project)
  local index = nil
  local mine = redis.call('LRANGE', QP .. project, 0, -1)
  for i, e in ipairs(mine) do if e == env then index = i - 1 end end
  if index == nil then return 0 end
  local before = 0
  local reached = false
  for _, p in ipairs(redis.call('LRANGE', R, 0, -1)) do
    if p == project then reached = true end
    local n = redis.call('LLEN', QP .. p)
    before = before + math.min(n, index)
    if not reached and n > index then before = before + 1 end
  end
  return before + 1
end

local function promote()
  local admitted = {}
  while true do
    local project = redis.call('LINDEX', R, 0)
    if not project then break end
    local env = redis.call('LINDEX', QP .. project, 0)
    if not env then
      redis.call('LPOP', R)
    else
      local waiting = cjson.decode(redis.call('HGET', W, env) or '{}')
      local demand = waiting.demand or {}
      if not fits(demand) then break end
      demand.project = project
      redis.call('HSET', A, env, cjson.encode(demand))
      redis.call('HDEL', W, env)
      redis.call('LPOP', QP .. project)
      redis.call('LPOP', R)
      if redis.call('LLEN', QP .. project) > 0 then redis.call('RPUSH', R, project) end
      table.insert(admitted, env)
      table.insert(admitted, waiting.run or '')
    end
  end
  return admitted
end

local function forget(env)
  local raw = redis.call('HGET', W, env)
  if not raw then return end
  local project = cjson.decode(raw).project
  redis.call('HDEL', W, env)
  redis.call('LREM', QP .. project, 0, env)
  if redis.call('LLEN', QP .. project) == 0 then redis.call('LREM', R, 0, project) end
end
"""

# ARGV: queue prefix, limits, env, project, demand, run, generation, exists ("1"/"0").
_ADMIT = (
    _COMMON
    + """
local env, project, run, generation = ARGV[3], ARGV[4], ARGV[6], tonumber(ARGV[7])
local demand = cjson.decode(ARGV[5])
if redis.call('HEXISTS', A, env) == 1 then return {'admitted', 0} end
if ARGV[8] == '1' then
  demand.project = project
  forget(env)
  redis.call('HSET', A, env, cjson.encode(demand))
  return {'admitted', 0}
end
local raw = redis.call('HGET', W, env)
if raw then
  local waiting = cjson.decode(raw)
  if generation >= (tonumber(waiting.generation) or 0) then
    waiting.run, waiting.generation, waiting.demand = run, generation, demand
    redis.call('HSET', W, env, cjson.encode(waiting))
  end
  project = waiting.project
else
  local w = {project = project, demand = demand, run = run, generation = generation}
  redis.call('HSET', W, env, cjson.encode(w))
  redis.call('RPUSH', QP .. project, env)
  if redis.call('LPOS', R, project) == false then redis.call('RPUSH', R, project) end
end
local promoted = promote()
for i = 1, #promoted, 2 do
  if promoted[i] == env then
    table.remove(promoted, i + 1)
    table.remove(promoted, i)
    table.insert(promoted, 1, 0)
    table.insert(promoted, 1, 'admitted')
    return promoted
  end
end
table.insert(promoted, 1, position(env, project))
table.insert(promoted, 1, 'waiting')
return promoted
"""
)

# ARGV: queue prefix, limits, env (or "" to only promote).
_RELEASE = (
    _COMMON
    + """
local env = ARGV[3]
local released = 0
if env ~= '' then
  released = redis.call('HDEL', A, env)
  forget(env)
end
local promoted = promote()
table.insert(promoted, 1, released)
return promoted
"""
)

# ARGV: queue prefix, limits.
_POSITIONS = (
    _COMMON
    + """
local out = {}
for _, env in ipairs(redis.call('HKEYS', W)) do
  local waiting = cjson.decode(redis.call('HGET', W, env))
  table.insert(out, env)
  table.insert(out, position(env, waiting.project))
end
return out
"""
)


@dataclass(frozen=True)
class Decision:
    """What ``admit`` decided for one environment.

    Attributes:
        admitted: The environment may deploy now.
        position: Its place in the fair queue (1 = next) while it waits; 0 when admitted.
        promoted: Runs (JSON) of other environments admitted meanwhile, for the caller to send.
    """

    admitted: bool
    position: int = 0
    promoted: list[str] = field(default_factory=list)


def env_key(repo: str, pr: int) -> str:
    """The environment's name in the capacity keys (repositories compare case-blind)."""
    return f"{repo.lower()}#{pr}"


def limits(settings: CapacitySettings) -> dict[str, int]:
    """The ceilings in the units the scripts count; 0 means unlimited."""
    return {
        "environments": settings.max_environments or 0,
        "cpu_millicores": ceil_scaled(settings.max_cpu, quota_unit("cpu"))
        if settings.max_cpu
        else 0,
        "memory_mib": ceil_scaled(settings.max_memory, 2**20) if settings.max_memory else 0,
        "storage_mib": ceil_scaled(settings.max_storage, 2**20) if settings.max_storage else 0,
    }


def quota_unit(dimension: str) -> Decimal:
    """CPU is counted in millicores (``0.001`` cores)."""
    return Decimal("0.001") if dimension == "cpu" else Decimal(1)


def enabled(settings: CapacitySettings) -> bool:
    """Whether any ceiling is set (no ceiling: nothing is recorded or checked)."""
    return any(limits(settings).values())


def demand_of(
    *, databases: dict[str, dict[str, Any]], resources: dict[str, Any] | None
) -> dict[str, int]:
    """An environment's counted demand: its ResourceQuota's hard limits (``quota_hard``)."""
    hard = quota.quota_hard(databases=databases, resources=resources)
    return {
        "cpu_millicores": ceil_scaled(hard["limits.cpu"], quota_unit("cpu")),
        "memory_mib": ceil_scaled(hard["limits.memory"], 2**20),
        "storage_mib": ceil_scaled(hard["requests.storage"], 2**20),
    }


def _args(settings: CapacitySettings, *rest: str) -> list[str]:
    return [QUEUE_PREFIX, json.dumps(limits(settings)), *rest]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def admit(
    client: redis.Redis,
    *,
    settings: CapacitySettings,
    env: str,
    project: str,
    demand: dict[str, int],
    run: str,
    generation: int,
    exists: bool = False,
) -> Decision:
    """Admit ``env`` now, or put (keep) it in the fair queue with ``run`` as its waiting run.

    Args:
        env: ``env_key(repo, pr)``.
        project: The fairness group (the config's ``projectId``).
        demand: ``demand_of(...)`` for the run's config.
        run: The run's JSON, sent again from deploy when admitted later.
        generation: The run's generation; an older one never replaces a newer waiting run.
        exists: The environment runs already (deployed before capacity was recorded): it is
            admitted over the ceilings, since a running environment is never turned away.
    """
    reply = client.eval(
        _ADMIT,
        len(KEYS),
        *KEYS,
        *_args(
            settings,
            env,
            project,
            json.dumps(demand),
            run,
            str(generation),
            "1" if exists else "0",
        ),
    )
    verdict, position, *rest = reply
    return Decision(
        admitted=_text(verdict) == "admitted",
        position=int(position),
        promoted=[_text(r) for r in rest[1::2] if r],
    )


def release(client: redis.Redis, *, settings: CapacitySettings, env: str = "") -> list[str]:
    """Take ``env`` out (admitted or waiting) and admit the queue's heads that fit now.

    With ``env`` empty it only admits (the beat's re-check after a lost wake-up).

    Returns:
        The runs (JSON) admitted, for the caller to send from deploy.
    """
    reply = client.eval(_RELEASE, len(KEYS), *KEYS, *_args(settings, env))
    return [_text(r) for r in reply[1:][1::2] if r]


def positions(client: redis.Redis, *, settings: CapacitySettings) -> dict[str, int]:
    """Every waiting environment's place in the queue (1 = next)."""
    reply = client.eval(_POSITIONS, len(KEYS), *KEYS, *_args(settings))
    return {_text(reply[i]): int(reply[i + 1]) for i in range(0, len(reply), 2)}


# ARGV: env, demand. Only an admitted environment's demand changes (it never admits).
_RECOUNT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local held = cjson.decode(raw)
for k, v in pairs(cjson.decode(ARGV[2])) do held[k] = v end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(held))
return 1
"""


def recount(client: redis.Redis, *, env: str, demand: dict[str, int]) -> bool:
    """Count an admitted environment for ``demand`` from now on (the deploy's verified
    config); False when it is not admitted (released meanwhile: nothing to correct)."""
    return bool(client.eval(_RECOUNT, 1, ADMITTED_KEY, env, json.dumps(demand)))


def admitted(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """The admitted environments and what each counts for."""
    raw = client.hgetall(ADMITTED_KEY)
    return {_text(k): json.loads(v) for k, v in raw.items()}


def order(client: redis.Redis, *, settings: CapacitySettings) -> list[str]:
    """The waiting environments, next first."""
    return [env for env, _ in sorted(positions(client, settings=settings).items(), key=_second)]


def _second(item: tuple[str, int]) -> int:
    return item[1]
