"""Trust scopes of the build cache, from the validate stage's reading of the PR to the registry.

Validate runs against the GitHub sandbox (a real Redis holds fork approvals), build with real
buildah and the local registry, one platform to keep it short. Covers: a fork PR's build
writes nothing to the project's registry cache and has a storage dir of its own; a PR from
the repository itself (the e2e flow's kind) is trusted, writes the cache and uses the
repository's dir; another fork PR reads the cache written by the trusted build and still
writes nothing; another repository gets another dir; and a run whose fork status nobody
recorded (``k8see build``'s kind) is treated as a fork.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import redis

from k8see import approvals
from k8see.config import RepoConfig
from k8see.integrations.buildstorage import SCOPE_FILE
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from k8see.stages import build, validate
from k8see.stages.context import StageContext
from k8see_sandbox.github import GitHubSandbox
from tests.fixtures.github import SANDBOX_TOKEN, git
from tests.fixtures.images import LocalRegistry

CACHE = "trust/shop/shop/cache"


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, str]:
    """A git checkout with k8s-ee.yaml and a Dockerfile whose ARG and RUN steps get cached."""
    path = tmp_path / "src"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "k8s-ee.yaml").write_text("projectId: shop\napp:\n  port: 3000\n")
    (path / "Dockerfile").write_text("FROM busybox\nARG X=1\nRUN echo built-$X > /x.txt\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "one")
    return path, git(path, "rev-parse", "HEAD")


@pytest.fixture
def settings(
    tmp_path: Path, redis_url: str, github: GitHubSandbox, registry: LocalRegistry,
    mirror_env: dict[str, str],
) -> PlatformSettings:  # fmt: skip
    allowlist = tmp_path / "allowed.json"
    allowlist.write_text(json.dumps({"mode": "allowlist", "organizations": ["trust"]}))
    return PlatformSettings(
        github={"api_url": github.url, "token": SANDBOX_TOKEN},
        redis={"url": redis_url},
        policy={"allowlist_path": str(allowlist)},
        registry={"type": "generic", "host": registry.host, "insecure": True},
        build={
            "workdir": str(tmp_path / "work"),
            "local_source_root": str(tmp_path / "sources"),
            "storage_dir": str(tmp_path / "storage"),
            "registries_conf": mirror_env["CONTAINERS_REGISTRIES_CONF"],
            "platforms": "linux/amd64",
            "timeout_seconds": 600,
        },
    )


def _ctx(settings: PlatformSettings, tmp_path: Path, lines: list[str]) -> StageContext:
    return StageContext(
        settings=settings,
        log=logging.getLogger("test.build_scopes"),
        workdir=tmp_path / "stage",
        record_log=lines.append,
    )


def _validate_and_build(
    settings: PlatformSettings, tmp_path: Path, src: Path, sha: str, repo: str, pr: int
) -> tuple[Run, list[str]]:
    # The workers read ``repo`` from <local_source_root>/<repo>: the same checkout for each.
    link = Path(settings.build.local_source_root) / repo
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(src)
    run = Run(
        repo=repo, pr=pr, sha=sha, generation=1, action=Action.DEPLOY,
        trigger="pull_request:opened",
    )  # fmt: skip
    lines: list[str] = []
    ctx = _ctx(settings, tmp_path, lines)
    return build.run(validate.run(run, ctx), ctx), lines


def _stored(registry: LocalRegistry, repository: str) -> dict[str, int]:
    """The registry's files of ``repository`` with their mtimes: any push rewrites a link."""
    root = registry.workdir / "data" / "docker" / "registry" / "v2" / "repositories" / repository
    return {str(f.relative_to(root)): f.stat().st_mtime_ns for f in root.rglob("*")}


def _scope_dirs(settings: PlatformSettings) -> dict[str, str]:
    """Scope name → dir name, from the files naming each scope dir."""
    root = Path(settings.build.storage_dir)
    return {d.joinpath(SCOPE_FILE).read_text().splitlines()[0]: d.name for d in root.iterdir()}


def test_fork_builds_only_read_the_cache_and_keep_their_own_storage(
    settings: PlatformSettings,
    github: GitHubSandbox,
    registry: LocalRegistry,
    source: tuple[Path, str],
    tmp_path: Path,
    redis_url: str,
) -> None:
    src, sha = source
    github.add_repo("trust/shop")
    github.add_pull("trust/shop", 7, head_sha=sha, head_ref="feature")
    for pr in (8, 9):
        github.add_pull("trust/shop", pr, head_sha=sha, head_ref="f", fork=True)
        store = redis.Redis.from_url(redis_url)
        approvals.approve(store, repo="trust/shop", pr=pr, sha=sha, by="boss")
        store.close()
    client = registry.client()

    # Given an approved fork PR, when it is validated and built
    forked, _ = _validate_and_build(settings, tmp_path, src, sha, "trust/shop", 8)
    # Then validate recorded the fork, and the build wrote nothing to the registry cache
    assert forked.result("validate")["fork"] is True
    result = forked.result("build")
    assert (result["cache_scope"], result["cache_trusted"]) == ("trust/shop#8", False)
    assert client.list_tags(CACHE) == []

    # When a PR from the repository itself is validated and built
    own, _ = _validate_and_build(settings, tmp_path, src, sha, "trust/shop", 7)
    # Then it is trusted: it wrote the cache, from a storage dir other than the fork's
    assert own.result("validate")["fork"] is False
    result = own.result("build")
    assert (result["cache_scope"], result["cache_trusted"]) == ("trust/shop", True)
    assert len(client.list_tags(CACHE)) == 3  # the ARG and RUN steps, the ARG's anchor
    dirs = _scope_dirs(settings)
    assert set(dirs) == {"trust/shop", "trust/shop#8"}
    assert dirs["trust/shop"] != dirs["trust/shop#8"]

    # When another fork PR builds the same source on this worker
    before = _stored(registry, CACHE)
    _, lines = _validate_and_build(settings, tmp_path, src, sha, "trust/shop", 9)
    # Then it got its steps from the cache the trusted build wrote, and wrote nothing back
    assert any("--> Cache pulled from remote" in line for line in lines)
    assert _stored(registry, CACHE) == before
    assert "trust/shop#9" in _scope_dirs(settings)

    # And another repository's PR builds in a dir of its own
    github.add_repo("trust/web")
    github.add_pull("trust/web", 1, head_sha=sha, head_ref="feature")
    other, _ = _validate_and_build(settings, tmp_path, src, sha, "trust/web", 1)
    assert other.result("build")["cache_scope"] == "trust/web"
    dirs = _scope_dirs(settings)
    assert len(dirs) == len(set(dirs.values())) == 4


def test_a_run_without_a_known_fork_status_builds_as_a_fork(
    settings: PlatformSettings, registry: LocalRegistry, source: tuple[Path, str], tmp_path: Path
) -> None:
    # Given a validated run that does not say whether the PR is a fork (as `k8see build`
    # makes one: no GitHub was asked)
    src, sha = source
    run = Run(repo="trust/lone", pr=7, sha=sha, generation=1, action=Action.DEPLOY)
    # When it is built
    built = build.build_checkout(
        run,
        _ctx(settings, tmp_path, []),
        source_dir=src,
        config=RepoConfig(projectId="shop"),
        fork=None,
    )
    result = built.result("build")
    # Then it is built as a fork would be: its own scope, the registry cache not written
    assert (result["cache_scope"], result["cache_trusted"]) == ("trust/lone#7", False)
    assert registry.client().list_tags("trust/lone/shop/cache") == []
    assert set(_scope_dirs(settings)) == {"trust/lone#7"}
