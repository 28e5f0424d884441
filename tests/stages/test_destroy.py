"""The destroy stage against the real API server (the local cluster, or K8SEE_TEST_KUBECONFIG).

Covers: a close event without a validated config finds the PR's namespaces by label and
repository annotation (k8see's and the reference's), and removes release and namespace; a
second destroy converges (nothing found, nothing failed); a preserved namespace is kept and
reported; another repository's namespace for the same PR number is never touched; a namespace
made before the platform bound its pools gets the RoleBindings before anything else is written
(seen through a watch). Names carry the run id, so a second run on the same cluster is alone.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from k8see import names
from k8see.integrations import kube
from k8see.run import Action, Run
from k8see.settings import PlatformSettings, ServiceAccountRef
from k8see.stages import destroy
from k8see.stages.context import StageContext
from k8see_sandbox.github import GitHubSandbox
from tests.conftest import require_tool
from tests.fixtures.github import SANDBOX_TOKEN
from tests.fixtures.kube import RUN_ID

#: Namespaces are found by PR number and repository, so the repository is this run's own.
REPO = f"acme/shop-{RUN_ID}"


@pytest.fixture
def ctx(kubeconfig: Path, tmp_path: Path, github: GitHubSandbox) -> StageContext:
    require_tool("helm")
    # The GitHub stand-in knows none of these PRs: a PR GitHub does not have may be destroyed.
    settings = PlatformSettings(
        deploy={"kubeconfig": str(kubeconfig), "destroy_timeout_seconds": 30},
        github={"api_url": github.url, "token": SANDBOX_TOKEN},
    )
    return StageContext(settings=settings, log=logging.getLogger("test-destroy"), workdir=tmp_path)


@pytest.fixture
def core(ctx: StageContext) -> Any:
    return client.CoreV1Api(kube.make_api(ctx.settings))


def close_run(pr: int, **results: Any) -> Run:
    return Run(repo=REPO, pr=pr, sha="", generation=2, action=Action.DESTROY, results=results)


def make_ns(
    core: Any,
    name: str,
    *,
    pr: int,
    manager: str = "k8see",
    repo: str = REPO,
    preserved: bool = False,
) -> None:
    labels = {names.LABEL_MANAGED_BY: manager, names.LABEL_PR: str(pr)}
    annotations = {names.ANN_REPOSITORY: repo}
    if preserved:
        labels[names.LABEL_PRESERVE] = "true"
        annotations[names.ANN_PRESERVE_UNTIL] = "2030-01-01T00:00:00Z"
    core.create_namespace(
        {"metadata": {"name": name, "labels": labels, "annotations": annotations}}
    )


def exists(core: Any, name: str) -> bool:
    return any(ns.metadata.name == name for ns in core.list_namespace().items)


def ns(project: str, pr: int) -> str:
    return f"{project}{RUN_ID}-pr-{pr}"


def test_close_without_config_finds_and_removes_namespaces(ctx: StageContext, core: Any) -> None:
    # Given a k8see namespace and a reference-made one for the same PR, and another repo's
    make_ns(core, ns("web", 31), pr=31)
    make_ns(core, ns("oldweb", 31), pr=31, manager="github-actions")
    make_ns(core, ns("web2", 31), pr=31, repo="someone/else")
    # When the PR is closed and the run carries no validated config
    result = destroy.run(close_run(31), ctx).result("destroy")
    # Then both of this repository's namespaces are gone and the other one is untouched
    assert result["deleted"] is True
    assert result["preserved"] is False
    assert sorted(result["namespaces"]) == [ns("oldweb", 31), ns("web", 31)]
    assert f"Namespace/{ns('web', 31)}" in result["removed"]
    assert not exists(core, ns("web", 31))
    assert not exists(core, ns("oldweb", 31))
    assert exists(core, ns("web2", 31))
    # And a second destroy converges
    again = destroy.run(close_run(31), ctx).result("destroy")
    assert (again["deleted"], again["namespace"], again["skipped"]) == (False, "", ["not-found"])


def test_validated_namespace_is_used_directly(ctx: StageContext, core: Any) -> None:
    make_ns(core, ns("direct", 32), pr=32)
    result = destroy.run(close_run(32, validate={"namespace": ns("direct", 32)}), ctx)
    assert result.result("destroy")["deleted"] is True
    assert not exists(core, ns("direct", 32))


def test_preserved_namespace_is_kept(ctx: StageContext, core: Any) -> None:
    make_ns(core, ns("kept", 33), pr=33, preserved=True)
    result = destroy.run(close_run(33), ctx).result("destroy")
    assert (result["deleted"], result["preserved"]) == (False, True)
    assert result["preserve_until"] == "2030-01-01T00:00:00Z"
    assert exists(core, ns("kept", 33))


def writes_since(core: Any, namespace: str, resource_version: str) -> list[tuple[str, str, str]]:
    """What was written since ``resource_version`` to the namespace, its RoleBindings and
    helm's release records, in the order the API server stored it (replayed by watches)."""
    rbac = client.RbacAuthorizationV1Api(core.api_client)
    sources = [
        ("namespaces", core.list_namespace, {"field_selector": f"metadata.name={namespace}"}),
        ("rolebindings", rbac.list_namespaced_role_binding, {"namespace": namespace}),
        ("secrets", core.list_namespaced_secret, {"namespace": namespace,
                                                  "label_selector": "owner=helm"}),
    ]  # fmt: skip
    seen: list[tuple[int, str, str, str]] = []
    for resource, lister, kwargs in sources:
        for event in watch.Watch().stream(
            lister, resource_version=resource_version, timeout_seconds=1, **kwargs
        ):
            meta = event["object"].metadata
            seen.append((int(meta.resource_version), event["type"], resource, meta.name))
    # resourceVersions are etcd revisions on this API server: one order across resources.
    return [(kind, resource, name) for _, kind, resource, name in sorted(seen)]


def test_a_namespace_from_before_the_bindings_gets_them_before_the_uninstall(
    ctx: StageContext, core: Any
) -> None:
    # Given a namespace an older k8see made (no RoleBindings), and a platform that binds
    older = ns("older", 34)
    make_ns(core, older, pr=34)
    bindings = {"k8see-pr-namespace": {"name": "k8see-deploy", "namespace": "k8see"}}
    settings = ctx.settings.model_copy(
        update={"deploy": ctx.settings.deploy.model_copy(update={"namespace_bindings": {
            role: ServiceAccountRef(**account) for role, account in bindings.items()
        }})}
    )  # fmt: skip
    rv = core.read_namespace(older).metadata.resource_version
    # When its PR is closed
    result = destroy.run(close_run(34), dataclasses.replace(ctx, settings=settings))
    # Then the deploy pool was bound there before anything else was written, and all is gone
    assert result.result("destroy")["deleted"] is True
    writes = writes_since(core, older, rv)
    assert writes[0] == ("ADDED", "rolebindings", "k8see-pr-namespace")
    assert ("DELETED", "namespaces", older) in writes
    assert not exists(core, older)
