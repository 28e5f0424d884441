"""Cleanup at scale: 1,000 environments, 300 of whose PRs are closed, reconciled by the
cleanup job (``k8see.jobs.cleanup.run_cleanup``) against the sandbox servers.
"""

from __future__ import annotations

import importlib.util
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.benchmarks.measure import Result, skipped

NAME = "cleanup: reconcile"
REPO = "k8see-demo/fleet"


def _namespace(api: Any, pr: int) -> None:
    from kubernetes import client

    from k8see import names

    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    client.CoreV1Api(api).create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=names.namespace("fleet", pr),
                labels={
                    names.LABEL_MANAGED_BY: names.MANAGED_BY,
                    names.LABEL_TYPE: "ephemeral",
                    names.LABEL_PROJECT: "fleet",
                    names.LABEL_PR: str(pr),
                },
                annotations={
                    names.ANN_REPOSITORY: REPO,
                    names.ANN_CREATED_AT: stamp,
                    names.ANN_LAST_UPDATED: stamp,
                },
            )
        )
    )


def cleanup_at_scale(workdir: Path, *, environments: int = 1000, closed: int = 300) -> list[Result]:
    if importlib.util.find_spec("k8see.jobs") is None:
        return [skipped(NAME, "k8see/jobs/cleanup.py (the cleanup reconciler) is not there yet")]
    import redis
    from kubernetes import config

    from k8see.jobs.cleanup import run_cleanup
    from k8see.settings import load_settings
    from k8see_sandbox.platform import SANDBOX_TOKEN, Platform

    platform = Platform(workdir=workdir).start()
    try:
        assert platform.github is not None
        github = platform.github
        github.add_repo(REPO)
        for pr in range(1, environments + 1):
            state = "closed" if pr <= closed else "open"
            github.add_pull(REPO, pr, head_sha="a" * 40, head_ref=f"f{pr}", state=state)
        api = config.new_client_from_config(str(platform.kubeconfig))
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda pr: _namespace(api, pr), range(1, environments + 1)))
        settings = load_settings(
            redis={"url": platform.redis_url},
            deploy={"kubeconfig": str(platform.kubeconfig)},
            github={"api_url": github.url, "token": SANDBOX_TOKEN},
        )
        client = redis.Redis.from_url(platform.redis_url)
        passes, calls, destroyed_per_pass = [], [], []
        destroyed: set[str] = set()
        while len(destroyed) < closed and len(passes) < 20:
            before = len(github.calls)
            started = time.perf_counter()
            report = run_cleanup(settings=settings, client=client)
            passes.append(time.perf_counter() - started)
            calls.append(len(github.calls) - before)
            new = {d["namespace"] for d in report["destroyed"]} - destroyed
            destroyed |= new
            destroyed_per_pass.append(len(new))
    finally:
        platform.stop()
    params = {
        "environments": environments,
        "closed": closed,
        "max_github_calls_per_pass": settings.cleanup.max_github_calls,
        "passes_to_converge": len(passes),
        "destroy_chains_sent": len(destroyed),
    }
    extra = {
        "destroyed_per_pass": destroyed_per_pass,
        "total_seconds": round(sum(passes), 2),
        "total_github_calls": sum(calls),
    }
    return [
        Result(f"{NAME} pass time", "s", passes, params, extra=extra),
        Result(f"{NAME} GitHub calls per pass", "calls", [float(c) for c in calls], params),
        Result(f"{NAME} total until all closed destroyed", "s", [sum(passes)], params),
    ]
