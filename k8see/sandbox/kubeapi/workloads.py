"""Simulated workload controllers: Deployment → ReplicaSet → Pods, StatefulSets, Jobs.

They keep the status fields Helm's ready check and ``kubectl rollout status`` read:
observedGeneration, replicas, updatedReplicas, readyReplicas, availableReplicas and the
Available/Progressing conditions (reason NewReplicaSetAvailable when a rollout is done). A
rolling update creates a new ReplicaSet (named by pod-template-hash) and scales the old ones to
zero once the new one is available. Pods are created through the same admission as clients',
so a quota refusal shows as condition ReplicaFailure (reason FailedCreate). A refused creation
is retried with per-object exponential backoff, as the real controllers' rate-limited work
queues do (5 ms doubling; capped at ``CREATE_BACKOFF_MAX_SECONDS`` here, 1000 s there, so a
freed quota is noticed quickly in tests), not on every pass.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import time
from typing import Any

from k8see.sandbox.kubeapi import events
from k8see.sandbox.kubeapi.api import Api, now, random_suffix
from k8see.sandbox.kubeapi.apierrors import ApiError
from k8see.sandbox.kubeapi.pods import is_ready
from k8see.sandbox.kubeapi.resources import ResourceType

Obj = dict[str, Any]
DEPLOYMENTS, REPLICASETS, PODS = ("apps", "deployments"), ("apps", "replicasets"), ("", "pods")
STATEFULSETS, JOBS, PVCS = (
    ("apps", "statefulsets"),
    ("batch", "jobs"),
    ("", "persistentvolumeclaims"),
)
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"
CREATE_BACKOFF_BASE_SECONDS = 0.005
CREATE_BACKOFF_MAX_SECONDS = 2.0


def template_hash(template: Obj) -> str:
    digest = int(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:15], 16)
    out = ""
    while digest and len(out) < 10:
        digest, rem = divmod(digest, len(_SAFE))
        out += _SAFE[rem]
    return out


def owner_ref(obj: Obj, rt: ResourceType) -> Obj:
    return {
        "apiVersion": rt.group_version,
        "kind": rt.kind,
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(objs: list[Obj], uid: str) -> list[Obj]:
    return [
        o
        for o in objs
        if any(
            r.get("uid") == uid and r.get("controller")
            for r in o["metadata"].get("ownerReferences") or []
        )
    ]


def set_condition(
    conditions: list[Obj], kind: str, status: str, reason: str, message: str
) -> list[Obj]:
    """Replace the condition ``kind``, keeping its timestamps when nothing changed."""
    out = [c for c in conditions if c.get("type") != kind]
    prev = next((c for c in conditions if c.get("type") == kind), None)
    if prev and (prev.get("status"), prev.get("reason"), prev.get("message")) == (
        status,
        reason,
        message,
    ):
        out.append(prev)
    else:
        stamp = now()
        changed = prev is None or prev.get("status") != status
        out.append(
            {
                "type": kind,
                "status": status,
                "lastUpdateTime": stamp,
                "lastTransitionTime": stamp if changed else prev.get("lastTransitionTime", stamp),  # type: ignore[union-attr]
                "reason": reason,
                "message": message,
            }
        )
    return sorted(out, key=lambda c: str(c.get("type")))


def _resolve(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        scaled = total * int(value[:-1]) / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value or 0)


class Workloads:
    def __init__(
        self, *, api: Api, job_delay_seconds: float, crash_image_pattern: str | None
    ) -> None:
        self.api = api
        self.job_delay_seconds = job_delay_seconds
        self.crash_image_pattern = crash_image_pattern
        self.first_seen: dict[str, float] = {}
        self.pending = False
        #: Per controller uid: refused creations in a row, and when the next try is due.
        self.create_backoff: dict[str, tuple[int, float]] = {}

    def rt(self, key: tuple[str, str]) -> ResourceType:
        rt = self.api.registry.by_key(key)
        assert rt is not None
        return rt

    def _write_if_changed(self, key: tuple[str, str], before: Obj, after: Obj) -> None:
        if before != after:
            self.api.write(self.rt(key), after)

    def _may_create(self, uid: str) -> bool:
        """False while ``uid``'s last refused creation is backing off (and wake up later)."""
        _, due = self.create_backoff.get(uid, (0, 0.0))
        if time.monotonic() < due:
            self.pending = True
            return False
        return True

    def _creation_refused(self, uid: str) -> None:
        failures = self.create_backoff.get(uid, (0, 0.0))[0] + 1
        delay = min(CREATE_BACKOFF_BASE_SECONDS * 2 ** (failures - 1), CREATE_BACKOFF_MAX_SECONDS)
        self.create_backoff[uid] = (failures, time.monotonic() + delay)
        self.pending = True

    def reconcile(self) -> None:
        live = {
            o["metadata"]["uid"]
            for k in (REPLICASETS, STATEFULSETS)
            for o in self.api.store.list(k)
        }
        self.create_backoff = {u: b for u, b in self.create_backoff.items() if u in live}
        for dep in self.api.store.list(DEPLOYMENTS):
            if not dep["metadata"].get("deletionTimestamp"):
                self.deployment(dep)
        for rs in self.api.store.list(REPLICASETS):
            if not rs["metadata"].get("deletionTimestamp"):
                self.replicaset(rs)
        for sts in self.api.store.list(STATEFULSETS):
            if not sts["metadata"].get("deletionTimestamp"):
                self.statefulset(sts)
        for job in self.api.store.list(JOBS):
            if not job["metadata"].get("deletionTimestamp"):
                self.job(job)

    # -- Deployment ----------------------------------------------------------------------

    def deployment(self, dep: Obj) -> None:
        meta, spec = dep["metadata"], dep["spec"]
        ns, desired = meta["namespace"], int(spec.get("replicas", 1))
        template = spec.get("template") or {}
        phash = template_hash(template)
        owned = owned_by(self.api.store.list(REPLICASETS, ns), meta["uid"])
        revisions = [int(rs["metadata"].get("annotations", {}).get(REVISION, 0)) for rs in owned]
        new_rs = next(
            (rs for rs in owned if rs["metadata"].get("labels", {}).get(HASH_LABEL) == phash), None
        )
        next_rev = str(max(revisions, default=0) + 1)
        if new_rs is None:
            new_rs = self._create_rs(dep, phash, next_rev, desired)
            if new_rs is None:
                return
        else:
            before = copy.deepcopy(new_rs)
            anns = new_rs["metadata"].setdefault("annotations", {})
            if max(revisions, default=0) > int(anns.get(REVISION, 0)):
                anns[REVISION] = next_rev
            new_rs["spec"]["replicas"] = desired
            if new_rs != before:
                new_rs = self.api.write(self.rt(REPLICASETS), new_rs)
        olds = [rs for rs in owned if rs["metadata"]["uid"] != new_rs["metadata"]["uid"]]
        new_status = new_rs.get("status") or {}
        if int(new_status.get("availableReplicas", 0)) >= desired:
            for old in olds:
                if old["spec"].get("replicas", 0) != 0:
                    old["spec"]["replicas"] = 0
                    self.api.write(self.rt(REPLICASETS), old)
        self._prune_history(dep, olds)
        self._deployment_status(dep, new_rs, olds)

    def _create_rs(self, dep: Obj, phash: str, revision: str, desired: int) -> Obj | None:
        meta, spec = dep["metadata"], dep["spec"]
        template = copy.deepcopy(spec.get("template") or {})
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = phash
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = phash
        rs = {
            "metadata": {
                "name": f"{meta['name']}-{phash}",
                "namespace": meta["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {
                    REVISION: revision,
                    "deployment.kubernetes.io/desired-replicas": str(desired),
                    "deployment.kubernetes.io/max-replicas": str(desired + 1),
                },
                "ownerReferences": [owner_ref(dep, self.rt(DEPLOYMENTS))],
            },
            "spec": {"replicas": desired, "selector": selector, "template": template},
        }
        try:
            return self.api.create(self.rt(REPLICASETS), meta["namespace"], rs)
        except ApiError:
            return None

    def _prune_history(self, dep: Obj, olds: list[Obj]) -> None:
        limit = int(dep["spec"].get("revisionHistoryLimit", 10))
        idle = [
            rs
            for rs in olds
            if rs["spec"].get("replicas", 0) == 0 and not rs.get("status", {}).get("replicas")
        ]
        idle.sort(key=lambda rs: int(rs["metadata"].get("annotations", {}).get(REVISION, 0)))
        for rs in idle[: max(len(idle) - limit, 0)]:
            self.api.delete(
                self.rt(REPLICASETS), rs["metadata"]["namespace"], rs["metadata"]["name"]
            )

    def _deployment_status(self, dep: Obj, new_rs: Obj, olds: list[Obj]) -> None:
        before = copy.deepcopy(dep)
        spec, desired = dep["spec"], int(dep["spec"].get("replicas", 1))
        everything = [new_rs, *olds]

        def total(field: str) -> int:
            return sum(int((rs.get("status") or {}).get(field, 0)) for rs in everything)

        new_status = new_rs.get("status") or {}
        status = dep.setdefault("status", {})
        status["observedGeneration"] = dep["metadata"].get("generation", 1)
        status["replicas"] = total("replicas")
        status["updatedReplicas"] = int(new_status.get("replicas", 0))
        status["readyReplicas"] = total("readyReplicas")
        status["availableReplicas"] = total("availableReplicas")
        unavailable = max(desired - status["availableReplicas"], 0)
        if unavailable:
            status["unavailableReplicas"] = unavailable
        else:
            status.pop("unavailableReplicas", None)
        for field in ("readyReplicas", "availableReplicas", "updatedReplicas", "replicas"):
            if not status[field]:
                del status[field]
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        max_unavailable = _resolve(rolling.get("maxUnavailable", 0), desired, round_up=False)
        conditions = status.get("conditions") or []
        if status.get("availableReplicas", 0) >= desired - max_unavailable:
            conditions = set_condition(
                conditions,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        else:
            conditions = set_condition(
                conditions,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        rs_name = new_rs["metadata"]["name"]
        done = int(new_status.get("availableReplicas", 0)) >= desired and not any(
            int((rs.get("status") or {}).get("replicas", 0)) for rs in olds
        )
        if done:
            conditions = set_condition(
                conditions,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        else:
            conditions = set_condition(
                conditions,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{rs_name}" is progressing.',
            )
        failure = next(
            (c for c in new_status.get("conditions") or [] if c.get("type") == "ReplicaFailure"),
            None,
        )
        if failure:
            conditions = set_condition(
                conditions,
                "ReplicaFailure",
                "True",
                "FailedCreate",
                str(failure.get("message", "")),
            )
        else:
            conditions = [c for c in conditions if c.get("type") != "ReplicaFailure"]
        status["conditions"] = conditions
        dep["metadata"].setdefault("annotations", {})[REVISION] = (
            new_rs["metadata"].get("annotations", {}).get(REVISION, "1")
        )
        self._write_if_changed(DEPLOYMENTS, before, dep)

    # -- ReplicaSet ----------------------------------------------------------------------

    def replicaset(self, rs: Obj) -> None:
        meta, spec = rs["metadata"], rs["spec"]
        ns, desired = meta["namespace"], int(spec.get("replicas", 1))
        pods = [
            p
            for p in owned_by(self.api.store.list(PODS, ns), meta["uid"])
            if not p["metadata"].get("deletionTimestamp")
            and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
        ]
        failure: str | None = None
        while len(pods) < desired and self._may_create(meta["uid"]):
            try:
                pods.append(self._create_pod(rs, REPLICASETS))
                self.create_backoff.pop(meta["uid"], None)
            except ApiError as err:
                failure = err.message
                self._creation_refused(meta["uid"])
                previous = [
                    c
                    for c in (rs.get("status") or {}).get("conditions") or []
                    if c.get("type") == "ReplicaFailure"
                ]
                if not previous or previous[0].get("message") != failure:
                    events.record(
                        self.api,
                        involved=rs,
                        reason="FailedCreate",
                        message=f"Error creating: {failure}",
                    )
                break
        if len(pods) > desired:
            extra = sorted(pods, key=lambda p: (is_ready(p), p["metadata"]["creationTimestamp"]))[
                : len(pods) - desired
            ]
            for pod in extra:
                self.api.delete(self.rt(PODS), ns, pod["metadata"]["name"])
                pods.remove(pod)
        before = copy.deepcopy(rs)
        ready = sum(1 for p in pods if is_ready(p))
        status: Obj = {
            "replicas": len(pods),
            "fullyLabeledReplicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": meta.get("generation", 1),
        }
        conditions = (rs.get("status") or {}).get("conditions") or []
        if failure:
            conditions = set_condition(
                conditions, "ReplicaFailure", "True", "FailedCreate", failure
            )
        elif len(pods) >= desired:
            conditions = [c for c in conditions if c.get("type") != "ReplicaFailure"]
        if conditions:
            status["conditions"] = conditions
        for field in ("fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
            if not status[field]:
                del status[field]
        rs["status"] = status
        self._write_if_changed(REPLICASETS, before, rs)

    def _create_pod(
        self,
        owner: Obj,
        owner_key: tuple[str, str],
        *,
        name: str | None = None,
        extra_labels: dict[str, str] | None = None,
    ) -> Obj:
        meta = owner["metadata"]
        template = copy.deepcopy(owner["spec"].get("template") or {})
        tmeta = template.get("metadata") or {}
        labels = {**(tmeta.get("labels") or {}), **(extra_labels or {})}
        pod = {
            "metadata": {
                "name": name or f"{meta['name']}-{random_suffix()}",
                "generateName": None if name else f"{meta['name']}-",
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": tmeta.get("annotations") or {},
                "ownerReferences": [owner_ref(owner, self.rt(owner_key))],
            },
            "spec": template.get("spec") or {},
        }
        if pod["metadata"]["generateName"] is None:
            del pod["metadata"]["generateName"]
        return self.api.create(self.rt(PODS), meta["namespace"], pod)

    # -- StatefulSet ---------------------------------------------------------------------

    def statefulset(self, sts: Obj) -> None:
        meta, spec = sts["metadata"], sts["spec"]
        ns, name, desired = meta["namespace"], meta["name"], int(spec.get("replicas", 1))
        revision = f"{name}-{template_hash(spec.get('template') or {})}"
        pods = {
            p["metadata"]["name"]: p for p in owned_by(self.api.store.list(PODS, ns), meta["uid"])
        }
        failure = None
        for i in range(desired):
            # OrderedReady: one pod at a time, each Ready before the next is made or replaced.
            pod_name = f"{name}-{i}"
            pod = pods.get(pod_name)
            if pod is None:
                if not self._may_create(meta["uid"]):
                    failure = next(
                        (
                            str(c.get("message", ""))
                            for c in (sts.get("status") or {}).get("conditions") or []
                            if c.get("type") == "ReplicaFailure"
                        ),
                        None,
                    )
                    break
                try:
                    self._claims(sts, i)
                    labels = {
                        "controller-revision-hash": revision,
                        "statefulset.kubernetes.io/pod-name": pod_name,
                        "apps.kubernetes.io/pod-index": str(i),
                    }
                    pods[pod_name] = self._create_pod(
                        sts, STATEFULSETS, name=pod_name, extra_labels=labels
                    )
                    self.create_backoff.pop(meta["uid"], None)
                except ApiError as err:
                    failure = err.message
                    self._creation_refused(meta["uid"])
                break
            if pod["metadata"].get("labels", {}).get("controller-revision-hash") != revision:
                if all(is_ready(p) for p in pods.values()):
                    self.api.delete(self.rt(PODS), ns, pod_name)
                    del pods[pod_name]
                break
            if not is_ready(pod):
                break
        for pod_name, pod in list(pods.items()):
            if int(pod_name.rsplit("-", 1)[-1]) >= desired and not pod["metadata"].get(
                "deletionTimestamp"
            ):
                self.api.delete(self.rt(PODS), ns, pod_name)
                del pods[pod_name]
        before = copy.deepcopy(sts)
        ready = sum(1 for p in pods.values() if is_ready(p))
        current = sum(
            1
            for p in pods.values()
            if p["metadata"].get("labels", {}).get("controller-revision-hash") == revision
        )
        status: Obj = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": len(pods),
            "readyReplicas": ready,
            "currentReplicas": current,
            "updatedReplicas": current,
            "availableReplicas": ready,
            "currentRevision": revision,
            "updateRevision": revision,
            "collisionCount": 0,
        }
        if failure:
            status["conditions"] = set_condition(
                [], "ReplicaFailure", "True", "FailedCreate", failure
            )
        sts["status"] = status
        self._write_if_changed(STATEFULSETS, before, sts)

    def _claims(self, sts: Obj, index: int) -> None:
        meta = sts["metadata"]
        rt = self.rt(PVCS)
        for tpl in sts["spec"].get("volumeClaimTemplates") or []:
            claim = f"{tpl['metadata']['name']}-{meta['name']}-{index}"
            if self.api.store.get(PVCS, meta["namespace"], claim) is None:
                body = {
                    "metadata": {
                        "name": claim,
                        "namespace": meta["namespace"],
                        "labels": dict(sts["spec"].get("selector", {}).get("matchLabels") or {}),
                    },
                    "spec": copy.deepcopy(tpl.get("spec") or {}),
                }
                self.api.create(rt, meta["namespace"], body)

    # -- Job -----------------------------------------------------------------------------

    def job(self, job: Obj) -> None:
        """Jobs complete after the ready delay (one success), or fail if their image crashes."""
        status = job.get("status") or {}
        if any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in status.get("conditions") or []
        ):
            return
        if job["spec"].get("suspend"):
            return
        started = self.first_seen.setdefault(job["metadata"]["uid"], time.monotonic())
        before = copy.deepcopy(job)
        status = job.setdefault("status", {})
        status.setdefault("startTime", now())
        if time.monotonic() - started < self.job_delay_seconds:
            self.pending = True
            status["active"] = 1
            self._write_if_changed(JOBS, before, job)
            return
        status.pop("active", None)
        containers = job["spec"].get("template", {}).get("spec", {}).get("containers") or []
        crashing = self.crash_image_pattern and any(
            re.search(self.crash_image_pattern, str(c.get("image", ""))) for c in containers
        )
        stamp = now()
        if crashing:
            status["failed"] = int(job["spec"].get("backoffLimit", 6)) + 1
            status["conditions"] = [
                {
                    "type": t,
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                    "lastProbeTime": stamp,
                    "lastTransitionTime": stamp,
                }
                for t in ("FailureTarget", "Failed")
            ]
        else:
            status["succeeded"] = int(job["spec"].get("completions", 1))
            status["completionTime"] = stamp
            status["conditions"] = [
                {
                    "type": t,
                    "status": "True",
                    "reason": "CompletionsReached",
                    "message": "Reached expected number of succeeded pods",
                    "lastProbeTime": stamp,
                    "lastTransitionTime": stamp,
                }
                for t in ("SuccessCriteriaMet", "Complete")
            ]
        status["ready"] = 0
        self._write_if_changed(JOBS, before, job)
