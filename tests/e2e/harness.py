"""The e2e harness: the local platform (a real cluster of its own) and real worker processes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from tests.conftest import require_tool
from tests.contracts.webhooks import assert_webhook
from tests.fixtures.kubefaults import FaultProxy, proxied_kubeconfig

ROOT = Path(__file__).resolve().parents[2]
ORG = "k8see-demo"
TOOLS = ("redis-server", "buildah", "docker-registry", "helm", "trivy", "git", "kube-apiserver")


def slow_start(seconds: float) -> dict[str, str]:
    """``Harness.repo`` files for an app that starts listening only after ``seconds``.

    Its pods stay unready that long (the probes find nothing on the port), so a deploy's
    ``helm upgrade --wait`` is still running then: the real cluster's way to a slow rollout.
    """
    dockerfile = (ROOT / "examples" / "hello" / "Dockerfile").read_text()
    command = f'sleep {seconds:g}; exec httpd -f -v -p \\"${{PORT:-3000}}\\" -h /www'
    cmd = f'CMD ["sh", "-c", "{command}"]'
    slow = re.sub(r"^CMD .*$", lambda _: cmd, dockerfile, flags=re.M)
    assert slow != dockerfile, "examples/hello/Dockerfile has no CMD line to replace"
    return {"Dockerfile": slow}


class Harness:
    """The platform plus helpers to make PRs and drive them through `k8see enqueue`.

    ``proxy`` is the fault-injecting proxy the pools named by ``running_platform``'s
    ``fault_proxy_pools`` talk to the API server through (None without such pools).
    """

    def __init__(self, platform: Any, workdir: Path, proxy: FaultProxy | None = None):
        self.platform = platform
        self.workdir = workdir
        self.proxy = proxy
        self.redis = redis.Redis.from_url(platform.redis_url)

    def repo(self, name: str, files: dict[str, str] | None = None) -> tuple[str, Path, str]:
        """A git repository with examples/hello (plus ``files``); returns name, path, sha.

        It lives where the workers read sources from (``build.local_source_root``).
        """
        path = self.platform.sources / ORG / name
        shutil.copytree(ROOT / "examples" / "hello", path)
        for rel, text in (files or {}).items():
            (path / rel).write_text(text)
        self._git(path, "init", "-q", "-b", "feature")
        return f"{ORG}/{name}", path, self.commit(path, "first")

    def commit(self, path: Path, message: str) -> str:
        self._git(path, "add", "-A")
        self._git(path, "commit", "-q", "--allow-empty", "-m", message)
        return self._git(path, "rev-parse", "HEAD").strip()

    def _git(self, path: Path, *args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout

    def enqueue(self, *args: str, wait: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "k8see", "enqueue", *args]
        if wait:
            argv += ["--wait", "--timeout", "600"]
        return subprocess.run(
            argv, env=self.platform.process_env(), capture_output=True, text=True, timeout=700
        )

    def command(self, repo: str, pr: int, body: str, *, login: str) -> Any:
        """Post ``body`` as ``login`` on the PR and enqueue its ``issue_comment`` event (with
        the comment's id: workers ask GitHub who wrote it), waiting for the run."""
        posted = self.platform.github.add_comment(repo, pr, body, login=login)
        payload = self.platform.github.issue_comment_event(repo, pr, posted)
        assert_webhook("issue_comment", payload)
        event = self.workdir / f"event-{posted['id']}.json"
        event.write_text(json.dumps(payload))
        return self.enqueue("--event-path", str(event), "--event-name", "issue_comment")

    def record(self, repo: str, pr: int) -> dict[str, Any]:
        from k8see import state

        return state.get(self.redis, repo=repo, pr=pr) or {}

    def namespaces(self) -> list[str]:
        from kubernetes import client, config

        api = client.CoreV1Api(config.new_client_from_config(str(self.platform.kubeconfig)))
        return [ns.metadata.name for ns in api.list_namespace().items]

    def through_service(self, namespace: str, service: str, path: str) -> str:
        """GET ``path`` on ``service`` (``name:port``) through the API server's service proxy,
        as the cluster admin: the app's answer, read the way any client outside the node would.
        """
        from kubernetes import config

        api = config.new_client_from_config(str(self.platform.kubeconfig))
        response = api.call_api(
            f"/api/v1/namespaces/{namespace}/services/{service}/proxy/{path.lstrip('/')}",
            "GET",
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=10,
        )
        return str(response.data.decode())

    def wait_for(self, predicate: Any, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.25)
        raise AssertionError("condition not reached")


@contextmanager
def running_platform(
    workdir: Path,
    *,
    extra_env: dict[str, str] | None = None,
    fault_proxy_pools: tuple[str, ...] = (),
) -> Iterator[Harness]:
    """A started platform with workers; everything, its cluster included, stops afterwards.

    The built images really run on the cluster's node (pulled from the platform's registry),
    so the deploy's health check reaches the real app. The pools in ``fault_proxy_pools``
    reach the API server through a ``FaultProxy`` (``Harness.proxy``), as themselves.
    """
    for name in TOOLS:
        require_tool(name)
    from k8see_sandbox.platform import Platform

    platform = Platform(workdir=workdir).start()
    # Build only the host platform here (the builder tests cover two), and retry quickly.
    env = {"K8SEE_BUILD__PLATFORMS": "linux/amd64", "K8SEE_QUEUES__RETRY_BACKOFF_SECONDS": "0.2"}
    proxy = None
    try:
        kubeconfigs = {}
        if fault_proxy_pools:
            proxy = FaultProxy(
                upstream=platform.cluster.server, ca_file=str(platform.cluster.pki.ca.cert)
            )
            for pool in fault_proxy_pools:
                own = platform.identities.kubeconfigs[pool]
                assert own is not None, f"the {pool} pool has no Kubernetes identity"
                kubeconfigs[pool] = proxied_kubeconfig(
                    own, url=proxy.url, dest=workdir / f"pool-{pool}-via-proxy.kubeconfig"
                )
        platform.start_workers(extra_env={**env, **(extra_env or {})}, kubeconfigs=kubeconfigs)
        yield Harness(platform, workdir, proxy)
    finally:
        platform.stop()
        if proxy is not None:
            proxy.close()
