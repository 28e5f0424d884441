"""Cluster DNS for the local node: Service names resolve to their ready endpoints' addresses.

What stands in for CoreDNS. The kubelet points every pod at the node's address
(``clusterDNS``), and this answers A queries there for ``<service>.<namespace>.svc.<domain>``
and ``<hostname>.<service>.<namespace>.svc.<domain>`` (a StatefulSet pod behind a headless
Service) from the API server's Endpoints. There is no kube-proxy, so a Service's cluster IP
leads nowhere: every Service answers as a headless one would, with its ready pods' addresses,
and clients reach the pods directly on the Service's port (the Services pods in the sandbox
talk to expose their target port unchanged). Other names and kinds get no address; names
outside the cluster domain are refused, so a pod's resolver falls through its search list.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

__all__ = ["ClusterDns"]

log = logging.getLogger(__name__)

A, IN = 1, 1
NOERROR, SERVFAIL, NXDOMAIN, REFUSED = 0, 2, 3, 5
TTL_SECONDS = 2


class ClusterDns:
    """A DNS responder on ``address``:53 (UDP) for the cluster domain, until ``stop()``."""

    def __init__(self, api: client.ApiClient, *, address: str, domain: str = "cluster.local"):
        self.core = client.CoreV1Api(api)
        self.domain = domain.strip(".").lower()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 53))
        self.sock.settimeout(0.5)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="cluster-dns", daemon=True)

    def start(self) -> ClusterDns:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self.sock.close()
        self.core.api_client.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                query, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                self.sock.sendto(self.answer(query), peer)
            except (ValueError, IndexError, struct.error):
                continue  # not a DNS query we can parse: no answer, as from a real server
            except OSError as exc:
                log.debug("Cluster DNS could not answer %s: %s.", peer, exc)

    def answer(self, query: bytes) -> bytes:
        """The response to one DNS ``query`` message."""
        (ident, flags, qdcount) = struct.unpack("!HHH", query[:6])
        if qdcount != 1:
            return _header(ident, flags, SERVFAIL, 0)
        name, end = _read_name(query, 12)
        qtype, qclass = struct.unpack("!HH", query[end : end + 4])
        question = query[12 : end + 4]
        addresses: list[str] = []
        lowered = name.lower()
        if not lowered.endswith("." + self.domain):
            rcode = REFUSED
        else:
            try:
                found = self._lookup(lowered[: -len(self.domain) - 1])
            except ApiException:
                return _header(ident, flags, SERVFAIL, 1) + question
            rcode = NOERROR if found is not None else NXDOMAIN
            if found and qtype == A and qclass == IN:
                addresses = found
        out = _header(ident, flags, rcode, 1, len(addresses)) + question
        for address in addresses:
            # A pointer to the question's name, then type A, class IN, TTL and the address.
            out += struct.pack("!HHHIH", 0xC00C, A, IN, TTL_SECONDS, 4)
            out += socket.inet_aton(address)
        return out

    def _lookup(self, name: str) -> list[str] | None:
        """The addresses of ``<service>.<namespace>.svc`` or ``<host>.<service>.<namespace>.svc``
        (maybe none ready yet), or None when no such Service exists."""
        parts = name.split(".")
        if len(parts) not in (3, 4) or parts[-1] != "svc":
            return None
        hostname = parts[0] if len(parts) == 4 else None
        service, namespace = parts[-3], parts[-2]
        try:
            endpoints: Any = self.core.read_namespaced_endpoints(service, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        ready = [a for s in endpoints.subsets or [] for a in s.addresses or []]
        if hostname is not None:
            ready = [a for a in ready if a.hostname == hostname]
            if not ready:
                return None
        return [a.ip for a in ready]


def _header(ident: int, flags: int, rcode: int, qdcount: int, ancount: int = 0) -> bytes:
    # QR (a response), the query's opcode and RD, AA (we own the domain), RA off.
    response = 0x8000 | (flags & 0x7900) | 0x0400 | rcode
    return struct.pack("!HHHHHH", ident, response, qdcount, ancount, 0, 0)


def _read_name(message: bytes, offset: int) -> tuple[str, int]:
    """The dotted name at ``offset`` of a question (no compression there) and where it ends."""
    labels: list[str] = []
    while True:
        length = message[offset]
        if length == 0:
            return ".".join(labels), offset + 1
        if length & 0xC0:
            raise ValueError("a compressed name in a question")
        labels.append(message[offset + 1 : offset + 1 + length].decode("ascii"))
        offset += 1 + length
