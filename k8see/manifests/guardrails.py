"""The namespace guardrails of a preview environment, as plain manifests, in apply order.

Pure functions: no cluster, no settings object, so ``k8see render`` prints exactly what a
deploy applies (docs/environments.md "2. Guardrails"). ``guardrails()`` assembles them from
their two modules:

- ``manifests.quota``: the ResourceQuota ``pr-quota``, computed from what the environment will
  run, and the LimitRange ``pr-limits``, whose maxima grow the same way;
- ``manifests.network``: the five NetworkPolicies, with the ingress controller and API server
  addresses given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from k8see.manifests.network import network_policies
from k8see.manifests.quota import limit_range, resource_quota

__all__ = ["guardrails"]


def guardrails(
    *,
    namespace: str,
    project_id: str,
    pr: int,
    app_port: int,
    databases: Mapping[str, Mapping[str, Any] | None] | Iterable[str] = (),
    resources: Mapping[str, Any] | None = None,
    ingress_namespace: str = "kube-system",
    ingress_labels: Mapping[str, str] | None = None,
    api_cidrs: Iterable[str] = (),
    api_ports: Iterable[int] = (),
    denied_cidrs: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Every object k8see applies to a PR namespace before the Helm release, in order."""
    databases = dict(databases) if isinstance(databases, Mapping) else list(databases)
    return [
        resource_quota(
            namespace=namespace,
            project_id=project_id,
            pr=pr,
            databases=databases,
            resources=resources,
        ),
        limit_range(
            namespace=namespace,
            project_id=project_id,
            pr=pr,
            databases=databases,
            resources=resources,
        ),
        *network_policies(
            namespace=namespace,
            app_port=app_port,
            ingress_namespace=ingress_namespace,
            ingress_labels=ingress_labels,
            api_cidrs=api_cidrs,
            api_ports=api_ports,
            denied_cidrs=denied_cidrs,
        ),
    ]
