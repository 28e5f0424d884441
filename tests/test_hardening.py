"""Workers are not dumpable: a process of the same user (a build's RUN step) cannot read them.

Covers: the mechanism, with real processes under a real unprivileged user (``setpriv``; needs
root, which the test machines and CI have): the same process's environment is readable by
another process of its user without ``deny_same_user_inspection`` and not with it. Then that
the real ``k8see worker`` command hardens its process before handing over to Celery, and that
every pool process does so too (``worker_process_init``), each read with ``PR_GET_DUMPABLE``
in the process itself. (Running the whole worker as an unprivileged user is not possible
here: this machine's Python lives under a root-only home.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ROOT

NOBODY = 65534
HARDENING = ROOT / "k8see" / "hardening.py"
SECRET = "k8see-test-secret-value"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"),
    reason="switching to an unprivileged user needs root and setpriv",
)


def as_nobody(args: list[str], *, env: dict[str, str]) -> list[str]:
    return [
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        "--inh-caps=-all", *args,
    ]  # fmt: skip


def read_environ(pid: int) -> subprocess.CompletedProcess[str]:
    """What an unprivileged process of the same user gets from ``/proc/<pid>/environ``."""
    code = f"print(open('/proc/{pid}/environ', 'rb').read().decode(errors='replace'))"
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    return subprocess.run(
        as_nobody([python, "-c", code], env={}),
        capture_output=True,
        text=True,
        timeout=30,
    )


@contextmanager
def started(args: list[str], env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        as_nobody(args, env=env),
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    home.chmod(0o777)
    tmp_path.chmod(0o777)
    return {**os.environ, "HOME": str(home), "K8SEE_TEST_SECRET": SECRET, **extra}


@needs_root
@pytest.mark.parametrize("hardened", [False, True])
def test_a_non_dumpable_process_hides_its_environment(tmp_path: Path, hardened: bool) -> None:
    # The unprivileged process may not be able to read the checkout or its virtualenv (a
    # 0700 clone directory): it runs the system's Python with hardening.py's own source,
    # which needs only the standard library.
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    usable = subprocess.run(as_nobody([python, "-c", "import ctypes"], env={}),
                            capture_output=True, timeout=30, env=_env(tmp_path))  # fmt: skip
    if usable.returncode != 0:
        pytest.skip("no Python here can run as an unprivileged user")
    code = (
        HARDENING.read_text()
        + "\nimport time\n"
        + f"print('hardened' if ({hardened} and deny_same_user_inspection()) else 'plain',"
        " flush=True)\n"
        "time.sleep(60)\n"
    )
    with started([python, "-c", code], _env(tmp_path), tmp_path) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == ("hardened" if hardened else "plain")
        seen = read_environ(proc.pid)
    if hardened:
        assert seen.returncode != 0 and "Permission denied" in seen.stderr
        assert SECRET not in seen.stdout
    else:
        assert seen.returncode == 0 and SECRET in seen.stdout


PROBE = (
    "import atexit, ctypes\n"
    "atexit.register(lambda: print('dumpable', ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)))\n"
)


def _dumpable_after(code: str, tmp_path: Path, redis_url: str) -> str:
    env = {**os.environ, "K8SEE_REDIS__URL": redis_url, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", PROBE + code], capture_output=True, text=True,
                         env=env, timeout=60, cwd=tmp_path)  # fmt: skip
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr


def test_k8see_worker_hardens_itself_before_celery_starts(tmp_path: Path, redis_url: str) -> None:
    # The real command, handed an argument Celery refuses, so it exits right after the hand-over
    code = (
        "import sys\n"
        "from k8see.cli import main\n"
        "sys.argv = ['k8see', 'worker', '--pool', 'build', '--no-such-celery-option']\n"
        "main()\n"
    )
    assert _dumpable_after(code, tmp_path, redis_url) == "dumpable 0"
    # And a process that does not start a worker stays as it was (the probe can tell)
    assert _dumpable_after("import k8see.cli\n", tmp_path, redis_url) == "dumpable 1"


def test_every_pool_process_hardens_itself(tmp_path: Path, redis_url: str) -> None:
    # However the worker was started (celery -A k8see.app worker too): worker_process_init
    code = (
        "import k8see.tasks\n"
        "from celery import signals\n"
        "signals.worker_process_init.send(sender=None)\n"
    )
    assert _dumpable_after(code, tmp_path, redis_url) == "dumpable 0"
