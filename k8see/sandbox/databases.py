"""Databases in the demo: the operators' CRDs, and what a deploy created for each database.

On a real cluster the platform admin installs the CloudNativePG, MongoDB Community and MinIO
operators, which install their CRDs; the app chart never ships them. The sandbox simulates
those operators, so the demo installs minimal CRDs (any spec accepted) in their place, then
shows what the deploy created: the database objects, the app's connection variables and wait
init containers, and the quota. No database server runs in the sandbox, and the demo says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

#: group, plural, kind, version of each simulated operator's custom resource.
OPERATOR_KINDS = (
    ("postgresql.cnpg.io", "clusters", "Cluster", "v1"),
    ("mongodbcommunity.mongodb.com", "mongodbcommunity", "MongoDBCommunity", "v1"),
    ("minio.min.io", "tenants", "Tenant", "v2"),
)
#: What stands in for each database in the sandbox.
SIMULATION = {
    "postgresql": "CloudNativePG simulated: Cluster accepted, -rw/-ro/-r Services and -app Secret",
    "mongodb": "MongoDB operator simulated: -svc Service and the user's connection Secret",
    "redis": "a Deployment whose pod is simulated (no redis-server runs)",
    "minio": "MinIO operator simulated: Tenant accepted, -hl Service",
    "mariadb": "a Deployment and PVC whose pod is simulated (no mariadbd runs)",
}


def crd(group: str, plural: str, kind: str, version: str) -> dict[str, Any]:
    """A minimal CRD serving ``kind``: any spec accepted, a status subresource."""
    schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": schema,
                }
            ],
        },
    }


def install_operator_crds(api: client.ApiClient) -> None:
    """Create the three CRDs unless they exist (what installing the operators would do)."""
    ext = client.ApiextensionsV1Api(api)
    for kind in OPERATOR_KINDS:
        try:
            ext.create_custom_resource_definition(crd(*kind))
        except ApiException as exc:
            if exc.status != 409:
                raise


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
