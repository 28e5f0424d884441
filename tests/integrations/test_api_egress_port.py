"""The API server egress rule opens the ports the real ``kubernetes`` Service and endpoints use.

Covers, on the real cluster (whose API server listens on a random port): the endpoint read
by the deploy pool's calls has the Service IP and port and the endpoints' IPs and port; the
egress policy built from it, applied to a namespace, opens exactly those ports; offline
(no endpoint known) the usual 443 and 6443 stay.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from k8see.integrations import kube
from k8see.manifests.network import network_policies
from k8see.settings import PlatformSettings


@pytest.fixture
def api(kubeconfig: Path) -> Iterator[Any]:
    api = kube.make_api(PlatformSettings(deploy={"kubeconfig": str(kubeconfig)}))
    yield api
    api.close()


def test_the_egress_rule_opens_the_api_servers_real_ports(
    api: Any, kube_api_client: Any, kube_namespace: str
) -> None:
    # Given the cluster's own account of where its API server is
    core = client.CoreV1Api(kube_api_client)
    service = core.read_namespaced_service("kubernetes", "default")
    endpoints = core.read_namespaced_endpoints("kubernetes", "default")
    listening = {p.port for s in endpoints.subsets for p in s.ports}
    ips = {a.ip for s in endpoints.subsets for a in s.addresses}
    # When k8see reads it
    endpoint = kube.api_server_endpoint(api=api)
    # Then it has the Service's and the endpoints' addresses and ports
    assert set(endpoint.ports) == listening | {p.port for p in service.spec.ports}
    assert f"{service.spec.cluster_ip}/32" in endpoint.cidrs
    assert {f"{ip}/32" for ip in ips} <= set(endpoint.cidrs)
    # And the egress policy applied with it opens those ports, not a guess
    policies = network_policies(
        namespace=kube_namespace,
        app_port=8080,
        api_cidrs=endpoint.cidrs,
        api_ports=endpoint.ports,
    )
    kube.apply_objects(api=api, namespace=kube_namespace, manifests=policies)
    applied = client.NetworkingV1Api(kube_api_client).read_namespaced_network_policy(
        "allow-egress", kube_namespace
    )
    api_rule = next(
        rule for rule in applied.spec.egress if rule.to and rule.to[0].ip_block and rule.ports
    )
    assert {p.port for p in api_rule.ports} == set(endpoint.ports)
    assert listening <= {p.port for p in api_rule.ports}


def test_offline_the_usual_ports_are_opened() -> None:
    policies = network_policies(namespace="x-pr-1", app_port=8080, api_cidrs=["10.0.0.1"])
    egress = next(p for p in policies if p["metadata"]["name"] == "allow-egress")
    api_rule = egress["spec"]["egress"][2]
    assert [p["port"] for p in api_rule["ports"]] == [443, 6443]
