"""The local cluster's node: its network slot, containerd's and the kubelet's configuration.

Several clusters may run on one machine at once (two clones testing side by side), so each
takes a *slot* ``n`` (1-200): the bridge ``k8see<n>`` with address ``10.244.<n>.1/24`` is the
node's address and the gateway of its pods, whose addresses come from the same /24. The slot is
held by an ``flock`` for the cluster's life, so a slot whose holder died is taken over, and its
leftovers (containers, mounts) are cleaned first.

Pod networking is the reference CNI ``bridge`` plugin from Debian's containernetworking-plugins:
pods reach the node and each other, and the API server reaches pods (its service proxy and
health checks go to endpoint addresses). There is no kube-proxy: nothing k8see runs needs a
Service's cluster IP from inside a pod. Cluster DNS is a small responder at the node's address
(``dns.ClusterDns``) that resolves a Service name to its ready pods' addresses. NetworkPolicies
are accepted by the API but not enforced (no policy-enforcing CNI), as on any cluster without
one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml

log = logging.getLogger(__name__)
LOCK_DIR = Path("/run/lock")
SLOTS = range(1, 201)
#: The prefix of the folder a cluster makes for itself (removed with it, or by the next holder
#: of its slot when it was killed).
WORKDIR_PREFIX = "k8see-cluster-"


@dataclass
class Slot:
    """A network slot held by this process (see the module docstring)."""

    number: int
    lock: IO[str]

    @property
    def bridge(self) -> str:
        return f"k8see{self.number}"

    @property
    def node_ip(self) -> str:
        return f"10.244.{self.number}.1"

    @property
    def subnet(self) -> str:
        return f"10.244.{self.number}.0/24"

    @property
    def cgroup_root(self) -> str:
        return f"/k8see{self.number}"

    @property
    def pid_file(self) -> Path:
        """The components' process ids, so the next holder can end a dead holder's."""
        return LOCK_DIR / f"k8see-cluster-{self.number}.pids"

    def record(self, pid: int, marker: str) -> None:
        """Note a component's process; ``marker`` (its cluster's folder) is on its command
        line, so a recycled process id is never mistaken for it."""
        with self.pid_file.open("a") as handle:
            handle.write(f"{pid} {marker}\n")

    def release(self) -> None:
        self.lock.close()


def claim_slot() -> Slot:
    """The first free slot, its bridge (re)created with the node address."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for number in SLOTS:
        handle = (LOCK_DIR / f"k8see-cluster-{number}.lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        slot = Slot(number, handle)
        kill_recorded(slot)
        kill_cgroup(slot.cgroup_root)
        remove_cgroup(slot.cgroup_root)
        make_cgroup(slot.cgroup_root)
        _ip("link", "del", slot.bridge, check=False)
        _ip("link", "add", slot.bridge, "type", "bridge")
        _ip("addr", "add", f"{slot.node_ip}/24", "dev", slot.bridge)
        _ip("link", "set", slot.bridge, "up")
        return slot
    raise RuntimeError("every local cluster slot is taken (200 clusters on one machine?)")


def kill_recorded(slot: Slot) -> None:
    """SIGKILL the components a previous holder of ``slot`` started (its process died without
    stopping them, so they still hold the slot's addresses and cgroups), then unmount what they
    left mounted in that cluster's folder (pod root filesystems, network namespaces) and remove
    the folder if the cluster made it."""
    folders = set()
    if slot.pid_file.exists():
        for line in slot.pid_file.read_text().splitlines():
            pid, _, marker = line.partition(" ")
            folders.add(marker)
            with contextlib.suppress(OSError, ValueError):
                cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
                if marker and marker.encode() in cmdline:
                    os.killpg(int(pid), 9)
    for folder in filter(None, folders):
        kill_shims(folder)
        unmount_under(Path(folder))
        if Path(folder).name.startswith(WORKDIR_PREFIX):
            shutil.rmtree(folder, ignore_errors=True)
    slot.pid_file.write_text("")


def kill_shims(marker: str) -> None:
    """SIGKILL the containerd shims whose command line names ``marker`` (a cluster's socket or
    folder): shims outlive containerd by design."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline and marker.encode() in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), 9)


def unmount_under(directory: Path) -> None:
    """Lazily unmount everything mounted below ``directory`` (deepest first)."""
    prefix = str(directory.resolve()) + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


def kill_cgroup(root: str) -> None:
    """SIGKILL every process left in the cgroup trees under ``root`` (a dead cluster's pods)."""
    base = Path("/sys/fs/cgroup/pids") / root.lstrip("/")
    for procs in _files_below(base, "cgroup.procs"):
        try:
            pids = procs.read_text().split()
        except OSError:  # removed meanwhile
            continue
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)


def _files_below(base: Path, name: str) -> list[Path]:
    """Every ``name`` below ``base``, while the kubelet may be removing cgroups under it (a
    ``Path.rglob`` raised FileNotFoundError mid-walk then, and the cluster's stop ended there,
    leaving containerd and the control plane running)."""
    found = []
    for directory, _, files in os.walk(base, onerror=lambda error: None):
        if name in files:
            found.append(Path(directory) / name)
    return found


CGROUP_BASE = Path("/sys/fs/cgroup")


def _hierarchies() -> list[Path]:
    """The mounted cgroup v1 hierarchies (cpu, memory, pids, ..., and named ones)."""
    return [p for p in CGROUP_BASE.iterdir() if p.is_dir() and not p.is_symlink()]


def make_cgroup(root: str) -> None:
    """Create ``root`` in every hierarchy, as the kubelet's ``cgroupRoot`` must exist."""
    for hierarchy in _hierarchies():
        path = hierarchy / root.lstrip("/")
        path.mkdir(exist_ok=True)
        if hierarchy.name == "cpuset":  # a new cpuset starts empty; give it the parent's
            for key in ("cpuset.cpus", "cpuset.mems"):
                (path / key).write_text((hierarchy / key).read_text())


def remove_cgroup(root: str) -> None:
    """Remove ``root`` and everything below it, deepest first (they must be empty)."""
    for hierarchy in _hierarchies():
        base = hierarchy / root.lstrip("/")
        if not base.is_dir():
            continue
        below = [Path(d) for d, _, _ in os.walk(base, onerror=lambda error: None)]
        for path in sorted(below, key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()


def write_cni_config(directory: Path, *, slot: Slot, state: Path) -> Path:
    """The bridge network for pods (conflist for containerd's CRI plugin)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "cniVersion": "1.0.0",
        "name": f"k8see{slot.number}",
        "plugins": [
            {
                "type": "bridge",
                "bridge": slot.bridge,
                "isGateway": True,
                # No masquerade: pods talk to the node and each other only; nothing here
                # should leave the machine, and no iptables rules are left behind.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": slot.subnet, "gateway": slot.node_ip}]],
                    "dataDir": str(state / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": False},
        ],
    }
    path = directory / "10-k8see.conflist"
    path.write_text(json.dumps(config, indent=2))
    return path


def write_containerd_config(workdir: Path, *, slot: Slot, pause_image: str) -> Path:
    """containerd with its own root, state and socket, so it runs beside any other one."""
    root = workdir / "containerd"
    cni = write_cni_config(workdir / "cni" / "net.d", slot=slot, state=workdir / "cni")
    hosts = root / "certs.d"
    hosts.mkdir(parents=True, exist_ok=True)
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    text = f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
disabled_plugins = ["io.containerd.grpc.v1.introspection.v1"]

[grpc]
  address = "{root / "containerd.sock"}"

[ttrpc]
  address = "{root / "containerd.sock.ttrpc"}"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"

[{cri}]
  sandbox_image = "{pause_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # These VMs deny lowering oom_score_adj (the kubelet asks -998 for pod sandboxes), which
  # fails every container with "failed to update /proc/self/oom_score_adj: Permission
  # denied"; containerd then clamps it to its own value, as it does for rootless setups.
  restrict_oom_score_adj = true
  max_container_log_line_size = 16384
  # Pod network namespaces are mounted under the state dir, not /var/run/netns, so stopping
  # the node unmounts them with the rest and the kernel removes their veth links; in
  # /var/run/netns a node that was killed left them (and a veth each) behind for good.
  netns_mounts_under_state_dir = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{root / "runc"}"

[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni.parent}"

[{cri}.registry]
  config_path = "{hosts}"
"""
    path = root / "config.toml"
    path.write_text(text)
    return path


def trust_registry(workdir: Path, host: str) -> None:
    """Let the node pull from a plain-HTTP registry at ``host`` (the local one)."""
    directory = workdir / "containerd" / "certs.d" / host
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hosts.toml").write_text(
        f'server = "http://{host}"\n\n'
        f'[host."http://{host}"]\n  capabilities = ["pull", "resolve"]\n'
    )


def write_kubelet_config(
    path: Path,
    *,
    slot: Slot,
    port: int,
    healthz_port: int,
    ca_file: Path,
    tls_cert: Path,
    tls_key: Path,
    runtime_endpoint: str,
) -> Path:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": slot.node_ip,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(tls_cert),
        "tlsPrivateKeyFile": str(tls_key),
        "containerRuntimeEndpoint": runtime_endpoint,
        # These machines have cgroup v1, which kubelet 1.34 still runs when told to.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": slot.cgroup_root,
        "failSwapOn": False,
        "resolvConf": "/etc/resolv.conf",
        # Its own, not the shared /var/log/pods: a kubelet removes the log folders of pods it
        # does not know, so clusters side by side would delete each other's pods' logs.
        "podLogsDir": str(path.parent.resolve() / "pod-logs"),
        # Pods resolve Service names at the node's address (``dns.ClusterDns``).
        "clusterDNS": [slot.node_ip],
        "clusterDomain": "cluster.local",
        "maxPods": 250,
        "serializeImagePulls": False,
        "syncFrequency": "5s",
        "nodeStatusUpdateFrequency": "5s",
        # A development machine's disk is shared with everything else: evict only when it is
        # really full, and never collect images the tests imported.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "kernelMemcgNotification": False,
        "makeIPTablesUtilChains": False,
        "localStorageCapacityIsolation": True,
        "shutdownGracePeriod": "0s",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


#: Per-user inotify instances and watches one machine needs for several local clusters at once
#: (each kubelet and containerd holds dozens); Debian's defaults (128, ~190k) run out at about
#: four, and kubelet then exits with "too many open files". kind documents the same limits.
INOTIFY_INSTANCES = 1024
INOTIFY_WATCHES = 524288


def raise_inotify_limits() -> None:
    """Raise the machine's inotify limits to what several clusters need, never lower them.

    Only as root (which the node needs anyway); a read-only ``/proc/sys`` (a container) is
    left alone, and kubelet's own error then says what ran out.
    """
    for name, wanted in (
        ("max_user_instances", INOTIFY_INSTANCES),
        ("max_user_watches", INOTIFY_WATCHES),
    ):
        path = Path("/proc/sys/fs/inotify") / name
        try:
            if int(path.read_text()) < wanted:
                path.write_text(str(wanted))
                log.info("Raised fs.inotify.%s to %d for the local cluster.", name, wanted)
        except (OSError, ValueError):
            continue
