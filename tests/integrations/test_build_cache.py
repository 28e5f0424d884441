"""The registry build cache (buildah ``--cache-to``/``--cache-from`` plus k8see's ARG anchors).

Covers: a worker with an empty storage reuses every step of examples/hello (two platforms,
``FROM`` + ``ARG`` + ``RUN`` + ``COPY``) from the cache the first build pushed, and gets the
same digest; the anchors that make buildah 1.28 get past the ``ARG`` step are in the cache
repository; a rebuild of unchanged inputs writes nothing to the cache repository, a changed
one pushes its new step (not the unchanged anchor), and one whose step ran all the same
(the storage lost it) pushes after all; an unreachable cache repository costs time but never
the build; and the pure helpers: anchor tags follow the Dockerfile up to each ``ARG`` and the
platform, the ``ARG`` steps' images and the steps that ran are read from buildah's output,
the inputs key follows what the steps depend on; the default is a cache per project.
"""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

import pytest

from k8see.integrations.buildah import BuildahBuilder
from k8see.integrations.buildcache import (
    ANCHOR_PREFIX,
    arg_anchor_tags,
    arg_step_images,
    cache_push_failed,
    cache_repository_for,
    inputs_key,
    steps_run,
)
from k8see.integrations.builders import BuildResult
from k8see.settings import PlatformSettings
from k8see.stages.build import make_builder
from tests.conftest import free_port
from tests.fixtures.images import HELLO_DIR, PLATFORMS, LocalRegistry

#: The image id line of a step (the last one is the image built).
IMAGE = re.compile(r"^\[linux/amd64\] --> ([0-9a-f]{11,64})$")
STEP = re.compile(r"^\[(linux/[^\]]+)\] (?:\[[^\]]*\] )?STEP \d+/\d+: (\S+)")


def _builder(
    buildah_builder: BuildahBuilder, storage: Path, cache: str, *insecure: str
) -> BuildahBuilder:
    """A builder like the session's, with its own storage (a worker of its own)."""
    return BuildahBuilder(
        storage_dir=storage,
        registries_conf=buildah_builder.registries_conf,
        insecure_registries=[*buildah_builder.insecure_registries, *insecure],
        cache_repository=cache,
    )


def _build_hello(builder: BuildahBuilder, image: str, lines: list[str]) -> BuildResult:
    return builder.build_and_push(
        context_dir=HELLO_DIR,
        dockerfile=HELLO_DIR / "Dockerfile",
        image=image,
        tags=["pr-1"],
        platforms=PLATFORMS,
        build_args={},
        timeout_seconds=600,
        should_stop=lambda: False,
        on_line=lines.append,
    )


def _steps(lines: list[str]) -> list[tuple[str, str, bool]]:
    """(platform, instruction, used a cached image) for every step but FROM."""
    out: list[tuple[str, str, bool]] = []
    for line in lines:
        step = STEP.match(line)
        if step and step.group(2).upper() != "FROM":
            out.append((step.group(1), step.group(2).upper(), False))
        elif out and " --> Using cache " in line:
            out[-1] = (*out[-1][:2], True)
    return out


def _stored(registry: LocalRegistry, repository: str) -> dict[str, int]:
    """The registry's files of ``repository`` with their mtimes: any push rewrites a link."""
    root = registry.workdir / "data" / "docker" / "registry" / "v2" / "repositories" / repository
    return {str(f.relative_to(root)): f.stat().st_mtime_ns for f in root.rglob("*")}


def _buildah(builder: BuildahBuilder, *args: str) -> None:
    """Run buildah on ``builder``'s storage, the way an operator would by hand."""
    storage = builder.storage
    argv = [builder.binary, "--root", str(storage / "root"), "--runroot", str(storage / "run"),
            "--storage-driver", builder.storage_driver, *args]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _build_dir(builder: BuildahBuilder, ctx: Path, image: str, lines: list[str]) -> BuildResult:
    return builder.build_and_push(
        context_dir=ctx,
        dockerfile=ctx / "Dockerfile",
        image=image,
        tags=["pr-1"],
        platforms=["linux/amd64"],
        build_args={},
        timeout_seconds=600,
        should_stop=lambda: False,
        on_line=lines.append,
    )


