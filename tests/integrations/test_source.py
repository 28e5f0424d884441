"""Fetching the source at one SHA: local git, GitHub tarballs via the sandbox, hostile archives."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import stat
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from k8see.errors import IntegrationError, PolicyError
from k8see.integrations.github import GitHubClient
from k8see.integrations.source import collect_idle, fetch_source
from k8see.settings import load_settings
from k8see_sandbox.github import GitHubSandbox

BAD_SHA = "f" * 40
PREFIX = "acme-shop-fffffff/"


def test_local_git_at_exact_sha(source_repo: tuple[Path, list[str]], tmp_path: Path) -> None:
    path, (first, second) = source_repo
    dest = fetch_source(
        repo="acme/shop", sha=first, dest_dir=tmp_path / "w" / "src", source=str(path),
        timeout_seconds=30,
    )  # fmt: skip
    assert (dest / "src" / "app.sh").read_text() == "echo one\n"
    assert not (dest / "NEW.md").exists()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    other = fetch_source(
        repo="acme/shop", sha=second, dest_dir=tmp_path / "w2", source=path.as_uri(),
        timeout_seconds=30,
    )  # fmt: skip
    assert (other / "NEW.md").read_text() == "second commit\n"


def test_fetch_is_idempotent_per_sha(source_repo: tuple[Path, list[str]], tmp_path: Path) -> None:
    path, (first, second) = source_repo
    args = {"repo": "acme/shop", "dest_dir": tmp_path / "src", "source": str(path),
            "timeout_seconds": 30}  # fmt: skip
    dest = fetch_source(sha=first, **args)  # type: ignore[arg-type]
    (dest / "sentinel").write_text("kept when reused")
    assert fetch_source(sha=first, **args) == dest  # type: ignore[arg-type]
    assert (dest / "sentinel").exists()
    fetch_source(sha=second, **args)  # type: ignore[arg-type]
    assert not (dest / "sentinel").exists()
    assert (dest / "NEW.md").exists()


@pytest.mark.parametrize("sha", ["main", "abc1234", "A" * 40, "--upload-pack=x" + "0" * 25])
def test_anything_but_a_full_sha_is_refused(
    sha: str, source_repo: tuple[Path, list[str]], tmp_path: Path
) -> None:
    with pytest.raises(PolicyError):
        fetch_source(repo="acme/shop", sha=sha, dest_dir=tmp_path / "s",
                     source=str(source_repo[0]), timeout_seconds=30)  # fmt: skip
    assert not (tmp_path / "s").exists()


def test_unknown_commit_in_local_repo(source_repo: tuple[Path, list[str]], tmp_path: Path) -> None:
    with pytest.raises(IntegrationError) as caught:
        fetch_source(repo="acme/shop", sha=BAD_SHA, dest_dir=tmp_path / "w" / "s",
                     source=str(source_repo[0]), timeout_seconds=30)  # fmt: skip
    assert "not in the source repository" in caught.value.message
    assert list((tmp_path / "w").iterdir()) == []  # no tree and no staging left behind


def test_github_tarball_through_the_sandbox(
    github: GitHubSandbox,
    github_client: GitHubClient,
    source_repo: tuple[Path, list[str]],
    tmp_path: Path,
) -> None:
    path, (first, _) = source_repo
    github.add_repo("acme/shop")
    github.add_source("acme/shop", path)
    dest = fetch_source(repo="acme/shop", sha=first, dest_dir=tmp_path / "src", source="github",
                        github=github_client, timeout_seconds=30)  # fmt: skip
    assert (dest / "k8s-ee.yaml").read_text() == "projectId: hello\n"
    assert (dest / "src" / "app.sh").read_text() == "echo one\n"
    assert ("GET", f"/repos/acme/shop/tarball/{first}") in github.calls


def tarball(*entries: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        root = tarfile.TarInfo(PREFIX.rstrip("/"))
        root.type = tarfile.DIRTYPE
        tar.addfile(root)
        for entry in entries:
            info, data = entry if isinstance(entry, tuple) else (entry, b"")
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def member(name: str, *, type_: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "",
           mode: int = 0o644) -> tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]:  # fmt: skip
    info = tarfile.TarInfo(name if name.startswith("/") else PREFIX + name)
    info.type = type_
    info.linkname = link
    info.mode = mode
    info.size = len(data)
    return (info, data) if data else info


HOSTILE = {
    "dotdot": [member("../../escape.txt", data=b"x")],
    "absolute": [member("/tmp/k8see-absolute-escape.txt", data=b"x")],
    "symlink-out": [member("etc", type_=tarfile.SYMTYPE, link="/etc")],
    "symlink-up": [member("up", type_=tarfile.SYMTYPE, link="../../..")],
    "write-through-link": [
        member("inner", type_=tarfile.SYMTYPE, link="."),
        member("d", type_=tarfile.SYMTYPE, link="inner/.."),
    ],
    "hardlink-out": [member("passwd", type_=tarfile.LNKTYPE, link="/etc/passwd")],
    "hardlink-up": [member("p", type_=tarfile.LNKTYPE, link=PREFIX + "../../x")],
    "device": [member("null", type_=tarfile.CHRTYPE)],
    "fifo": [member("pipe", type_=tarfile.FIFOTYPE)],
    "too-big": [member(f"f{i}", data=b"y" * 600) for i in range(3)],
    "too-many": [member(f"n{i}", data=b"z") for i in range(12)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_malicious_tarball_is_refused(
    case: str, github: GitHubSandbox, github_client: GitHubClient, tmp_path: Path
) -> None:
    github.add_repo("acme/shop")
    github.add_tarball("acme/shop", BAD_SHA, tarball(*HOSTILE[case]))
    work = tmp_path / "deep" / "er" / "work"
    with pytest.raises(PolicyError) as caught:
        fetch_source(repo="acme/shop", sha=BAD_SHA, dest_dir=work / "src", source="github",
                     github=github_client, timeout_seconds=30, max_total_bytes=1000,
                     max_files=10)  # fmt: skip
    assert caught.value.where is not None and caught.value.where.file
    assert not (work / "src").exists()
    assert list(work.iterdir()) == []
    assert not (tmp_path / "deep" / "escape.txt").exists()
    assert not Path("/tmp/k8see-absolute-escape.txt").exists()


def test_inner_links_modes_and_corrupt_archives(
    github: GitHubSandbox, github_client: GitHubClient, tmp_path: Path
) -> None:
    github.add_repo("acme/shop")
    github.add_tarball("acme/shop", BAD_SHA, tarball(
        member("bin/run", data=b"#!/bin/sh\n", mode=0o4777),
        member("docs/readme", data=b"hi"),
        member("README", type_=tarfile.SYMTYPE, link="docs/readme"),
        member("copy", type_=tarfile.LNKTYPE, link=PREFIX + "docs/readme"),
    ))  # fmt: skip
    dest = fetch_source(repo="acme/shop", sha=BAD_SHA, dest_dir=tmp_path / "src",
                        source="github", github=github_client, timeout_seconds=30)  # fmt: skip
    assert stat.S_IMODE((dest / "bin" / "run").stat().st_mode) == 0o755  # no setuid, no o+w
    assert (dest / "README").read_text() == "hi"
    assert (dest / "copy").read_text() == "hi"

    github.add_tarball("acme/shop", "e" * 40, tarball(member("a", data=os.urandom(5000)))[:2000])
    with pytest.raises(IntegrationError) as caught:
        fetch_source(repo="acme/shop", sha="e" * 40, dest_dir=tmp_path / "bad",
                     source="github", github=github_client, timeout_seconds=30)  # fmt: skip
    assert "not a readable tar" in caught.value.message
    logging.getLogger(__name__).debug("corrupt archive refused as expected")


def test_concurrent_fetches_of_one_commit_take_turns(
    source_repo: tuple[Path, list[str]], tmp_path: Path
) -> None:
    # Given six workers that fetch the same commit into the same directory at the same moment
    path, (first, _) = source_repo
    dest = tmp_path / "src" / "acme__shop" / first
    start = threading.Barrier(6)

    def fetch() -> Path:
        start.wait()
        return fetch_source(repo="acme/shop", sha=first, dest_dir=dest, source=str(path),
                            timeout_seconds=30)  # fmt: skip

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: fetch(), range(6)))
    # Then every one gets the complete tree, and only the tree and its mark are left
    assert results == [dest] * 6
    assert (dest / "src" / "app.sh").read_text() == "echo one\n"
    assert sorted(p.name for p in dest.parent.iterdir()) == [f".{first}.k8see-sha", first]


def _age(path: Path, hours: float) -> None:
    then = time.time() - hours * 3600
    os.utime(path, (then, then), follow_symlinks=False)


def test_idle_source_trees_are_collected(
    source_repo: tuple[Path, list[str]], tmp_path: Path
) -> None:
    # Given three fetched trees: one idle for 7 hours, one idle but being fetched right now,
    # one used a minute ago, and a staging dir a crashed fetch left two hours ago
    path, (first, second) = source_repo
    root = tmp_path / "src"
    trees = {}
    for repo, sha in (("acme/old", first), ("acme/busy", first), ("acme/new", second)):
        trees[repo] = fetch_source(repo=repo, sha=sha, source=str(path), timeout_seconds=30,
                                   dest_dir=root / repo.replace("/", "__") / sha)  # fmt: skip
    for repo in ("acme/old", "acme/busy"):
        _age(trees[repo].with_name(f".{trees[repo].name}.k8see-sha"), 7)
    crashed = root / "acme__new" / f".{second}.abc123"
    crashed.mkdir()
    _age(crashed, 2)
    busy_lock = trees["acme/busy"].with_name(f".{first}.lock")
    held = os.open(busy_lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        # When the collector runs with a 6-hour limit
        removed = collect_idle(root, max_idle_seconds=6 * 3600)
    finally:
        os.close(held)
    # Then only the idle, unlocked tree and the crashed staging dir are gone
    assert removed == 1
    assert not (root / "acme__old").exists()  # its repository dir went with its only tree
    assert (trees["acme/busy"] / "src" / "app.sh").exists()
    assert (trees["acme/new"] / "NEW.md").exists()
    assert not crashed.exists()
    # And it does not look again within ten minutes, even at an idle limit of zero seconds
    assert collect_idle(root, max_idle_seconds=0) == 0
    assert trees["acme/new"].exists()
    # And a collected commit is simply fetched again when a later run needs it
    again = fetch_source(repo="acme/old", sha=first, source=str(path), timeout_seconds=30,
                         dest_dir=root / "acme__old" / first)  # fmt: skip
    assert (again / "src" / "app.sh").read_text() == "echo one\n"


def test_source_max_idle_hours_must_outlast_a_build() -> None:
    with pytest.raises(ValueError, match="must exceed the build timeout"):
        load_settings(build={"source_max_idle_hours": 0.1})
    assert load_settings(build={"source_max_idle_hours": 0}).build.source_max_idle_hours == 0
