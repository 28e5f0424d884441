"""The resource table: which kinds the sandbox serves, under which group, version and plural.

Discovery, routing, OpenAPI and the Status messages all read this one table, so a kind added
here (or registered by a CustomResourceDefinition) is served consistently everywhere.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One served resource, as an APIResource entry in discovery describes it."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    has_generation: bool = False
    custom: bool = False
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``plural.group`` as the real server names a resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``Kind.group`` as the real server names a kind in Invalid messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: objects live per group and plural, whatever version was asked."""
        return (self.group, self.plural)


def _r(
    gv: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    sub: tuple[str, ...] = (),
    generation: bool = False,
) -> ResourceType:
    group, _, version = gv.rpartition("/")
    return ResourceType(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        namespaced=namespaced,
        short_names=short,
        subresources=sub,
        has_generation=generation,
    )


BUILTINS: tuple[ResourceType, ...] = (
    _r("v1", "Namespace", "namespaces", namespaced=False, short=("ns",), sub=("status",)),
    _r("v1", "ConfigMap", "configmaps", short=("cm",)),
    _r("v1", "Secret", "secrets"),
    _r("v1", "Service", "services", short=("svc",), sub=("status", "proxy")),
    _r("v1", "Endpoints", "endpoints", short=("ep",)),
    _r("v1", "Pod", "pods", short=("po",), sub=("status", "log")),
    _r("v1", "PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",), sub=("status",)),
    _r("v1", "ServiceAccount", "serviceaccounts", short=("sa",)),
    _r("v1", "Event", "events", short=("ev",)),
    _r("v1", "ResourceQuota", "resourcequotas", short=("quota",), sub=("status",)),
    _r("v1", "LimitRange", "limitranges", short=("limits",)),
    _r(
        "apps/v1",
        "Deployment",
        "deployments",
        short=("deploy",),
        sub=("status", "scale"),
        generation=True,
    ),
    _r(
        "apps/v1",
        "ReplicaSet",
        "replicasets",
        short=("rs",),
        sub=("status", "scale"),
        generation=True,
    ),
    _r(
        "apps/v1",
        "StatefulSet",
        "statefulsets",
        short=("sts",),
        sub=("status", "scale"),
        generation=True,
    ),
    _r(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "networkpolicies",
        short=("netpol",),
        generation=True,
    ),
    _r(
        "networking.k8s.io/v1",
        "Ingress",
        "ingresses",
        short=("ing",),
        sub=("status",),
        generation=True,
    ),
    _r("rbac.authorization.k8s.io/v1", "Role", "roles"),
    _r("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    _r("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", namespaced=False),
    _r(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        namespaced=False,
    ),
    _r(
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        short=("pdb",),
        sub=("status",),
        generation=True,
    ),
    _r("batch/v1", "Job", "jobs", sub=("status",), generation=True),
    _r("batch/v1", "CronJob", "cronjobs", short=("cj",), sub=("status",), generation=True),
    _r("scheduling.k8s.io/v1", "PriorityClass", "priorityclasses", namespaced=False, short=("pc",)),
    _r("coordination.k8s.io/v1", "Lease", "leases"),
    _r(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        namespaced=False,
        short=("crd", "crds"),
        sub=("status",),
        generation=True,
    ),
)


@dataclass
class ResourceRegistry:
    """Built-ins plus the kinds that CustomResourceDefinitions registered, thread-safe."""

    _types: dict[tuple[str, str, str], ResourceType] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for rt in BUILTINS:
            self._types[(rt.group, rt.version, rt.plural)] = rt

    def lookup(self, *, group: str, version: str, plural: str) -> ResourceType | None:
        with self._lock:
            return self._types.get((group, version, plural))

    def by_kind(self, *, group: str, kind: str) -> ResourceType | None:
        with self._lock:
            for rt in self._types.values():
                if rt.group == group and rt.kind == kind:
                    return rt
        return None

    def by_key(self, key: tuple[str, str]) -> ResourceType | None:
        with self._lock:
            for rt in self._types.values():
                if rt.key == key:
                    return rt
        return None

    def all(self) -> list[ResourceType]:
        with self._lock:
            return list(self._types.values())

    def group_versions(self) -> dict[str, list[str]]:
        """Every API group (``""`` for core) with its served versions, in table order."""
        out: dict[str, list[str]] = {}
        for rt in self.all():
            versions = out.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        return out

    def register_crd(self, crd: dict[str, object]) -> list[ResourceType]:
        """Serve the kinds a CustomResourceDefinition declares (one entry per served version)."""
        spec = crd.get("spec")
        if not isinstance(spec, dict):
            return []
        names = spec.get("names") or {}
        added = []
        for ver in spec.get("versions") or []:
            if not isinstance(ver, dict) or not ver.get("served", True):
                continue
            subs = tuple(k for k in (ver.get("subresources") or {}) if k in ("status", "scale"))
            rt = ResourceType(
                group=str(spec.get("group", "")),
                version=str(ver.get("name", "")),
                kind=str(names.get("kind", "")),
                plural=str(names.get("plural", "")),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=subs,
                has_generation=True,
                custom=True,
            )
            with self._lock:
                self._types[(rt.group, rt.version, rt.plural)] = rt
            added.append(rt)
        return added

    def unregister_crd(self, crd: dict[str, object]) -> None:
        spec = crd.get("spec")
        if not isinstance(spec, dict):
            return
        group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
        with self._lock:
            for k in [
                k for k, rt in self._types.items() if rt.custom and rt.key == (group, plural)
            ]:
                del self._types[k]
