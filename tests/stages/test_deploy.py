"""The deploy stage end to end against the sandbox: real helm, real kubernetes client.

Covers: a first deploy reaching ready with the namespace labels and annotations of §3.1, the
quota/limits/policies of §3.2-3.4 and the app by digest; a second deploy with changed env
(new revision, new ConfigMap, pod restarted through the checksum); the health check
accepting 204; and the failures a PR author can fix: a crash-looping image (fails fast with
CrashLoopBackOff), an image that cannot be pulled, a health path answering 500; a namespace
owned by another repository is refused and left alone.
"""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from k8see import names
from k8see.config.model import RepoConfig
from k8see.errors import DeployFailed, PolicyError
from k8see.integrations import helm, kube
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from k8see.stages import deploy, destroy
from k8see.stages.context import StageContext
from tests.conftest import require_tool
from tests.fixtures.github import SANDBOX_TOKEN

REPO = "acme/shop"
DIGEST = "sha256:" + "e" * 64


class Backend:
    """A tiny real HTTP server standing in for the app behind the Service."""

    def __init__(self) -> None:
        self.status = 200
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"" if outer.status == 204 else b"{}"
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.server.shutdown()
    b.server.server_close()


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
    renewals: list[int] = []
    return StageContext(
        settings=settings,
        log=logging.getLogger("test-deploy"),
        workdir=tmp_path,
        renew_lease=lambda: renewals.append(1),
        extra={"renewals": renewals},
    )


@pytest.fixture
def crash_image() -> str:
    """An image the sandbox's kubelet runs into CrashLoopBackOff (its crash pattern)."""
    return "reg.test/acme/crashloop"


