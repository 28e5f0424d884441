"""Pod Security admission on a PR namespace, enforced by the real API server.

Covers: a namespace made as deploy makes it (``namespace_metadata`` labels through
``kube.ensure_namespace``) with ``deploy.pod_security: restricted`` refuses a pod that runs
privileged, and one that may run as root, with the API server's PodSecurity message naming
what is wrong; with ``baseline`` (the default) the privileged pod is refused and the
root-capable one admitted; without a level both are admitted (the labels are what enforces);
every pod the app chart renders (app with its wait init containers, Redis, MariaDB) is
admitted under restricted. Pods are created as server-side dry runs, which go through
admission like any create.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from k8see.integrations import kube
from k8see.manifests.release import namespace_metadata, pod_security_level
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from tests.charts.test_database_subcharts import DATABASES, render
from tests.conftest import require_tool
from tests.fixtures.kube import RUN_ID, TEST_IMAGE

PRIVILEGED = {
    "containers": [{"name": "app", "image": TEST_IMAGE, "securityContext": {"privileged": True}}]
}
#: Nothing stops it running as root, escalating or keeping capabilities: baseline lets it by.
MAY_RUN_AS_ROOT = {"containers": [{"name": "app", "image": TEST_IMAGE}]}


def pr_namespace(api: Any, pr: int, pod_security: str) -> str:
    """A PR namespace labelled as deploy labels it for ``deploy.pod_security``."""
    project = f"psa{RUN_ID}"
    run = Run(repo="acme/shop", pr=pr, sha="c" * 40, generation=1, action=Action.DEPLOY, ref="x")
    labels, annotations = namespace_metadata(run, project_id=project, pod_security=pod_security)
    name = f"{project}-pr-{pr}"
    kube.ensure_namespace(
        api=api, name=name, labels=labels, annotations=annotations, repo="acme/shop"
    )
    return name


def create_pod(api: Any, namespace: str, name: str, spec: dict[str, Any]) -> None:
    client.CoreV1Api(api).create_namespaced_pod(
        namespace, {"metadata": {"name": name}, "spec": spec}, dry_run="All"
    )


def refusal(api: Any, namespace: str, spec: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as refused:
        create_pod(api, namespace, "bad", spec)
    assert refused.value.status == 403
    return str(refused.value.body)


def test_restricted_refuses_privileged_and_root_capable_pods(kube_api_client: Any) -> None:
    # Given a PR namespace of a platform that enforces restricted
    ns = pr_namespace(kube_api_client, 61, "restricted")
    # When a privileged pod is created, then the API server refuses it and says why
    body = refusal(kube_api_client, ns, PRIVILEGED)
    assert 'violates PodSecurity \\"restricted:latest\\"' in body
    assert "privileged" in body
    # And a pod that may run as root is refused too, each missing setting named
    body = refusal(kube_api_client, ns, MAY_RUN_AS_ROOT)
    assert 'violates PodSecurity \\"restricted:latest\\"' in body
    for what in ("allowPrivilegeEscalation != false", "runAsNonRoot != true", "seccompProfile"):
        assert what in body


def test_baseline_refuses_privileged_only_and_no_level_refuses_nothing(
    kube_api_client: Any,
) -> None:
    baseline = pr_namespace(kube_api_client, 62, "baseline")
    assert 'violates PodSecurity \\"baseline:latest\\"' in refusal(
        kube_api_client, baseline, PRIVILEGED
    )
    create_pod(kube_api_client, baseline, "root-capable", MAY_RUN_AS_ROOT)
    # Without the labels the same pods are admitted: the labels are what enforces
    unlabelled = pr_namespace(kube_api_client, 63, "")
    create_pod(kube_api_client, unlabelled, "privileged", PRIVILEGED)
    create_pod(kube_api_client, unlabelled, "root-capable", MAY_RUN_AS_ROOT)


def test_the_app_charts_pods_are_admitted_under_restricted(kube_api_client: Any) -> None:
    require_tool("helm")
    # Given a restricted PR namespace and the app chart with every database
    ns = pr_namespace(kube_api_client, 64, "restricted")
    objects = render(dict.fromkeys(DATABASES, True), writableDirs=["/tmp/cache"])
    templates = {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet")
    }
    assert {"Deployment/shop-pr-42-app", "Deployment/app-redis", "Deployment/app-mariadb"} <= set(
        templates
    )
    # When each pod template is created as a pod, then every one is admitted
    for key, spec in templates.items():
        create_pod(kube_api_client, ns, key.split("/")[1], spec)


@pytest.mark.parametrize(
    ("setting", "databases", "level"),
    [
        ("auto", [], "restricted"),
        ("auto", ["postgresql", "redis", "mariadb"], "restricted"),
        ("auto", ["postgresql", "mongodb"], "baseline"),
        ("auto", ["minio"], "baseline"),
        ("baseline", [], "baseline"),
        ("restricted", ["mongodb"], "restricted"),  # the platform's explicit choice stands
        ("", ["redis"], ""),
    ],
)
def test_auto_is_restricted_unless_a_database_might_break_it(
    setting: str, databases: list[str], level: str
) -> None:
    settings = PlatformSettings(deploy={"pod_security": setting})
    assert pod_security_level(settings, databases) == level


def test_auto_gives_a_chart_of_the_platforms_own_baseline(tmp_path: Path) -> None:
    settings = PlatformSettings(deploy={"chart_path": str(tmp_path)})
    assert settings.deploy.pod_security == "auto"
    assert pod_security_level(settings, []) == "baseline"
