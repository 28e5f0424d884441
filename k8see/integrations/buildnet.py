"""A network namespace of its own for a build's ``RUN`` steps (``build.network: sealed``).

Why: a ``RUN`` step is the pull request's code. In the worker's network namespace it reaches
everything the worker reaches: services on loopback (Redis, the registry's API, other
platforms' processes), the Kubernetes API, the cloud metadata address 169.254.169.254, the
cluster's pods and Services. ``sealed`` gives each build a namespace holding one end of a
veth pair, whose other end is in the worker's namespace, and firewall rules (iptables, in the
worker's namespace, matching only that veth) that let a step reach the internet and nothing
of the worker:

* to the worker itself (any of its addresses, the veth's own included): only DNS to the
  nameservers of its ``/etc/resolv.conf`` and the ``allowed`` ranges; everything else is
  rejected (its loopback is another namespace's and unreachable anyway);
* forwarded: rejected to private, loopback, link-local (metadata), CGNAT and Azure's host
  ranges (``manifests.network``'s lists, the same the PR namespaces' egress policy cuts out) and to
  ``denied`` (the cluster's pod and Service CIDRs outside those, a public API address),
  unless in ``allowed`` or DNS to a nameserver; everything else is masqueraded out.

buildah itself (pulling base images, reading and writing the registry cache, pushing) stays
in the worker's namespace; only the steps join this one (``--network ns:<path>``, which needs
``--isolation oci``: chroot isolation runs steps in buildah's own namespace).

Each build takes a slot (an ``flock`` under ``/run/k8see-buildnet``, held for the build): slot
``n`` names the veth ``k8sb<n>h``/``k8sb<n>c``, the iptables chains ``K8SEE-B<n>-IN`` and
``-FWD`` and the ``/30`` at offset ``4n`` of ``subnet``. The namespace is bound to a file there
(so buildah finds it from inside its own PID namespace) and removed with its rules when the
build ends; what a killed worker left behind is removed by the next build of that slot.
Needs root or ``CAP_NET_ADMIN`` + ``CAP_SYS_ADMIN``, util-linux, iproute2 and iptables.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from k8see.errors import IntegrationError, ToolMissing
from k8see.manifests.network import NON_INTERNET_RANGES, PRIVATE_RANGES

__all__ = ["LOCK_DIR", "Allowed", "parse_allowed", "sealed_namespace"]

log = logging.getLogger(__name__)

#: Where slots are locked and namespaces bound; one per network namespace of workers.
LOCK_DIR = Path("/run/k8see-buildnet")
#: Multicast and reserved: never a build's business either.
OTHER_RANGES = ("224.0.0.0/4", "240.0.0.0/4")
TOOLS = ("ip", "iptables", "unshare", "nsenter", "umount")


@dataclass(frozen=True)
class Allowed:
    """An exception to the rules: a network, and one TCP/UDP port of it or every port."""

    network: ipaddress.IPv4Network
    port: int | None = None

    def match(self) -> list[list[str]]:
        if self.port is None:
            return [["-d", str(self.network)]]
        return [
            ["-d", str(self.network), "-p", proto, "--dport", str(self.port)]
            for proto in ("tcp", "udp")
        ]


def parse_allowed(entry: str) -> Allowed:
    """``"10.1.2.3/32"`` or ``"10.1.2.0/24:3128"`` → an ``Allowed``.

    Raises:
        ValueError: not an IPv4 CIDR, optionally with ``:port``.
    """
    net, _, port = entry.partition(":")
    number = int(port) if port else None
    if number is not None and not 0 < number < 65536:
        raise ValueError(f"port {port} of {entry!r} is not between 1 and 65535")
    return Allowed(ipaddress.IPv4Network(net.strip(), strict=False), number)


def nameservers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The IPv4 nameservers a step's resolv.conf will name (buildah copies the worker's)."""
    found = []
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                found.append(str(ipaddress.IPv4Address(parts[1])))
            except ValueError:
                continue  # IPv6: the namespace has no IPv6 route
    return found


