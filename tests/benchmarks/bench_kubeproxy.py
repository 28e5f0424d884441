"""What helm's retrying API proxy costs (``k8see.integrations.kubeproxy``), against the sandbox
API server: one API request, and a whole ``helm upgrade --install --wait`` of the app chart,
each direct and through the proxy, interleaved so that load affects both alike.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.measure import Baseline, Result

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "k8s-ee-app"
LOG = logging.getLogger("bench-kubeproxy")


def _values(pr: int) -> dict[str, Any]:
    return {
        "projectId": "benchproxy",
        "prNumber": pr,
        "commitSha": "c" * 40,
        "previewDomain": "preview.test",
        # The node's own test app image, by tag: the release really becomes ready.
        "image": {"repository": "k8see.test/testapp", "tag": "v1", "pullPolicy": "IfNotPresent"},
    }


def proxy_overhead(*, requests: int = 200, upgrades: int = 5) -> list[Result]:
    from kubernetes import client, config

    from k8see.integrations import helm, kubeproxy
    from k8see.settings import PlatformSettings
    from k8see_sandbox.cluster import LocalCluster

    cluster = LocalCluster().start()
    try:
        kubeconfig = cluster.admin_kubeconfig
        settings = PlatformSettings.model_validate({"deploy": {"kubeconfig": str(kubeconfig)}})
        times: dict[str, list[float]] = {"direct": [], "proxy": []}
        helm_times: dict[str, list[float]] = {"direct": [], "proxy": []}
        helm_requests: list[int] = []
        with kubeproxy.for_helm(settings) as session:
            paths = {"direct": str(kubeconfig), "proxy": session.kubeconfig}
            apis = {mode: config.new_client_from_config(config_file=p) for mode, p in paths.items()}
            cores = {mode: client.CoreV1Api(api) for mode, api in apis.items()}
            for core in cores.values():
                core.list_namespace()  # connections and TLS set up before timing
            for _ in range(requests):
                for mode, core in cores.items():
                    started = time.perf_counter()
                    core.list_namespace()
                    times[mode].append(time.perf_counter() - started)
            for pr in range(1, upgrades + 1):
                for mode, path in paths.items():
                    namespace = f"benchproxy-{mode}-{pr}"
                    cores["direct"].create_namespace({"metadata": {"name": namespace}})
                    before = session.requests
                    started = time.perf_counter()
                    helm.upgrade_install(
                        release="app",
                        chart=CHART,
                        namespace=namespace,
                        values=_values(pr),
                        timeout_seconds=120,
                        kubeconfig=path,
                        log=LOG,
                    )
                    helm_times[mode].append(time.perf_counter() - started)
                    if mode == "proxy":
                        helm_requests.append(session.requests - before)
            for api in apis.values():
                api.close()
    finally:
        cluster.stop()
    ms = {mode: [t * 1000 for t in samples] for mode, samples in times.items()}
    params = {"requests": requests, "call": "list namespaces"}
    helm_params = {"upgrades": upgrades, "helm_requests_per_upgrade": helm_requests}
    return [
        Result(
            "helm API proxy: one request, through the proxy",
            "ms",
            ms["proxy"],
            params,
            baseline=Baseline("the same request, direct (interleaved)", ms["direct"], params),
        ),
        Result(
            "helm API proxy: helm upgrade --install, through the proxy",
            "s",
            helm_times["proxy"],
            helm_params,
            baseline=Baseline(
                "the same upgrade, direct (interleaved)", helm_times["direct"], helm_params
            ),
        ),
    ]
