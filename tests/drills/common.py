"""What the fault drills share: opening PRs through ``k8see enqueue``, counting resources,
and writing each drill's figures to ``bench/drills.json`` for the benchmark report.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.e2e.harness import ROOT, Harness

FIGURES = ROOT / "bench" / "drills.json"
#: The extra worker environment ``running_platform`` uses; restarted workers get it again.
WORKER_ENV = {"K8SEE_BUILD__PLATFORMS": "linux/amd64", "K8SEE_QUEUES__RETRY_BACKOFF_SECONDS": "0.2"}


def open_pr(h: Harness, repo: str, path: Path, sha: str, pr: int, *, wait: bool = False) -> str:
    """Register PR ``pr`` with the GitHub sandbox and enqueue its ``opened`` event.

    The repository must be registered already (``add_repo`` replaces it, PRs and all).
    """
    h.platform.github.add_pull(repo, pr, head_sha=sha, head_ref="feature")
    args = ["--repo", repo, "--pr", str(pr), "--action", "opened", "--sha", sha]
    done = h.enqueue(*args, "--ref", "feature", "--source", str(path), wait=wait)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def settled(h: Harness, repo: str, pr: int) -> bool:
    return h.record(repo, pr).get("status") in ("ready", "failed")


def kube_api(h: Harness) -> Any:
    from kubernetes import config

    return config.new_client_from_config(str(h.platform.kubeconfig))


def app_objects(h: Harness, namespace: str) -> dict[str, int]:
    """How many app Deployments, Services and Helm releases the namespace holds."""
    from kubernetes import client

    api = kube_api(h)
    apps = client.AppsV1Api(api).list_namespaced_deployment(namespace).items
    services = client.CoreV1Api(api).list_namespaced_service(namespace).items
    helm = subprocess.run(
        ["helm", "list", "-a", "-q", "-n", namespace, "--kubeconfig", str(h.platform.kubeconfig)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **h.platform.process_env()},
    )
    return {
        "deployments": len(apps),
        "services": len(services),
        "releases": len(helm.stdout.split()),
    }


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (children before grandchildren)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def record_figures(drill: str, figures: dict[str, Any]) -> None:
    """Merge one drill's figures into bench/drills.json (git-ignored), for docs and the report."""
    FIGURES.parent.mkdir(exist_ok=True)
    data = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    data[drill] = figures
    FIGURES.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def children(pid: int) -> list[int]:
    """The direct children of ``pid``."""
    return [p for p in descendants(pid) if parent(p) == pid]


def parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, already dead but not reaped, does not count)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def helm_processes(h: Harness) -> list[int]:
    """The platform's running helm processes: k8see's upgrades and uninstalls of PR releases,
    told from other platforms' on the machine by the environment the workers passed on."""
    found = []
    marker = str(h.platform.workdir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = cmdline(int(entry.name))
        if not (argv and argv[0].endswith("helm") and {"upgrade", "uninstall"} & set(argv)):
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def wait_for_helm_upgrade(pid: int, *, timeout: float) -> int:
    """The pool process of worker ``pid`` once a ``helm upgrade`` runs below it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pool in children(pid):
            for proc in descendants(pool):
                argv = cmdline(proc)
                if argv and argv[0].endswith("helm") and "upgrade" in argv:
                    return pool
        time.sleep(0.05)
    raise AssertionError(f"no helm upgrade ran below worker {pid} within {timeout}s")


def release_revisions(h: Harness, namespace: str) -> list[dict[str, Any]]:
    """``helm history`` of the namespace's release: one entry per install or upgrade."""
    env = {**os.environ, **h.platform.process_env()}
    kube = ["--kubeconfig", str(h.platform.kubeconfig), "-n", namespace]
    names = subprocess.run(
        ["helm", "list", "-a", "-q", *kube], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    history: list[dict[str, Any]] = []
    for name in names:
        out = subprocess.run(
            ["helm", "history", name, "-o", "json", *kube],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        history += json.loads(out.stdout)
    return history
