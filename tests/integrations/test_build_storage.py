"""buildah storage per trust scope, with real directories and real ``flock`` locks.

Covers: the scope of a PR (the repository for its own PRs, lowercased; repository and PR
number for a fork, and for a PR whose fork status is unknown), one storage dir per scope
with a file naming it; garbage collection deleting scope dirs idle for longer than the
limit (and what an interrupted pass left), keeping one a build holds however old its stamp,
recent ones and anything that is not a scope dir; a build's own start taking the others out
of the way at once and deleting them in the background; builds of one scope holding it
together; a build with a scope storing its images in that scope's dir; and the record of
the inputs whose registry cache a storage pushed, kept to the newest keys.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from k8see.integrations.buildah import BuildahBuilder
from k8see.integrations.buildstorage import (
    MAX_PUSHED_KEYS,
    PUSHED_FILE,
    SCOPE_FILE,
    STAMP_FILE,
    BuildScope,
    cache_was_pushed,
    collect_idle,
    remember_cache_pushed,
    scope_dir,
    use_scope,
)
from k8see.settings import PlatformSettings
from tests.fixtures.images import LocalRegistry

HOUR = 3600.0


def _make_idle(directory: Path, hours: float) -> None:
    """Set the scope's last use ``hours`` back, as if no build had used it since."""
    then = time.time() - hours * HOUR
    os.utime(directory / STAMP_FILE, (then, then))


def _used(root: Path, scope: BuildScope) -> Path:
    """A scope dir as a finished build leaves it."""
    with use_scope(root, scope, max_idle_seconds=0) as directory:
        (directory / "root").mkdir()
        (directory / "root" / "layer").write_bytes(b"x" * 1024)
    return directory


def test_a_pull_request_is_built_in_its_repository_or_its_own_fork_scope() -> None:
    own = BuildScope.for_pull("Acme/Shop", 7, fork=False)
    fork = BuildScope.for_pull("Acme/Shop", 7, fork=True)
    unknown = BuildScope.for_pull("Acme/Shop", 7, fork=None)
    other_fork = BuildScope.for_pull("acme/shop", 8, fork=True)
    other_repo = BuildScope.for_pull("acme/web", 7, fork=False)
    assert (own.name, own.trusted) == ("acme/shop", True)
    assert (fork.name, fork.trusted) == ("acme/shop#7", False)
    assert unknown == fork  # a worker that cannot tell treats the PR as a fork
    assert BuildScope.for_pull("acme/shop", 9, fork=False) == own  # PRs of the repo share it
    dirs = {s.dir_name for s in (own, fork, other_fork, other_repo)}
    assert len(dirs) == 4 and all(len(d) == 16 for d in dirs)
    assert scope_dir(Path("/s"), own) == Path("/s") / own.dir_name


def test_idle_scope_dirs_are_deleted_but_not_one_in_use(tmp_path: Path) -> None:
    # Given four scopes' dirs: two idle for four days, one idle but held by a running build,
    # one used an hour ago; the storage of an unscoped builder beside them; and what an
    # earlier pass was deleting when its worker stopped
    idle = [_used(tmp_path, BuildScope.for_pull("acme/shop", n, fork=True)) for n in (1, 2)]
    held_scope = BuildScope.for_pull("acme/web", 3, fork=False)
    held = _used(tmp_path, held_scope)
    recent = _used(tmp_path, BuildScope.for_pull("acme/app", 4, fork=False))
    (tmp_path / "root").mkdir()
    (tmp_path / ".trash-0123456789abcdef-0a1b2c3d" / "root").mkdir(parents=True)
    for directory in [*idle, held]:
        _make_idle(directory, 96)
    _make_idle(recent, 1)
    with use_scope(tmp_path, held_scope, max_idle_seconds=0):
        _make_idle(held, 96)  # (its build began long ago and is still running)
        # When garbage collection runs with a 72-hour limit
        removed = collect_idle(tmp_path, max_idle_seconds=72 * HOUR)
        # Then the idle ones (and the leftover) are gone; the held, the recent and the
        # foreign dirs stay
        assert sorted(removed) == sorted([*(d.name for d in idle), "0123456789abcdef"])
        assert not any(d.exists() for d in idle)
        assert (held / "root" / "layer").is_file() and (recent / "root" / "layer").is_file()
        assert (tmp_path / "root").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["root", held.name, recent.name])
    # And once its build ended, the held dir counts as just used
    assert collect_idle(tmp_path, max_idle_seconds=72 * HOUR) == []


