"""The untag stage: a closed PR's image tags deleted from each registry type, best-effort.

Covers: on a generic registry (the real local one) ``pr-<N>`` and every ``sha-*`` tag the
PR's builds pushed are deleted, another PR's tags stay, and a second run converges (all
absent); a preserved environment keeps its image; an unreachable registry is recorded as
failed without raising; GHCR package versions go through the sandbox GitHub and ECR tags
through moto's server, chosen by ``registry.type``; the record change and the destroy
comment's one line.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import boto3

from k8see.integrations.oci import OCI_MANIFEST
from k8see.integrations.registry import OciRegistry
from k8see.record import EnvironmentRecord
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from k8see.stages import comment_body, untag
from k8see.stages.context import StageContext
from tests.conftest import free_port
from tests.fixtures.github import SANDBOX_TOKEN
from tests.fixtures.images import AwsServer, LocalRegistry

REPO = "acme/shop"
SHA_NEW = "1" * 40
SHA_OLD = "2" * 40
LOG = logging.getLogger("test-untag")


def push_tiny(client: OciRegistry, repository: str, tags: list[str], seed: str) -> str:
    """A minimal one-platform image (its own config, no layers) under ``tags``."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed,
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()  # fmt: skip
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    client.push_blob(repository, config_digest, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
    }).encode()  # fmt: skip
    digest = ""
    for tag in tags:
        digest = client.put_manifest(repository, tag, manifest, OCI_MANIFEST)
    return digest


def destroyed(pr: int, *, preserved: bool = False) -> Run:
    run = Run(repo=REPO, pr=pr, sha=SHA_NEW, generation=2, action=Action.DESTROY)
    return run.with_result("destroy", {"deleted": not preserved, "preserved": preserved})


def ctx_for(settings: PlatformSettings, tmp_path: Path, record: dict[str, Any]) -> StageContext:
    return StageContext(
        settings=settings, log=LOG, workdir=tmp_path, record=EnvironmentRecord.of(record)
    )


