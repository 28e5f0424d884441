"""The deploy stage end to end on the real cluster: real helm, real kubernetes client, and the
test app (``testapp_image``) running as the PR's app, pulled by the node from the session's
registry by digest.

Covers: a first deploy reaching ready with the namespace labels and annotations, the
quota/limits/policies (docs/environments.md) and the app by digest; a second deploy with changed env
(new revision, new ConfigMap, pod restarted through the checksum); the health check
accepting 204; and the failures a PR author can fix: a crash-looping app (fails fast with
CrashLoopBackOff), an image that cannot be pulled (a digest the registry does not have), a
health path answering 500 (the pod's probes fail, so the deploy times out and says what the
probe got), a quota refusal; a namespace owned by another repository is refused and left
alone. Project ids carry the run id, so a second run on the same cluster is alone.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from k8see import names
from k8see.config.model import RepoConfig
from k8see.errors import DeployFailed, PolicyError
from k8see.integrations import helm, kube
from k8see.manifests.release import render_manifests
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from k8see.stages import deploy, destroy
from k8see.stages.context import StageContext
from tests.conftest import require_tool
from tests.fixtures.github import SANDBOX_TOKEN
from tests.fixtures.kube import RUN_ID, app_requests

REPO = "acme/shop"
#: The image deploys run: the test app by digest (set from ``testapp_image`` below).
IMAGE = {"repository": "reg.test/acme/shop/app", "digest": "sha256:" + "e" * 64}
#: A digest no registry has: the node cannot pull it.
MISSING_DIGEST = "sha256:" + "0" * 64


@pytest.fixture(autouse=True)
def _image(request: pytest.FixtureRequest) -> None:
    if "kubeconfig" in request.fixturenames:
        repository, digest = request.getfixturevalue("testapp_image")
        IMAGE.update(repository=repository, digest=digest)


def project(name: str) -> str:
    """A project id unique to this run (its namespace is ``<name><run id>-pr-<N>``)."""
    return f"{name}{RUN_ID}"


@pytest.fixture
def ctx(kubeconfig: Path, tmp_path: Path, github: Any) -> StageContext:
    require_tool("helm")
    # destroy asks GitHub whether the PR is gone (these PRs are unknown to it: they are).
    settings = PlatformSettings(
        github={"api_url": github.url, "token": SANDBOX_TOKEN},
        deploy={
            "kubeconfig": str(kubeconfig),
            "domain": "preview.test",
            "health_attempts": 3,
            "health_interval_seconds": 0.1,
            "helm_timeout_seconds": 60,
            "destroy_timeout_seconds": 30,
        },
    )
    return StageContext(
        settings=settings,
        log=logging.getLogger("test-deploy"),
        workdir=tmp_path,
        renew_lease=Renewals(),
    )


class Renewals:
    """A lease renewal that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def with_helm_timeout(ctx: StageContext, seconds: int) -> StageContext:
    deploy_settings = ctx.settings.deploy.model_copy(update={"helm_timeout_seconds": seconds})
    settings = ctx.settings.model_copy(update={"deploy": deploy_settings})
    return dataclasses.replace(ctx, settings=settings)


def make_run(
    project: str,
    pr: int,
    *,
    image: str | None = None,
    digest: str | None = None,
    sha: str = "a" * 40,
    **config: Any,
) -> Run:
    data = RepoConfig.model_validate({"projectId": project, **config}).to_dict()
    validated = {
        "config": data,
        "project_id": project,
        "namespace": names.namespace(project, pr),
        "preview_url": names.preview_url(project, pr, "preview.test"),
        "databases": [db for db, v in data["databases"].items() if v],
    }
    image, digest = image or IMAGE["repository"], digest or IMAGE["digest"]
    build = {"image": f"{image}@{digest}", "digest": digest}
    return Run(
        repo=REPO,
        pr=pr,
        sha=sha,
        generation=1,
        action=Action.DEPLOY,
        ref="feature/new-checkout",
        results={"validate": validated, "build": build},
    )


def core(ctx: StageContext) -> Any:
    return client.CoreV1Api(kube.make_api(ctx.settings))


