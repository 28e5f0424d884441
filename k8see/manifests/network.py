"""The five NetworkPolicies of a PR namespace, and the address ranges they cut out.

Pure functions, like the rest of ``k8see.manifests`` (docs/environments.md "2. Guardrails"):
default-deny, traffic inside the namespace, the ingress controller to the app's port,
Prometheus, and egress to the namespace, DNS, the API server and the internet outside private,
link-local, CGNAT and metadata ranges. The build pool's sealed RUN steps cut the same ranges out
of their egress (``integrations.buildnet`` imports ``PRIVATE_RANGES`` and
``NON_INTERNET_RANGES`` from here).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from k8see import names
from k8see.errors import ConfigError

__all__ = [
    "DEFAULT_API_PORTS",
    "NON_INTERNET_RANGES",
    "PRIVATE_RANGES",
    "api_server_cidrs",
    "egress_exceptions",
    "network_policies",
]


def api_server_cidrs(addresses: Iterable[str]) -> list[str]:
    """Addresses or CIDRs of the API server as ``/32`` (``/128``) blocks, validated."""
    out: list[str] = []
    for address in addresses:
        try:
            network = ipaddress.ip_network(address.strip(), strict=False)
        except ValueError as exc:
            raise ConfigError(
                f"API server address {address!r} is not an IP address or CIDR.",
                hint="Set deploy.api_server_cidrs to addresses like '10.43.0.1/32'.",
            ) from exc
        if str(network) not in out:
            out.append(str(network))
    return out


#: The API server ports the egress policy opens when the real ones are not known: the
#: Service's usual port and kubeadm's default listening port.
DEFAULT_API_PORTS = (443, 6443)
#: Private ranges kept out of the open internet egress rule (docs/environments.md "2. Guardrails").
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
#: Kept out of it too: "this network", loopback, link-local (the cloud metadata address
#: 169.254.169.254 among them), CGNAT (where some clusters put pods or nodes, and Alibaba its
#: metadata), and Azure's host address 168.63.129.16 (metadata, DNS, health).
NON_INTERNET_RANGES = (
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "168.63.129.16/32",
)


def egress_exceptions(denied: Iterable[str] = ()) -> list[str]:
    """The IPv4 blocks cut out of the internet egress rule: the fixed ranges and ``denied``
    (``deploy.egress_denied_cidrs``: the cluster's pod and service CIDRs). IPv6 blocks are
    skipped: no egress rule admits IPv6 at all.

    Raises:
        ConfigError: an entry of ``denied`` is not a CIDR.
    """
    out = [*PRIVATE_RANGES, *NON_INTERNET_RANGES]
    for cidr in denied:
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError as exc:
            raise ConfigError(
                f"deploy.egress_denied_cidrs entry {cidr!r} is not a CIDR.",
                hint="Set it to the cluster's pod and service CIDRs, e.g. '10.42.0.0/16'.",
            ) from exc
        if network.version == 4 and str(network) not in out:
            out.append(str(network))
    return out


def network_policies(
    *,
    namespace: str,
    app_port: int,
    ingress_namespace: str = "kube-system",
    ingress_labels: Mapping[str, str] | None = None,
    api_cidrs: Iterable[str] = (),
    api_ports: Iterable[int] = (),
    observability_namespace: str = "observability",
    observability_labels: Mapping[str, str] | None = None,
    dns_namespace: str = "kube-system",
    denied_cidrs: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """The five NetworkPolicies (docs/environments.md "2. Guardrails"), all selecting every pod.

    No cross-namespace traffic except from the ingress controller (to ``app_port``) and from
    Prometheus; egress to the namespace, DNS, the API server (operators' sidecars need it;
    the addresses are given because kube-proxy DNATs before policy on some CNIs) and the
    internet outside private, link-local, CGNAT and metadata ranges and ``denied_cidrs``
    (``egress_exceptions``). The API server rule opens ``api_ports``, the ports of the real
    ``kubernetes`` Service and endpoints; without them (offline renders) the usual 443 and
    6443. The API server's addresses may also reach ``app_port``:
    the deploy's health check goes through the API server's service proxy, whose requests
    come from the control plane (the reference's ``kubectl port-forward`` entered the pod's
    own network namespace, where policies do not apply).
    """
    if isinstance(app_port, bool) or not 1 <= int(app_port) <= 65535:
        raise ConfigError(f"app.port {app_port!r} is not between 1 and 65535.")
    ingress_labels = dict(ingress_labels or {"app.kubernetes.io/name": "traefik"})
    observability_labels = dict(observability_labels or {"app.kubernetes.io/name": "prometheus"})

    def ns_selector(name: str) -> dict[str, Any]:
        return {"matchLabels": {"kubernetes.io/metadata.name": name}}

    def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {
                    names.LABEL_MANAGED_BY: names.MANAGED_BY,
                    names.LABEL_TYPE: "network-policy",
                },
            },
            "spec": {"podSelector": {}, **spec},
        }

    egress: list[dict[str, Any]] = [
        {"to": [{"podSelector": {}}]},
        {
            "to": [{"namespaceSelector": ns_selector(dns_namespace)}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        },
    ]
    cidrs = api_server_cidrs(api_cidrs)
    ports = sorted({int(p) for p in api_ports}) or list(DEFAULT_API_PORTS)
    if cidrs:
        egress.append(
            {
                "to": [{"ipBlock": {"cidr": cidr}} for cidr in cidrs],
                "ports": [{"protocol": "TCP", "port": port} for port in ports],
            }
        )
    internet = {"cidr": "0.0.0.0/0", "except": egress_exceptions(denied_cidrs)}
    egress.append({"to": [{"ipBlock": internet}]})
    app_ingress: list[dict[str, Any]] = [
        {
            "from": [
                {
                    "namespaceSelector": ns_selector(ingress_namespace),
                    "podSelector": {"matchLabels": ingress_labels},
                }
            ],
            "ports": [{"protocol": "TCP", "port": int(app_port)}],
        }
    ]
    if cidrs:  # the health check, through the API server's service proxy
        app_ingress.append(
            {
                "from": [{"ipBlock": {"cidr": cidr}} for cidr in cidrs],
                "ports": [{"protocol": "TCP", "port": int(app_port)}],
            }
        )
    return [
        policy("default-deny", {"policyTypes": ["Ingress", "Egress"]}),
        policy(
            "allow-same-namespace",
            {
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {}}]}],
            },
        ),
        policy("allow-ingress-controller", {"policyTypes": ["Ingress"], "ingress": app_ingress}),
        policy(
            "allow-observability",
            {
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": ns_selector(observability_namespace),
                                "podSelector": {"matchLabels": observability_labels},
                            }
                        ]
                    }
                ],
            },
        ),
        policy("allow-egress", {"policyTypes": ["Egress"], "egress": egress}),
    ]
