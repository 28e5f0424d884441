"""The controller loop: one background thread reconciling everything after each change.

A pass runs when the store's resourceVersion moved or a timed transition is due (a pod
finishing its ready delay, a crash loop restarting). Each reconciler writes only when the
object differs, so the loop settles. Reconcilers here are the small ones (namespaces, garbage
collection, services and endpoints, claims, quotas); workloads, the kubelet and the operators
have their own modules.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from k8see.sandbox.kubeapi import lifecycle, quota
from k8see.sandbox.kubeapi.api import Api
from k8see.sandbox.kubeapi.operators import Operators
from k8see.sandbox.kubeapi.pods import Kubelet, PodSettings, is_ready
from k8see.sandbox.kubeapi.selectors import label_matcher
from k8see.sandbox.kubeapi.workloads import Workloads

log = logging.getLogger(__name__)
Obj = dict[str, Any]
#: Seconds between passes when nothing changed but a timed transition is pending.
TICK_SECONDS = 0.05
GC_EVERY_SECONDS = 1.0


@dataclass(frozen=True)
class ControllerSettings:
    ready_delay_seconds: float = 0.2
    crash_image_pattern: str | None = None
    pull_fail_image_pattern: str | None = None


class Controllers:
    """Runs the reconcilers in a daemon thread until ``stop``."""

    def __init__(
        self, *, api: Api, settings: ControllerSettings, on_tick: Callable[[], None] | None = None
    ) -> None:
        self.api = api
        self.settings = settings
        self.on_tick = on_tick
        self.kubelet = Kubelet(
            api=api,
            settings=PodSettings(
                ready_delay_seconds=settings.ready_delay_seconds,
                crash_image_pattern=settings.crash_image_pattern,
                pull_fail_image_pattern=settings.pull_fail_image_pattern,
            ),
        )
        self.workloads = Workloads(
            api=api,
            job_delay_seconds=settings.ready_delay_seconds,
            crash_image_pattern=settings.crash_image_pattern,
        )
        self.operators = Operators(api=api, ready_delay_seconds=settings.ready_delay_seconds)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_gc = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="kube-sandbox-controllers", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.api.store.wake()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        seen_rv = -1
        last_save = time.monotonic()
        while not self._stop.is_set():
            rv = self.api.store.resource_version
            pending = self.kubelet.pending or self.workloads.pending or self.operators.pending
            gc_due = time.monotonic() - self._last_gc > GC_EVERY_SECONDS
            if rv != seen_rv or pending or gc_due:
                seen_rv = rv
                try:
                    self.reconcile_once()
                except Exception:
                    log.exception("Sandbox controller pass failed; retrying on the next change.")
                    time.sleep(0.5)
            if self.on_tick and time.monotonic() - last_save > 2.0:
                last_save = time.monotonic()
                self.on_tick()
            if self.api.store.resource_version == seen_rv:
                self.api.store.wait(after_rv=seen_rv, timeout=TICK_SECONDS if pending else 0.5)

    def reconcile_once(self) -> None:
        """One pass over every reconciler (tests of the sandbox may call it directly)."""
        with self.api.store.locked():
            self.namespaces()
            self.workloads.pending = False
            self.workloads.reconcile()
            self.kubelet.reconcile()
            self.operators.reconcile()
            self.services()
            self.claims()
            self.quotas()
            if time.monotonic() - self._last_gc > GC_EVERY_SECONDS:
                self._last_gc = time.monotonic()
                self.garbage()

    def _rt(self, key: tuple[str, str]) -> Any:
        rt = self.api.registry.by_key(key)
        assert rt is not None
        return rt

    def namespaces(self) -> None:
        for ns in self.api.store.list(("", "namespaces")):
            if ns["metadata"].get("deletionTimestamp"):
                lifecycle.sweep_namespace(self.api, ns)

    def services(self) -> None:
        """Endpoints mirror the ready pods a Service selects, as the endpoints controller does."""
        rt = self._rt(("", "endpoints"))
        for svc in self.api.store.list(("", "services")):
            selector = (svc.get("spec") or {}).get("selector")
            if not selector or svc["metadata"].get("deletionTimestamp"):
                continue
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            match = label_matcher(",".join(f"{k}={v}" for k, v in selector.items()))
            pods = [
                p
                for p in self.api.store.list(("", "pods"), ns)
                if match(p) and p.get("status", {}).get("podIP")
            ]
            ready = [self._address(p) for p in pods if is_ready(p)]
            not_ready = [self._address(p) for p in pods if not is_ready(p)]
            subset: Obj = {}
            if ready:
                subset["addresses"] = ready
            if not_ready:
                subset["notReadyAddresses"] = not_ready
            if subset:
                subset["ports"] = [
                    {
                        "name": p.get("name"),
                        "port": self._target_port(p, pods),
                        "protocol": p.get("protocol", "TCP"),
                    }
                    for p in svc["spec"].get("ports") or []
                ]
                for port in subset["ports"]:
                    if port["name"] is None:
                        del port["name"]
            existing = self.api.store.get(rt.key, ns, name)
            body = {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": dict(svc["metadata"].get("labels") or {}),
                },
                "subsets": [subset] if subset else [],
            }
            if existing is None:
                self.api.create(rt, ns, body)
            elif existing.get("subsets") != body["subsets"]:
                existing["subsets"] = body["subsets"]
                self.api.write(rt, existing)

    @staticmethod
    def _address(pod: Obj) -> Obj:
        meta = pod["metadata"]
        return {
            "ip": pod["status"]["podIP"],
            "nodeName": "sandbox-node",
            "targetRef": {
                "kind": "Pod",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
        }

    @staticmethod
    def _target_port(port: Obj, pods: list[Obj]) -> int:
        target = port.get("targetPort", port.get("port"))
        if isinstance(target, int):
            return target
        for pod in pods:
            for c in pod["spec"].get("containers") or []:
                for p in c.get("ports") or []:
                    if p.get("name") == target:
                        return int(p["containerPort"])
        return int(port.get("port", 0))

    def claims(self) -> None:
        """PersistentVolumeClaims bind at once to an imaginary volume of the requested size."""
        rt = self._rt(("", "persistentvolumeclaims"))
        for pvc in self.api.store.list(rt.key):
            if pvc.get("status", {}).get("phase") == "Bound":
                continue
            spec = pvc.get("spec") or {}
            spec.setdefault("volumeName", f"pvc-{pvc['metadata']['uid']}")
            spec.setdefault("storageClassName", "standard")
            pvc["status"] = {
                "phase": "Bound",
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "capacity": {
                    "storage": (spec.get("resources") or {})
                    .get("requests", {})
                    .get("storage", "1Gi")
                },
            }
            self.api.write(rt, pvc)

    def quotas(self) -> None:
        rt = self._rt(quota.QUOTAS)
        for q in self.api.store.list(quota.QUOTAS):
            before = copy.deepcopy(q)
            q["status"] = {
                "hard": dict((q.get("spec") or {}).get("hard") or {}),
                "used": quota.status_used(self.api.store, q),
            }
            if q != before:
                self.api.write(rt, q)

    def garbage(self) -> None:
        """Delete objects whose owners are all gone; finish foreground deletions."""
        everything = [
            (key, obj) for key in self.api.store.kinds() for obj in self.api.store.list(key)
        ]
        uids = {obj["metadata"]["uid"] for _, obj in everything}
        owners_with_dependents = {
            r.get("uid") for _, o in everything for r in o["metadata"].get("ownerReferences") or []
        }
        for key, obj in everything:
            meta = obj["metadata"]
            rt = self.api.registry.by_key(key)
            if rt is None:
                continue
            refs = meta.get("ownerReferences") or []
            if (
                refs
                and not any(r.get("uid") in uids for r in refs)
                and not meta.get("deletionTimestamp")
            ):
                lifecycle.delete(self.api, rt, obj, propagation="Background")
            elif (
                meta.get("deletionTimestamp")
                and "foregroundDeletion" in (meta.get("finalizers") or [])
                and meta["uid"] not in owners_with_dependents
            ):
                meta["finalizers"] = [f for f in meta["finalizers"] if f != "foregroundDeletion"]
                if meta["finalizers"]:
                    self.api.write(rt, obj)
                else:
                    lifecycle.finalize(self.api, rt, obj)
