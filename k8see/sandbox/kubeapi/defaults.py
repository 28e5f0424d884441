"""Defaulting, as the real API server applies it before storing an object.

Clients depend on defaults being present: Helm's ready check dereferences
``deployment.spec.replicas`` and compares a ReplicaSet's template with its Deployment's, and
``kubectl apply`` three-way merges against the defaulted live object. Only missing fields are
filled; what a client sent is never changed.
"""

from __future__ import annotations

import base64
import itertools
import threading
from typing import Any

from k8see.sandbox.kubeapi.resources import ResourceType

Obj = dict[str, Any]

_ip_lock = threading.Lock()
_ip_counter = itertools.count(10)


def allocate_cluster_ip() -> str:
    """The next free-looking address in 10.96.0.0/12, like the service IP allocator."""
    with _ip_lock:
        n = next(_ip_counter)
    return f"10.96.{n // 250}.{n % 250 + 1}"


def _container(c: Obj) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    image = str(c.get("image", ""))
    latest = "@" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"))
    c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if isinstance(c.get(probe), dict):
            p = c[probe]
            for k, v in (
                ("timeoutSeconds", 1),
                ("periodSeconds", 10),
                ("successThreshold", 1),
                ("failureThreshold", 3),
            ):
                p.setdefault(k, v)
            if isinstance(p.get("httpGet"), dict):
                p["httpGet"].setdefault("scheme", "HTTP")
                p["httpGet"].setdefault("path", "/")


def pod_spec(spec: Obj, *, restart_policy: str = "Always") -> None:
    spec.setdefault("restartPolicy", restart_policy)
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if isinstance(c, dict):
            _container(c)
    for vol in spec.get("volumes") or []:
        if isinstance(vol.get("configMap"), dict):
            vol["configMap"].setdefault("defaultMode", 420)
        if isinstance(vol.get("secret"), dict):
            vol["secret"].setdefault("defaultMode", 420)


def _template(spec: Obj, *, restart_policy: str = "Always") -> None:
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {})
    pod_spec(template.setdefault("spec", {}), restart_policy=restart_policy)


def reset_status(rt: ResourceType, obj: Obj) -> None:
    """Drop the status a client sent on create, as each kind's ``PrepareForCreate`` does.

    Built-in kinds come back with their zero status (``status: {}`` for a Deployment, so a
    client reading it straight after create sees an empty status, never none); custom
    resources with a status subresource come back without one until a controller writes it.
    """
    if "status" not in rt.subresources or rt.kind == "CustomResourceDefinition":
        return
    if rt.custom:
        obj.pop("status", None)
    else:
        obj["status"] = dict(_ZERO_STATUS.get(rt.kind, {}))


# Zero statuses whose fields are not ``omitempty`` in the Go types.
_ZERO_STATUS: dict[str, Obj] = {
    "ReplicaSet": {"replicas": 0},
    "StatefulSet": {"replicas": 0, "availableReplicas": 0},
    "PodDisruptionBudget": {
        "disruptionsAllowed": 0,
        "currentHealthy": 0,
        "desiredHealthy": 0,
        "expectedPods": 0,
    },
}


def apply(rt: ResourceType, obj: Obj) -> None:
    """Fill the defaults of ``obj`` (a ``rt``) in place."""
    if rt.custom:
        return
    spec = obj.setdefault("spec", {}) if rt.kind in _WITH_SPEC else obj.get("spec")
    fn = _BY_KIND.get(rt.kind)
    if fn is not None:
        fn(obj, spec if isinstance(spec, dict) else {})


def _deployment(obj: Obj, spec: Obj) -> None:
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _template(spec)


def _replicaset(obj: Obj, spec: Obj) -> None:
    spec.setdefault("replicas", 1)
    _template(spec)


def _statefulset(obj: Obj, spec: Obj) -> None:
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if strategy.get("type") == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {"partition": 0})
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault(
        "persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"}
    )
    _template(spec)


def _job(obj: Obj, spec: Obj) -> None:
    spec.setdefault("completions", 1)
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    _template(spec, restart_policy="Never")


def _cronjob(obj: Obj, spec: Obj) -> None:
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    job = spec.setdefault("jobTemplate", {}).setdefault("spec", {})
    _template(job, restart_policy="Never")


def _pod(obj: Obj, spec: Obj) -> None:
    pod_spec(spec)
    status = obj.setdefault("status", {})
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", "BestEffort")


def _service(obj: Obj, spec: Obj) -> None:
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        if "port" in port:
            port.setdefault("targetPort", port["port"])
    if spec["type"] != "ExternalName":
        if not spec.get("clusterIP"):
            spec["clusterIP"] = allocate_cluster_ip()
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


def _secret(obj: Obj, spec: Obj) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict):
        data = obj.setdefault("data", {})
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()


def _namespace(obj: Obj, spec: Obj) -> None:
    spec.setdefault("finalizers", ["kubernetes"])
    labels = obj["metadata"].setdefault("labels", {})
    labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    obj.setdefault("status", {}).setdefault("phase", "Active")


def _pvc(obj: Obj, spec: Obj) -> None:
    spec.setdefault("volumeMode", "Filesystem")
    obj.setdefault("status", {}).setdefault("phase", "Pending")


def _ingress(obj: Obj, spec: Obj) -> None:
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


def _crd(obj: Obj, spec: Obj) -> None:
    spec.setdefault("scope", "Namespaced")
    names = spec.setdefault("names", {})
    if names.get("kind"):
        names.setdefault("singular", str(names["kind"]).lower())
        names.setdefault("listKind", f"{names['kind']}List")


def _priority_class(obj: Obj, spec: Obj) -> None:
    obj.setdefault("preemptionPolicy", "PreemptLowerPriority")


_BY_KIND = {
    "Deployment": _deployment,
    "ReplicaSet": _replicaset,
    "StatefulSet": _statefulset,
    "Job": _job,
    "CronJob": _cronjob,
    "Pod": _pod,
    "Service": _service,
    "Secret": _secret,
    "Namespace": _namespace,
    "PersistentVolumeClaim": _pvc,
    "Ingress": _ingress,
    "CustomResourceDefinition": _crd,
    "PriorityClass": _priority_class,
}
_WITH_SPEC = {
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "Job",
    "CronJob",
    "Pod",
    "Service",
    "Namespace",
    "PersistentVolumeClaim",
    "Ingress",
    "CustomResourceDefinition",
}
