"""The local cluster's DNS (``k8see_sandbox.cluster.dns``), asked over UDP at the node address.

Covers: ``<service>.<namespace>.svc.cluster.local`` answers the ready pod's address; a Service
with no ready pod answers no address (NOERROR); a missing Service and a malformed cluster name
are NXDOMAIN; a name outside the cluster domain is REFUSED, so a pod's resolver moves on along
its search list; AAAA questions get no address.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from kubernetes import client

from tests.fixtures.kube import run_testapp

A, AAAA = 1, 28


def ask(server: str, name: str, qtype: int = A) -> tuple[int, list[str]]:
    """The response code and A addresses for ``name``."""
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    query = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + question
    query += struct.pack("!HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(query, (server, 53))
        answer = sock.recv(512)
    ident, flags, _, count = struct.unpack("!HHHH", answer[:8])
    assert ident == 0x1234 and flags & 0x8000  # our query's response
    offset, addresses = len(query), []
    for _ in range(count):
        rtype, _, _, length = struct.unpack("!HHIH", answer[offset + 2 : offset + 12])
        if rtype == A:
            addresses.append(socket.inet_ntoa(answer[offset + 12 : offset + 12 + length]))
        offset += 12 + length
    return flags & 0xF, addresses


def test_service_names_resolve_to_their_ready_pods(
    local_cluster: Any, kube_api_client: Any, kube_namespace: str
) -> None:
    ns, server = kube_namespace, local_cluster.slot.node_ip
    core = client.CoreV1Api(kube_api_client)
    # Given a ready pod behind a Service, and a Service selecting nothing
    run_testapp(kube_api_client, ns, "web")
    for name, selector in (("web", {"app": "web"}), ("empty", {"app": "nobody"})):
        core.create_namespaced_service(
            ns,
            {"metadata": {"name": name}, "spec": {"selector": selector, "ports": [{"port": 8080}]}},
        )
    pod_ip = core.read_namespaced_pod("web", ns).status.pod_ip
    # Then the Service's name answers the pod's address (once its endpoints are written)
    deadline = time.monotonic() + 30
    while ask(server, f"web.{ns}.svc.cluster.local") != (0, [pod_ip]):
        assert time.monotonic() < deadline, ask(server, f"web.{ns}.svc.cluster.local")
        time.sleep(0.2)
    assert ask(server, f"WEB.{ns}.svc.cluster.local") == (0, [pod_ip])  # names ignore case
    assert ask(server, f"web.{ns}.svc.cluster.local", AAAA) == (0, [])
    # And the others answer as a cluster DNS does
    assert ask(server, f"empty.{ns}.svc.cluster.local") == (0, [])
    assert ask(server, f"missing.{ns}.svc.cluster.local") == (3, [])
    assert ask(server, f"{ns}.svc.cluster.local") == (3, [])
    assert ask(server, "example.com") == (5, [])
