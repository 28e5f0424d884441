"""A deploy needing an operator's kind the cluster does not serve is a user error, before helm.

Covers, on the real cluster (which has none of the operators' CRDs): ``metrics.enabled: true``
is refused with a ``PolicyError`` naming the Prometheus operator's ServiceMonitor and how to
do without it, pointing at the option in k8s-ee.yaml; a PostgreSQL database names
CloudNativePG; several missing operators are all named at once; nothing is written to the
cluster (no namespace, so no helm release); a deploy needing no custom kind passes the check.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from k8see.config import load_repo_config
from k8see.errors import PolicyError
from k8see.integrations import discovery, kube
from k8see.manifests.release import chart_path, helm_values, offline_run
from k8see.run import Run
from k8see.settings import PlatformSettings
from k8see.stages import deploy
from k8see.stages.context import StageContext
from k8see.stages.served_kinds import check_served
from tests.conftest import require_tool
from tests.fixtures.kube import RUN_ID

DIGEST = "sha256:" + "a" * 64


@pytest.fixture
def settings(kubeconfig: Path) -> PlatformSettings:
    require_tool("helm")
    return PlatformSettings(deploy={"kubeconfig": str(kubeconfig)})


@pytest.fixture
def ctx(settings: PlatformSettings, tmp_path: Path) -> StageContext:
    return StageContext(settings=settings, log=logging.getLogger("test-gate"), workdir=tmp_path)


def a_run(settings: PlatformSettings, tmp_path: Path, extra: str, pr: int) -> Run:
    path = tmp_path / "k8s-ee.yaml"
    path.write_text(f"projectId: gate{RUN_ID}\napp:\n  port: 8080\n  healthPath: /health\n{extra}")
    run = offline_run(
        load_repo_config(path), repo="acme/shop", pr=pr, sha="b" * 40, ref="main", settings=settings
    )
    return run.with_result("build", {"image": f"registry.test/acme/shop@{DIGEST}"})


def skip_if_served(settings: PlatformSettings, *pairs: tuple[str, str]) -> None:
    api = kube.make_api(settings)
    try:
        if len(discovery.unserved(api, pairs)) < len(pairs):
            pytest.skip(f"this cluster serves some of {pairs}")
    finally:
        api.close()


def namespace_exists(kube_api_client: Any, name: str) -> bool:
    return any(
        ns.metadata.name == name for ns in client.CoreV1Api(kube_api_client).list_namespace().items
    )


def test_metrics_without_the_prometheus_operator_is_a_user_error_naming_it(
    settings: PlatformSettings, ctx: StageContext, tmp_path: Path, kube_api_client: Any
) -> None:
    skip_if_served(settings, ("monitoring.coreos.com/v1", "ServiceMonitor"))
    # Given a config turning metrics on, on a cluster without the Prometheus operator
    run = a_run(settings, tmp_path, "metrics:\n  enabled: true\n", pr=51)
    # When it is deployed
    with pytest.raises(PolicyError) as refused:
        deploy.deploy_verified(run, ctx)
    # Then the error names the option, the operator and its kind, and the way out
    error = refused.value
    assert error.message == (
        "metrics.enabled needs the Prometheus operator's ServiceMonitor "
        "(monitoring.coreos.com/v1), which this cluster does not serve."
    )
    assert "the Prometheus operator" in (error.hint or "")
    assert "metrics.enabled: false" in (error.hint or "")
    assert error.where is not None and error.where.field == "metrics.enabled"
    # And nothing was written: no namespace, hence no helm release
    assert not namespace_exists(kube_api_client, f"gate{RUN_ID}-pr-51")


def test_every_missing_operator_is_named_at_once(
    settings: PlatformSettings, ctx: StageContext, tmp_path: Path
) -> None:
    skip_if_served(
        settings,
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("postgresql.cnpg.io/v1", "Cluster"),
    )
    run = a_run(
        settings, tmp_path, "metrics:\n  enabled: true\ndatabases:\n  postgresql: true\n", pr=52
    )
    with pytest.raises(PolicyError) as refused:
        deploy.deploy_verified(run, ctx)
    assert "databases.postgresql needs CloudNativePG's Cluster (postgresql.cnpg.io/v1)" in (
        refused.value.message
    )
    assert "ServiceMonitor" in refused.value.message
    assert "CloudNativePG" in (refused.value.hint or "")


def test_a_release_of_built_in_kinds_passes(
    settings: PlatformSettings, ctx: StageContext, tmp_path: Path
) -> None:
    run = a_run(settings, tmp_path, "", pr=53)
    validated = run.result("validate")
    values = helm_values(run, validated=validated, build=run.result("build"), settings=settings)
    api = kube.make_api(settings)
    try:
        check_served(
            api,
            ctx,
            chart=chart_path(settings),
            namespace=validated["namespace"],
            values=values,
            config_file="k8s-ee.yaml",
        )
    finally:
        api.close()
