"""Attack 7: a message sent straight to ``k8see.deploy`` or ``k8see.scan`` carries its own
config and image.

Covers: deploy and scan refuse an image of another repository (the victim's, by its real
digest) and an image of the run's own path whose digest is not what the registry has for this
run's ``pr-<N>`` tag, naming the image, before anything reaches the cluster;
and a deploy whose message carries a forged config (another project's namespace, its own env)
deploys the config at the PR's head instead, with the image the registry confirms.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from k8see import names
from k8see.errors import Refused
from k8see.integrations import kube
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from k8see.stages import deploy, scan
from k8see_sandbox.github import GitHubSandbox
from tests.fixtures.images import LocalRegistry
from tests.fixtures.kube import RUN_ID, ClusterRegistry, push_testapp
from tests.security.common import REPO, platform_settings, source_repo, stage_ctx

PR = 5
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def push_image(registry: LocalRegistry, repository: str, tags: list[str], label: str) -> str:
    """A tiny image (a config blob, no layers) under ``tags``; returns its digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "label": label}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()
    reg = registry.client()
    try:
        reg.push_blob(repository, config_digest, config)
        digests = {reg.put_manifest(repository, tag, manifest, OCI_MANIFEST) for tag in tags}
        return digests.pop()
    finally:
        reg.close()


@pytest.fixture
def settings(
    tmp_path: Path, redis_url: str, github: GitHubSandbox, registry: LocalRegistry
) -> PlatformSettings:
    return platform_settings(
        tmp_path,
        redis_url=redis_url,
        github_url=github.url,
        registry={"type": "generic", "host": registry.host, "insecure": True},
        scan={"upload_sarif": "never"},
        deploy={"domain": "preview.test", "health_attempts": 3, "health_interval_seconds": 0.1},
    )


def open_pull(github: GitHubSandbox, tmp_path: Path, project_id: str) -> str:
    """PR #5 of acme/shop, open, at a commit whose k8s-ee.yaml is the harmless one."""
    config = f"projectId: {project_id}\nenv:\n  REAL: 'yes'\n"
    sha = source_repo(tmp_path, files={"k8s-ee.yaml": config})
    github.add_repo(REPO)
    github.add_source(REPO, tmp_path / "sources" / REPO)
    github.add_pull(REPO, PR, head_sha=sha, head_ref="feature")
    return sha


@pytest.fixture
def head(github: GitHubSandbox, tmp_path: Path) -> str:
    return open_pull(github, tmp_path, "shop")


def hostile(sha: str, image: str, digest: str, **validated: Any) -> Run:
    """A deploy message as anyone who reaches Redis can write it."""
    return Run(
        repo=REPO, pr=PR, sha=sha, generation=1, action=Action.DEPLOY, ref="feature",
        results={"validate": validated, "build": {"image": f"{image}@{digest}", "digest": digest}},
    )  # fmt: skip


@pytest.mark.parametrize("stage", [deploy.run, scan.run], ids=["deploy", "scan"])
def test_another_repositorys_image_is_refused(
    stage: Any, settings: PlatformSettings, registry: LocalRegistry, head: str, tmp_path: Path
) -> None:
    # Given the victim's real image, with tags like the ones a build of this PR would push
    victim = f"{registry.host}/k8see-demo/hello/hello"
    tags = [names.image_tag(PR), names.sha_tag(head)]
    digest = push_image(registry, victim.split("/", 1)[1], tags, "victim")
    # When a message for acme/shop names it
    with pytest.raises(Refused) as refused:
        stage(hostile(head, victim, digest), stage_ctx(settings, tmp_path))
    # Then it is refused, naming the repository's own path
    assert f"{registry.host}/acme/shop/" in refused.value.message
    assert "k8see-demo/hello/hello" in refused.value.message


@pytest.mark.parametrize("stage", [deploy.run, scan.run], ids=["deploy", "scan"])
def test_a_digest_this_run_did_not_build_is_refused(
    stage: Any, settings: PlatformSettings, registry: LocalRegistry, head: str, tmp_path: Path
) -> None:
    # Given an old build of the PR under its own path, and the build of its head
    own = f"{registry.host}/acme/shop/shop"
    old = push_image(registry, "acme/shop/shop", ["sha-" + "0" * 40], "old")
    push_image(registry, "acme/shop/shop", [names.image_tag(PR), names.sha_tag(head)], "head")
    # When a message names the old digest for the head commit
    with pytest.raises(Refused) as refused:
        stage(hostile(head, own, old), stage_ctx(settings, tmp_path))
    # Then it is refused: the registry's pr-5 is another image
    assert "is not the build of" in refused.value.message and "pr-5" in refused.value.message


def test_deploy_applies_the_config_at_the_head_not_the_messages(
    settings: PlatformSettings, github: GitHubSandbox, tmp_path: Path, kubeconfig: str,
    cluster_registry: ClusterRegistry,
) -> None:  # fmt: skip
    # The real app runs on the node: the test app, pushed as this PR's build where the
    # cluster pulls from; the project id carries the run id, so a second run is alone.
    project = f"shop{RUN_ID}"
    head = open_pull(github, tmp_path, project)
    registry = settings.registry.model_copy(update={"host": cluster_registry.host})
    deploy_settings = settings.deploy.model_copy(update={"kubeconfig": kubeconfig})
    settings = settings.model_copy(update={"registry": registry, "deploy": deploy_settings})
    own = f"{cluster_registry.host}/acme/shop/{project}"
    digest = push_testapp(cluster_registry, f"acme/shop/{project}", ["pr-5", f"sha-{head}"])
    try:
        # Given a message whose config puts the app into another project's namespace with its
        # own env, but whose image is the real build of the head
        forged = {
            "config": {"projectId": "victim", "app": {"port": 3000}, "env": {"FORGED": "1"}},
            "project_id": "victim",
            "namespace": "victim-pr-5",
            "preview_url": "https://victim-pr-5.preview.test",
            "databases": [],
            "deployment_id": 42,
        }
        # When it is sent to the deploy stage
        out = deploy.run(hostile(head, own, digest, **forged), stage_ctx(settings, tmp_path))
        # Then what was deployed is the config at the PR's head, by the registry's digest
        namespace = f"{project}-pr-5"
        assert out.result("deploy")["namespace"] == namespace
        assert out.result("deploy")["image"] == f"{own}@{digest}"
        assert out.result("validate")["deployment_id"] == 42  # kept for the comment stage
        api = client.CoreV1Api(kube.make_api(settings))
        data = api.read_namespaced_config_map(f"{namespace}-app-config", namespace).data
        assert data["REAL"] == "yes" and "FORGED" not in data
        assert "victim-pr-5" not in [n.metadata.name for n in api.list_namespace().items]
    finally:
        # The pushed build goes too: another cluster's registry is not ours to fill.
        registry_client = cluster_registry.client()
        try:
            registry_client.delete_manifest(f"acme/shop/{project}", digest)
        finally:
            registry_client.close()
