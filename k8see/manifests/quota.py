"""The ResourceQuota and LimitRange of a PR namespace, sized from what the environment runs.

Pure functions (docs/environments.md "2. Guardrails"; ``manifests.guardrails`` assembles them
with the NetworkPolicies of ``manifests.network``):

- the ResourceQuota ``pr-quota``, computed from what the environment will run. For the
  default sizes it reproduces the reference's "Computed results" table exactly; anything
  larger than a default (app ``resources``, a database's ``resources``, ``storage``,
  ``instances``) adds the difference, so a bigger config gets a bigger quota instead of a
  deploy that quota-fails. Smaller values never shrink it below the reference.
- the LimitRange ``pr-limits``, whose maxima grow the same way.

CPU is counted in millicores and memory and storage in MiB, with the reference's integer
division for the 15 % limit buffer. The admission check (``k8see.admission``) and the capacity
ledger (``k8see.capacity``) size an environment with the same ``quota_hard``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from k8see import names
from k8see.errors import ConfigError
from k8see.quantity import QuantityError, ceil_scaled

QUOTA_NAME = "pr-quota"
LIMITS_NAME = "pr-limits"
DATABASES = ("postgresql", "mongodb", "redis", "minio", "mariadb")


@dataclass(frozen=True)
class Budget:
    """An amount of namespace resources; CPU in millicores, memory and storage in MiB."""

    req_cpu: int = 0
    lim_cpu: int = 0
    req_mem: int = 0
    lim_mem: int = 0
    storage: int = 0
    pvcs: int = 0
    pods: int = 0
    services: int = 0

    def __add__(self, other: Budget) -> Budget:
        return Budget(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def scaled(self, factor: int) -> Budget:
        """Every amount but services times ``factor`` (one Service fronts all instances)."""
        values = {f.name: getattr(self, f.name) * factor for f in fields(self)}
        values["services"] = self.services
        return Budget(**values)


GI = 1024
#: The app alone (docs/environments.md "2. Guardrails", the quota's base).
APP_BASE = Budget(100, 300, 256, 512, 1 * GI, 1, 5, 3)
#: One extra app pod during a rolling update.
ROLLING_HEADROOM = Budget(100, 300, 256, 512)
#: The app container's defaults (docs/environments.md "3. The app release"); the base above was
#: sized for them.
APP_DEFAULT_RESOURCES = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"cpu": "200m", "memory": "384Mi"},
}
#: Per-database increments for the default sizes (docs/environments.md "2. Guardrails").
DB_INCREMENT = {
    "postgresql": Budget(250, 500, 256, 512, 2 * GI, 1, 2, 3),
    "mongodb": Budget(500, 1000, 320, 640, 3 * GI, 2, 2, 1),
    "redis": Budget(100, 200, 64, 128, 0, 0, 1, 1),
    "minio": Budget(200, 1000, 384, 1024, 2 * GI, 1, 2, 2),
    "mariadb": Budget(150, 300, 128, 256, 2 * GI, 1, 1, 1),
}
#: The database server's default container resources (docs/environments.md "3a. Databases").
DB_DEFAULT_RESOURCES = {
    "postgresql": ("100m", "256Mi", "500m", "512Mi"),
    "mongodb": ("100m", "256Mi", "500m", "512Mi"),
    "redis": ("50m", "64Mi", "200m", "128Mi"),
    "minio": ("100m", "256Mi", "500m", "512Mi"),
    "mariadb": ("50m", "128Mi", "300m", "256Mi"),
}
#: The databases' default data volume size; storage beyond it adds to the quota.
DB_DEFAULT_STORAGE = {"postgresql": GI, "mongodb": GI, "minio": GI, "mariadb": GI}
#: The key that multiplies a database's pods and volumes.
DB_REPLICAS_KEY = {"postgresql": "instances", "mongodb": "members", "minio": "servers"}
LIMIT_BUFFER_PERCENT = 115
FIXED_COUNTS = {
    "configmaps": "15",
    "secrets": "25",
    "replicationcontrollers": "5",
    "services.loadbalancers": "0",
    "services.nodeports": "0",
}


def cpu_millicores(value: object, *, field: str = "cpu") -> int:
    """``"250m"`` → 250, ``"1"`` → 1000, ``"0.5"`` → 500 (exact, rounded up to millicores)."""
    try:
        return ceil_scaled(value, Decimal("0.001"))
    except QuantityError as exc:
        raise ConfigError(
            f"{field} {value!r} is not a CPU quantity.",
            hint="Write CPU as millicores ('250m') or cores ('1', '0.5').",
        ) from exc


def memory_mib(value: object, *, field: str = "memory") -> int:
    """``"128Mi"`` → 128, ``"1Gi"`` → 1024; other units exact, rounded up to whole MiB."""
    try:
        return ceil_scaled(value, 2**20)
    except QuantityError as exc:
        raise ConfigError(
            f"{field} {value!r} is not a memory or storage quantity.",
            hint="Write sizes with a binary unit, e.g. '256Mi' or '2Gi'.",
        ) from exc


def format_cpu(millicores: int) -> str:
    return f"{millicores}m"


def format_mib(mib: int) -> str:
    return f"{mib // GI}Gi" if mib % GI == 0 and mib else f"{mib}Mi"


def _resources_excess(resources: Mapping[str, Any] | None, defaults: tuple[str, ...]) -> Budget:
    """How far ``resources`` go above ``defaults`` (req cpu, req mem, lim cpu, lim mem)."""
    if not resources:
        return Budget()
    req = resources.get("requests") or {}
    lim = resources.get("limits") or {}
    d_rc, d_rm, d_lc, d_lm = defaults

    def over(section: Mapping[str, Any], key: str, default: str, parse: Any, label: str) -> int:
        if section.get(key) in (None, ""):
            return 0
        return max(0, int(parse(section[key], field=label)) - int(parse(default)))

    return Budget(
        req_cpu=over(req, "cpu", d_rc, cpu_millicores, "resources.requests.cpu"),
        req_mem=over(req, "memory", d_rm, memory_mib, "resources.requests.memory"),
        lim_cpu=over(lim, "cpu", d_lc, cpu_millicores, "resources.limits.cpu"),
        lim_mem=over(lim, "memory", d_lm, memory_mib, "resources.limits.memory"),
    )


def storage_mib(db: str, options: Mapping[str, Any]) -> int:
    """A database's data volume size: ``storage: "2Gi"`` or ``storage: {size: "2Gi"}``."""
    raw = options.get("storage")
    if isinstance(raw, Mapping):
        raw = raw.get("size")
    if raw in (None, ""):
        return DB_DEFAULT_STORAGE.get(db, 0)
    return memory_mib(raw, field=f"databases.{db}.storage")


