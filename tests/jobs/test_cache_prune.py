"""Build-cache pruning through the registry GC job, against real registries.

Covers:
- generic (the local ``docker-registry``): cache images whose config ``created`` is older than
  ``cleanup.build_cache_max_age_days`` are deleted with every tag on them (a buildah key and
  a ``k8see-arg-*`` anchor on one digest go together); young images stay; an old image that
  a young manifest list also holds stays (deleting its digest would break the young tag); an
  image without ``created`` stays and is reported undated; the image repository's own tags
  are never touched; a dry run deletes nothing and names the same tags; a second run has
  nothing to do, and a pass within ``PERIOD_SECONDS`` of the last does not look; deletions
  are counted in ``k8see_cleanup_actions_total{action="cache-pruned"}``;
- a registry that cannot be reached is a reported failure, counted, never an exception;
- 0 turns pruning off; a cache template naming the image repository itself is refused;
- GHCR (the sandbox GitHub): package versions of ``<repo>/<project>/cache`` last updated
  before the max age are deleted through the packages API; young ones stay, and so does an
  old image that got a young tag (its version's ``updated_at`` moved); when every version is
  old, the newest stays (GitHub refuses the last one, and the package keeps its settings);
- ECR (moto's server): the cache repository gets the lifecycle policy with both rules
  (untagged after 7 days, any image pushed more than the max age ago), read back from the
  API; the image repository keeps the untagged-only policy; a dry run and a second run
  change nothing; 0 puts the untagged-only policy back; the creation helper can create a
  repository with the cache policy.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import redis
from prometheus_client import REGISTRY

from k8see import state
from k8see.integrations.ecr import LIFECYCLE_POLICY, EcrRegistry, cache_lifecycle_policy
from k8see.integrations.registry import OciRegistry
from k8see.integrations.registry_access import ensure_repository, registry_host
from k8see.jobs import cache_prune
from k8see.jobs.cache_prune import cache_repositories
from k8see.jobs.registry_gc import run_registry_gc
from k8see.settings import PlatformSettings, load_settings
from k8see_sandbox.github import GitHubSandbox
from tests.conftest import free_port
from tests.fixtures.github import SANDBOX_TOKEN
from tests.fixtures.images import AwsServer, LocalRegistry

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
DAY = 86400.0
NOW = time.time()
OLD = NOW - 20 * DAY
YOUNG = NOW - 2 * DAY
REGION = "eu-west-1"


def key(seed: str) -> str:
    """A buildah cache key: 64 hex digits."""
    return hashlib.sha256(seed.encode()).hexdigest()


def rfc3339(when: float) -> str:
    """As Go writes ``created``: nanoseconds and ``Z``."""
    return datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f123Z")


def push_image(
    registry: OciRegistry, repository: str, tags: list[str], *, created: float | None, seed: str
) -> tuple[str, int]:
    """A tiny real image whose config says it was built at ``created``; (digest, size)."""
    config: dict[str, Any] = {"architecture": "amd64", "os": "linux", "seed": seed}
    if created is not None:
        config["created"] = rfc3339(created)
    blobs = [(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
             (f"layer {seed}".encode(), "application/vnd.oci.image.layer.v1.tar")]  # fmt: skip
    described = []
    for data, media_type in blobs:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        registry.push_blob(repository, digest, data)
        described.append({"mediaType": media_type, "size": len(data), "digest": digest})
    body = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST, "config": described[0],
                       "layers": described[1:]}).encode()  # fmt: skip
    digest = registry.put_manifest(repository, tags[0] if tags else "latest", body, MANIFEST)
    for tag in tags[1:]:
        registry.put_manifest(repository, tag, body, MANIFEST)
    return digest, len(body)


def push_list(
    registry: OciRegistry, repository: str, tag: str, images: list[tuple[str, int]]
) -> str:
    """A manifest list of ``images`` (digest, size) under ``tag``; returns its digest."""
    arches = ["amd64", "arm64", "s390x"]
    body = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": MANIFEST, "digest": d, "size": n,
         "platform": {"os": "linux", "architecture": arches[i]}}
        for i, (d, n) in enumerate(images)
    ]}).encode()  # fmt: skip
    return registry.put_manifest(repository, tag, body, INDEX)


def put_record(client: redis.Redis, repo: str, pr: int, image: str) -> None:
    """A ready environment record naming ``image``, as the deploy side writes it."""
    record = {"repo": repo, "pr": pr, "status": "ready", "generation": 1, "image": image}
    key_ = state.record_key(repo, pr)
    client.set(key_, json.dumps(record))
    client.zadd(state.INDEX_KEY, {key_: time.time()})


def period_passed(client: redis.Redis) -> None:
    """What ``PERIOD_SECONDS`` later looks like: the last pass's mark has expired."""
    client.delete(cache_prune.DUE_KEY)


