"""ResourceQuota accounting and admission, and LimitRange defaults, as the real plugins do them.

A pod's usage is, per resource, the larger of the sum over its containers and the largest init
container (init containers run one at a time). Usage is computed from the stored objects at
admission time, so two creates in a row see each other; the quota controller mirrors the same
numbers into ``status.used``. Messages copy the real ones, e.g. ``exceeded quota: pr-quota,
requested: limits.cpu=500m, used: limits.cpu=300m, limited: limits.cpu=690m``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from k8see.sandbox.kubeapi.apierrors import forbidden
from k8see.sandbox.kubeapi.quantities import format_quantity, is_memory_like, parse
from k8see.sandbox.kubeapi.resources import ResourceType
from k8see.sandbox.kubeapi.store import Store

Obj = dict[str, Any]
QUOTAS = ("", "resourcequotas")
LIMIT_RANGES = ("", "limitranges")
#: Object-count quota names and the storage key they count.
COUNTED = {
    "pods": ("", "pods"),
    "services": ("", "services"),
    "configmaps": ("", "configmaps"),
    "secrets": ("", "secrets"),
    "persistentvolumeclaims": ("", "persistentvolumeclaims"),
    "resourcequotas": ("", "resourcequotas"),
}
COMPUTE = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory")


def _containers(pod: Obj, field: str) -> list[Obj]:
    return [c for c in (pod.get("spec") or {}).get(field) or [] if isinstance(c, dict)]


def pod_usage(pod: Obj) -> dict[str, Fraction]:
    """requests.cpu/memory and limits.cpu/memory of one pod, plus ``pods: 1``."""
    usage: dict[str, Fraction] = {"pods": Fraction(1)}
    for kind in ("requests", "limits"):
        for res in ("cpu", "memory"):
            total = sum(
                (
                    parse(c.get("resources", {}).get(kind, {}).get(res, 0))
                    for c in _containers(pod, "containers")
                ),
                Fraction(0),
            )
            init = max(
                (
                    parse(c.get("resources", {}).get(kind, {}).get(res, 0))
                    for c in _containers(pod, "initContainers")
                ),
                default=Fraction(0),
            )
            usage[f"{kind}.{res}"] = max(total, init)
    return usage


def _object_usage(key: tuple[str, str], obj: Obj) -> dict[str, Fraction]:
    if key == ("", "pods"):
        if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return {}
        return pod_usage(obj)
    usage: dict[str, Fraction] = {}
    for name, counted in COUNTED.items():
        if counted == key:
            usage[name] = Fraction(1)
    if key == ("", "persistentvolumeclaims"):
        storage = (obj.get("spec") or {}).get("resources", {}).get("requests", {}).get("storage")
        usage["requests.storage"] = parse(storage or 0)
    if key == ("", "services") and (obj.get("spec") or {}).get("type") == "LoadBalancer":
        usage["services.loadbalancers"] = Fraction(1)
    return usage


def _hard(quota: Obj) -> dict[str, Fraction]:
    hard = {}
    for name, value in ((quota.get("spec") or {}).get("hard") or {}).items():
        hard["requests." + name if name in ("cpu", "memory") else name] = parse(value)
    return hard


def namespace_usage(store: Store, namespace: str, names: set[str]) -> dict[str, Fraction]:
    """Current usage in ``namespace`` of the quota resource ``names``."""
    used = {name: Fraction(0) for name in names}
    for key in {("", "pods"), *COUNTED.values()}:
        for obj in store.list(key, namespace):
            if obj["metadata"].get("deletionTimestamp") and key == ("", "pods"):
                continue
            for name, value in _object_usage(key, obj).items():
                if name in used:
                    used[name] += value
    return used


def fmt(name: str, value: Fraction) -> str:
    if name in COUNTED or name.startswith("count/") or name.startswith("services."):
        return str(int(value))
    return format_quantity(value, binary=is_memory_like(name))


def _pretty(values: dict[str, Fraction]) -> str:
    return ",".join(f"{k}={fmt(k, v)}" for k, v in sorted(values.items()))


def admit(store: Store, rt: ResourceType, obj: Obj) -> None:
    """Refuse ``obj`` with 403 if a ResourceQuota in its namespace would be exceeded."""
    namespace = obj["metadata"]["namespace"]
    quotas = store.list(QUOTAS, namespace)
    if not quotas:
        return
    requested = _object_usage(rt.key, obj)
    name = obj["metadata"].get("name") or obj["metadata"].get("generateName", "")
    for q in quotas:
        hard = _hard(q)
        if rt.kind == "Pod":
            missing = _missing(obj, hard)
            if missing:
                why = f"failed quota: {q['metadata']['name']}: {missing}"
                raise forbidden(rt, name, why)
        relevant = {k: v for k, v in requested.items() if k in hard}
        if not relevant:
            continue
        used = namespace_usage(store, namespace, set(relevant))
        over = [k for k, v in relevant.items() if used[k] + v > hard[k]]
        if over:
            why = (
                f"exceeded quota: {q['metadata']['name']}, "
                f"requested: {_pretty({k: relevant[k] for k in over})}, "
                f"used: {_pretty({k: used[k] for k in over})}, "
                f"limited: {_pretty({k: hard[k] for k in over})}"
            )
            raise forbidden(rt, name, why)


def _missing(pod: Obj, hard: dict[str, Fraction]) -> str:
    parts = []
    for res in sorted(COMPUTE):  # the real message lists resources sorted
        if res not in hard:
            continue
        kind, name = res.split(".")
        lacking = [
            str(c.get("name"))
            for c in _containers(pod, "initContainers") + _containers(pod, "containers")
            if name not in (c.get("resources") or {}).get(kind, {})
        ]
        if lacking:
            parts.append(f"{res} for: {','.join(sorted(lacking))}")
    return "must specify " + "; ".join(parts) if parts else ""


def apply_limit_ranges(store: Store, pod: Obj) -> None:
    """Give containers the LimitRange default requests and limits they lack, then enforce
    per-container maximum and minimum (403, as the LimitRanger plugin answers)."""
    ranges = store.list(LIMIT_RANGES, pod["metadata"]["namespace"])
    problems: list[str] = []
    for lr in ranges:
        for item in (lr.get("spec") or {}).get("limits") or []:
            if item.get("type") != "Container":
                continue
            for c in _containers(pod, "initContainers") + _containers(pod, "containers"):
                resources = c.setdefault("resources", {})
                for field, kind in (("default", "limits"), ("defaultRequest", "requests")):
                    for res, value in (item.get(field) or {}).items():
                        resources.setdefault(kind, {}).setdefault(res, value)
                for res, value in (item.get("max") or {}).items():
                    limit = resources.get("limits", {}).get(res)
                    if limit is not None and parse(limit) > parse(value):
                        problems.append(
                            f"maximum {res} usage per Container is {value}, but limit is {limit}"
                        )
                for res, value in (item.get("min") or {}).items():
                    request = resources.get("requests", {}).get(res)
                    if request is not None and parse(request) < parse(value):
                        problems.append(
                            f"minimum {res} usage per Container is {value}, "
                            f"but request is {request}"
                        )
    if problems:
        from k8see.sandbox.kubeapi.resources import BUILTINS

        pods = next(rt for rt in BUILTINS if rt.kind == "Pod")
        raise forbidden(pods, str(pod["metadata"].get("name", "")), "[" + ", ".join(problems) + "]")


def status_used(store: Store, quota: Obj) -> dict[str, str]:
    """What the quota controller writes into ``status.used``."""
    spec_hard = (quota.get("spec") or {}).get("hard") or {}
    names = {("requests." + n if n in ("cpu", "memory") else n): n for n in spec_hard}
    used = namespace_usage(store, quota["metadata"]["namespace"], set(names))
    return {orig: fmt(norm, used[norm]) for norm, orig in names.items()}