def make_run(
    project: str,
    pr: int,
    *,
    image: str = "reg.test/acme/shop/app",
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
    build = {"image": f"{image}@{DIGEST}", "digest": DIGEST}
    return Run(
        repo=REPO,
        pr=pr,
        sha=sha,
        generation=1,
        action=Action.DEPLOY,
        ref="feature/new-checkout",
        results={"validate": validated, "build": build},
    )


def serve(kube_sandbox: Any, backend: Backend, project: str, pr: int) -> None:
    kube_sandbox.register_service_backend(
        names.namespace(project, pr), names.deployment_name(project, pr), 80, backend.url
    )


def core(ctx: StageContext) -> Any:
    return client.CoreV1Api(kube.make_api(ctx.settings))


@pytest.mark.sandbox_only
def test_deploy_upgrade_and_destroy(ctx: StageContext, kube_sandbox: Any, backend: Backend) -> None:
    serve(kube_sandbox, backend, "shop", 7)
    # When a PR is deployed for the first time
    first = deploy.deploy_verified(make_run("shop", 7, env={"GREETING": "hello"}), ctx)
    result = first.result("deploy")
    # Then it is ready at its preview URL, with revision 1
    assert result["namespace"] == "shop-pr-7"
    assert result["preview_url"] == "https://shop-pr-7.preview.test"
    assert result["release_revision"] == 1
    assert result["created"] is True
    assert ctx.extra["renewals"]  # the lease was renewed between steps
    api = core(ctx)
    ns = api.read_namespace("shop-pr-7")
    assert ns.metadata.labels[names.LABEL_MANAGED_BY] == "k8see"
    assert ns.metadata.labels[names.LABEL_TYPE] == "ephemeral"
    assert ns.metadata.labels[names.LABEL_PROJECT] == "shop"
    assert ns.metadata.labels[names.LABEL_PR] == "7"
    assert ns.metadata.labels[names.LABEL_BRANCH] == "feature-new-checkout"
    assert ns.metadata.labels[names.LABEL_SHA] == "a" * 40
    # Pod Security Admission: baseline enforced (deploy.pod_security), restricted audited
    psa = {k.rpartition("/")[2]: v for k, v in ns.metadata.labels.items()
           if k.startswith("pod-security.kubernetes.io/")}  # fmt: skip
    assert psa == {"enforce": "baseline", "enforce-version": "latest", "warn": "baseline",
                   "audit": "restricted"}  # fmt: skip
    assert ns.metadata.annotations[names.ANN_REPOSITORY] == REPO
    assert ns.metadata.annotations[names.ANN_CREATED_BY] == "k8see"
    assert (
        api.read_namespaced_resource_quota("pr-quota", "shop-pr-7").spec.hard["limits.cpu"]
        == "690m"
    )
    assert api.read_namespaced_limit_range("pr-limits", "shop-pr-7")
    policies = client.NetworkingV1Api(api.api_client).list_namespaced_network_policy("shop-pr-7")
    assert len(policies.items) == 5
    dep = client.AppsV1Api(api.api_client).read_namespaced_deployment("shop-pr-7-app", "shop-pr-7")
    assert dep.spec.template.spec.containers[0].image == f"reg.test/acme/shop/app@{DIGEST}"
    config = api.read_namespaced_config_map("shop-pr-7-app-config", "shop-pr-7").data
    assert config["GREETING"] == "hello"
    assert config["PREVIEW_URL"] == "https://shop-pr-7.preview.test"
    checksum = dep.spec.template.metadata.annotations["checksum/config"]

    # When the PR is pushed again with changed env and a new commit
    second = deploy.deploy_verified(make_run("shop", 7, sha="b" * 40, env={"GREETING": "bye"}), ctx)
    # Then the release is upgraded in place, and the pod template changed with the env
    assert second.result("deploy")["release_revision"] == 2
    assert second.result("deploy")["created"] is False
    assert (
        api.read_namespaced_config_map("shop-pr-7-app-config", "shop-pr-7").data["GREETING"]
        == "bye"
    )
    dep = client.AppsV1Api(api.api_client).read_namespaced_deployment("shop-pr-7-app", "shop-pr-7")
    assert dep.spec.template.metadata.annotations["checksum/config"] != checksum
    assert api.read_namespace("shop-pr-7").metadata.labels[names.LABEL_SHA] == "b" * 40

    # When the PR is closed
    gone = destroy.run(make_run("shop", 7), ctx).result("destroy")
    # Then nothing is left
    assert gone["deleted"] is True
    assert "HelmRelease/app" in gone["removed"]
    assert [
        n.metadata.name for n in api.list_namespace().items if n.metadata.name == "shop-pr-7"
    ] == []
    assert (
        helm.status(release="app", namespace="shop-pr-7", kubeconfig=ctx.settings.deploy.kubeconfig)
        is None
    )


@pytest.mark.sandbox_only
def test_health_check_accepts_204(ctx: StageContext, kube_sandbox: Any, backend: Backend) -> None:
    backend.status = 204
    serve(kube_sandbox, backend, "empty", 3)
    done = deploy.deploy_verified(make_run("empty", 3), ctx)
    assert done.result("deploy")["release_revision"] == 1
    destroy.run(make_run("empty", 3), ctx)


def test_without_an_ingress_there_is_no_preview_url(
    ctx: StageContext, kube_sandbox: Any, backend: Backend
) -> None:
    # Given ingress.enabled: false: the app is healthy, but nothing serves it publicly
    serve(kube_sandbox, backend, "inner", 4)
    done = deploy.deploy_verified(make_run("inner", 4, ingress={"enabled": False}), ctx).result(
        "deploy"
    )
    # Then no URL is reported (the comment says why), and no Ingress exists
    assert (done["preview_url"], done["ingress"]) == ("", False)
    networking = client.NetworkingV1Api(kube.make_api(ctx.settings))
    assert networking.list_namespaced_ingress("inner-pr-4").items == []
    destroy.run(make_run("inner", 4), ctx)


@pytest.mark.sandbox_only
def test_health_path_answering_500_fails_with_hint(
    ctx: StageContext, kube_sandbox: Any, backend: Backend
) -> None:
    backend.status = 500
    serve(kube_sandbox, backend, "sick", 5)
    with pytest.raises(DeployFailed) as info:
        deploy.deploy_verified(make_run("sick", 5, app={"healthPath": "/ready"}), ctx)
    assert "GET /ready" in info.value.message
    assert "500" in info.value.message
    assert "app.healthPath" in (info.value.hint or "")
    assert info.value.where is not None and info.value.where.field == "app.healthPath"
    assert info.value.where.file == "k8s-ee.yaml"
    # With config-path, the error names the file the author edits
    elsewhere = make_run("sick", 5, app={"healthPath": "/ready"})
    elsewhere = elsewhere.with_result(
        "validate", {**elsewhere.result("validate"), "config_path": "svc/k8s-ee.yaml"}
    )
    with pytest.raises(DeployFailed) as again:
        deploy.deploy_verified(elsewhere, ctx)
    assert again.value.where is not None and again.value.where.file == "svc/k8s-ee.yaml"
    assert "svc/k8s-ee.yaml" in (again.value.hint or "")
    destroy.run(make_run("sick", 5), ctx)


@pytest.mark.sandbox_only
def test_crash_looping_image_fails_fast(ctx: StageContext, crash_image: str) -> None:
    with pytest.raises(DeployFailed) as info:
        deploy.deploy_verified(make_run("crashy", 9, image=crash_image), ctx)
    assert "CrashLoopBackOff" in info.value.message
    assert "port 3000" in (info.value.hint or "")
    destroy.run(make_run("crashy", 9), ctx)


def test_namespace_of_another_repository_is_refused(ctx: StageContext) -> None:
    api = core(ctx)
    api.create_namespace(
        {
            "metadata": {
                "name": "taken-pr-1",
                "labels": {names.LABEL_MANAGED_BY: "k8see"},
                "annotations": {names.ANN_REPOSITORY: "someone/else"},
            }
        }
    )
    with pytest.raises(PolicyError, match="someone/else"):
        deploy.deploy_verified(make_run("taken", 1), ctx)
    assert api.list_namespaced_resource_quota("taken-pr-1").items == []


@pytest.mark.sandbox_only
def test_image_that_cannot_be_pulled_fails_fast(ctx: StageContext) -> None:
    with pytest.raises(DeployFailed) as info:
        deploy.deploy_verified(make_run("nopull", 8, image="reg.test/acme/does-not-exist"), ctx)
    assert "cannot be pulled (ImagePullBackOff)" in info.value.message
    assert "pull secret" in (info.value.hint or "")
    destroy.run(make_run("nopull", 8), ctx)


@pytest.mark.sandbox_only
def test_quota_refusal_fails_with_quota_hint(
    ctx: StageContext, kube_sandbox: Any, backend: Backend
) -> None:
    # Given a deployed PR whose namespace also runs a large debug pod someone started by hand
    serve(kube_sandbox, backend, "full", 12)
    deploy.deploy_verified(make_run("full", 12), ctx)
    api = core(ctx)
    api.create_namespaced_pod(
        "full-pr-12",
        {
            "metadata": {"name": "debug"},
            "spec": {
                "containers": [
                    {
                        "name": "sh",
                        "image": "busybox",
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "64Mi"},
                            "limits": {"cpu": "400m", "memory": "700Mi"},
                        },
                    }
                ]
            },
        },
    )
    # When a push changes env, so a new app pod must start beside the old one
    with pytest.raises(DeployFailed) as info:
        deploy.deploy_verified(make_run("full", 12, env={"V": "2"}), ctx)
    # Then the failure names the quota and says what to do
    assert "exceeded quota: pr-quota" in info.value.message
    assert "resources" in (info.value.hint or "")
    destroy.run(make_run("full", 12), ctx)


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
    objects = deploy.render_manifests(run, settings=settings, api_cidrs=["10.0.0.1"])
    kinds = [o["kind"] for o in objects]
    assert kinds[:3] == ["Namespace", "ResourceQuota", "LimitRange"]
    assert objects[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    app = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-app")
    )
    assert "priorityClassName" not in app["spec"]["template"]["spec"]
    ranked = settings.model_copy(
        update={"deploy": settings.deploy.model_copy(update={"priority_class": "default-app"})}
    )
    objects = deploy.render_manifests(run, settings=ranked, api_cidrs=["10.0.0.1"])
    app = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-app")
    )
    assert app["spec"]["template"]["spec"]["priorityClassName"] == "default-app"
    quiet = settings.model_copy(
        update={"deploy": settings.deploy.model_copy(update={"pod_security": ""})}
    )
    bare = deploy.render_manifests(run, settings=quiet, api_cidrs=["10.0.0.1"])[0]
    assert not any(k.startswith("pod-security.") for k in bare["metadata"]["labels"])
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
