"""Registry garbage collection against the local ``docker-registry`` and the sandbox GitHub.

Covers:
- the ``pr-N`` tags of closed, merged and missing PRs go, with the ``sha-*`` tags of commits
  no live environment runs; an open PR's tags and a live environment's commit stay;
- a tag that is garbage by name but shares its image (digest) with a kept tag stays: the
  distribution API deletes by digest, so deleting it would take the live ``pr-N`` along;
- a dry run deletes nothing and reports the same tags; a second run finds nothing to do;
- only registries k8see can list are collected (``generic``); GHCR/ECR runs say so.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

import redis

from k8see import state
from k8see.integrations.registry import OciRegistry
from k8see.jobs.registry_gc import run_registry_gc
from k8see.settings import PlatformSettings, load_settings
from k8see_sandbox.github import GitHubSandbox
from tests.fixtures.github import SANDBOX_TOKEN
from tests.fixtures.images import LocalRegistry

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def push_image(registry: OciRegistry, repository: str, tags: list[str], seed: str) -> str:
    """A tiny real image (config + one layer) under ``tags``; returns its digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = f"layer {seed}".encode()
    blobs = [(config, "application/vnd.oci.image.config.v1+json"),
             (layer, "application/vnd.oci.image.layer.v1.tar")]  # fmt: skip
    described = []
    for data, media_type in blobs:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        registry.push_blob(repository, digest, data)
        described.append({"mediaType": media_type, "size": len(data), "digest": digest})
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": MANIFEST, "config": described[0],
         "layers": described[1:]}
    ).encode()  # fmt: skip
    digests = {registry.put_manifest(repository, tag, body, MANIFEST) for tag in tags}
    (digest,) = digests
    return digest


def put_record(client: redis.Redis, record: dict[str, Any]) -> None:
    key = state.record_key(record["repo"], record["pr"])
    client.set(key, json.dumps(record))
    client.zadd(state.INDEX_KEY, {key: time.time()})


def gc_settings(redis_url: str, github_url: str, registry: LocalRegistry) -> PlatformSettings:
    return load_settings(
        redis={"url": redis_url},
        github={"api_url": github_url, "token": SANDBOX_TOKEN},
        registry={"type": "generic", "host": registry.host, "insecure": True},
    )


def test_registry_gc_deletes_the_tags_of_gone_prs_only(
    redis_url: str, github: GitHubSandbox, registry: LocalRegistry
) -> None:
    # Given a repository whose PRs are closed (1), open with a live environment (2), merged
    # (3), open without an environment (4) and missing from GitHub (5)
    repo = f"acme/gc{uuid.uuid4().hex[:6]}"
    repository = repo  # images are pushed to <host>/<owner>/<repo>
    sha = {n: hashlib.sha1(f"{repo}{n}".encode()).hexdigest() for n in ("1", "2", "2old", "2re")}
    github.add_repo(repo)
    github.add_pull(repo, 1, head_sha=sha["1"], head_ref="a", state="closed")
    github.add_pull(repo, 2, head_sha=sha["2"], head_ref="b")
    github.add_pull(repo, 3, head_sha="3" * 40, head_ref="c", state="closed", merged=True)
    github.add_pull(repo, 4, head_sha="4" * 40, head_ref="d")
    reg = registry.client()
    live = push_image(reg, repository, ["pr-2", f"sha-{sha['2']}"], "live")
    # a rebuild of another commit with identical content has the same digest as the live one:
    # its tag is garbage, and deleting it must not take the live tags with it
    push_image(reg, repository, [f"sha-{sha['2re']}"], "live")
    push_image(reg, repository, [f"sha-{sha['2old']}"], "old-commit")
    push_image(reg, repository, ["pr-1", f"sha-{sha['1']}"], "closed")
    push_image(reg, repository, ["pr-3"], "merged")
    push_image(reg, repository, ["pr-4"], "open")
    push_image(reg, repository, ["pr-5"], "missing")
    client = redis.Redis.from_url(redis_url)
    image = f"{registry.host}/{repository}"
    put_record(client, {"repo": repo, "pr": 2, "status": "ready", "sha": sha["2"],
                        "image": f"{image}:pr-2", "generation": 1})  # fmt: skip
    put_record(client, {"repo": repo, "pr": 1, "status": "destroyed", "sha": sha["1"],
                        "image": f"{image}:pr-1", "generation": 1})  # fmt: skip
    settings = gc_settings(redis_url, github.url, registry)
    garbage = {"pr-1", f"sha-{sha['1']}", "pr-3", "pr-5", f"sha-{sha['2old']}", f"sha-{sha['2re']}"}
    kept = {"pr-2", f"sha-{sha['2']}", "pr-4"}

    # When a dry run looks first
    dry = run_registry_gc(settings=settings, client=client, dry_run=True)

    # Then it names exactly the garbage and deletes nothing
    assert set(dry["deleted"][repository]) == garbage
    assert set(reg.list_tags(repository)) == garbage | kept

    # When the job runs for real
    report = run_registry_gc(settings=settings, client=client)

    # Then the gone PRs' tags are deleted and everything live is still pullable
    assert set(reg.list_tags(repository)) == kept
    assert set(report["deleted"][repository]) == garbage
    assert reg.resolve_digest(f"{image}:pr-2") == live
    assert reg.resolve_digest(f"{image}:sha-{sha['2']}") == live
    # And a second run has nothing left to do
    again = run_registry_gc(settings=settings, client=client)
    assert again["deleted"] == {} and set(reg.list_tags(repository)) == kept
    reg.close()


def test_registry_gc_skips_registries_it_cannot_list(redis_url: str) -> None:
    settings = load_settings(redis={"url": redis_url}, registry={"type": "ghcr"})
    report = run_registry_gc(settings=settings, client=redis.Redis.from_url(redis_url))
    assert "ghcr" in report["skipped"]