def _replicas(db: str, options: Mapping[str, Any]) -> int:
    key = DB_REPLICAS_KEY.get(db)
    value = options.get(key, 1) if key else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"databases.{db}.{key} must be a positive integer, not {value!r}.")
    if db == "minio":
        volumes = options.get("volumesPerServer", 1)
        if isinstance(volumes, int) and not isinstance(volumes, bool) and volumes > 1:
            return value * volumes
    return value


def database_budget(db: str, options: Mapping[str, Any] | None = None) -> Budget:
    """What one enabled database adds to the quota."""
    if db not in DB_INCREMENT:
        raise ConfigError(f"Unknown database {db!r}.", hint=f"Use one of: {', '.join(DATABASES)}.")
    options = options or {}
    extra_storage = max(0, storage_mib(db, options) - DB_DEFAULT_STORAGE.get(db, 0))
    resources = options.get("resources")
    excess = _resources_excess(
        resources if isinstance(resources, Mapping) else None, DB_DEFAULT_RESOURCES[db]
    )
    one = DB_INCREMENT[db] + excess + Budget(storage=extra_storage)
    return one.scaled(_replicas(db, options))


def quota_budget(
    *,
    databases: Mapping[str, Mapping[str, Any] | None] | Iterable[str] = (),
    resources: Mapping[str, Any] | None = None,
) -> Budget:
    """The environment's total, before the limit buffer.

    Args:
        databases: The enabled databases, as names or as ``{name: options}`` (the
            k8s-ee.yaml object form, whose ``storage``/``resources``/``instances`` count).
        resources: The app's ``resources`` from k8s-ee.yaml; ``None`` means the defaults.
    """
    options = dict(databases) if isinstance(databases, Mapping) else dict.fromkeys(databases)
    defaults = APP_DEFAULT_RESOURCES
    app_excess = _resources_excess(
        resources,
        (
            defaults["requests"]["cpu"],
            defaults["requests"]["memory"],
            defaults["limits"]["cpu"],
            defaults["limits"]["memory"],
        ),
    )
    # The app's excess counts twice: once for the pod, once for the rolling-update surge.
    total = APP_BASE + ROLLING_HEADROOM + app_excess + app_excess
    unknown = sorted(set(options) - set(DATABASES))
    if unknown:
        raise ConfigError(
            f"Unknown database {unknown[0]!r}.", hint=f"Use one of: {', '.join(DATABASES)}."
        )
    for db in DATABASES:
        if db in options:
            total = total + database_budget(db, options[db])
    return total


