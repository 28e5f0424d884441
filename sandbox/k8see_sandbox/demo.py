"""``make demo``: the main job, end to end, on a local Kubernetes cluster.

Starts the platform (a real control plane and node, Redis, the registry, the Celery pools as
the platform chart's service accounts), opens a PR for ``examples/<app>`` on the GitHub
stand-in, sends the ``opened`` event through one of the three front doors (``front_door``:
``app``, the GitHub App's signed webhook to ``k8see api``; ``workflow``, a workflow step's
OIDC token to ``k8see api``; ``redis``, a self-hosted runner straight to Redis), follows the
real pipeline (buildah, registry, Trivy, helm) to ready, shows the PR comment, the environment
table, the app's pods and its page served through the API server's service proxy, and Flower;
then closes the PR and follows the destroy.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from k8see import coordination, state
from k8see.client import Outcome, enqueue, follow
from k8see.events import decide_from_flags
from k8see.integrations.kube import make_api
from k8see.settings import PlatformSettings, load_settings
from k8see_sandbox.databases import describe
from k8see_sandbox.platform import (
    ROOT,
    Platform,
    free_port,
    ignore_signals,
    interrupt_on_signals,
    tool,
)

DEMO_ORG = "k8see-demo"
PR_NUMBER = 1
HEAD_REF = "demo/first-preview"
FOLLOW_SECONDS = 900.0
#: The ways an event reaches the platform (docs/onboarding.md).
FRONT_DOORS = {
    "app": "GitHub App: GitHub signs a webhook, k8see api verifies it (POST /github/webhooks)",
    "workflow": "hosted-runner workflow: `k8see enqueue --api` with the job's OIDC token",
    "redis": "self-hosted runner in the cluster: `k8see enqueue` straight to Redis",
}
WEBHOOK_SECRET = "demo-webhook-secret"


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


def run_demo(*, example: str, keep: bool, workdir: Path, front_door: str = "app") -> int:
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
        # The demo enqueues as a workflow step does: with the enqueue credential, which only
        # submits events and reads their progress (k8see.redis_acl).
        submitter = settings.model_copy(
            update={
                "redis": settings.redis.model_copy(update={"url": platform.role_url("enqueue")})
            }
        )
        platform.start_workers()
        platform.start_beat()
        flower_port = free_port()
        password = secrets.token_urlsafe(9)
        platform.start_flower(port=flower_port, basic_auth=f"admin:{password}")
        assert platform.github is not None
        door = _FrontDoor(front_door, platform, settings, submitter=submitter)
        say(f"Front door: {FRONT_DOORS[front_door]}.")
        kube_api = make_api(settings)
        # The operators' real CRDs, and the reconciler standing in for the operators.
        platform.start_operators()

        sha = make_source_repo(source, platform.sources / repo)
        platform.github.add_repo(repo, collaborators={"demo-dev": "write"})
        platform.github.add_pull(repo, PR_NUMBER, head_sha=sha, head_ref=HEAD_REF)
        say(f"\nPR {repo}#{PR_NUMBER} opened at {sha[:12]}; sending the 'opened' event.")
        outcome = door.event(repo, sha, "opened")
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

        say(f"\nPR {repo}#{PR_NUMBER} closed; sending the 'closed' event.")
        platform.github.set_pull_state(repo, PR_NUMBER, state="closed")
        ended = door.event(repo, sha, "closed")
        _show_comment(platform, repo)
        if not ended.ok:
            say(f"The destroy ended as {ended.status}.")
            return 1
        if keep:
            say(
                f"\nThe platform keeps running (KEEP=1). Point k8see at it with:\n"
                f"  source {workdir}/env\nCtrl-C stops everything."
            )
            platform.write_env_file()
            while True:
                time.sleep(3600)
        say(f"\nDemo finished (front door: {front_door}); stopping the platform.")
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        ignore_signals()
        platform.stop()


class _FrontDoor:
    """Sends the demo's events through one front door and follows each run."""

    def __init__(
        self,
        name: str,
        platform: Platform,
        settings: PlatformSettings,
        *,
        submitter: PlatformSettings,
    ) -> None:
        self.name = name
        self.platform = platform
        self.settings = settings
        #: The enqueue credential's settings: what a self-hosted runner's step holds.
        self.submitter = submitter
        self.api = ""
        self.redis = redis.Redis.from_url(settings.redis.url)
        if name in ("app", "workflow"):
            self.api = platform.start_api(port=free_port(), webhook_secret=WEBHOOK_SECRET)
            say(f"k8see api: {self.api}")

    def event(self, repo: str, sha: str, action: str) -> Outcome:
        started = time.monotonic()
        if self.name == "app":
            return self._webhook(repo, action, started)
        if self.name == "workflow":
            return self._workflow(repo, sha, action, started)
        decision = decide_from_flags(
            repo=repo, pr=PR_NUMBER, action=action, sha=sha, ref=HEAD_REF, trigger="automatic"
        )
        sent = enqueue(decision, settings=self.submitter, trigger=f"pull_request:{action}")
        say(f"run {sent.run_id} (straight to Redis, as the enqueue credential):")
        # That credential reads nothing but its submission's progress key.
        return self._follow(repo, sent.run_id, sent.run.generation, started, progress=sent.progress)

    def _webhook(self, repo: str, action: str, started: float) -> Outcome:
        github = self.platform.github
        assert github is not None
        client = self.redis
        before = coordination.current_generation(client, repo=repo, pr=PR_NUMBER)
        payload = github.pull_request_event(repo, PR_NUMBER, action)
        sent = github.webhook_sender(WEBHOOK_SECRET).deliver(
            f"{self.api}/github/webhooks", "pull_request", payload
        )
        say(f"webhook delivery {sent.delivery}: HTTP {sent.status} {sent.body.get('status')}")
        deadline = time.monotonic() + 60
        record: dict[str, Any] = {}
        while time.monotonic() < deadline:
            record = state.get(client, repo=repo, pr=PR_NUMBER) or {}
            if int(record.get("generation") or 0) > before and record.get("run_id"):
                break
            time.sleep(0.2)
        run_id, generation = str(record.get("run_id", "")), int(record.get("generation") or 0)
        say(f"run {run_id} (admitted from the webhook):")
        return self._follow(repo, run_id, generation, started)

    def _workflow(self, repo: str, sha: str, action: str, started: float) -> Outcome:
        from k8see.remote import ApiClient

        github = self.platform.github
        assert github is not None
        client = ApiClient(self.api, audience="k8see", env=github.oidc.job_environment(repo))
        answer = client.enqueue(
            {"repo": repo, "pr": PR_NUMBER, "action": action, "sha": sha, "ref": HEAD_REF}
        )
        run_id = str(answer["run_id"])
        say(f"run {run_id} (through the API, token of {repo}):")
        return self._follow(
            repo, run_id, int(answer.get("generation") or 0), started,
            look=lambda: client.look(run_id),
        )  # fmt: skip

    def _follow(
        self,
        repo: str,
        run_id: str,
        generation: int,
        started: float,
        look: Any = None,
        progress: str = "",
    ) -> Outcome:
        return follow(
            settings=self.submitter if progress else self.settings,
            repo=repo,
            pr=PR_NUMBER,
            run_id=run_id,
            generation=generation,
            timeout_seconds=FOLLOW_SECONDS,
            on_change=_progress(started),
            until_commented=True,
            look=look,
            poll_seconds=1.0 if look else 0.25,
            progress=progress,
        )


def _show_comment(platform: Platform, repo: str) -> None:
    assert platform.github is not None
    comments = platform.github.comments(repo, PR_NUMBER)
    say(f"\nPR comment ({len(comments)} on the PR, updated in place):")
    for line in str(comments[-1]["body"]).splitlines() if comments else []:
        say(f"  | {line}")
