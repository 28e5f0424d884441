"""ECR through boto3 against moto's server (a separate process, real HTTP).

Covers: the registry host derived from the ambient identity's account and the region; the
repository created on first use with the reference's 7-day untagged lifecycle policy, and a
second ensure changing nothing; the login (``AWS`` + token + ECR's expiry) through
``registry_credentials``; tag deletion by ``BatchDeleteImage`` that keeps other tags of the
image, reports missing tags as absent and a missing repository as absent, twice; unreachable
API and missing region as ``RegistryError`` with a hint and no credential in the message; no
botocore exception leaks.
"""

from __future__ import annotations

import json
from datetime import datetime

import boto3
import pytest

from k8see.errors import RegistryError
from k8see.integrations.ecr import LIFECYCLE_POLICY, EcrRegistry, cache_lifecycle_policy
from k8see.integrations.registry_access import (
    ensure_repository,
    registry_credentials,
    registry_host,
    tag_remover,
)
from k8see.settings import PlatformSettings
from tests.conftest import free_port
from tests.fixtures.images import AwsServer

REGION = "eu-west-1"


def ecr_settings(server: AwsServer, **registry: object) -> PlatformSettings:
    return PlatformSettings(
        registry={
            "type": "ecr",
            "host": "",
            "ecr_region": REGION,
            "aws_endpoint_url": server.url,
            **registry,
        }
    )


def put_image(server: AwsServer, repository: str, tags: list[str], seed: str) -> None:
    """Store a (tiny) image under ``tags`` through the ECR API, as a push would."""
    ecr = boto3.client("ecr", region_name=REGION, endpoint_url=server.url)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "x", "size": len(seed), "digest": "sha256:" + seed * 64},
            "layers": [],
        }
    )
    for tag in tags:
        ecr.put_image(repositoryName=repository, imageManifest=manifest, imageTag=tag)


def test_host_comes_from_the_account_and_region(aws_identity: AwsServer) -> None:
    host = registry_host(ecr_settings(aws_identity))
    account = boto3.client("sts", region_name=REGION, endpoint_url=aws_identity.url)
    expected = account.get_caller_identity()["Account"]
    assert host == f"{expected}.dkr.ecr.{REGION}.amazonaws.com"
    # An explicit host wins (a pull-through cache or a VPC endpoint name).
    assert registry_host(ecr_settings(aws_identity, host="reg.example:5000")) == "reg.example:5000"


def test_first_push_creates_the_repository_with_the_lifecycle_policy(
    aws_identity: AwsServer,
) -> None:
    settings = ecr_settings(aws_identity)
    name = "acme/shop/web-create"
    # Given no repository; when it is ensured twice
    assert ensure_repository(settings, repository=name) is True
    assert ensure_repository(settings, repository=name) is False
    # Then it exists once, with the reference's rule, and scan-on-push off (Trivy scans)
    ecr = boto3.client("ecr", region_name=REGION, endpoint_url=aws_identity.url)
    repos = ecr.describe_repositories(repositoryNames=[name])["repositories"]
    assert len(repos) == 1
    assert repos[0]["imageScanningConfiguration"] == {"scanOnPush": False}
    policy = json.loads(ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"])
    assert policy == LIFECYCLE_POLICY
    rule = policy["rules"][0]["selection"]
    assert (rule["tagStatus"], rule["countType"], rule["countNumber"]) == (
        "untagged",
        "sinceImagePushed",
        7,
    )
    # Other registry types create nothing (they create repositories on push).
    assert ensure_repository(PlatformSettings(), repository=name) is False


def test_a_build_cache_repository_is_created_with_the_age_rule(aws_identity: AwsServer) -> None:
    # Given a build-cache repository created on a build's first push (default: 14 days)
    name = "acme/shop/web-create/cache"
    assert ensure_repository(ecr_settings(aws_identity), repository=name, cache=True) is True
    # Then it expires every image 14 days after its push from the start, untagged ones after 7
    ecr = boto3.client("ecr", region_name=REGION, endpoint_url=aws_identity.url)
    text = ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"]
    assert json.loads(text) == cache_lifecycle_policy(14)
    assert json.loads(text)["rules"][1]["selection"]["countNumber"] == 14
    # And with cache pruning turned off it gets only the untagged rule
    off = PlatformSettings(
        registry=ecr_settings(aws_identity).registry, cleanup={"build_cache_max_age_days": 0}
    )
    assert ensure_repository(off, repository=name + "2", cache=True) is True
    text = ecr.get_lifecycle_policy(repositoryName=name + "2")["lifecyclePolicyText"]
    assert json.loads(text) == LIFECYCLE_POLICY


def test_credentials_are_an_aws_login_valid_for_hours(aws_identity: AwsServer) -> None:
    username, password, expires_at = registry_credentials(ecr_settings(aws_identity))
    assert username == "AWS"
    assert password
    # The expiry is ECR's own (moto answers a fixed date; AWS about 12 h ahead): the deploy
    # side refreshes the pull secret before it.
    ecr = boto3.client("ecr", region_name=REGION, endpoint_url=aws_identity.url)
    answered = ecr.get_authorization_token()["authorizationData"][0]["expiresAt"]
    assert isinstance(expires_at, datetime)
    assert expires_at == answered
    # GHCR/generic: the static login, no expiry.
    static = PlatformSettings(registry={"username": "bot", "password": "pw-123"})
    assert registry_credentials(static) == ("bot", "pw-123", None)
    assert registry_credentials(PlatformSettings()) == ("", "", None)
    # The login is a secret: neither form of it shows the password
    for login in (registry_credentials(static), registry_credentials(ecr_settings(aws_identity))):
        assert login.password not in repr(login) and login.password not in str(login)


def test_tags_are_deleted_best_effort_and_idempotently(aws_identity: AwsServer) -> None:
    settings = ecr_settings(aws_identity)
    name = "acme/shop/web-delete"
    ensure_repository(settings, repository=name)
    sha = "sha-" + "c" * 40
    put_image(aws_identity, name, ["pr-5", sha], "a")
    put_image(aws_identity, name, ["pr-6"], "b")
    remover = tag_remover(settings, log=__import__("logging").getLogger("t"))
    # When the PR's tags (one of them never pushed) are deleted, twice
    first = remover.remove_tags(name, ["pr-5", sha, "sha-" + "d" * 40])
    second = remover.remove_tags(name, ["pr-5", sha])
    # Then they went, the missing one is absent, nothing failed; the second run is a no-op
    assert first.deleted == ("pr-5", sha)
    assert first.absent == ("sha-" + "d" * 40,)
    assert first.failed == {}
    assert second.deleted == ()
    assert set(second.absent) == {"pr-5", sha}
    # and another PR's tag is untouched
    assert EcrRegistry(region=REGION, endpoint_url=aws_identity.url).list_tags(name) == ["pr-6"]
    # A repository that never existed: every tag is absent.
    gone = remover.remove_tags("acme/shop/never", ["pr-1"])
    assert (gone.deleted, gone.absent, gone.failed) == ((), ("pr-1",), {})


def test_unreachable_api_and_missing_region_are_clear_errors(aws_identity: AwsServer) -> None:
    dead = ecr_settings(aws_identity, aws_endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RegistryError) as caught:
        registry_credentials(dead)
    assert "ECR could not" in caught.value.message
    assert caught.value.hint
    assert "moto-test-secret" not in str(caught.value) + str(caught.value.hint)
    with pytest.raises(RegistryError, match="region"):
        registry_credentials(ecr_settings(aws_identity, ecr_region=""))
