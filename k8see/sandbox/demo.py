"""``make demo``: the main job, end to end, on a local Kubernetes cluster.

Starts the platform (a real control plane and node, Redis, the registry, the Celery pools as
the platform chart's service accounts), opens a PR for ``examples/<app>`` on the GitHub
stand-in, enqueues the ``opened`` event exactly as a workflow would, follows the real pipeline
(buildah, registry, Trivy, helm) to ready, shows the PR comment, the environment table, the
app's pods and its page served through the API server's service proxy, and Flower; then
closes the PR and follows the destroy.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from k8see.client import Outcome, enqueue, follow
from k8see.events import decide_from_flags
from k8see.integrations.kube import make_api
from k8see.sandbox.databases import describe, install_operator_crds
from k8see.sandbox.platform import (
    ROOT,
    Platform,
    free_port,
    ignore_signals,
    interrupt_on_signals,
    tool,
)
from k8see.settings import PlatformSettings, load_settings

DEMO_ORG = "k8see-demo"
PR_NUMBER = 1
HEAD_REF = "demo/first-preview"
FOLLOW_SECONDS = 900.0


def say(text: str = "") -> None:
    print(text, flush=True)


def make_source_repo(example: Path, dest: Path) -> str:
    """A git repository holding the example, as a PR head would; returns the commit SHA."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(example, dest)
    git = [
        "git",
        "-C",
        str(dest),
        "-c",
        "user.name=k8see demo",
        "-c",
        "user.email=demo@k8see.invalid",
    ]
    subprocess.run([*git, "init", "-q", "-b", HEAD_REF], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "Preview me"], check=True)
    out = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _progress(started: float) -> Any:
    def show(record: dict[str, Any]) -> None:
        status = record.get("status", "?")
        stage = (record.get("stage") or "") if status != "ready" else ""
        say(f"  {time.monotonic() - started:6.1f}s  {status:<11} {stage}")

    return show


def run_demo(*, example: str, keep: bool, workdir: Path) -> int:
    source = ROOT / "examples" / example
    if not (source / "k8s-ee.yaml").is_file():
        say(f"Error: examples/{example} has no k8s-ee.yaml.")
        return 1
    workdir = workdir.resolve()
    repo = f"{DEMO_ORG}/{example}"
    say("k8see demo on this machine: a real Kubernetes cluster (etcd, kube-apiserver, scheduler,")
    say("controller-manager, a kubelet node), Redis, Celery workers, buildah, the registry, Trivy")
    say("and helm. Only GitHub is a stand-in (its REST API, over HTTP).")
    # Each demo starts from empty state (the registry and build caches are kept: they only
    # make it faster); KEEP=1 leaves this run's state for exploring.
    shutil.rmtree(workdir / "redis", ignore_errors=True)
    # SIGTERM or SIGHUP stop the demo as Ctrl-C does: through the `finally` below.
    interrupt_on_signals()
    platform = Platform(workdir=workdir)
    try:
        started = time.monotonic()
        platform.start()
        say(f"Platform up in {time.monotonic() - started:.1f}s (cluster: {platform.kubeconfig}).")
        for key, value in platform.env().items():
            import os

            os.environ[key] = value
        settings = load_settings()
        platform.start_workers()
        platform.start_beat()
        flower_port = free_port()
        password = secrets.token_urlsafe(9)
        platform.start_flower(port=flower_port, basic_auth=f"admin:{password}")
        assert platform.github is not None
        kube_api = make_api(settings)
        install_operator_crds(kube_api)  # what installing the database operators would do

        sha = make_source_repo(source, platform.sources / repo)
        platform.github.add_repo(repo, collaborators={"demo-dev": "write"})
        platform.github.add_pull(repo, PR_NUMBER, head_sha=sha, head_ref=HEAD_REF)
        say(f"\nPR {repo}#{PR_NUMBER} opened at {sha[:12]}; enqueueing the 'opened' event.")
        outcome = _event(settings, repo, sha, "opened")
        if not outcome.ok:
            error = outcome.record.get("error") or {}
            say(f"\nThe deploy ended as {outcome.status}: {error.get('message', '')}")
            if error.get("hint"):
                say(f"Hint: {error['hint']}")
            say(f"Worker logs: {workdir}/worker-*.log")
            return 1
        _show_comment(platform, repo)
        say("\nk8see status:")
        subprocess.run(
            [sys.executable, "-m", "k8see", "status", "--repo", repo],
            check=False,
            env=platform.process_env(),
        )
        record = outcome.record
        namespace = str(record.get("namespace", ""))
        say(f"\nkubectl get pods -n {namespace}:")
        subprocess.run(
            [
                tool("kubectl"),
                "--kubeconfig",
                str(platform.kubeconfig),
                "get",
                "pods",
                "-n",
                namespace,
                "-o",
                "wide",
            ],
            check=False,
        )
        describe(
            kube_api,
            namespace=namespace,
            deployment=f"{namespace}-app",
            say=say,
        )
        say(f"\nPreview URL (on a real cluster): {record.get('preview_url')}")
        proxy = f"/api/v1/namespaces/{namespace}/services/{namespace}-app:80/proxy/"
        page = subprocess.run(
            [tool("kubectl"), "--kubeconfig", str(platform.kubeconfig), "get", "--raw", proxy],
            check=False,
            capture_output=True,
            text=True,
        )
        say(f"\nThe page, through the API server's service proxy ({proxy}):")
        for line in page.stdout.splitlines()[:8]:
            say(f"  > {line}")
        say(f"Flower: http://127.0.0.1:{flower_port}/  (user admin, password {password})")

        say(f"\nPR {repo}#{PR_NUMBER} closed; enqueueing the 'closed' event.")
        platform.github.set_pull_state(repo, PR_NUMBER, state="closed")
        ended = _event(settings, repo, sha, "closed")
        _show_comment(platform, repo)
        if not ended.ok:
            say(f"The destroy ended as {ended.status}.")
            return 1
        if keep:
            say(
                f"\nThe platform keeps running (KEEP=1). Point k8see at it with:\n"
                f"  source {workdir}/env\nCtrl-C stops everything."
            )
            (workdir / "env").write_text(
                "".join(f"export {k}={v}\n" for k, v in platform.env().items())
            )
            while True:
                time.sleep(3600)
        say("\nDemo finished; stopping the platform.")
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        ignore_signals()
        platform.stop()


def _event(settings: PlatformSettings, repo: str, sha: str, action: str) -> Outcome:
    """Enqueue a pull_request event exactly as a workflow would, and follow it to the end."""
    decision = decide_from_flags(
        repo=repo, pr=PR_NUMBER, action=action, sha=sha, ref=HEAD_REF, trigger="automatic"
    )
    sent = enqueue(decision, settings=settings, trigger=f"pull_request:{action}")
    say(f"run {sent.run_id}:")
    return follow(
        settings=settings,
        repo=repo,
        pr=PR_NUMBER,
        run_id=sent.run_id,
        generation=sent.run.generation,
        timeout_seconds=FOLLOW_SECONDS,
        on_change=_progress(time.monotonic()),
        until_commented=True,
    )


def _show_comment(platform: Platform, repo: str) -> None:
    assert platform.github is not None
    comments = platform.github.comments(repo, PR_NUMBER)
    say(f"\nPR comment ({len(comments)} on the PR, updated in place):")
    for line in str(comments[-1]["body"]).splitlines() if comments else []:
        say(f"  | {line}")