def quota_hard(
    *,
    databases: Mapping[str, Mapping[str, Any] | None] | Iterable[str] = (),
    resources: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The ``spec.hard`` of ``pr-quota``, with the 15 % buffer on limits only."""
    b = quota_budget(databases=databases, resources=resources)
    return {
        "requests.cpu": format_cpu(b.req_cpu),
        "limits.cpu": format_cpu(b.lim_cpu * LIMIT_BUFFER_PERCENT // 100),
        "requests.memory": format_mib(b.req_mem),
        "limits.memory": format_mib(b.lim_mem * LIMIT_BUFFER_PERCENT // 100),
        "requests.storage": format_mib(b.storage),
        "persistentvolumeclaims": str(b.pvcs),
        "pods": str(b.pods),
        "services": str(b.services),
        **FIXED_COUNTS,
    }


def platform_labels(*, project_id: str, pr: int, kind: str = "ephemeral") -> dict[str, str]:
    """Labels of the objects k8see applies itself (docs/environments.md "1. The namespace")."""
    return {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_TYPE: kind,
        names.LABEL_PROJECT: names.check_project_id(project_id),
        names.LABEL_PR: str(names.check_pr(pr)),
    }


def resource_quota(
    *,
    namespace: str,
    project_id: str,
    pr: int,
    databases: Mapping[str, Mapping[str, Any] | None] | Iterable[str] = (),
    resources: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ResourceQuota ``pr-quota`` manifest."""
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": QUOTA_NAME,
            "namespace": namespace,
            "labels": platform_labels(project_id=project_id, pr=pr),
        },
        "spec": {"hard": quota_hard(databases=databases, resources=resources)},
    }


def limit_range(
    *,
    namespace: str,
    project_id: str,
    pr: int,
    databases: Mapping[str, Mapping[str, Any] | None] | Iterable[str] = (),
    resources: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The LimitRange ``pr-limits`` (docs/environments.md "2. Guardrails"), its maxima raised to
    fit the config."""
    options = dict(databases) if isinstance(databases, Mapping) else dict.fromkeys(databases)
    limits = (resources or {}).get("limits") or {}
    max_cpu = max(1000, cpu_millicores(limits.get("cpu") or "0"))
    max_mem = max(GI, memory_mib(limits.get("memory") or "0"))
    max_pvc = max(
        [5 * GI]
        + [storage_mib(db, opts or {}) for db, opts in options.items() if db in DB_DEFAULT_STORAGE]
    )
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {
            "name": LIMITS_NAME,
            "namespace": namespace,
            "labels": platform_labels(project_id=project_id, pr=pr),
        },
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {"cpu": "500m", "memory": "512Mi"},
                    "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                    "max": {"cpu": _cores(max_cpu), "memory": format_mib(max_mem)},
                    "min": {"cpu": "10m", "memory": "32Mi"},
                },
                {
                    "type": "Pod",
                    "max": {
                        "cpu": _cores(max(2000, max_cpu)),
                        "memory": format_mib(max(2 * GI, max_mem)),
                    },
                },
                {
                    "type": "PersistentVolumeClaim",
                    "max": {"storage": format_mib(max_pvc)},
                    "min": {"storage": "100Mi"},
                },
            ]
        },
    }


def _cores(millicores: int) -> str:
    return str(millicores // 1000) if millicores % 1000 == 0 else format_cpu(millicores)
