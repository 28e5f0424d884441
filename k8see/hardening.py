"""Process hardening for the workers: other processes of the same user cannot look inside.

Why: a build runs a pull request's ``RUN`` steps. Under the platform chart's rootless
buildah (``build.pid_namespace`` off) a step can see the worker's processes, and it runs with
the worker's user id, so it could read ``/proc/<worker>/environ`` (the GitHub App key, the
registry password, the Redis URL come in through the environment), ``/proc/<worker>/mem``,
its open files and its root. Linux forbids that for a process that is not "dumpable"
(``prctl(PR_SET_DUMPABLE, 0)``): its ``/proc`` entries then belong to root, and only a process
with ``CAP_SYS_PTRACE`` in the worker's user namespace may inspect it. The flag survives
``fork`` (Celery's prefork children keep it) and is reset by ``execve`` (helm, buildah and
Trivy are ordinary processes, and buildah's environment is built from scratch anyway).

Side effects, on purpose: no core dumps of the worker, and attaching ``py-spy`` or ``gdb``
to it needs root (or ``CAP_SYS_PTRACE``) rather than the same user.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["deny_same_user_inspection"]

log = logging.getLogger(__name__)

#: From <linux/prctl.h>.
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def deny_same_user_inspection() -> bool:
    """Make this process non-dumpable; returns True when it is (False off Linux or on error).

    Never raises: a worker that cannot harden itself still runs, and says so in its log.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
        dumpable = int(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
    except (OSError, AttributeError) as exc:
        log.warning("Could not make the worker non-dumpable (%s); builds may read its env.", exc)
        return False
    return dumpable == 0
