"""Databases in the demo: the operators' CRDs, and what a deploy created for each database.

On a real cluster the platform admin installs the CloudNativePG, MongoDB Community and MinIO
operators, which install their CRDs; the app chart never ships them. The sandbox installs the
operators' real CRDs (``k8see_sandbox.crds``; MinIO's Tenant is a stand-in) and runs a small
reconciler in place of the operators (``k8see_sandbox.reconciler``), then shows what the
deploy created: the database objects, the app's connection variables and wait init
containers, and the quota. No database server runs in the sandbox, and the demo says so.
"""

from __future__ import annotations

from collections.abc import Callable

from kubernetes import client

#: What stands in for each database in the sandbox.
SIMULATION = {
    "postgresql": "CloudNativePG's real Cluster CRD; a stand-in reconciler made the -rw/-ro/-r "
    "Services, the -app Secret and a pod listening on 5432",
    "mongodb": "MongoDB Community's real CRD; a stand-in reconciler made the -svc Service, the "
    "user's connection Secret and a pod listening on 27017",
    "redis": "a Deployment running the redis image the chart names",
    "minio": "a stand-in Tenant CRD (the MinIO operator's module is not served); a stand-in "
    "reconciler made the -hl Service and a pod listening on 9000",
    "mariadb": "a Deployment and PVC running the mariadb image the chart names",
}


def describe(
    api: client.ApiClient, *, namespace: str, deployment: str, say: Callable[[str], None]
) -> None:
    """Print the environment's databases: objects, connection variables, waits and quota."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    pod = apps.read_namespaced_deployment(deployment, namespace).spec.template.spec
    waits = [c.name for c in pod.init_containers or []]
    databases = [name.removeprefix("wait-for-") for name in waits]
    if not databases:
        return
    say("\nDatabases (the database servers are SIMULATED in the sandbox):")
    for db in databases:
        say(f"  {db}: {SIMULATION.get(db, 'simulated')}")
    services = sorted(
        s.metadata.name
        for s in core.list_namespaced_service(namespace).items
        if s.metadata.name.startswith("app-")
    )
    say(f"  Services: {', '.join(services)}")
    env = [e.name for e in pod.containers[0].env or []]
    say(f"  App connection variables (values from Secrets, not shown): {', '.join(env)}")
    say(f"  Init containers waiting for them: {', '.join(waits)}")
    hard = core.read_namespaced_resource_quota("pr-quota", namespace).spec.hard
    keys = ("requests.cpu", "limits.cpu", "requests.memory", "limits.memory", "requests.storage")
    say("  Quota pr-quota: " + ", ".join(f"{k}={hard[k]}" for k in keys if k in hard))
