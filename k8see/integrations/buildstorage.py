"""buildah storage per trust scope: who shares a local build cache, and when it is deleted.

Why scopes: buildah finds a cached step by its instruction and parent image, not by what the
step produced, so whoever first ran a step decides what every later build with the same step
gets. Builds therefore share local storage, and write the registry cache, only within a trust
scope, the way GitHub Actions scopes its cache: the pull requests whose head is in the
repository share one scope (the repository; their authors can push to it anyway), and each
fork pull request has a scope of its own (the repository and the PR number), which reads the
project's registry cache but never writes it.

Layout: ``<storage root>/<sha256 of the scope name, 16 hex>/`` holds buildah's ``root`` and
``run``, ``scope.txt`` (the scope's name, for operators), ``lock``, a ``last-used`` stamp
and ``cache-pushed`` (the inputs whose registry cache this storage pushed). A build holds a
shared ``flock`` on ``lock`` from start to end, so concurrent builds of one scope proceed
together (buildah locks its own storage); garbage collection deletes a scope dir only when
the exclusive lock is free without waiting and the stamp is older than the limit. A deleted
dir is first renamed, so a build waiting for the lock finds the path gone and starts a new
dir rather than using the old one; a build deletes the renamed dirs in a background thread.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from k8see.integrations.lockfiles import acquire, same_file

__all__ = [
    "BuildScope",
    "cache_was_pushed",
    "collect_idle",
    "remember_cache_pushed",
    "remove_in_background",
    "retire_idle",
    "scope_dir",
    "use_scope",
]

log = logging.getLogger(__name__)

LOCK_FILE = "lock"
STAMP_FILE = "last-used"
SCOPE_FILE = "scope.txt"
#: Scope dirs are named by 16 hex digits; nothing else in the storage root is collected.
SCOPE_DIR = re.compile(r"[0-9a-f]{16}")
#: A dir being deleted (renamed first; a crash mid-delete leaves it for the next pass).
TRASH_PREFIX = ".trash-"
#: The inputs keys of builds whose registry cache this storage pushed, one a line.
PUSHED_FILE = "cache-pushed"
#: Keys kept (the newest); a build of older inputs just pushes its cache again.
MAX_PUSHED_KEYS = 1000


@dataclass(frozen=True)
class BuildScope:
    """The set of builds that may share cached steps.

    Attributes:
        name: ``owner/repo`` (lowercased) for the repository's own PRs, ``owner/repo#N`` for
            the fork PR N.
        trusted: Whether its builds write the registry cache (only the repository's own).
    """

    name: str
    trusted: bool

    @classmethod
    def for_pull(cls, repo: str, pr: int, *, fork: bool | None) -> BuildScope:
        """The scope of PR ``pr`` of ``repo``; ``fork=None`` (not known) counts as a fork."""
        if fork is False:
            return cls(name=repo.lower(), trusted=True)
        return cls(name=f"{repo.lower()}#{pr}", trusted=False)

    @property
    def dir_name(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()[:16]

    def reads_from(self) -> tuple[BuildScope, ...]:
        """The scopes whose cached steps a build in this one may reuse: its own and, for a
        fork PR, the repository's (read, never written), as with the registry cache."""
        repo, fork, _pr = self.name.partition("#")
        return (self, BuildScope(name=repo, trusted=True)) if fork else (self,)


def scope_dir(root: Path, scope: BuildScope) -> Path:
    """The storage dir of ``scope`` under the storage root ``root``."""
    return root / scope.dir_name


@contextmanager
def use_scope(root: Path, scope: BuildScope, *, max_idle_seconds: float) -> Iterator[Path]:
    """Hold ``scope``'s storage dir for one build; first collect other idle scope dirs.

    Yields:
        The scope's dir (created if new), under a shared lock until the block ends.
    """
    directory = scope_dir(root, scope)
    fd = _lock(directory, fcntl.LOCK_SH)
    try:
        cache = "writes" if scope.trusted else "only reads"
        label = f"{scope.name}\nk8see build storage; this scope {cache} the registry cache.\n"
        label_path = directory / SCOPE_FILE
        if not label_path.is_file() or label_path.read_text() != label:
            label_path.write_text(label)
        (directory / STAMP_FILE).touch()
        if max_idle_seconds > 0:  # the deletion does not hold the build up
            remove_in_background(retire_idle(root, max_idle_seconds=max_idle_seconds))
        yield directory
    finally:
        try:
            (directory / STAMP_FILE).touch()  # the end of a build is its last use
        finally:
            os.close(fd)


def cache_was_pushed(directory: Path, key: str) -> bool:
    """Whether a build from the storage ``directory`` pushed the registry cache for ``key``.

    Then every step of a build with that key is in this storage (see
    ``k8see.integrations.buildcache.inputs_key``); "" is no key and never pushed.
    """
    try:
        return bool(key) and key in (directory / PUSHED_FILE).read_text().split()
    except OSError:
        return False


def remember_cache_pushed(directory: Path, key: str) -> None:
    """Record that a build of ``key`` pushed the registry cache from ``directory``.

    Appended (concurrent builds of a scope each add a short line); cut to the newest
    ``MAX_PUSHED_KEYS`` when twice that. A failure only costs a later build a push.
    """
    if not key:
        return
    path = directory / PUSHED_FILE
    try:
        with path.open("a") as fh:
            fh.write(key + "\n")
        keys = path.read_text().split()
        if len(keys) > 2 * MAX_PUSHED_KEYS:
            fresh = path.with_name(f"{PUSHED_FILE}.{uuid.uuid4().hex[:8]}")
            fresh.write_text("\n".join(keys[-MAX_PUSHED_KEYS:]) + "\n")
            fresh.replace(path)
    except OSError as exc:
        log.warning("Could not record the pushed build cache in %s: %s", path, exc)


def collect_idle(root: Path, *, max_idle_seconds: float) -> list[str]:
    """Delete the scope dirs of ``root`` unused for longer than ``max_idle_seconds``.

    A dir some build holds is never deleted, however old its stamp. Failures are logged,
    never raised: a full disk is the operators' problem, not the build's.

    Returns:
        The names of the deleted scope dirs (with any an earlier pass left as trash).
    """
    trash = retire_idle(root, max_idle_seconds=max_idle_seconds)
    _remove(trash)
    return [t.name.removeprefix(TRASH_PREFIX).rsplit("-", 1)[0] for t in trash if "-" in t.name]


def retire_idle(root: Path, *, max_idle_seconds: float) -> list[Path]:
    """Rename the idle scope dirs of ``root`` out of the way; the dirs to delete.

    The rename is what takes them out of use (under their exclusive lock), so it is quick;
    the deletion, which takes as long as the dir is large, is left to the caller. The
    list includes dirs an earlier deletion left behind (``.trash-*``).
    """
    trash: list[Path] = []
    try:
        entries = list(root.iterdir()) if root.is_dir() else []
    except OSError as exc:
        log.warning("Could not list the build storage %s: %s", root, exc)
        return trash
    for entry in entries:
        if entry.name.startswith(TRASH_PREFIX):
            trash.append(entry)
        elif SCOPE_DIR.fullmatch(entry.name) and _idle(entry, max_idle_seconds):
            try:
                retired = _retire_if_free(root, entry, max_idle_seconds)
            except OSError as exc:
                log.warning("Could not delete the idle build storage %s: %s", entry, exc)
                continue
            trash += [retired] if retired else []
    return trash


def remove_in_background(paths: list[Path]) -> None:
    """Delete ``paths`` in a daemon thread (a process that ends first leaves them as trash)."""
    if paths:
        threading.Thread(
            target=_remove, args=(paths,), name="k8see-storage-gc", daemon=True
        ).start()


def _remove(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _retire_if_free(root: Path, directory: Path, max_idle_seconds: float) -> Path | None:
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:  # another process collected it first
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a build holds it
            return None
        # Checked again under the lock: a build may have ended (and touched it) meanwhile.
        if not same_file(fd, directory / LOCK_FILE) or not _idle(directory, max_idle_seconds):
            return None
        hours = _age_seconds(directory) / 3600
        trash = root / f"{TRASH_PREFIX}{directory.name}-{uuid.uuid4().hex[:8]}"
        directory.rename(trash)
    finally:
        os.close(fd)
    log.info("Deleting the build storage %s: unused for %.1f hours.", directory, hours)
    return trash


def _lock(directory: Path, mode: int) -> int:
    """An fd of ``directory``'s lock file, locked; retried while collection renames the dir."""
    fd = acquire(
        directory / LOCK_FILE, mode, prepare=lambda: directory.mkdir(parents=True, exist_ok=True)
    )
    assert fd is not None  # it waits: only LOCK_NB returns None
    return fd


def _idle(directory: Path, max_idle_seconds: float) -> bool:
    return _age_seconds(directory) > max_idle_seconds


def _age_seconds(directory: Path) -> float:
    """Seconds since the last build of the dir ended (the dir's own time if no stamp)."""
    stamp = directory / STAMP_FILE
    try:
        return time.time() - (stamp if stamp.exists() else directory).stat().st_mtime
    except FileNotFoundError:
        return 0.0