def test_a_fresh_worker_reuses_every_step_from_the_registry_cache(
    registry: LocalRegistry, buildah_builder: BuildahBuilder, tmp_path: Path
) -> None:
    # Given examples/hello built once with the registry cache on a worker of its own
    image = f"{registry.host}/k8see-tests/cache/hello"
    first: list[str] = []
    built = _build_hello(
        _builder(buildah_builder, tmp_path / "worker-1", "{image}/cache"), image, first
    )
    assert not any(used for *_, used in _steps(first))
    # When a worker with an empty storage builds the same source
    second: list[str] = []
    rebuilt = _build_hello(
        _builder(buildah_builder, tmp_path / "worker-2", "{image}/cache"), image, second
    )
    # Then every step after FROM, the ARG included, on both platforms, used a cached image
    # pulled from the registry (no step ran), and the image is the same one
    steps = _steps(second)
    assert [(p, i) for p, i, _ in steps] == [
        (p, i) for p in PLATFORMS for i in ("ARG", "RUN", "COPY", "USER", "ENV", "EXPOSE", "CMD")
    ]
    assert all(used for *_, used in steps), "\n".join(second)
    assert sum("--> Cache pulled from remote" in line for line in second) == 12
    assert rebuilt.digest == built.digest
    # And the ARG steps' anchors are in the cache repository, one per platform
    tags = registry.client().list_tags("k8see-tests/cache/hello/cache")
    assert sorted(t for t in tags if t.startswith(ANCHOR_PREFIX)) == sorted(
        arg_anchor_tags((HELLO_DIR / "Dockerfile").read_text(), p)[0] for p in PLATFORMS
    )


def test_only_a_build_with_new_steps_writes_the_cache_repository(
    registry: LocalRegistry, buildah_builder: BuildahBuilder, tmp_path: Path
) -> None:
    # Given a Dockerfile built once with the registry cache (its steps and anchor pushed)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    dockerfile = "FROM busybox\nARG X=1\nRUN echo one-$X > /x.txt\n"
    (ctx / "Dockerfile").write_text(dockerfile)
    image, cache = f"{registry.host}/k8see-tests/cache/push", "k8see-tests/cache/push/cache"
    builder = _builder(buildah_builder, tmp_path / "storage", "{image}/cache")
    _build_dir(builder, ctx, image, [])
    client = registry.client()
    first_tags = client.list_tags(cache)
    (anchor,) = arg_anchor_tags(dockerfile, "linux/amd64")
    assert anchor in first_tags and len(first_tags) == 3  # the anchor, the ARG and RUN steps
    before = _stored(registry, cache)
    # When the same source is built again on the same worker
    lines: list[str] = []
    _build_dir(builder, ctx, image, lines)
    # Then every step was a local hit and the cache repository was not written at all
    assert steps_run(line.split("] ", 1)[1] for line in lines if line.startswith("[linux/")) == []
    assert not any(line.startswith("[cache ") for line in lines)
    assert _stored(registry, cache) == before
    # When the RUN step changes
    (ctx / "Dockerfile").write_text(dockerfile.replace("one-", "two-"))
    lines = []
    _build_dir(builder, ctx, image, lines)
    # Then its new step is pushed (the anchor above it is unchanged and not pushed again)
    tags = client.list_tags(cache)
    assert len(tags) == 4 and set(first_tags) < set(tags)
    assert any(line.startswith("[linux/amd64] --> Pushing cache ") for line in lines)
    anchor_link = f"_manifests/tags/{anchor}/current/link"
    assert _stored(registry, cache)[anchor_link] == before[anchor_link]
    # When both the worker's storage and the registry lose the RUN step (pruned by hand,
    # say) and the same inputs are built again
    *_, run_step = (m.group(1) for line in lines if (m := IMAGE.match(line)))
    *_, run_key = (line.rsplit(":", 1)[1] for line in lines if " --> Pushing cache " in line)
    _buildah(builder, "rmi", "--force", run_step)
    client.delete_tags(cache, [run_key])
    lines = []
    _build_dir(builder, ctx, image, lines)
    # Then the step ran, and its cache was pushed after the build all the same
    assert steps_run(line.split("] ", 1)[1] for line in lines if line.startswith("[linux/")) == [
        "RUN"
    ]
    assert any(line.startswith("[cache linux/amd64] --> Pushing cache ") for line in lines)
    assert run_key in client.list_tags(cache)


