"""Lock files that other processes may remove or move: ``flock``, then check it is still the
file at the path.

A process that waits for an ``flock`` can wake up holding the lock of a file that was
unlinked (source trees remove their lock on release) or whose directory was renamed away
(build storage collection) meanwhile; its lock then guards nothing. ``acquire`` opens,
locks and compares the open file with the one at the path, and starts again when they
differ.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["acquire", "same_file"]


def acquire(path: Path, mode: int, *, prepare: Callable[[], None] | None = None) -> int | None:
    """An fd of ``path`` (created 0600) locked with ``flock`` ``mode``.

    Args:
        path: The lock file.
        mode: ``fcntl.LOCK_SH`` or ``LOCK_EX``, with ``LOCK_NB`` not to wait.
        prepare: Runs before each attempt (to recreate a directory that was moved away).

    Returns:
        The locked fd (the caller closes it), or None when ``LOCK_NB`` was given and another
        process holds the lock.
    """
    while True:
        if prepare is not None:
            prepare()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            os.close(fd)
            return None
        if same_file(fd, path):
            return fd
        os.close(fd)


def same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is open on the file that ``path`` names now."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
