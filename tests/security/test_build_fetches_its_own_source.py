"""Attack 1: a message sent straight to ``k8see.build`` names a worker-local directory.

Covers: a hostile Run whose ``results.validate.source_dir`` points at a directory on the worker
(holding ``env`` and ``kubeconfig``, with a Dockerfile that copies them into the image) is
built from the PR's own source at its head commit, never from that directory; and a build
message for a PR GitHub does not know pushes nothing at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from k8see.errors import K8seeError
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from k8see.stages import build
from k8see_sandbox.github import GitHubSandbox
from tests.fixtures.images import LocalRegistry, read_image_file
from tests.security.common import REPO, platform_settings, source_repo, stage_ctx

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def settings(
    tmp_path: Path, redis_url: str, github: GitHubSandbox, registry: LocalRegistry,
    mirror_env: dict[str, str], buildah_storage: Path,
) -> PlatformSettings:  # fmt: skip
    return platform_settings(
        tmp_path,
        redis_url=redis_url,
        github_url=github.url,
        registry={"type": "generic", "host": registry.host, "insecure": True},
        build={
            "storage_dir": str(buildah_storage),
            "registries_conf": mirror_env["CONTAINERS_REGISTRIES_CONF"],
            "platforms": "linux/amd64",
            "timeout_seconds": 600,
        },
    )


@pytest.fixture
def loot(tmp_path: Path) -> Path:
    """A directory on the worker with its secrets and a Dockerfile that steals them."""
    path = tmp_path / "worker-local"
    path.mkdir()
    (path / "env").write_text("K8SEE_GITHUB__TOKEN=stolen\n")
    (path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    (path / "Dockerfile").write_text("FROM busybox\nCOPY env kubeconfig /loot/\n")
    (path / "k8s-ee.yaml").write_text("projectId: shop\n")
    return path


def hostile(sha: str, loot: Path, pr: int = 5) -> Run:
    """A build message as anyone who reaches Redis can write it."""
    validated: dict[str, Any] = {
        "config": {"projectId": "shop", "image": {"context": ".", "dockerfile": "Dockerfile"}},
        "project_id": "shop",
        "namespace": f"shop-pr-{pr}",
        "source_dir": str(loot),
        "fork": False,
    }
    return Run(repo=REPO, pr=pr, sha=sha, generation=1, action=Action.DEPLOY).with_result(
        "validate", validated
    )


def test_a_source_dir_in_the_message_is_never_built(
    settings: PlatformSettings, github: GitHubSandbox, registry: LocalRegistry, loot: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    # Given an open PR whose head is a harmless commit
    sha = source_repo(tmp_path, files={"Dockerfile": "FROM busybox\nRUN echo ok > /ok\n"})
    github.add_repo(REPO)
    github.add_source(REPO, tmp_path / "sources" / REPO)  # GitHub serves it too
    github.add_pull(REPO, 5, head_sha=sha, head_ref="feature")
    # When a forged build message points source_dir at a worker-local directory
    out = build.run(hostile(sha, loot), stage_ctx(settings, tmp_path))
    # Then what was built is the PR's commit: nothing of the worker's directory is in the image
    image = out.result("build")["image"]
    assert read_image_file(registry.client(), image, "linux/amd64", "/ok") == b"ok\n"
    with pytest.raises(FileNotFoundError):
        read_image_file(registry.client(), image, "linux/amd64", "/loot/env")


def test_a_build_for_a_pr_github_does_not_know_pushes_nothing(
    settings: PlatformSettings, github: GitHubSandbox, registry: LocalRegistry, loot: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    github.add_repo(REPO)
    github.add_source(REPO, tmp_path / "sources" / REPO)  # GitHub serves it too
    # When a build message names a PR that does not exist
    with pytest.raises(K8seeError) as refused:
        build.run(hostile("f" * 40, loot, pr=404), stage_ctx(settings, tmp_path))
    # Then it is refused with a reason, and nothing reached the registry
    assert "#404" in refused.value.message
    assert "pr-404" not in registry.client().list_tags("acme/shop/shop")