def test_a_build_starting_collects_the_other_idle_scopes(tmp_path: Path) -> None:
    old = _used(tmp_path, BuildScope.for_pull("acme/old", 1, fork=False))
    _make_idle(old, 80)
    scope = BuildScope.for_pull("acme/new", 2, fork=True)
    with use_scope(tmp_path, scope, max_idle_seconds=72 * HOUR) as directory:
        # The idle dir is out of the way at once, and deleted beside the build
        assert not old.exists()
        for thread in threading.enumerate():
            if thread.name == "k8see-storage-gc":
                thread.join()
        assert sorted(p.name for p in tmp_path.iterdir()) == [directory.name]
        # The dir names its scope for operators
        assert (directory / SCOPE_FILE).read_text().splitlines()[0] == "acme/new#2"
    # A limit of 0 keeps everything
    _make_idle(directory, 10_000)
    with use_scope(tmp_path, BuildScope.for_pull("acme/x", 3, fork=False), max_idle_seconds=0):
        assert directory.is_dir()


def test_builds_of_one_scope_hold_it_together(tmp_path: Path) -> None:
    scope = BuildScope.for_pull("acme/shop", 1, fork=False)
    # Two builds of one scope at once (shared locks: neither waits for the other)
    with use_scope(tmp_path, scope, max_idle_seconds=0) as first:
        with use_scope(tmp_path, scope, max_idle_seconds=0) as second:
            assert first == second
            _make_idle(first, 1000)
            assert collect_idle(tmp_path, max_idle_seconds=HOUR) == []
        _make_idle(first, 1000)
        assert collect_idle(tmp_path, max_idle_seconds=HOUR) == []  # the first still runs
    _make_idle(first, 1000)
    assert collect_idle(tmp_path, max_idle_seconds=HOUR) == [first.name]


def test_a_scoped_build_keeps_its_images_in_its_scope_dir(
    registry: LocalRegistry, buildah_builder: BuildahBuilder, tmp_path: Path
) -> None:
    # Given a builder for a fork PR's scope over an empty storage root
    scope = BuildScope.for_pull("acme/shop", 12, fork=True)
    builder = BuildahBuilder(
        storage_dir=tmp_path / "storage",
        registries_conf=buildah_builder.registries_conf,
        insecure_registries=buildah_builder.insecure_registries,
        scope=scope,
        storage_max_idle_seconds=72 * HOUR,
    )
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo scoped > /s.txt\n")
    # When it builds
    builder.build_and_push(
        context_dir=ctx,
        dockerfile=ctx / "Dockerfile",
        image=f"{registry.host}/k8see-tests/scoped/app",
        tags=["pr-12"],
        platforms=["linux/amd64"],
        build_args={},
        timeout_seconds=600,
        should_stop=lambda: False,
        on_line=lambda _line: None,
    )
    # Then buildah's storage is in the scope's dir and nowhere else under the root
    (only,) = (tmp_path / "storage").iterdir()
    assert only.name == scope.dir_name
    assert (only / "root").is_dir() and (only / STAMP_FILE).is_file()
    assert (only / SCOPE_FILE).read_text().splitlines()[0] == "acme/shop#12"


def test_a_storage_remembers_the_inputs_whose_cache_it_pushed(tmp_path: Path) -> None:
    assert not cache_was_pushed(tmp_path, "k1")
    remember_cache_pushed(tmp_path, "k1")
    remember_cache_pushed(tmp_path, "")  # no key: nothing to remember
    assert cache_was_pushed(tmp_path, "k1") and not cache_was_pushed(tmp_path, "")
    # It keeps the newest keys only
    for n in range(2 * MAX_PUSHED_KEYS + 1):
        remember_cache_pushed(tmp_path, f"key-{n}")
    assert not cache_was_pushed(tmp_path, "k1")
    assert cache_was_pushed(tmp_path, f"key-{2 * MAX_PUSHED_KEYS}")
    assert len((tmp_path / PUSHED_FILE).read_text().split()) <= 2 * MAX_PUSHED_KEYS


def test_idle_storage_is_collected_after_72_hours_by_default() -> None:
    assert PlatformSettings().build.storage_max_idle_hours == 72
