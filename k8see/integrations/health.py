"""What a deploy reads back from the cluster: the health check and why pods are not serving.

Split from ``kube`` (which changes the cluster) because these only read, and their output
ends up in the PR comment: waiting reasons, the last log lines and quota refusals, each cut
short. Calls go through ``kubeapi.call``, so the retries and the error mapping are the same and
no kubernetes exception leaves this module either.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from k8see.errors import KubeError
from k8see.integrations.kubeapi import MAX_MESSAGE_CHARS, call, status_fields

__all__ = ["FATAL_WAITING_REASONS", "HealthResult", "pod_diagnostics", "wait_healthy"]

#: Waiting reasons that will not fix themselves; a deploy seeing one fails fast.
FATAL_WAITING_REASONS = (
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)


@dataclass(frozen=True)
class HealthResult:
    """The outcome of the post-deploy health check.

    Attributes:
        ok: A 2xx answer came back.
        status: The last HTTP status seen (0: no answer at all).
        attempts: How many requests were made.
        detail: The last failure, short (a status line, never a response body).
    """

    ok: bool
    status: int
    attempts: int
    detail: str = ""


def wait_healthy(
    *,
    api: ApiClient,
    namespace: str,
    service: str,
    port: int | str,
    path: str,
    attempts: int,
    interval_seconds: float,
) -> HealthResult:
    """GET ``path`` on the Service through the API server's service proxy, until a 2xx.

    Any 2xx passes, including 204 and empty bodies (the reference required a body). No port
    forward is needed, so it works from a worker outside the cluster network.
    """
    parts = urlsplit(path if path.startswith("/") else f"/{path}")
    resource = (
        f"/api/v1/namespaces/{quote(namespace)}/services/"
        f"{quote(f'{service}:{port}', safe=':')}/proxy{quote(parts.path, safe='/._-~')}"
    )
    query = [tuple(p.split("=", 1)) if "=" in p else (p, "") for p in parts.query.split("&") if p]
    status, detail = 0, ""
    for attempt in range(1, max(1, attempts) + 1):
        try:
            response = api.call_api(
                resource,
                "GET",
                query_params=query,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=10,
            )
            status = int(response.status)
            response.release_conn()
            if 200 <= status <= 299:
                return HealthResult(ok=True, status=status, attempts=attempt)
            detail = f"HTTP {status}"
        except ApiException as exc:
            status = int(exc.status or 0)
            reason, message = status_fields(exc)
            detail = f"HTTP {status} {reason}".strip() + (f": {message}" if message else "")
        except urllib3.exceptions.HTTPError as exc:
            status, detail = 0, f"no answer ({type(exc).__name__})"
        if attempt < attempts:
            time.sleep(interval_seconds)
    return HealthResult(ok=False, status=status, attempts=max(1, attempts), detail=detail)


def pod_diagnostics(
    *, api: ApiClient, namespace: str, selector: str, log_lines: int = 20, probes: bool = False
) -> dict[str, Any]:
    """Why pods matching ``selector`` are not serving: waiting reasons, logs, quota refusals.

    With ``probes``, a running pod that is not ready is asked why as well: the kubelet's last
    probe failure, from the pod's ``Unhealthy`` events (one more request per such pod, so a
    deploy asks only once it has failed, not on every tick).

    Returns:
        ``{"reason": <the most telling reason or "">, "message": str, "pods": [...],
        "logs": [last log lines of the first failing container], "probe": <the last probe
        failure of a pod that is not ready, or "">, "terminating": <pods in their grace
        period>}``.
    """
    core = client.CoreV1Api(api)
    pods = call(
        core.list_namespaced_pod,
        namespace,
        label_selector=selector,
        what=f"list pods in {namespace}",
    )
    out: dict[str, Any] = {
        "reason": "",
        "message": "",
        "pods": [],
        "logs": [],
        "probe": "",
        "terminating": 0,
    }
    for pod in pods.items or []:
        if pod.metadata.deletion_timestamp is not None:
            # An earlier rollout's pod in its grace period: it still counts against the
            # namespace quota until it is gone.
            out["terminating"] += 1
        info: dict[str, Any] = {"name": pod.metadata.name, "phase": pod.status.phase or ""}
        for cs in list(pod.status.init_container_statuses or []) + list(
            pod.status.container_statuses or []
        ):
            waiting = cs.state.waiting if cs.state else None
            terminated = cs.last_state.terminated if cs.last_state else None
            info.setdefault("containers", []).append(
                {
                    "name": cs.name,
                    "ready": bool(cs.ready),
                    "restarts": cs.restart_count or 0,
                    "waiting": waiting.reason if waiting else "",
                    "last_exit_code": terminated.exit_code if terminated else None,
                }
            )
            if waiting and waiting.reason and not out["reason"]:
                out["reason"] = str(waiting.reason)
                out["message"] = str(waiting.message or "")[:MAX_MESSAGE_CHARS]
                out["logs"] = _logs(
                    core,
                    namespace,
                    pod.metadata.name,
                    cs.name,
                    previous=bool(cs.restart_count),
                    lines=log_lines,
                )
        out["pods"].append(info)
        unready = [
            cs
            for cs in pod.status.container_statuses or []
            if cs.state and cs.state.running and not cs.ready
        ]
        if probes and unready and not out["probe"]:
            out["probe"] = _probe_failure(core, namespace, str(pod.metadata.name))
            if out["probe"] and not out["logs"]:
                out["logs"] = _logs(
                    core,
                    namespace,
                    pod.metadata.name,
                    unready[0].name,
                    previous=False,
                    lines=log_lines,
                )
    if not out["reason"]:
        refusal = _creation_refusal(api, namespace, selector)
        if refusal:
            out["reason"], out["message"] = "FailedCreate", refusal
    return out


def _probe_failure(core: Any, namespace: str, pod: str) -> str:
    """The kubelet's latest probe failure for ``pod`` (its ``Unhealthy`` event), or ""."""
    events = call(
        core.list_namespaced_event,
        namespace,
        field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod},reason=Unhealthy",
        what=f"list events of {pod}",
    )
    latest = max(
        events.items or [],
        key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp,
        default=None,
    )
    return str(latest.message or "")[:MAX_MESSAGE_CHARS] if latest is not None else ""


def _logs(
    core: Any, namespace: str, pod: str, container: str, *, previous: bool, lines: int
) -> list[str]:
    for prev in (True, False) if previous else (False,):
        try:
            text = call(
                core.read_namespaced_pod_log,
                pod,
                namespace,
                container=container,
                tail_lines=lines,
                previous=prev,
                what=f"read logs of {pod}",
            )
        except KubeError:
            continue
        found = [line[:500] for line in str(text or "").splitlines() if line.strip()]
        if found:
            return found[-lines:]
    return []


def _creation_refusal(api: ApiClient, namespace: str, selector: str) -> str:
    """The message of a ReplicaSet that cannot create its pods (e.g. exceeded quota)."""
    apps = client.AppsV1Api(api)
    sets = call(
        apps.list_namespaced_replica_set,
        namespace,
        label_selector=selector,
        what=f"list ReplicaSets in {namespace}",
    )
    for rs in sets.items or []:
        for cond in (rs.status.conditions if rs.status else None) or []:
            if cond.type == "ReplicaFailure" and cond.status == "True":
                return str(cond.message or cond.reason or "")[:MAX_MESSAGE_CHARS]
    return ""
