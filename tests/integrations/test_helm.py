"""The helm integration: the real helm binary against the real API server.

Covers: install, status, upgrade (revision 2), uninstall and uninstalling what is not there;
a release left ``pending-install`` by a killed helm, recovered by ``recover_stuck``;
``on_tick`` stopping helm early as ``Aborted`` (helm's --atomic cleanup runs); helm failures
as a short ``HelmError`` that never quotes the values; rendering errors offline.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from k8see.errors import HelmError
from k8see.integrations import helm
from tests.conftest import ROOT, require_tool
from tests.fixtures.kube import RUN_ID

CHART = ROOT / "charts" / "k8s-ee-app"
LOG = logging.getLogger("test-helm")


@pytest.fixture(autouse=True)
def _helm() -> None:
    require_tool("helm")


def make_namespace(kubeconfig: str, name: str) -> None:
    api = config.new_client_from_config(config_file=kubeconfig)
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    api.close()


#: The project id: its namespaces carry the run id, so a second run on the cluster is alone.
PROJECT = f"helmt{RUN_ID}"
#: The image the releases run: the test app, by digest (set by the fixture below).
IMAGE = {"repository": "reg.test/acme/helmt", "digest": "sha256:" + "d" * 64}
#: Values that make the test app exit at once, so its pod crash-loops.
CRASH = {"env": {"EXIT_CODE": "1"}}


@pytest.fixture(autouse=True)
def _image(request: pytest.FixtureRequest) -> None:
    if "kubeconfig" in request.fixturenames:
        repository, digest = request.getfixturevalue("testapp_image")
        IMAGE.update(repository=repository, digest=digest)


def values(pr: int, **extra: Any) -> dict[str, Any]:
    return {
        "projectId": PROJECT,
        "prNumber": pr,
        "commitSha": "c" * 40,
        "previewDomain": "preview.test",
        "image": {**IMAGE, "tag": f"pr-{pr}"},
        **extra,
    }


def test_install_upgrade_status_uninstall(kubeconfig: Path) -> None:
    ns, kc = f"{PROJECT}-pr-1", str(kubeconfig)
    make_namespace(kc, ns)
    assert helm.status(release="app", namespace=ns, kubeconfig=kc) is None
    first = helm.upgrade_install(
        release="app",
        chart=CHART,
        namespace=ns,
        values=values(1),
        timeout_seconds=60,
        kubeconfig=kc,
        log=LOG,
    )
    assert (first.revision, first.status) == (1, "deployed")
    second = helm.upgrade_install(
        release="app",
        chart=CHART,
        namespace=ns,
        values=values(1, env={"A": "2"}),
        timeout_seconds=60,
        kubeconfig=kc,
        log=LOG,
    )
    assert (second.revision, second.status) == (2, "deployed")
    assert helm.recover_stuck(release="app", namespace=ns, kubeconfig=kc) == ""
    assert helm.uninstall(release="app", namespace=ns, kubeconfig=kc) is True
    assert helm.uninstall(release="app", namespace=ns, kubeconfig=kc) is False
    assert helm.status(release="app", namespace=ns, kubeconfig=kc) is None


def test_on_tick_aborts_and_atomic_cleans_up(kubeconfig: Path) -> None:
    ns, kc = f"{PROJECT}-pr-2", str(kubeconfig)
    make_namespace(kc, ns)
    api = config.new_client_from_config(config_file=kc)
    core = client.CoreV1Api(api)

    def stop_once_release_is_recorded() -> str | None:
        secrets = core.list_namespaced_secret(ns, label_selector="owner=helm").items
        return "CrashLoopBackOff" if secrets else None

    # Given a helm run stopped by its watcher once the release record exists
    with pytest.raises(helm.Aborted) as info:
        helm.upgrade_install(
            release="app",
            chart=CHART,
            namespace=ns,
            values=values(2, **CRASH),
            timeout_seconds=60,
            kubeconfig=kc,
            log=LOG,
            on_tick=stop_once_release_is_recorded,
            tick_seconds=0.0,
        )
    assert info.value.why == "CrashLoopBackOff"
    # Then helm, stopped with SIGTERM, ran its --atomic cleanup: no release is left
    assert helm.status(release="app", namespace=ns, kubeconfig=kc) is None
    assert helm.recover_stuck(release="app", namespace=ns, kubeconfig=kc) == ""
    done = helm.upgrade_install(
        release="app",
        chart=CHART,
        namespace=ns,
        values=values(2),
        timeout_seconds=60,
        kubeconfig=kc,
        log=LOG,
    )
    assert (done.revision, done.status) == (1, "deployed")
    helm.uninstall(release="app", namespace=ns, kubeconfig=kc)
    api.close()


def test_release_left_pending_by_a_killed_helm_is_recovered(
    kubeconfig: Path, tmp_path: Path
) -> None:
    ns, kc = f"{PROJECT}-pr-5", str(kubeconfig)
    make_namespace(kc, ns)
    api = config.new_client_from_config(config_file=kc)
    core = client.CoreV1Api(api)
    values_file = tmp_path / "pending-values.json"
    values_file.write_text(json.dumps(values(5, **CRASH)))
    # Given a helm install killed with SIGKILL while it waits (a worker lost mid-deploy)
    proc = subprocess.Popen(
        [
            "helm",
            "upgrade",
            "app",
            str(CHART),
            "--install",
            "-n",
            ns,
            "-f",
            str(values_file),
            "--wait",
            "--timeout",
            "60s",
            "--kubeconfig",
            kc,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not core.list_namespaced_secret(ns, label_selector="owner=helm").items:
            assert proc.poll() is None, "helm ended before recording the release"
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    left = helm.status(release="app", namespace=ns, kubeconfig=kc)
    assert left is not None and left.status == "pending-install"
    # When the next deploy recovers it
    assert helm.recover_stuck(release="app", namespace=ns, kubeconfig=kc) == "pending-install"
    # Then the release is gone and a fresh install works
    assert helm.status(release="app", namespace=ns, kubeconfig=kc) is None
    done = helm.upgrade_install(
        release="app",
        chart=CHART,
        namespace=ns,
        values=values(5),
        timeout_seconds=60,
        kubeconfig=kc,
        log=LOG,
    )
    assert (done.revision, done.status) == (1, "deployed")
    helm.uninstall(release="app", namespace=ns, kubeconfig=kc)
    api.close()


def test_failure_message_is_short_and_never_quotes_values(kubeconfig: Path) -> None:
    secret = "s3cr3t-value-123"
    with pytest.raises(HelmError) as info:
        helm.upgrade_install(
            release="app",
            chart=CHART,
            namespace=f"{PROJECT}-pr-3",
            values=values(3, env={"TOKEN": secret}, surprise=secret),
            timeout_seconds=30,
            kubeconfig=str(kubeconfig),
            log=LOG,
        )
    assert "surprise" in info.value.message
    assert secret not in info.value.message
    assert len(info.value.message) < 600


def test_template_renders_offline_and_refuses_bad_values() -> None:
    docs = helm.template(release="app", chart=CHART, namespace=f"{PROJECT}-pr-4", values=values(4))
    assert {d["kind"] for d in docs} == {"ConfigMap", "Deployment", "Service"}
    with pytest.raises(HelmError, match="projectId"):
        helm.template(release="app", chart=CHART, namespace="x", values={"prNumber": 1})