@contextmanager
def sealed_namespace(
    *,
    subnet: str,
    denied: Sequence[str] = (),
    allowed: Sequence[str] = (),
) -> Iterator[Path]:
    """Yield the path of a fresh sealed network namespace for one build (see the module).

    Raises:
        ToolMissing: ip, iptables or util-linux is not installed.
        IntegrationError: the namespace or its rules could not be made (no privilege).
    """
    for tool in TOOLS:
        if shutil.which(tool) is None:
            raise ToolMissing(
                f"The tool {tool!r} is not installed on this worker; sealed builds need "
                "iproute2, iptables and util-linux.",
                hint="Install them on the build worker, or set build.network to none (RUN "
                "steps get no network at all).",
            )
    net = ipaddress.IPv4Network(subnet)
    lock_dir = LOCK_DIR  # one per network namespace: slot n names interfaces and chains
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    slots = net.num_addresses // 4
    for slot in range(slots):
        fd = os.open(lock_dir / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            sealed = _Slot(slot, net, lock_dir)
            sealed.remove()  # whatever a killed worker left in this slot
            try:
                sealed.create(denied=denied, allowed=[parse_allowed(a) for a in allowed])
                yield sealed.path
            finally:
                sealed.remove()
        finally:
            os.close(fd)
        return
    raise IntegrationError(
        f"All {slots} sealed build networks in {subnet} are in use on this worker.",
        hint="Lower the build pool's concurrency or give build.network_subnet more room.",
    )


class _Slot:
    def __init__(self, slot: int, net: ipaddress.IPv4Network, lock_dir: Path) -> None:
        base = net.network_address + 4 * slot
        self.gateway, self.step = base + 1, base + 2
        self.cidr = f"{base}/30"
        self.host_if, self.step_if = f"k8sb{slot}h", f"k8sb{slot}c"
        self.chain_in, self.chain_fwd = f"K8SEE-B{slot}-IN", f"K8SEE-B{slot}-FWD"
        self.path = lock_dir / f"net-{slot}"

    def create(self, *, denied: Sequence[str], allowed: Sequence[Allowed]) -> None:
        self.path.touch(mode=0o600)
        _run(["unshare", f"--net={self.path}", "true"])
        ns = ["nsenter", f"--net={self.path}"]
        _run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.step_if])
        _run(["ip", "link", "set", self.step_if, "netns", str(self.path)])
        _run(["ip", "addr", "add", f"{self.gateway}/30", "dev", self.host_if])
        _run(["ip", "link", "set", self.host_if, "up"])
        _run([*ns, "ip", "addr", "add", f"{self.step}/30", "dev", self.step_if])
        _run([*ns, "ip", "link", "set", self.step_if, "up"])
        _run([*ns, "ip", "link", "set", "lo", "up"])
        _run([*ns, "ip", "route", "add", "default", "via", str(self.gateway)])
        # What a step may reach anyway: DNS to the nameservers, and the allowed ranges.
        exceptions = [m for a in allowed for m in a.match()] + [
            ["-d", server, "-p", proto, "--dport", "53"]
            for server in nameservers()
            for proto in ("udp", "tcp")
        ]
        closed = [*PRIVATE_RANGES, *NON_INTERNET_RANGES, *OTHER_RANGES, *denied]
        for chain, rejected in ((self.chain_in, ["0.0.0.0/0"]), (self.chain_fwd, closed)):
            _iptables("-N", chain)
            for match in exceptions:
                _iptables("-A", chain, *match, "-j", "RETURN")
            for cidr in rejected:
                _iptables("-A", chain, "-d", cidr, "-j", "REJECT")
        # The rest is the internet: accepted even where FORWARD's policy drops, replies too.
        _iptables("-A", self.chain_fwd, "-j", "ACCEPT")
        for table, chain, rule in self._hooks():
            _iptables("-t", table, "-I", chain, *rule)
        if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "1":
            log.warning(
                "IP forwarding is off in the build worker's network namespace: sealed RUN "
                "steps reach only the allowed addresses on the worker, not the internet."
            )

    def remove(self) -> None:
        """Undo ``create``, step by step, each only if it is there."""
        for table, chain, rule in self._hooks():
            while _iptables("-t", table, "-C", chain, *rule, check=False) == 0:
                _iptables("-t", table, "-D", chain, *rule)
        for chain in (self.chain_in, self.chain_fwd):
            if _iptables("-F", chain, check=False) == 0:
                _iptables("-X", chain)
        if Path(f"/sys/class/net/{self.host_if}").exists():
            _run(["ip", "link", "del", self.host_if])
        if self.path.exists():
            if os.path.ismount(self.path):
                _run(["umount", str(self.path)])
            self.path.unlink()

    def _hooks(self) -> list[tuple[str, str, list[str]]]:
        """The rules in the worker's built-in chains: (table, chain, rule)."""
        replies = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]
        return [
            ("filter", "INPUT", ["-i", self.host_if, "-j", self.chain_in]),
            ("filter", "FORWARD", ["-i", self.host_if, "-j", self.chain_fwd]),
            ("filter", "FORWARD", ["-o", self.host_if, *replies]),
            ("nat", "POSTROUTING", ["-s", self.cidr, "!", "-o", self.host_if, "-j", "MASQUERADE"]),
        ]


def _iptables(*args: str, check: bool = True) -> int:
    """iptables waiting for the xtables lock; ``check=False`` returns the exit code."""
    argv = ["iptables", "-w", "10", *args]
    if not check:
        return subprocess.run(argv, capture_output=True, check=False).returncode
    _run(argv)
    return 0


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:
        raise IntegrationError(
            f"Setting up the sealed build network failed: {' '.join(argv[:4])} ... exited "
            f"with {done.returncode} ({done.stderr.strip()[-300:]}).",
            hint="The build worker needs root or CAP_NET_ADMIN and CAP_SYS_ADMIN for "
            "build.network=sealed; without them set build.network to none (RUN steps get no "
            "network) or, knowing what a RUN step then reaches, host.",
        )