def pruned_total() -> float:
    sample = REGISTRY.get_sample_value("k8see_cleanup_actions_total", {"action": "cache-pruned"})
    return sample or 0.0


def failures_total() -> float:
    labels = {"action": "cache-prune-failed"}
    return REGISTRY.get_sample_value("k8see_cleanup_actions_total", labels) or 0.0


# --- generic registries ------------------------------------------------------------------------


def test_old_cache_images_go_and_young_or_needed_ones_stay(
    redis_url: str, registry: LocalRegistry
) -> None:
    # Given a project's image repository and its cache, as buildah and k8see push them
    repo = f"acme/cp{uuid.uuid4().hex[:6]}"
    image_repo = f"{repo}/web"
    cache = f"{image_repo}/cache"
    reg = registry.client()
    old_pr, _ = push_image(reg, image_repo, ["pr-1"], created=OLD, seed=f"{repo}-app")
    anchor = "k8see-arg-linux-amd64-" + key("anchor")[:24]
    # an ARG step's image: buildah's key and k8see's anchor on one digest, built 20 days ago
    push_image(reg, cache, [key("arg"), anchor], created=OLD, seed=f"{repo}-arg")
    push_image(reg, cache, [key("run-old")], created=OLD, seed=f"{repo}-run-old")
    push_image(reg, cache, [key("run-young")], created=YOUNG, seed=f"{repo}-run-young")
    # an old image that a young manifest list also holds: its digest must stay
    shared = push_image(reg, cache, [key("shared")], created=OLD, seed=f"{repo}-shared")
    young = push_image(reg, cache, [key("young-child")], created=YOUNG, seed=f"{repo}-yc")
    push_list(reg, cache, "young-list", [shared, young])
    push_image(reg, cache, [key("undated")], created=None, seed=f"{repo}-undated")
    client = redis.Redis.from_url(redis_url)
    put_record(client, repo, 1, f"{registry.host}/{image_repo}@{old_pr}")
    settings = load_settings(
        redis={"url": redis_url},
        registry={"type": "generic", "host": registry.host, "insecure": True},
    )
    garbage = {key("arg"), anchor, key("run-old")}
    kept = {key("run-young"), key("shared"), key("young-child"), "young-list", key("undated")}
    assert set(reg.list_tags(cache)) == garbage | kept
    before = pruned_total()

    # When a dry run looks first
    dry = run_registry_gc(settings=settings, client=client, dry_run=True, now=NOW)

    # Then it names exactly the old images' tags and deletes nothing
    assert dry["cache"]["repositories"] == [cache]
    assert set(dry["cache"]["deleted"][cache]) == garbage
    assert dry["cache"]["undated"] == {cache: [key("undated")]}
    assert set(reg.list_tags(cache)) == garbage | kept
    assert pruned_total() == before

    # When the job runs for real
    report = run_registry_gc(settings=settings, client=client, now=NOW)

    # Then the two old images went with all three tags; everything else is still pullable
    assert set(report["cache"]["deleted"][cache]) == garbage
    assert report["cache"]["images"] == 2
    assert report["cache"]["failed"] == {}
    assert set(reg.list_tags(cache)) == kept
    assert reg.get_manifest(f"{cache}@{shared[0]}").digest == shared[0]
    assert reg.get_platforms(f"{cache}:young-list") == ["linux/amd64", "linux/arm64"]
    assert pruned_total() == before + 2
    # And the image repository's own tags are the PR GC's business, not the cache's
    assert reg.list_tags(image_repo) == ["pr-1"]
    # And a pass within the period does not look again (ages count in days)
    soon = run_registry_gc(settings=settings, client=client, now=NOW)
    assert "6 hours" in soon["cache"]["skipped"]
    # And the next pass has nothing left to do
    period_passed(client)
    again = run_registry_gc(settings=settings, client=client, now=NOW)
    assert again["cache"]["deleted"] == {} and set(reg.list_tags(cache)) == kept
    reg.close()


