"""The repository at exactly one commit, in a fresh private directory, extracted safely.

Workers never trust the enqueuer, so they fetch the source themselves: in production the
GitHub tarball of the head SHA (through ``GitHubClient``), in the sandbox and tests a local git
repository (``git archive``). Both go through one extractor that treats the archive as hostile:
absolute names, ``..``, links that leave the tree, writes through links, device files and
oversized or overfull archives are refused with a ``PolicyError`` naming the entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import posixpath
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

from k8see.errors import IntegrationError, PolicyError, ToolMissing, Where
from k8see.integrations.github import GitHubClient
from k8see.integrations.lockfiles import acquire
from k8see.names import check_repo, check_sha

__all__ = ["MAX_FILES", "MAX_TOTAL_BYTES", "collect_idle", "extract_tarball", "fetch_source"]

log = logging.getLogger(__name__)

#: Largest source tree accepted, uncompressed; a preview build needs nothing near this.
MAX_TOTAL_BYTES = 512 * 1024 * 1024
#: Most entries accepted; guards against archives of millions of empty files.
MAX_FILES = 100_000
_CHUNK = 1 << 16
#: Beside each tree ``<sha>``: ``.<sha>.k8see-sha`` once complete (its mtime is the last use)
#: and ``.<sha>.lock`` while a process fetches or collects it.
DONE_SUFFIX = ".k8see-sha"
LOCK_SUFFIX = ".lock"
GC_STAMP = ".last-collected"
#: A staging dir older than this belongs to a fetch that crashed.
STAGING_MAX_SECONDS = 3600


def fetch_source(
    *,
    repo: str,
    sha: str,
    dest_dir: Path,
    source: str,
    github: GitHubClient | None = None,
    timeout_seconds: float,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_files: int = MAX_FILES,
) -> Path:
    """Put ``repo`` at ``sha`` into ``dest_dir`` (created 0700) and return it.

    Args:
        repo: ``owner/repo``.
        sha: The full 40-hex commit; a branch or short SHA is refused, so what is built is
            exactly what was validated.
        dest_dir: Where the tree goes. If it already holds this SHA (a redelivered stage), it
            is reused; anything else there is replaced. Fetches of one ``dest_dir`` by
            several processes take turns (a lock file beside it), so they never race.
        source: A local git repository path or ``file://`` URL (sandbox, tests), or ``""`` /
            ``"github"`` for the GitHub tarball (production).
        github: The client, required for the GitHub source.
        timeout_seconds: Limit for ``git`` subprocesses.
    """
    check_repo(repo)
    check_sha(sha)
    dest_dir = Path(dest_dir)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest_dir, wait=True) as fd:
        assert fd is not None
        done_mark = _done_mark(dest_dir)
        if dest_dir.is_dir() and done_mark.is_file() and done_mark.read_text().strip() == sha:
            done_mark.touch()  # in use again: not idle
            return dest_dir
        done_mark.unlink(missing_ok=True)
        if dest_dir.exists() or dest_dir.is_symlink():
            _remove(dest_dir)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", dir=dest_dir.parent))
        try:
            tree = staging / "tree"
            tree.mkdir(mode=0o700)
            archive = staging / "source.tar"
            if source in ("", "github"):
                if github is None:
                    raise IntegrationError(
                        "Fetching from GitHub needs a GitHub client.",
                        hint="Pass github=make_client(settings, log=...).",
                    )
                github.download_tarball(repo, sha, archive, max_bytes=max_total_bytes)
                strip = 1  # GitHub's tarballs put everything under {owner}-{repo}-{sha7}/
            else:
                _git_archive(_local_path(source), sha, archive, timeout_seconds=timeout_seconds)
                strip = 0
            with archive.open("rb") as raw:
                extract_tarball(
                    raw, tree, strip=strip, max_total_bytes=max_total_bytes, max_files=max_files
                )
            tree.rename(dest_dir)
            done_mark.write_text(sha + "\n")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return dest_dir


def collect_idle(root: Path, *, max_idle_seconds: float, every_seconds: float = 600) -> int:
    """Delete the source trees under ``root`` (``<root>/<repo dir>/<sha>``) unused for longer
    than ``max_idle_seconds``; returns how many. Runs at most once per ``every_seconds`` per
    root (a stamp file), skips a tree being fetched (its lock is held) and removes staging
    dirs a crashed fetch left. Never raises: a failure is logged and retried next time."""
    root = Path(root)
    stamp = root / GC_STAMP
    try:
        if time.time() - stamp.stat().st_mtime < every_seconds:
            return 0
    except FileNotFoundError:
        pass
    removed = 0
    try:
        root.mkdir(parents=True, exist_ok=True)
        stamp.touch()
        for repo_dir in [d for d in root.iterdir() if d.is_dir()]:
            for entry in list(repo_dir.iterdir()):
                removed += _collect_entry(entry, max_idle_seconds)
            with contextlib.suppress(OSError):
                repo_dir.rmdir()  # only when empty
    except OSError as exc:
        log.warning("Could not collect idle source trees under %s: %s", root, exc)
    return removed


def _collect_entry(entry: Path, max_idle_seconds: float) -> int:
    if entry.name.endswith(LOCK_SUFFIX) or entry.name.endswith(DONE_SUFFIX):
        return 0
    if entry.name.startswith("."):  # a staging dir, removed with its fetch unless it crashed
        if _age_seconds(entry) > STAGING_MAX_SECONDS:
            shutil.rmtree(entry, ignore_errors=True)
        return 0
    done_mark = _done_mark(entry)
    if _age_seconds(done_mark if done_mark.exists() else entry) <= max_idle_seconds:
        return 0
    with _locked(entry, wait=False) as fd:
        if fd is None:  # being fetched right now
            return 0
        if _age_seconds(done_mark if done_mark.exists() else entry) <= max_idle_seconds:
            return 0  # reused while we waited
        done_mark.unlink(missing_ok=True)
        _remove(entry)
    log.info(
        "Deleted the source tree %s: unused for over %.1f hours.", entry, max_idle_seconds / 3600
    )
    return 1


def _done_mark(dest_dir: Path) -> Path:
    return dest_dir.with_name(f".{dest_dir.name}{DONE_SUFFIX}")


@contextlib.contextmanager
def _locked(dest_dir: Path, *, wait: bool) -> Iterator[int | None]:
    """An exclusive ``flock`` for ``dest_dir``, on a lock file beside it that is removed when
    released (so nothing is left behind); a waiter that wakes on a removed file tries again.
    Yields ``None`` when ``wait`` is false and another process holds it."""
    path = dest_dir.with_name(f".{dest_dir.name}{LOCK_SUFFIX}")
    fd = acquire(path, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    if fd is None:
        yield None
        return
    try:
        yield fd
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _age_seconds(path: Path) -> float:
    try:
        return time.time() - path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path)


def _local_path(source: str) -> Path:
    if source.startswith("file://"):
        parts = urlsplit(source)
        if parts.netloc not in ("", "localhost"):
            raise IntegrationError(f"Source URL {source!r} names a remote host.")
        return Path(unquote(parts.path))
    if "://" in source or source.startswith("-"):
        raise IntegrationError(
            f"Source {source!r} is not a local git repository or file:// URL.",
            hint="Use an absolute path, a file:// URL, or 'github' for the GitHub tarball.",
        )
    return Path(source)


def _git_archive(repo_dir: Path, sha: str, out: Path, *, timeout_seconds: float) -> None:
    git = shutil.which("git")
    if git is None:
        raise ToolMissing("git is not installed.", hint="Install git on the worker.")
    base = [git, "-C", str(repo_dir)]
    try:
        found = subprocess.run(
            [*base, "cat-file", "-e", f"{sha}^{{commit}}"],
            capture_output=True,
            timeout=timeout_seconds,
            check=False,
        )
        if found.returncode != 0:
            raise IntegrationError(
                f"Commit {sha} is not in the source repository {repo_dir}.",
                hint="Push the commit, or point the source at the repository that has it.",
            )
        with out.open("wb") as sink:
            made = subprocess.run(
                [*base, "archive", "--format=tar", sha],
                stdout=sink,
                stderr=subprocess.PIPE,
                timeout=timeout_seconds,
                check=False,
            )
    except subprocess.TimeoutExpired:
        raise IntegrationError(
            f"git took longer than {timeout_seconds:g}s to export {sha[:12]}."
        ) from None
    if made.returncode != 0:
        detail = made.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise IntegrationError(f"git archive of {sha[:12]} failed: {detail[0][:200]}")


def _refuse(name: str, why: str) -> PolicyError:
    return PolicyError(
        f"The source archive entry {name!r} {why}; nothing was extracted.",
        hint="Remove the entry from the repository (links must stay inside it).",
        where=Where(file=name),
    )


def _member_path(name: str, strip: int) -> str | None:
    """The safe relative path of an entry, ``None`` for the stripped top level."""
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise _refuse(name, "has an absolute or malformed name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(name, "climbs out of the tree with '..'")
    if len(parts) <= strip:
        return None
    return "/".join(parts[strip:])


def extract_tarball(
    fileobj: IO[bytes],
    root: Path,
    *,
    strip: int = 0,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_files: int = MAX_FILES,
) -> None:
    """Extract a (possibly gzipped) tar stream into the empty directory ``root``, safely.

    Regular files, directories and links that stay inside ``root`` are written; modes keep
    only the executable bits (no setuid, no world-writable). Everything else is refused.
    """
    root = root.resolve()
    total = 0
    count = 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for member in tar:
                rel = _member_path(member.name, strip)
                if rel is None:
                    continue
                count += 1
                if count > max_files:
                    raise _refuse(rel, f"is past the limit of {max_files} entries")
                total += max(0, member.size)
                if total > max_total_bytes:
                    raise _refuse(rel, f"takes the tree past {max_total_bytes} bytes")
                _extract_one(tar, member, rel, root, strip)
        _check_links(root)
    except (tarfile.TarError, EOFError, zlib.error):
        raise IntegrationError(
            "The source archive is not a readable tar file (truncated or corrupt).",
            hint="Retry the run; if it persists, check the repository's archive on GitHub.",
        ) from None


def _check_links(root: Path) -> None:
    """Every link, resolved on disk now that the tree is complete, stays inside ``root``.

    Checked again at the end because a link's meaning depends on links made after it
    (``a -> .`` then ``b -> a/..`` is ``.`` by its text but the parent of ``root`` on disk).
    """
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) and not _inside(root, os.path.realpath(path)):
                rel = os.path.relpath(path, root)
                raise _refuse(rel, f"is a link to {os.readlink(path)!r}, outside the tree")


def _inside(root: Path, path: str) -> bool:
    return path == str(root) or path.startswith(str(root) + os.sep)


def _extract_one(
    tar: tarfile.TarFile, member: tarfile.TarInfo, rel: str, root: Path, strip: int
) -> None:
    target = root / rel
    parent = os.path.realpath(target.parent)
    if not _inside(root, parent) or (target.parent != root and target.parent.is_symlink()):
        raise _refuse(rel, "would be written through a link")
    if target.is_symlink():
        raise _refuse(rel, "would overwrite a link")
    if member.isdir():
        target.mkdir(mode=0o755, parents=True, exist_ok=True)
        return
    os.makedirs(target.parent, mode=0o755, exist_ok=True)
    if member.issym():
        link = member.linkname
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), link))
        if link.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise _refuse(rel, f"is a link to {link!r}, outside the tree")
        os.symlink(link, target)
        return
    if member.islnk():
        try:
            link_rel = _member_path(member.linkname, strip)
        except PolicyError:
            link_rel = None
        source = root / link_rel if link_rel else None
        if (
            source is None
            or source.is_symlink()
            or not source.is_file()
            or not _inside(root, os.path.realpath(source))
        ):
            raise _refuse(rel, f"is a hard link to {member.linkname!r}, not a file in the tree")
        shutil.copyfile(source, target)
        return
    if not member.isreg():
        raise _refuse(rel, "is a device, FIFO or other special file")
    data = tar.extractfile(member)
    if data is None:  # pragma: no cover - regular members always have data
        raise _refuse(rel, "has no data")
    mode = 0o755 if member.mode & stat.S_IXUSR else 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    with data, os.fdopen(os.open(target, flags, mode), "wb") as out:
        written = 0
        while chunk := data.read(_CHUNK):
            written += len(chunk)
            if written > member.size:
                raise _refuse(rel, "holds more data than its header says")
            out.write(chunk)
    os.chmod(target, mode)
