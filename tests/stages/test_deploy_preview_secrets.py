"""Preview secrets on the real cluster: copied from the platform's per-project namespace into
the PR namespace, only for the repository that namespace names, only when opted in.

The test app answers with the status its ``STATUS`` variable names, so a Secret holding
``STATUS=204`` that reaches the pod through ``envFrom`` is seen in the app's own answer.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from k8see import names
from k8see.errors import DeployFailed
from k8see.integrations import kube
from k8see.integrations.preview_secrets import LABEL_COPIED_FROM, LABEL_PREVIEW_SECRET
from k8see.stages import deploy, destroy
from k8see.stages.context import StageContext
from tests.stages.test_deploy import (  # noqa: F401  (fixtures: ctx, and _image sets IMAGE)
    REPO,
    _image,
    core,
    ctx,
    make_run,
    project,
)

OPT_IN = {LABEL_PREVIEW_SECRET: "true"}
#: One project per test: a deleted namespace takes a while to go.
_PROJECTS = iter(range(100))


def _secret(name: str, data: dict[str, str], *, labels: dict[str, str] | None = None) -> Any:
    return client.V1Secret(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {}),
        data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    )


@pytest.fixture
def source(ctx: StageContext) -> Iterator[tuple[str, str]]:  # noqa: F811
    """The project's source namespace, annotated as acme/shop's, with three Secrets."""
    shop = project(f"secrets{next(_PROJECTS)}")
    api = core(ctx)
    name = f"{shop}-preview-secrets"
    api.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, annotations={names.ANN_REPOSITORY: REPO})
        )
    )
    api.create_namespaced_secret(name, _secret("app-env", {"STATUS": "204"}, labels=OPT_IN))
    api.create_namespaced_secret(name, _secret("platform-only", {"ROOT": "x"}))
    yield shop, name
    api.delete_namespace(name)


def _status_through_the_service(context: StageContext, project_id: str, pr: int) -> int:
    api = core(context)
    response = api.connect_get_namespaced_service_proxy_with_path(
        f"{names.deployment_name(project_id, pr)}:80",
        names.namespace(project_id, pr),
        "anything",
        _preload_content=False,
    )
    return int(response.status)


def test_opted_in_secrets_reach_the_pod_and_stale_copies_go(
    ctx: StageContext,  # noqa: F811
    source: tuple[str, str],
) -> None:
    shop, source_ns = source
    api = core(ctx)
    ns = names.namespace(shop, 1)
    try:
        # When a PR whose config loads the Secret through envFrom is deployed
        run = make_run(shop, 1, envFrom=[{"secretRef": {"name": "app-env"}}])
        deploy.deploy_verified(run, ctx)
        # Then the opted-in Secret was copied, marked as a copy, and reached the app
        copied = api.read_namespaced_secret("app-env", ns)
        assert copied.metadata.labels[LABEL_COPIED_FROM] == source_ns
        assert copied.metadata.labels[names.LABEL_MANAGED_BY] == names.MANAGED_BY
        assert _status_through_the_service(ctx, shop, 1) == 204
        # And the Secret without the opt-in label stayed where it was
        with pytest.raises(client.ApiException) as info:
            api.read_namespaced_secret("platform-only", ns)
        assert info.value.status == 404

        # When the platform team withdraws the Secret and the PR no longer loads it
        api.delete_namespaced_secret("app-env", source_ns)
        deploy.deploy_verified(make_run(shop, 1), ctx)
        # Then its copy is gone from the PR namespace too
        with pytest.raises(client.ApiException) as info:
            api.read_namespaced_secret("app-env", ns)
        assert info.value.status == 404
    finally:
        destroy.run(make_run(shop, 1), ctx)


def test_another_repository_with_the_same_project_id_gets_nothing(
    ctx: StageContext,  # noqa: F811
    source: tuple[str, str],
) -> None:
    # Given a hostile repository that picked acme/shop's projectId for its own PR
    shop, source_ns = source
    api = core(ctx)
    run = make_run(shop, 2, envFrom=[{"secretRef": {"name": "app-env"}}])
    stolen = dataclasses.replace(run, repo="evil/shop")
    ns = names.namespace(shop, 2)
    try:
        # Then its deploy stops before helm with a message naming what is missing
        with pytest.raises(DeployFailed) as info:
            deploy.deploy_verified(stolen, ctx)
        assert "'app-env'" in info.value.message and "evil/shop" in info.value.message
        assert source_ns in (info.value.hint or "")
        # And nothing was copied into its namespace
        copies = api.list_namespaced_secret(ns, label_selector=LABEL_COPIED_FROM).items
        assert copies == []
    finally:
        destroy.run(stolen, ctx)


def test_a_secret_nobody_provides_is_a_clear_error_before_helm(ctx: StageContext) -> None:  # noqa: F811
    lone = project("nosecret")
    try:
        with pytest.raises(DeployFailed) as info:
            deploy.deploy_verified(make_run(lone, 3, envFrom=[{"secretRef": {"name": "db"}}]), ctx)
        assert "'db'" in info.value.message
        assert f"{lone}-preview-secrets" in (info.value.hint or "")
        assert info.value.where is not None and info.value.where.field == "envFrom"
        apps = client.AppsV1Api(kube.make_api(ctx.settings))
        assert apps.list_namespaced_deployment(names.namespace(lone, 3)).items == []
    finally:
        destroy.run(make_run(lone, 3), ctx)