def app_pod(api: Any, namespace: str) -> str:
    """The name of the app's running pod (the only one once a rollout is done)."""
    pods = api.list_namespaced_pod(
        namespace, label_selector=f"app.kubernetes.io/name={deploy.APP_CHART_NAME}"
    )
    running = [
        p for p in pods.items if p.status.phase == "Running" and not p.metadata.deletion_timestamp
    ]
    assert len(running) == 1, [p.metadata.name for p in pods.items]
    return str(running[0].metadata.name)


def test_deploy_upgrade_and_destroy(ctx: StageContext) -> None:
    shop = project("shop")
    ns, app = names.namespace(shop, 7), names.deployment_name(shop, 7)
    # When a PR is deployed for the first time
    first = deploy.deploy_verified(make_run(shop, 7, env={"GREETING": "hello"}), ctx)
    result = first.result("deploy")
    # Then it is ready at its preview URL, with revision 1
    assert result["namespace"] == ns
    assert result["preview_url"] == f"https://{ns}.preview.test"
    assert result["release_revision"] == 1
    assert result["created"] is True
    renewals = ctx.renew_lease
    assert isinstance(renewals, Renewals) and renewals.calls  # renewed between steps
    api = core(ctx)
    namespace = api.read_namespace(ns)
    assert namespace.metadata.labels[names.LABEL_MANAGED_BY] == "k8see"
    assert namespace.metadata.labels[names.LABEL_TYPE] == "ephemeral"
    assert namespace.metadata.labels[names.LABEL_PROJECT] == shop
    assert namespace.metadata.labels[names.LABEL_PR] == "7"
    assert namespace.metadata.labels[names.LABEL_BRANCH] == "feature-new-checkout"
    assert namespace.metadata.labels[names.LABEL_SHA] == "a" * 40
    # Pod Security Admission: restricted enforced (deploy.pod_security auto, no database whose
    # pods might break it), and the app's pod below was admitted and runs under it
    psa = {k.rpartition("/")[2]: v for k, v in namespace.metadata.labels.items()
           if k.startswith("pod-security.kubernetes.io/")}  # fmt: skip
    assert psa == {"enforce": "restricted", "enforce-version": "latest", "warn": "restricted",
                   "audit": "restricted"}  # fmt: skip
    assert namespace.metadata.annotations[names.ANN_REPOSITORY] == REPO
    assert namespace.metadata.annotations[names.ANN_CREATED_BY] == "k8see"
    assert api.read_namespaced_resource_quota("pr-quota", ns).spec.hard["limits.cpu"] == "690m"
    assert api.read_namespaced_limit_range("pr-limits", ns)
    policies = client.NetworkingV1Api(api.api_client).list_namespaced_network_policy(ns)
    assert len(policies.items) == 5
    dep = client.AppsV1Api(api.api_client).read_namespaced_deployment(app, ns)
    image = f"{IMAGE['repository']}@{IMAGE['digest']}"
    assert dep.spec.template.spec.containers[0].image == image
    config = api.read_namespaced_config_map(f"{app}-config", ns).data
    assert config["GREETING"] == "hello"
    assert config["PREVIEW_URL"] == f"https://{ns}.preview.test"
    checksum = dep.spec.template.metadata.annotations["checksum/config"]
    # And the health check reached the app itself
    first_pod = app_pod(api, ns)
    assert "GET /health" in app_requests(api.api_client, ns, first_pod)

    # When the PR is pushed again with changed env and a new commit
    second = deploy.deploy_verified(make_run(shop, 7, sha="b" * 40, env={"GREETING": "bye"}), ctx)
    # Then the release is upgraded in place, and the pod template changed with the env
    assert second.result("deploy")["release_revision"] == 2
    assert second.result("deploy")["created"] is False
    assert api.read_namespaced_config_map(f"{app}-config", ns).data["GREETING"] == "bye"
    dep = client.AppsV1Api(api.api_client).read_namespaced_deployment(app, ns)
    assert dep.spec.template.metadata.annotations["checksum/config"] != checksum
    assert api.read_namespace(ns).metadata.labels[names.LABEL_SHA] == "b" * 40
    # And a new pod runs the app
    assert app_pod(api, ns) != first_pod

    # When the PR is closed
    gone = destroy.run(make_run(shop, 7), ctx).result("destroy")
    # Then nothing is left
    assert gone["deleted"] is True
    assert "HelmRelease/app" in gone["removed"]
    assert [n.metadata.name for n in api.list_namespace().items if n.metadata.name == ns] == []
    assert (
        helm.status(release="app", namespace=ns, kubeconfig=ctx.settings.deploy.kubeconfig) is None
    )