def test_an_unreachable_cache_repository_does_not_fail_the_build(
    registry: LocalRegistry,
    buildah_builder: BuildahBuilder,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a cache repository on a port nothing listens on
    nowhere = f"127.0.0.1:{free_port()}"
    builder = _builder(buildah_builder, tmp_path / "storage", f"{nowhere}/cache", nowhere)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nARG X=1\nRUN echo built-$X > /x.txt\n")
    lines: list[str] = []
    # When it builds
    with caplog.at_level(logging.WARNING, logger="k8see.integrations.buildah"):
        result = builder.build_and_push(
            context_dir=ctx,
            dockerfile=ctx / "Dockerfile",
            image=f"{registry.host}/k8see-tests/cache/nowhere",
            tags=["pr-1"],
            platforms=["linux/amd64"],
            build_args={},
            timeout_seconds=600,
            should_stop=lambda: False,
            on_line=lines.append,
        )
    # Then the image is pushed all the same, and the failed cache push is in the worker log
    client = registry.client()
    assert client.resolve_digest(f"{registry.host}/k8see-tests/cache/nowhere:pr-1") == (
        result.digest
    )
    assert cache_push_failed(lines)
    assert f"Pushing the build cache to {nowhere}/cache failed" in caplog.text


def test_anchor_tags_follow_the_dockerfile_up_to_each_arg_and_the_platform() -> None:
    dockerfile = (
        "# syntax comment\nARG BASE=busybox\nFROM $BASE\nARG A\nRUN echo \\\n  one\nARG B=2\n"
        "COPY . /app\n"
    )
    amd, arm = (
        arg_anchor_tags(dockerfile, "linux/amd64"),
        arg_anchor_tags(dockerfile, "linux/arm64"),
    )
    # ARG before FROM is no step; the two in the stage are
    assert len(amd) == 2
    assert all(t.startswith(f"{ANCHOR_PREFIX}linux-amd64-") for t in amd)
    assert [t.split("-")[-1] for t in amd] == [t.split("-")[-1] for t in arm]
    # A change below an ARG keeps its anchor; a change above it does not
    below = dockerfile.replace("COPY . /app", "COPY . /srv")
    between = dockerfile.replace("echo \\\n  one", "echo two")
    assert arg_anchor_tags(below, "linux/amd64") == amd
    assert arg_anchor_tags(between, "linux/amd64")[0] == amd[0]
    assert arg_anchor_tags(between, "linux/amd64")[1] != amd[1]
    # Layout that Docker ignores (comments, blank lines, indentation) changes nothing
    relaid = "\n" + dockerfile.replace("\nARG A", "\n\n  # hi\n  ARG A")
    assert arg_anchor_tags(relaid, "linux/amd64") == amd
    assert arg_anchor_tags("FROM busybox\nRUN true\n", "linux/amd64") == []


def test_arg_step_images_are_read_from_the_build_output() -> None:
    lines = [
        "[linux/arm64] STEP 1/4: FROM busybox:1.35",
        "[linux/arm64] STEP 2/4: ARG TARGETARCH",
        "--> Using cache 38aa3d8fdd5baf95de17c3d4b61795467095a3ad28ddc569a780769457dd8131",
        "--> Pushing cache 127.0.0.1:5000/a/cache:d071ec34b7e6da604805bb1f8befa9cfe5b2837f2e9393",
        "--> 38aa3d8fdd5",
        "STEP 3/4: RUN echo ARG",
        "--> 5f9890dcb07",
        "STEP 4/4: arg B",
        "--> 0061a0b6bd8",
    ]
    assert arg_step_images(lines) == ["38aa3d8fdd5", "0061a0b6bd8"]
    assert not cache_push_failed(lines)


def test_the_steps_that_ran_are_read_from_the_build_output() -> None:
    # (buildah 1.28's own lines: a multi-stage build whose second stage came from the cache)
    lines = [
        "[1/2] STEP 1/3: FROM busybox:1.35 AS b",
        "Trying to pull docker.io/library/busybox:1.35...",
        "[1/2] STEP 2/3: ARG X=1",
        "--> 99a96fb5d30",
        "[1/2] STEP 3/3: RUN echo built-$X > /x",
        "--> 4a3f1d7d488",
        "[2/2] STEP 1/2: FROM busybox:1.35",
        "[2/2] STEP 2/2: COPY --from=b /x /x",
        "--> Cache pulled from remote 127.0.0.1:41341/x/cache:2032965503eadb35471053411c1031fb7",
        "--> Using cache b5866f52b76a7e0220ea9ddfa977da6e0890a26f124c6b3af3b3d9232466c8f1",
        "--> b5866f52b76",
        "b5866f52b76a7e0220ea9ddfa977da6e0890a26f124c6b3af3b3d9232466c8f1",
    ]
    assert steps_run(lines) == ["ARG", "RUN"]
    assert steps_run([line for line in lines if "STEP 3/3" not in line]) == ["ARG"]
    hits = [
        "STEP 1/3: FROM busybox:1.35",
        "STEP 2/3: ARG TARGETARCH",
        "--> Using cache fcf7a264a4cfd02c2d76e97240d08dccac1f6285e417da9beb6c5e05c55e83c3",
        "--> fcf7a264a4c",
        'STEP 3/3: CMD ["sh"]',
        "--> Using cache 7460a0a643c0579d8ba1407c228e6f94278bf6fcda234f44070b662cebf307a6",
        "--> 7460a0a643c",
    ]
    assert steps_run(hits) == []
    assert steps_run(hits[:-2]) == ["CMD"]  # the last step, when it ran (no hit line)


def test_the_inputs_key_follows_what_the_steps_depend_on(tmp_path: Path) -> None:
    def tree(name: str) -> Path:
        root = tmp_path / name
        (root / "www").mkdir(parents=True)
        (root / "Dockerfile").write_text("FROM busybox\nCOPY www /www\n")
        (root / "www" / "index.html").write_text("hi\n")
        (root / "www" / "link").symlink_to("index.html")
        return root

    def key(root: Path, plat: str = "linux/amd64", args: dict[str, str] | None = None) -> str:
        return inputs_key(plat, args or {}, root / "Dockerfile", root, "r/app/cache")

    one, two = tree("one"), tree("two")
    # The same files elsewhere (another commit's directory) have the same key; .git is no input
    (two / ".git").mkdir()
    (two / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert key(one) == key(two) != ""
    # Platform, build arguments, cache repository, Dockerfile, content, mode and links count
    assert key(one, "linux/arm64") != key(one)
    assert key(one, args={"A": "1"}) != key(one)
    assert inputs_key("linux/amd64", {}, one / "Dockerfile", one, "other/cache") != key(one)
    changed = [key(one)]
    (two / "www" / "index.html").write_text("ho\n")
    changed.append(key(two))
    (two / "www" / "index.html").chmod(0o600)
    changed.append(key(two))
    (two / "www" / "link").unlink()
    (two / "www" / "link").symlink_to("other.html")
    changed.append(key(two))
    (two / "Dockerfile").write_text("FROM busybox\nCOPY www /srv\n")
    changed.append(key(two))
    assert len(set(changed)) == len(changed)
    # An unreadable context has no key (the build then pushes its cache as it builds)
    assert inputs_key("linux/amd64", {}, one / "Missing", one, "r/app/cache") == ""


def test_the_cache_repository_is_derived_from_the_image() -> None:
    assert cache_repository_for("{image}/cache", "ghcr.io/o/r/app") == "ghcr.io/o/r/app/cache"
    assert cache_repository_for("", "ghcr.io/o/r/app") == ""


def test_builds_use_a_per_project_registry_cache_by_default(tmp_path: Path) -> None:
    settings = PlatformSettings()
    assert settings.build.cache_repository == "{image}/cache"
    builder = make_builder(settings, workdir=tmp_path)
    assert isinstance(builder, BuildahBuilder)
    assert builder.cache_repository == "{image}/cache"
