"""The operators' CRDs in the local cluster: the real ones, from the operators' Go modules.

``scripts/fetch-operator-crds.sh`` (run by ``make bootstrap``) takes CloudNativePG's
``Cluster``, MongoDB Community's ``MongoDBCommunity``, the Prometheus operator's
``ServiceMonitor`` and KEDA's ``ScaledObject`` and ``TriggerAuthentication`` CRDs from the
operators' modules at the versions pinned in ``tools/operator-crds.txt`` and links them into
``.tools/crds``. Installed as they are, the API
server validates (and prunes) the app chart's objects by the operators' own schemas, as on a
production cluster. The MinIO operator's module is not served by the module proxy, so its
``Tenant`` keeps a schemaless stand-in CRD of ours (``TENANT_STANDIN``): any spec is accepted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from k8see.errors import ToolMissing
from k8see_sandbox.platform import ROOT

__all__ = [
    "CRD_DIR",
    "DATABASE_CRDS",
    "KEDA_CRDS",
    "METRICS_CRDS",
    "RULES_CRDS",
    "install",
    "load",
    "uninstall",
]

#: Where bootstrap links the fetched CRD files.
CRD_DIR = ROOT / ".tools" / "crds"
#: The files the database operators' kinds come from ("" is the Tenant stand-in).
DATABASE_CRDS = (
    "postgresql.cnpg.io_clusters.yaml",
    "mongodbcommunity.mongodb.com_mongodbcommunity.yaml",
    "",
)
#: The Prometheus operator's ServiceMonitor (``metrics.enabled``).
METRICS_CRDS = ("monitoring.coreos.com_servicemonitors.yaml",)
#: The Prometheus operator's PrometheusRule (the platform chart's ``metrics.prometheusRule``).
RULES_CRDS = ("monitoring.coreos.com_prometheusrules.yaml",)
#: KEDA's ScaledObject and TriggerAuthentication (the platform chart's ``autoscaling.keda``).
KEDA_CRDS = ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml")
ESTABLISHED_TIMEOUT_SECONDS = 60.0
#: Deleting a CRD right after creating it waits for its storage to initialise, with backoff.
DELETED_TIMEOUT_SECONDS = 180.0

#: The MinIO operator's Tenant without a schema: the only stand-in CRD left (see above).
TENANT_STANDIN: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "tenants.minio.min.io"},
    "spec": {
        "group": "minio.min.io",
        "scope": "Namespaced",
        "names": {"plural": "tenants", "singular": "tenant", "kind": "Tenant"},
        "versions": [
            {
                "name": "v2",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def load(files: tuple[str, ...], *, crd_dir: Path = CRD_DIR) -> list[dict[str, Any]]:
    """The CRDs in ``files`` (names in ``crd_dir``; "" is the Tenant stand-in).

    Raises:
        ToolMissing: A file is not there (bootstrap has not fetched it).
    """
    crds: list[dict[str, Any]] = []
    for name in files:
        if not name:
            crds.append(TENANT_STANDIN)
            continue
        path = crd_dir / name
        if not path.is_file():
            raise ToolMissing(
                f"The operator CRD {name} is not in {crd_dir}.",
                hint="Run `make bootstrap` (scripts/fetch-operator-crds.sh fetches it).",
            )
        crds += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return crds


def install(api: client.ApiClient, files: tuple[str, ...] = DATABASE_CRDS) -> list[str]:
    """Create the CRDs of ``files`` unless they exist, and wait until they are served.

    Returns:
        The names of the CRDs this call created (those that existed are left alone: on a
        cluster with the operators installed they are the operators').
    """
    ext = client.ApiextensionsV1Api(api)
    created: list[str] = []
    for crd in load(files):
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as exc:
            if exc.status != 409:
                raise
            continue
        created.append(crd["metadata"]["name"])
    deadline = time.monotonic() + ESTABLISHED_TIMEOUT_SECONDS
    for name in created:
        while not _established(ext.read_custom_resource_definition(name)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not Established in {ESTABLISHED_TIMEOUT_SECONDS}s")
            time.sleep(0.2)
    return created


def uninstall(api: client.ApiClient, names: list[str]) -> None:
    """Delete the CRDs ``names`` (their objects go with them) and wait until they are gone."""
    ext = client.ApiextensionsV1Api(api)
    for name in names:
        try:
            ext.delete_custom_resource_definition(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
    deadline = time.monotonic() + DELETED_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        left = {c.metadata.name for c in ext.list_custom_resource_definition().items}
        if not left & set(names):
            return
        time.sleep(0.2)
    raise TimeoutError(f"CRDs {names} not deleted in {DELETED_TIMEOUT_SECONDS}s")


def _established(crd: Any) -> bool:
    conditions = (crd.status and crd.status.conditions) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)