def test_health_check_accepts_204(ctx: StageContext) -> None:
    # Given an app answering its health path with 204 and no body
    empty = project("empty")
    done = deploy.deploy_verified(make_run(empty, 3, env={"STATUS": "204"}), ctx)
    assert done.result("deploy")["release_revision"] == 1
    destroy.run(make_run(empty, 3), ctx)


def test_without_an_ingress_there_is_no_preview_url(ctx: StageContext) -> None:
    # Given ingress.enabled: false: the app is healthy, but nothing serves it publicly
    inner = project("inner")
    done = deploy.deploy_verified(make_run(inner, 4, ingress={"enabled": False}), ctx).result(
        "deploy"
    )
    # Then no URL is reported (the comment says why), and no Ingress exists
    assert (done["preview_url"], done["ingress"]) == ("", False)
    networking = client.NetworkingV1Api(kube.make_api(ctx.settings))
    assert networking.list_namespaced_ingress(names.namespace(inner, 4)).items == []
    destroy.run(make_run(inner, 4), ctx)


def test_health_path_answering_500_fails_with_hint(ctx: StageContext) -> None:
    # Given an app answering 500 on its health path. On a real cluster the pod's startup
    # probe GETs that path too, so the pod never becomes ready and helm's wait times out
    # (the sandbox had the pod ready and only k8see's own check failing). The wait is long
    # enough for the pod to start on a loaded node (20 s saw it still ContainerCreating).
    sick, ctx = project("sick"), with_helm_timeout(ctx, 45)
    failing = {"app": {"healthPath": "/ready"}, "env": {"STATUS": "500"}}
    with pytest.raises(DeployFailed) as info:
        deploy.deploy_verified(make_run(sick, 5, **failing), ctx)
    assert "GET /ready" in info.value.message
    assert "500" in info.value.message
    assert "app.healthPath" in (info.value.hint or "")
    assert info.value.where is not None and info.value.where.field == "app.healthPath"
    assert info.value.where.file == "k8s-ee.yaml"
    # With config-path, the error names the file the author edits
    elsewhere = make_run(sick, 5, **failing)
    elsewhere = elsewhere.with_result(
        "validate", {**elsewhere.result("validate"), "config_path": "svc/k8s-ee.yaml"}
    )
    with pytest.raises(DeployFailed) as again:
        deploy.deploy_verified(elsewhere, ctx)
    assert again.value.where is not None and again.value.where.file == "svc/k8s-ee.yaml"
    assert "svc/k8s-ee.yaml" in (again.value.hint or "")
    destroy.run(make_run(sick, 5), ctx)


def test_crash_looping_image_fails_fast(ctx: StageContext) -> None:
    # Given an app that exits at once, so the kubelet backs off restarting it
    crashy = project("crashy")
    with pytest.raises(DeployFailed) as info:
        deploy.deploy_verified(make_run(crashy, 9, env={"EXIT_CODE": "1"}), ctx)
    assert "CrashLoopBackOff" in info.value.message
    assert "port 3000" in (info.value.hint or "")
    destroy.run(make_run(crashy, 9), ctx)


def test_namespace_of_another_repository_is_refused(ctx: StageContext) -> None:
    api = core(ctx)
    taken = project("taken")
    api.create_namespace(
        {
            "metadata": {
                "name": names.namespace(taken, 1),
                "labels": {names.LABEL_MANAGED_BY: "k8see"},
                "annotations": {names.ANN_REPOSITORY: "someone/else"},
            }
        }
    )
    with pytest.raises(PolicyError, match="someone/else"):
        deploy.deploy_verified(make_run(taken, 1), ctx)
    assert api.list_namespaced_resource_quota(names.namespace(taken, 1)).items == []


