"""A local cluster whose holder was SIGKILLed is cleaned up by the next holder of its slot.

Killed test runs used to leave etcd, the API server, containerd and the kubelet running, their
mounts in place, and every pod's network namespace pinned in /var/run/netns with its veth link
(this machine had gathered 730). Now pod network namespaces live in the cluster's folder
(containerd's ``netns_mounts_under_state_dir``) and the next ``claim_slot`` of that slot kills
the recorded components, unmounts everything under the dead cluster's folder and removes it,
so the kernel drops the namespaces and their veths.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from k8see_sandbox.cluster import node
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
#: Starts a cluster, runs the test app's pod on it, says where, then waits to be killed.
HOLDER = """
import time
from kubernetes import config
from k8see_sandbox.cluster import LocalCluster
from tests.fixtures.kube import run_testapp

cluster = LocalCluster().start()
api = config.new_client_from_config(config_file=str(cluster.admin_kubeconfig))
run_testapp(api, "default", "left-behind", timeout_seconds=120)
print(cluster.slot.number, cluster.root, flush=True)
time.sleep(3600)
"""


def mounts_under(folder: str) -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if line.split()[4].startswith(folder + "/")]


def processes_naming(folder: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if folder.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def veths_on(bridge: str) -> list[str]:
    shown = subprocess.run(
        ["ip", "-o", "link", "show", "master", bridge], capture_output=True, text=True
    ).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in shown.splitlines()]


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def test_the_next_holder_of_a_killed_clusters_slot_cleans_up_after_it() -> None:
    for binary in ("etcd", "kube-apiserver", "kubelet", "containerd", "pause", "testapp"):
        require_tool(binary)
    # Given a cluster running a pod, whose holding process is then SIGKILLed
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    assert holder.stdout is not None
    number_text, _, folder = holder.stdout.readline().strip().partition(" ")
    assert folder, f"the holder did not start its cluster (exit {holder.poll()})"
    number = int(number_text)
    veths = veths_on(f"k8see{number}")
    assert veths, "the pod has no veth on the cluster's bridge"
    assert any("/netns/" in point for point in mounts_under(folder)), mounts_under(folder)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    # Then its components, mounts and pod network are all still there
    assert processes_naming(folder) and mounts_under(folder)
    assert all(link_exists(veth) for veth in veths)
    # When the slot is claimed again
    slot = node.claim_slot()
    try:
        assert slot.number == number, "a lower slot was freed meanwhile; run this test alone"
        # Then nothing of the dead cluster is left: processes, mounts, folder, veths
        deadline = time.monotonic() + 30
        while processes_naming(folder) or any(link_exists(veth) for veth in veths):
            assert time.monotonic() < deadline, (processes_naming(folder), veths)
            time.sleep(0.5)
        assert mounts_under(folder) == []
        assert not Path(folder).exists()
    finally:
        node.kill_cgroup(slot.cgroup_root)
        node.remove_cgroup(slot.cgroup_root)
        subprocess.run(["ip", "link", "del", slot.bridge], capture_output=True)
        slot.release()