def test_an_unreachable_registry_is_a_counted_failure(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    dead = f"127.0.0.1:{free_port()}"
    put_record(client, "acme/down", 1, f"{dead}/acme/down/web:pr-1")
    settings = load_settings(
        redis={"url": redis_url},
        registry={"type": "generic", "host": dead, "insecure": True},
        cleanup={"registry_gc": False},
    )
    before = failures_total()
    report = run_registry_gc(settings=settings, client=client, now=NOW)
    assert list(report["cache"]["failed"]) == ["acme/down/web/cache"]
    assert "not reachable" in report["cache"]["failed"]["acme/down/web/cache"]["list"]
    assert failures_total() == before + 1


def test_zero_turns_pruning_off_and_an_image_repository_is_never_a_cache(
    redis_url: str, registry: LocalRegistry
) -> None:
    client = redis.Redis.from_url(redis_url)
    put_record(client, "acme/off", 1, f"{registry.host}/acme/off/web:pr-1")
    base = {"redis": {"url": redis_url},
            "registry": {"type": "generic", "host": registry.host, "insecure": True}}  # fmt: skip
    off = load_settings(**base, cleanup={"build_cache_max_age_days": 0})
    report = run_registry_gc(settings=off, client=client, now=NOW)
    assert "off" in report["cache"]["skipped"]
    assert PlatformSettings().cleanup.build_cache_max_age_days == 14
    # A template without a suffix would make the image repository its own cache: refused.
    records = [{"image": f"{registry.host}/acme/off/web:pr-1"},
               {"image": "other.example/acme/off/web:pr-1"}, {"image": "not a ref"}]  # fmt: skip
    host = registry.host
    assert cache_repositories(records=records, host=host, template="{image}") == (
        [],
        [f"{host}/acme/off/web"],
    )
    assert cache_repositories(records=records, host=host, template="{image}/cache") == (
        ["acme/off/web/cache"],
        [],
    )
    assert cache_repositories(records=records, host=host, template="elsewhere.io/c/{image}") == (
        [],
        [f"elsewhere.io/c/{host}/acme/off/web"],
    )


# --- GHCR --------------------------------------------------------------------------------------


def remaining(github: GitHubSandbox, owner: str, package: str) -> list[list[str]] | None:
    versions = github.state.packages.get(("org", owner, package))
    if versions is None:
        return None
    return sorted(v["metadata"]["container"]["tags"] for v in versions)


def ghcr_settings(redis_url: str, github: GitHubSandbox) -> PlatformSettings:
    return load_settings(
        redis={"url": redis_url},
        registry={"type": "ghcr", "password": SANDBOX_TOKEN},
        github={"api_url": github.url},
        queues={"retry_backoff_seconds": 0.01},
    )


def test_ghcr_cache_versions_go_by_their_last_update(redis_url: str, github: GitHubSandbox) -> None:
    # Given the cache package of acme/shop's web project, and another project's all-old cache
    state = github.state
    state.add_package_version("acme", "shop/web/cache", [key("old-a")], updated_at=OLD)
    state.add_package_version("acme", "shop/web/cache", [], updated_at=OLD - DAY)
    state.add_package_version("acme", "shop/web/cache", [key("young")], updated_at=YOUNG)
    # an old image that just got another tag: GitHub moved its version's updated_at
    state.add_package_version("acme", "shop/web/cache", [key("shared"), key("new-tag")],
                              updated_at=YOUNG)  # fmt: skip
    state.add_package_version("acme", "shop/api/cache", [key("api-1")], updated_at=OLD - DAY)
    state.add_package_version("acme", "shop/api/cache", [key("api-2")], updated_at=OLD)
    state.add_package_version("acme", "shop/web", ["pr-1"], updated_at=OLD)
    client = redis.Redis.from_url(redis_url)
    for pr, project in ((1, "web"), (2, "api")):
        put_record(client, "acme/shop", pr, f"ghcr.io/acme/shop/{project}@sha256:{'1' * 64}")
    settings = ghcr_settings(redis_url, github)

    # When a dry run looks, then the job runs
    dry = run_registry_gc(settings=settings, client=client, dry_run=True, now=NOW)
    assert remaining(github, "acme", "shop/web/cache") is not None
    assert len(github.state.packages[("org", "acme", "shop/web/cache")]) == 4
    report = run_registry_gc(settings=settings, client=client, now=NOW)

    # Then the old versions went (the untagged one named by its digest), young ones stayed
    cache = report["cache"]
    assert cache == {**dry["cache"], "dry_run": False}
    assert cache["repositories"] == ["acme/shop/api/cache", "acme/shop/web/cache"]
    deleted = cache["deleted"]["acme/shop/web/cache"]
    untagged = [name for name in deleted if name.startswith("sha256:")]
    assert sorted(deleted) == sorted([key("old-a"), *untagged]) and len(untagged) == 1
    assert remaining(github, "acme", "shop/web/cache") == sorted(
        [[key("young")], [key("shared"), key("new-tag")]]
    )
    # And in an all-old cache the newest version stays: the package is not deleted
    assert cache["deleted"]["acme/shop/api/cache"] == [key("api-1")]
    assert remaining(github, "acme", "shop/api/cache") == [[key("api-2")]]
    # And the image package is the untag stage's business
    assert remaining(github, "acme", "shop/web") == [["pr-1"]]
    assert any(
        m == "DELETE" and p.startswith("/orgs/acme/packages/container/shop%2Fweb%2Fcache/versions/")
        for m, p in github.calls
    )
    # And the next pass converges
    period_passed(client)
    again = run_registry_gc(settings=settings, client=client, now=NOW)
    assert again["cache"]["deleted"] == {} and again["cache"]["failed"] == {}


def test_ghcr_without_a_token_is_skipped_not_raised(redis_url: str, github: GitHubSandbox) -> None:
    client = redis.Redis.from_url(redis_url)
    put_record(client, "acme/shop", 1, "ghcr.io/acme/shop/web:pr-1")
    settings = load_settings(redis={"url": redis_url}, registry={"type": "ghcr"},
                             github={"api_url": github.url})  # fmt: skip
    report = run_registry_gc(settings=settings, client=client, now=NOW)
    assert "token" in report["cache"]["skipped"]


# --- ECR ---------------------------------------------------------------------------------------


def ecr_settings(redis_url: str, server: AwsServer, days: int = 14) -> PlatformSettings:
    return load_settings(
        redis={"url": redis_url},
        registry={"type": "ecr", "host": "", "ecr_region": REGION,
                  "aws_endpoint_url": server.url},
        cleanup={"build_cache_max_age_days": days},
    )  # fmt: skip


def policy_of(server: AwsServer, name: str) -> dict[str, Any]:
    ecr = boto3.client("ecr", region_name=REGION, endpoint_url=server.url)
    text = ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"]
    policy: dict[str, Any] = json.loads(text)
    return policy


def test_ecr_cache_repositories_get_the_age_rule(redis_url: str, aws_identity: AwsServer) -> None:
    # Given an image repository and its cache, created by a build (both with the 7-day rule)
    settings = ecr_settings(redis_url, aws_identity)
    name = f"acme/shop/web{uuid.uuid4().hex[:6]}"
    assert ensure_repository(settings, repository=name)
    assert ensure_repository(settings, repository=f"{name}/cache")
    host = registry_host(settings)
    client = redis.Redis.from_url(redis_url)
    put_record(client, "acme/shop", 1, f"{host}/{name}@sha256:{'2' * 64}")
    put_record(client, "acme/gone", 1, f"{host}/acme/gone/web:pr-1")

    # When a dry run looks
    dry = run_registry_gc(settings=settings, client=client, dry_run=True, now=NOW)
    # Then it would set the cache's policy and changes nothing
    assert dry["cache"]["policies"] == {f"{name}/cache": "set", "acme/gone/web/cache": "absent"}
    assert policy_of(aws_identity, f"{name}/cache") == LIFECYCLE_POLICY

    # When the job runs
    report = run_registry_gc(settings=settings, client=client, now=NOW)

    # Then the cache expires every image pushed more than 14 days ago, untagged ones after 7
    assert report["cache"]["policies"][f"{name}/cache"] == "set"
    policy = policy_of(aws_identity, f"{name}/cache")
    assert policy == cache_lifecycle_policy(14)
    rules = {r["rulePriority"]: r["selection"] for r in policy["rules"]}
    assert rules[1] == LIFECYCLE_POLICY["rules"][0]["selection"]
    assert rules[2] == {"tagStatus": "any", "countType": "sinceImagePushed",
                        "countUnit": "days", "countNumber": 14}  # fmt: skip
    # And the image repository keeps the untagged-only policy (its PR tags go on close)
    assert policy_of(aws_identity, name) == LIFECYCLE_POLICY
    # And the next pass changes nothing
    period_passed(client)
    again = run_registry_gc(settings=settings, client=client, now=NOW)
    assert again["cache"]["policies"][f"{name}/cache"] == "unchanged"
    assert again["cache"]["failed"] == {}

    # When pruning is turned off, the cache gets the untagged-only policy back
    period_passed(client)
    off = run_registry_gc(
        settings=ecr_settings(redis_url, aws_identity, days=0), client=client, now=NOW
    )
    assert off["cache"]["policies"][f"{name}/cache"] == "set"
    assert policy_of(aws_identity, f"{name}/cache") == LIFECYCLE_POLICY


def test_ecr_creation_helper_takes_the_cache_policy(aws_identity: AwsServer) -> None:
    ecr = EcrRegistry(region=REGION, endpoint_url=aws_identity.url)
    name = f"acme/shop/made{uuid.uuid4().hex[:6]}/cache"
    assert ecr.ensure_repository(name, policy=cache_lifecycle_policy(30)) is True
    assert ecr.lifecycle_policy(name) == cache_lifecycle_policy(30)
    assert ecr.ensure_lifecycle_policy(name, cache_lifecycle_policy(30)) == "unchanged"
    assert cache_lifecycle_policy(0) == LIFECYCLE_POLICY


@pytest.mark.parametrize("days", [1, 14])
def test_the_cache_policy_is_ordered_as_ecr_requires(days: int) -> None:
    rules = cache_lifecycle_policy(days)["rules"]
    # ECR evaluates a tagStatus "any" rule last: it must have the highest priority number.
    assert [r["selection"]["tagStatus"] for r in rules] == ["untagged", "any"]
    assert rules[-1]["rulePriority"] == max(r["rulePriority"] for r in rules)
    assert rules[-1]["selection"]["countNumber"] == days
