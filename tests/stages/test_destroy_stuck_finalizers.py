"""Destroy finishes a namespace whose custom resource hangs on a finalizer, leaving nothing.

Covers, on the real cluster with a CRD of the test's own whose objects carry a finalizer
nobody removes: a stuck object outside any release is unblocked, the namespace goes, and a
namespace of the same name created again holds no resurrected object; a stuck object of the
helm release (``helm uninstall --wait`` runs out of time) does not stop the destroy; the
destroy result and the PR comment name the objects whose finalizers were removed.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from k8see import names
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from k8see.stages import comment_body, destroy
from k8see.stages.context import StageContext
from k8see_sandbox.github import GitHubSandbox
from tests.conftest import require_tool
from tests.fixtures.github import SANDBOX_TOKEN
from tests.fixtures.kube import RUN_ID

REPO = "acme/shop"
GROUP = f"stuck{RUN_ID}.k8see.test"
FINALIZER = "k8see.test/never-removed"


@pytest.fixture(scope="module")
def widgets(kube_api_client: Any) -> Iterator[dict[str, str]]:
    """A namespaced CRD ``Widget`` served by nobody: its finalizers are never removed."""
    ext = client.ApiextensionsV1Api(kube_api_client)
    name = f"widgets.{GROUP}"
    ext.create_custom_resource_definition(
        {
            "metadata": {"name": name},
            "spec": {
                "group": GROUP,
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": {"type": "object"}},
                    }
                ],
            },
        }
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            break
        time.sleep(0.2)
    yield {"group": GROUP, "version": "v1", "plural": "widgets"}
    ext.delete_custom_resource_definition(name)


@pytest.fixture
def ctx(kubeconfig: Path, tmp_path: Path, github: GitHubSandbox) -> StageContext:
    require_tool("helm")
    settings = PlatformSettings(
        deploy={
            "kubeconfig": str(kubeconfig),
            "destroy_timeout_seconds": 5,
            "uninstall_timeout_seconds": 5,
        },
        github={"api_url": github.url, "token": SANDBOX_TOKEN},
    )
    return StageContext(settings=settings, log=logging.getLogger("test-destroy"), workdir=tmp_path)


@pytest.fixture
def core(kube_api_client: Any) -> Any:
    return client.CoreV1Api(kube_api_client)


def make_ns(core: Any, name: str, pr: int) -> None:
    labels = {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_PR: str(pr)}
    core.create_namespace(
        {"metadata": {"name": name, "labels": labels, "annotations": {names.ANN_REPOSITORY: REPO}}}
    )


def widget(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name, "finalizers": [FINALIZER]},
    }


def widgets_in(api: Any, crd: dict[str, str], namespace: str) -> list[str]:
    found = client.CustomObjectsApi(api).list_namespaced_custom_object(
        crd["group"], crd["version"], namespace, crd["plural"]
    )
    return [o["metadata"]["name"] for o in found["items"]]


def close_run(pr: int) -> Run:
    return Run(repo=REPO, pr=pr, sha="", generation=2, action=Action.DESTROY)


def assert_nothing_comes_back(core: Any, api: Any, crd: dict[str, str], ns: str, pr: int) -> None:
    with pytest.raises(client.ApiException) as gone:
        core.read_namespace(ns)
    assert gone.value.status == 404
    # A namespace of the same name, as the PR's next deploy would create it, is empty
    make_ns(core, ns, pr)
    assert widgets_in(api, crd, ns) == []
    core.delete_namespace(ns)


def test_a_stuck_custom_resource_is_unblocked_and_never_resurrected(
    ctx: StageContext, core: Any, kube_api_client: Any, widgets: dict[str, str]
) -> None:
    # Given a PR namespace holding a Widget whose finalizer nobody will ever remove
    ns = f"stuck{RUN_ID}-pr-41"
    make_ns(core, ns, 41)
    client.CustomObjectsApi(kube_api_client).create_namespaced_custom_object(
        GROUP, "v1", ns, "widgets", widget("stuck")
    )
    # When the PR is closed
    result = destroy.run(close_run(41), ctx).result("destroy")
    # Then the namespace is gone, and nothing of it survives in etcd to come back with the
    # next namespace of that name
    assert result["deleted"] is True
    assert_nothing_comes_back(core, kube_api_client, widgets, ns, 41)
    # And the destroy says whose finalizers it removed
    assert result["unblocked"] == ["Widget/stuck"]


def test_a_release_object_stuck_on_a_finalizer_does_not_stop_the_destroy(
    ctx: StageContext,
    core: Any,
    kube_api_client: Any,
    widgets: dict[str, str],
    kube_env: dict[str, str],
    tmp_path: Path,
) -> None:
    # Given the app release owns a Widget with a finalizer nobody removes
    ns = f"stuck{RUN_ID}-pr-42"
    make_ns(core, ns, 42)
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": "stuck", "version": "0.1.0"})
    )
    (chart / "templates" / "widget.yaml").write_text(yaml.safe_dump(widget("held")))
    subprocess.run(
        [require_tool("helm"), "install", names.RELEASE_NAME, str(chart), "-n", ns],
        env=kube_env,
        check=True,
        capture_output=True,
    )
    # When the PR is closed (helm uninstall --wait runs out of time on the Widget)
    result = destroy.run(close_run(42), ctx).result("destroy")
    # Then the destroy went on, unblocked the Widget and removed the namespace
    assert result["deleted"] is True
    assert result["unblocked"] == ["Widget/held"]
    assert_nothing_comes_back(core, kube_api_client, widgets, ns, 42)


def test_the_pr_comment_names_the_objects_whose_finalizers_were_removed() -> None:
    record = {
        "status": "destroyed",
        "namespace": "shop-pr-41",
        "unblocked": ["Widget/stuck", "Cluster/app-postgresql"],
    }
    body = comment_body.render(record, settings=PlatformSettings())
    row = next(line for line in body.splitlines() if line.startswith("| Finalizers removed"))
    assert "2 object(s) stuck on a finalizer" in row
    assert "<code>Widget/stuck</code>" in row and "<code>Cluster/app-postgresql</code>" in row
    # And a destroy that needed no such thing shows no such row
    assert "Finalizers removed" not in comment_body.render(
        {"status": "destroyed", "namespace": "shop-pr-41"}, settings=PlatformSettings()
    )
