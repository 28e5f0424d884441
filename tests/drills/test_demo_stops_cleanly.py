"""Drill: ``k8see demo --keep`` (what ``make demo KEEP=1`` runs) stopped by SIGTERM or Ctrl-C
in the middle of its run leaves nothing running.

The demo is started as its own process (session), and stopped while its PR's deploy runs, so
every part is up and at work: Redis, the registry, the four worker pools (helm below the
deploy pool), beat, Flower and the local cluster (etcd, kube-apiserver, controller-manager,
scheduler, containerd, kubelet, the pods' shims and processes). Three ways to stop it:
SIGTERM to the demo process alone (``kill <pid>``, a CI job's timeout); Ctrl-C, SIGINT to the
demo's process group, as a terminal sends it; and its parent killed (``make demo`` under
SIGTERM dies without passing the signal on to its recipe).

Asserted end state: the demo exits; none of the processes that ran below it is left; no
process names the demo's folder or the cluster's folder on its command line or in its
environment; nothing that ran in the cluster's cgroup tree (its pods' processes) is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, require_tool
from tests.drills.common import alive, cmdline, descendants, record_figures
from tests.e2e.harness import TOOLS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

#: Reset SIGINT to its default and exec the rest of argv (same pid).
_DEFAULT_SIGINT_EXEC = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def _wait_for_output(log: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if needle in text:
            return text
        if proc.poll() is not None:
            raise AssertionError(f"the demo exited with {proc.returncode}:\n{text[-4000:]}")
        time.sleep(0.5)
    raise AssertionError(f"the demo never printed {needle!r}:\n{log.read_text()[-4000:]}")


def _naming(*markers: str) -> list[tuple[int, str]]:
    """Live processes whose command line, environment or working directory names one of
    ``markers`` (redis-server rewrites its command line; its working directory is its data)."""
    found = []
    encoded = [m.encode() for m in markers]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            seen = (entry / "cmdline").read_bytes() + b"\0" + (entry / "environ").read_bytes()
            seen += b"\0" + os.readlink(entry / "cwd").encode()
        except OSError:
            continue
        if any(m in seen for m in encoded) and alive(pid):
            found.append((pid, " ".join(cmdline(pid))[:200]))
    return found


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"the demo ({pid}) still runs {timeout:.0f}s after its stop")
        time.sleep(0.2)


def _end_leftovers(started: subprocess.Popen[bytes], demo: int, *markers: str) -> None:
    """After a failed drill: the demo's own stop first, then SIGKILL for what is left, so a
    failing drill does not leave a platform behind on the machine."""
    if alive(demo):
        os.kill(demo, signal.SIGTERM)
        with contextlib.suppress(AssertionError):
            _wait_gone(demo, 180)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(started.pid, signal.SIGKILL)
    started.wait()
    for pid, _ in _naming(*markers):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _cluster_slot(kubeconfig: Path) -> int:
    """The local cluster's slot number, from its API server address (10.244.<slot>.1)."""
    config = yaml.safe_load(kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    return int(server.split("//", 1)[1].split(".")[2])


def _cgroup_procs(slot: int) -> list[str]:
    base = Path("/sys/fs/cgroup/pids") / f"k8see{slot}"
    if not base.is_dir():
        return []
    return [pid for procs in base.rglob("cgroup.procs") for pid in procs.read_text().split()]


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c", "parent-killed"])
def test_a_stopped_demo_leaves_nothing_running(how: str, tmp_path: Path) -> None:
    for name in (*TOOLS, "kubectl"):
        require_tool(name)
    workdir = tmp_path / "demo"
    log = tmp_path / "demo.log"
    env = {
        **os.environ,
        "PATH": f"{ROOT / '.tools' / 'bin'}{os.pathsep}{Path(sys.executable).parent}"
        f"{os.pathsep}{os.environ.get('PATH', '')}",
        # One build platform and no scan keep the drill short (the whole demo is make demo's).
        "K8SEE_BUILD__PLATFORMS": "linux/amd64",
        "K8SEE_SCAN__ENABLED": "false",
    }
    # SIGINT at its default, as in a terminal's foreground job: a job started in the
    # background by a shell without job control (`cmd &` in a script) inherits SIGINT ignored,
    # and Python keeps it ignored, so the demo would never see the Ctrl-C this drill sends.
    argv = [sys.executable, "-c", _DEFAULT_SIGINT_EXEC, sys.executable, "-m", "k8see", "demo",
            "--keep", "--dir", str(workdir)]  # fmt: skip
    if how == "parent-killed":
        # As under make: a parent that waits for the demo and dies without passing it on.
        argv = ["sh", "-c", '"$@"; exit $?', "sh", *argv]
    # Given the demo running, its PR's deploy under way (the app's pods on the node)
    cluster_dir = "/nonexistent"
    with log.open("wb") as out:
        started = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )
    demo = started.pid
    try:
        text = _wait_for_output(log, "Platform up in", started, timeout=300)
        if how == "parent-killed":
            demo = next(p for p in descendants(started.pid) if "demo" in cmdline(p))
        kubeconfig = Path(text.split("(cluster: ", 1)[1].split(")", 1)[0])
        cluster_dir = str(kubeconfig.parent)
        slot = _cluster_slot(kubeconfig)
        _wait_for_output(log, "deploying", started, timeout=400)
        deadline = time.monotonic() + 120
        while not _cgroup_procs(slot) and time.monotonic() < deadline:
            time.sleep(0.5)
        below = descendants(started.pid)
        in_cluster = _cgroup_procs(slot)
        assert _naming(str(workdir)), "no process names the demo's folder: the scan sees nothing"
        assert in_cluster, "no pod process in the cluster's cgroup: the scan sees nothing"

        # When it is stopped
        stopped_at = time.monotonic()
        if how == "sigterm":
            os.kill(demo, signal.SIGTERM)
        elif how == "ctrl-c":
            os.killpg(started.pid, signal.SIGINT)
        else:
            os.kill(started.pid, signal.SIGKILL)
        started.wait(timeout=240)
        _wait_gone(demo, 240)
        took = time.monotonic() - stopped_at
    finally:
        if started.poll() is None or alive(demo):
            _end_leftovers(started, demo, str(workdir), cluster_dir)

    # Then nothing it started runs any more
    time.sleep(1)
    left = [(p, " ".join(cmdline(p))[:200]) for p in below if alive(p)]
    named = _naming(str(workdir), cluster_dir)
    # (The slot itself may be another cluster's by now: only our pods' processes count.)
    pods = [p for p in in_cluster if alive(int(p))]
    for pid in [p for p, _ in left + named] + [int(p) for p in pods]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # a failing drill leaves nothing behind either
    assert left == [], left
    assert named == [], named
    assert pods == [], pods
    record_figures(
        f"demo_stopped_by_{how}",
        {"processes_below_demo": len(below), "left": 0, "stop_seconds": round(took, 1)},
    )
