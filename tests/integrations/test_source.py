"""Fetching the source at one SHA: local git, GitHub tarballs via the sandbox, hostile archives."""

from __future__ import annotations

import io
import logging
import os
import stat
import tarfile
from pathlib import Path

import pytest

from k8see.errors import IntegrationError, PolicyError
from k8see.integrations.github import GitHubClient
from k8see.integrations.source import fetch_source
from k8see.sandbox.github import GitHubSandbox

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