def test_generic_registry_deletes_every_tag_of_the_pr(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    client = registry.client()
    repository = "acme/shop/untag-web"
    # Given the PR's current image (pr-3 + sha-new), an older push (sha-old), another PR's
    digest = push_tiny(client, repository, ["pr-3", f"sha-{SHA_NEW}"], "new")
    push_tiny(client, repository, [f"sha-{SHA_OLD}"], "old")
    push_tiny(client, repository, ["pr-4", "sha-" + "4" * 40], "other")
    record = {
        "image": f"{registry.host}/{repository}@{digest}",
        "sha": SHA_NEW,
        "pushed_tags": ["pr-3", f"sha-{SHA_OLD}", f"sha-{SHA_NEW}"],
    }
    settings = PlatformSettings(registry={"type": "generic", "host": registry.host,
                                         "insecure": True})  # fmt: skip
    # When the untag stage runs after the destroy, twice
    first = untag.run(destroyed(3), ctx_for(settings, tmp_path, record)).result("untag")
    second = untag.run(destroyed(3), ctx_for(settings, tmp_path, record)).result("untag")
    # Then the PR's three tags are gone, another PR's stay, and the second run converges
    assert first["deleted"] == ["pr-3", f"sha-{SHA_OLD}", f"sha-{SHA_NEW}"]
    assert first["failed"] == [] and first["repository"] == f"{registry.host}/{repository}"
    assert client.list_tags(repository) == ["pr-4", "sha-" + "4" * 40]
    assert second["deleted"] == [] and second["failed"] == []
    assert sorted(second["absent"]) == sorted(first["deleted"])
    # and the environment record gets {"deleted", "failed"}, which the comment shows
    changes = untag.record_changes(destroyed(3).with_result("untag", first), EnvironmentRecord())
    assert changes == {"untagged": {"deleted": first["deleted"], "failed": []}}
    body = comment_body.render({"status": "destroyed", **changes}, settings=settings)
    assert "| Images | 🧹 3 tag(s) deleted |" in body
    client.close()


def test_preserved_environment_keeps_its_image(registry: LocalRegistry, tmp_path: Path) -> None:
    client = registry.client()
    digest = push_tiny(client, "acme/shop/untag-kept", ["pr-5"], "kept")
    record = {"image": f"{registry.host}/acme/shop/untag-kept@{digest}"}
    settings = PlatformSettings(registry={"type": "generic", "host": registry.host,
                                         "insecure": True})  # fmt: skip
    result = untag.run(destroyed(5, preserved=True), ctx_for(settings, tmp_path, record))
    assert result.result("untag")["skipped"] == "preserved"
    assert client.list_tags("acme/shop/untag-kept") == ["pr-5"]
    client.close()


def test_an_unreachable_registry_is_recorded_not_raised(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    settings = PlatformSettings(registry={"type": "generic", "host": host, "insecure": True})
    record = {"image": f"{host}/acme/shop/web@sha256:{'e' * 64}", "sha": SHA_NEW}
    result = untag.run(destroyed(6), ctx_for(settings, tmp_path, record)).result("untag")
    assert result["deleted"] == []
    assert result["failed"] == ["pr-6", f"sha-{SHA_NEW}"]
    assert "not reachable" in result["errors"]["pr-6"]
    changes = untag.record_changes(destroyed(6).with_result("untag", result), EnvironmentRecord())
    body = comment_body.render({"status": "destroyed", **changes}, settings=settings)
    assert "⚠️ 2 could not be deleted" in body


def test_ghcr_versions_go_through_the_github_api(github: Any, tmp_path: Path) -> None:
    github.state.add_package_version("acme", "shop/web", ["pr-7", f"sha-{SHA_NEW}"])
    github.state.add_package_version("acme", "shop/web", ["pr-8"])
    settings = PlatformSettings(
        registry={"type": "ghcr", "host": "ghcr.io", "password": SANDBOX_TOKEN},
        github={"api_url": github.url},
    )
    record = {"image": f"ghcr.io/acme/shop/web@sha256:{'a' * 64}", "sha": SHA_NEW}
    result = untag.run(destroyed(7), ctx_for(settings, tmp_path, record)).result("untag")
    assert result["deleted"] == ["pr-7", f"sha-{SHA_NEW}"]
    versions = github.state.packages[("org", "acme", "shop/web")]
    assert [v["metadata"]["container"]["tags"] for v in versions] == [["pr-8"]]


def test_ecr_tags_go_through_batch_delete_image(aws_identity: AwsServer, tmp_path: Path) -> None:
    ecr = boto3.client("ecr", region_name="eu-west-1", endpoint_url=aws_identity.url)
    ecr.create_repository(repositoryName="acme/shop/untag-ecr")
    config = {"mediaType": "x", "size": 1, "digest": "sha256:" + "f" * 64}
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [], "config": config}
    )
    for tag in ("pr-9", f"sha-{SHA_NEW}"):
        ecr.put_image(repositoryName="acme/shop/untag-ecr", imageManifest=manifest, imageTag=tag)
    settings = PlatformSettings(registry={"type": "ecr", "host": "", "ecr_region": "eu-west-1",
                                         "aws_endpoint_url": aws_identity.url})  # fmt: skip
    account = boto3.client("sts", region_name="eu-west-1", endpoint_url=aws_identity.url)
    host = f"{account.get_caller_identity()['Account']}.dkr.ecr.eu-west-1.amazonaws.com"
    record = {"image": f"{host}/acme/shop/untag-ecr@sha256:{'f' * 64}", "sha": SHA_NEW}
    result = untag.run(destroyed(9), ctx_for(settings, tmp_path, record)).result("untag")
    assert result["deleted"] == ["pr-9", f"sha-{SHA_NEW}"]
    assert ecr.list_images(repositoryName="acme/shop/untag-ecr")["imageIds"] == []
