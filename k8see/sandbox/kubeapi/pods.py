"""The simulated kubelet: pods go Pending, then Running and Ready after the ready delay.

No process runs. Each pod says so in its condition messages ("simulated by the k8see
sandbox"). Failure injection works on images: one matching the crash pattern stays not Ready
in CrashLoopBackOff with a growing restartCount; one matching the pull-fail pattern waits in
ImagePullBackOff.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from k8see.sandbox.kubeapi.api import Api, now

Obj = dict[str, Any]
SIMULATED = "simulated by the k8see sandbox"
PODS = ("", "pods")
#: Seconds between simulated restarts of a crash-looping container.
RESTART_EVERY_SECONDS = 1.0


@dataclass(frozen=True)
class PodSettings:
    ready_delay_seconds: float
    crash_image_pattern: str | None
    pull_fail_image_pattern: str | None


def _condition(kind: str, status: bool, reason: str | None = None) -> Obj:
    cond: Obj = {
        "type": kind,
        "status": "True" if status else "False",
        "lastProbeTime": None,
        "lastTransitionTime": now(),
        "message": SIMULATED,
    }
    if reason:
        cond["reason"] = reason
    return cond


def _ip(uid: str) -> str:
    n = int(uid.replace("-", "")[:6], 16)
    return f"10.244.{(n >> 8) % 250}.{n % 250 + 2}"


def is_ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )


RUNTIME = "running the built image (k8see sandbox pod runtime)"


@dataclass(frozen=True)
class Verdict:
    """What an external pod runtime saw of a real container: ready, or why not."""

    ready: bool
    message: str = ""
    exit_code: int | None = None


class Kubelet:
    """Moves every pod through its simulated lifecycle; remembers when it first saw each.

    Pods whose first image starts with ``runtime_prefix`` are run for real by an external pod
    runtime (``k8see.sandbox.podruntime``): their readiness follows the runtime's verdicts
    (the real readiness probe, or the real exit) instead of the ready delay.
    """

    def __init__(self, *, api: Api, settings: PodSettings) -> None:
        self.api = api
        self.settings = settings
        self.first_seen: dict[str, float] = {}
        self.pending = False
        self.runtime_prefix: str | None = None
        self.verdicts: dict[tuple[str, str], Verdict] = {}

    def _external(self, pod: Obj) -> bool:
        containers = pod.get("spec", {}).get("containers") or []
        return bool(
            self.runtime_prefix
            and containers
            and str(containers[0].get("image", "")).startswith(self.runtime_prefix)
        )

    def _failure(self, pod: Obj) -> tuple[str, str] | None:
        for c in pod.get("spec", {}).get("containers") or []:
            image = str(c.get("image", ""))
            if self.settings.pull_fail_image_pattern and re.search(
                self.settings.pull_fail_image_pattern, image
            ):
                return "ImagePullBackOff", image
            if self.settings.crash_image_pattern and re.search(
                self.settings.crash_image_pattern, image
            ):
                return "CrashLoopBackOff", image
        return None

    def reconcile(self) -> None:
        rt = self.api.registry.by_key(PODS)
        assert rt is not None
        self.pending = False
        seen = set()
        clock = time.monotonic()
        for pod in self.api.store.list(PODS):
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            if pod["metadata"].get("deletionTimestamp") or pod.get("status", {}).get("phase") in (
                "Succeeded",
                "Failed",
            ):
                continue
            started = self.first_seen.setdefault(uid, clock)
            elapsed = clock - started
            status = self._status(pod, elapsed)
            if status != pod.get("status"):
                pod["status"] = status
                self.api.write(rt, pod)
        self.first_seen = {k: v for k, v in self.first_seen.items() if k in seen}

    def _status(self, pod: Obj, elapsed: float) -> Obj:
        old = pod.get("status") or {}
        status: Obj = {"phase": "Pending", "qosClass": old.get("qosClass", "BestEffort")}
        containers = pod.get("spec", {}).get("containers") or []
        if elapsed < self.settings.ready_delay_seconds:
            self.pending = True
            status["conditions"] = [_condition("PodScheduled", True)]
            status["containerStatuses"] = [
                self._waiting(c, "ContainerCreating", "") for c in containers
            ]
            return self._keep_times(old, status)
        failure = self._failure(pod)
        verdict: Verdict | None = None
        if failure is None and self._external(pod):
            meta = pod["metadata"]
            verdict = self.verdicts.get((meta.get("namespace", ""), meta["name"]))
            if verdict is None or (not verdict.ready and verdict.exit_code is None):
                self.pending = True
                status["conditions"] = [_condition("PodScheduled", True)]
                message = verdict.message if verdict else "starting the real container"
                status["containerStatuses"] = [
                    self._waiting(c, "ContainerCreating", message) for c in containers
                ]
                if verdict is not None:  # running, but the real readiness probe fails
                    status["phase"] = "Running"
                    status["conditions"] = [
                        _condition("Initialized", True),
                        _condition("Ready", False, "ContainersNotReady"),
                        _condition("ContainersReady", False, "ContainersNotReady"),
                        _condition("PodScheduled", True),
                    ]
                return self._keep_times(old, status)
            if not verdict.ready:
                failure = ("CrashLoopBackOff", str(containers[0].get("image", "")))
        base = {
            "hostIP": "10.0.0.10",
            "podIP": _ip(pod["metadata"]["uid"]),
            "startTime": old.get("startTime") or now(),
        }
        status.update(base)
        status["podIPs"] = [{"ip": status["podIP"]}]
        if failure is None:
            status["phase"] = "Running"
            status["conditions"] = [
                _condition(k, True)
                for k in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ]
            if verdict is not None:
                for cond in status["conditions"]:
                    cond["message"] = RUNTIME
            status["containerStatuses"] = [
                {
                    "name": c.get("name"),
                    "image": c.get("image"),
                    "imageID": "",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": status["startTime"]}},
                    "containerID": f"sandbox://{pod['metadata']['uid']}/{c.get('name')}",
                }
                for c in containers
            ]
            return self._keep_times(old, status)
        reason, image = failure
        self.pending = True
        conditions = [
            _condition("Initialized", True),
            _condition("Ready", False, "ContainersNotReady"),
            _condition("ContainersReady", False, "ContainersNotReady"),
            _condition("PodScheduled", True),
        ]
        status["conditions"] = conditions
        if reason == "CrashLoopBackOff":
            status["phase"] = "Running"
            restarts = (
                int((elapsed - self.settings.ready_delay_seconds) / RESTART_EVERY_SECONDS) + 1
            )
            msg = f"back-off 10s restarting failed container ({SIMULATED})"
            if verdict is not None:
                msg = f"back-off 10s restarting failed container: {verdict.message}"
            statuses = [self._waiting(c, reason, msg, restarts=restarts) for c in containers]
            for s in statuses:
                s["lastState"] = {
                    "terminated": {"exitCode": 1, "reason": "Error", "message": SIMULATED}
                }
        else:
            msg = f'Back-off pulling image "{image}" ({SIMULATED})'
            statuses = [self._waiting(c, reason, msg) for c in containers]
        status["containerStatuses"] = statuses
        return self._keep_times(old, status)

    @staticmethod
    def _waiting(c: Obj, reason: str, message: str, *, restarts: int = 0) -> Obj:
        waiting = {"reason": reason, "message": message} if message else {"reason": reason}
        return {
            "name": c.get("name"),
            "image": c.get("image"),
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": restarts,
            "state": {"waiting": waiting},
        }

    @staticmethod
    def _keep_times(old: Obj, new: Obj) -> Obj:
        """Keep lastTransitionTime of unchanged conditions, so an unchanged pod is not rewritten."""
        before = {c.get("type"): c for c in old.get("conditions") or []}
        for cond in new.get("conditions") or []:
            prev = before.get(cond["type"])
            if prev and prev.get("status") == cond["status"]:
                cond["lastTransitionTime"] = prev.get("lastTransitionTime")
        return new