def test_image_that_cannot_be_pulled_fails_fast(ctx: StageContext) -> None:
    # Given a digest the registry does not have
    nopull = project("nopull")
    with pytest.raises(DeployFailed) as info:
        deploy.deploy_verified(make_run(nopull, 8, digest=MISSING_DIGEST), ctx)
    assert "cannot be pulled (ImagePullBackOff)" in info.value.message
    assert "pull secret" in (info.value.hint or "")
    destroy.run(make_run(nopull, 8), ctx)


def test_quota_refusal_fails_with_quota_hint(ctx: StageContext) -> None:
    # Given a deployed PR whose namespace also runs a large debug pod someone started by hand
    full = project("full")
    ns = names.namespace(full, 12)
    deploy.deploy_verified(make_run(full, 12), ctx)
    api = core(ctx)
    api.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "debug"},
            "spec": {
                "containers": [
                    {
                        "name": "sh",
                        "image": f"{IMAGE['repository']}@{IMAGE['digest']}",
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "64Mi"},
                            "limits": {"cpu": "400m", "memory": "700Mi"},
                        },
                        # What the namespace's Pod Security level (restricted) asks of it
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 1001,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            },
        },
    )
    # When a push changes env, so a new app pod must start beside the old one
    with pytest.raises(DeployFailed) as info:
        deploy.deploy_verified(make_run(full, 12, env={"V": "2"}), ctx)
    # Then the failure names the quota and says what to do
    assert "exceeded quota: pr-quota" in info.value.message
    assert "resources" in (info.value.hint or "")
    destroy.run(make_run(full, 12), ctx)


def test_render_manifests_offline_in_apply_order(tmp_path: Path) -> None:
    require_tool("helm")
    # Given a validated config with two databases and no cluster at all
    # (x/y is allowlisted: the platform passes only the ingress annotations it allows)
    settings = PlatformSettings(
        deploy={
            "kubeconfig": str(tmp_path / "none"),
            "domain": "preview.test",
            "ingress_annotation_allowlist": ["x/y"],
        }
    )
    run = make_run(
        "offline",
        4,
        databases={"postgresql": True, "redis": True},
        ingress={"annotations": {"x/y": "z"}},
    )
    objects = render_manifests(run, settings=settings, api_cidrs=["10.0.0.1"])
    kinds = [o["kind"] for o in objects]
    assert kinds[:3] == ["Namespace", "ResourceQuota", "LimitRange"]
    # PostgreSQL (CloudNativePG) and the chart's Redis pass restricted, so auto enforces it
    assert objects[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    app = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-app")
    )
    assert "priorityClassName" not in app["spec"]["template"]["spec"]
    ranked = settings.model_copy(
        update={"deploy": settings.deploy.model_copy(update={"priority_class": "default-app"})}
    )
    objects = render_manifests(run, settings=ranked, api_cidrs=["10.0.0.1"])
    app = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-app")
    )
    assert app["spec"]["template"]["spec"]["priorityClassName"] == "default-app"
    quiet = settings.model_copy(
        update={"deploy": settings.deploy.model_copy(update={"pod_security": ""})}
    )
    bare = render_manifests(run, settings=quiet, api_cidrs=["10.0.0.1"])[0]
    assert not any(k.startswith("pod-security.") for k in bare["metadata"]["labels"])
    # MongoDB's operator adds init containers restricted would refuse: auto falls to baseline
    mongo = make_run("offline", 4, databases={"postgresql": True, "mongodb": True})
    labels = render_manifests(mongo, settings=settings, api_cidrs=["10.0.0.1"])[0]["metadata"]
    assert labels["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    assert kinds[3:8] == ["NetworkPolicy"] * 5
    assert {"Deployment", "Service", "ConfigMap", "Ingress"} <= set(kinds[8:])
    assert objects[1]["spec"]["hard"]["requests.cpu"] == "550m"  # the pg+redis row
    ingress = next(o for o in objects if o["kind"] == "Ingress")
    assert ingress["metadata"]["annotations"]["x/y"] == "z"
    assert (
        ingress["metadata"]["annotations"]["traefik.ingress.kubernetes.io/router.entrypoints"]
        == "websecure"
    )
    assert ingress["spec"]["ingressClassName"] == "traefik"
