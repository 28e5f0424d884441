"""Every pod the app chart renders passes Pod Security Admission's baseline level.

PR namespaces enforce ``deploy.pod_security`` (baseline by default), so a pod template that
breaks it would be refused at deploy time on a real cluster; the sandbox does not enforce
PSA. The checks are baseline's controls as the Kubernetes Pod Security Standards list them
(host namespaces, privileged containers, added capabilities beyond the allowed set, hostPath
volumes, host ports, /proc mount type, seccomp Unconfined, unsafe sysctls). Pod templates come
from Deployments and the MongoDB statefulSet override; CloudNativePG and MinIO pods are made by
their operators, which run them restricted themselves.
"""

from __future__ import annotations

from typing import Any

from tests.charts.test_database_subcharts import DATABASES, render
from tests.conftest import require_tool

#: Capabilities baseline lets a container add (Pod Security Standards, "Capabilities").
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip


def baseline_violations(pod: dict[str, Any]) -> list[str]:
    """What in a pod spec the baseline level refuses (empty: it is admitted)."""
    found = [f"{key}: true" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    found += [f"hostPath volume {v['name']}" for v in pod.get("volumes") or [] if "hostPath" in v]
    pod_seccomp = ((pod.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
    if pod_seccomp == "Unconfined":
        found.append("pod seccomp Unconfined")
    for sysctl in (pod.get("securityContext") or {}).get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl['name']}")
    containers = [
        *(pod.get("initContainers") or []),
        *(pod.get("containers") or []),
        *(pod.get("ephemeralContainers") or []),
    ]
    for c in containers:
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            found.append(f"{c['name']}: privileged")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            found.append(f"{c['name']}: adds {sorted(added - BASELINE_CAPABILITIES)}")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            found.append(f"{c['name']}: hostPort")
        if sc.get("procMount") not in (None, "Default"):
            found.append(f"{c['name']}: procMount {sc['procMount']}")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            found.append(f"{c['name']}: seccomp Unconfined")
    return found


def pod_templates(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    templates = {}
    for obj in objects:
        spec = obj.get("spec") or {}
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            templates[f"{obj['kind']}/{obj['metadata']['name']}"] = spec["template"]["spec"]
        elif obj["kind"] == "MongoDBCommunity":
            template = spec["statefulSet"]["spec"]["template"]["spec"]
            templates[f"MongoDBCommunity/{obj['metadata']['name']}"] = template
    return templates


def test_every_rendered_pod_passes_baseline() -> None:
    require_tool("helm")
    # Given the app chart with every database and every optional piece on
    objects = render(
        dict.fromkeys(DATABASES, True),
        metrics={"enabled": True},
        writableDirs=["/tmp/cache"],
        envFrom=[{"secretRef": {"name": "extra"}}],
    )
    templates = pod_templates(objects)
    assert {"Deployment/shop-pr-42-app"} <= set(templates), sorted(templates)
    assert len(templates) >= 4  # app, redis, mariadb, mongodb
    # Then none of their pods is refused by baseline
    assert {name: baseline_violations(pod) for name, pod in templates.items()} == {
        name: [] for name in templates
    }


def test_the_checker_sees_what_baseline_refuses() -> None:
    pod = {
        "hostNetwork": True,
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        "containers": [
            {"name": "a", "securityContext": {"privileged": True}},
            {"name": "b", "securityContext": {"capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}},
            {"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}]},
        ],
    }
    assert baseline_violations(pod) == [
        "hostNetwork: true",
        "hostPath volume root",
        "a: privileged",
        "b: adds ['NET_ADMIN']",
        "c: hostPort",
    ]
