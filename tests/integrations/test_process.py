"""run_tool: exit status and tail, live redacted lines, timeout and cancellation kill the
whole process group, a missing binary is ToolMissing with a hint, argv is never a shell, and
the tool dies with the process that started it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k8see.errors import BuildFailed, IntegrationError, Superseded, ToolMissing
from k8see.integrations.process import run_tool


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _dies(pid: int) -> bool:
    """The process is gone within a few seconds: SIGKILL is delivered asynchronously, so on a
    loaded machine the process may still be scheduled for a moment after kill() returned."""
    for _ in range(100):
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _wait_for_file(path: Path) -> str:
    for _ in range(200):
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} was never written")


def test_exit_status_tail_and_live_lines_are_redacted() -> None:
    # Given a tool that prints a secret among other lines and fails
    secret = "ghp_" + "A1b2C3d4" * 4 + "XXXX"
    code = f"import sys\nfor i in range(60): print('line', i)\nprint('token={secret}')\nsys.exit(3)"
    seen: list[str] = []
    # When it runs with the secret to redact
    result = run_tool(
        [sys.executable, "-c", code], timeout_seconds=30, on_line=seen.append, redact=[secret]
    )
    # Then the exit status is reported, not raised, and no line carries the secret
    assert result.returncode == 3
    assert not result.ok
    assert seen[0] == "line 0"
    assert seen[-1] == "token=***"
    assert len(seen) == 61
    assert len(result.tail) == 50
    assert result.tail[-1] == "token=***"
    assert all(secret not in line for line in [*seen, *result.tail, *result.argv])
    assert result.tail_text(2) == "line 59\ntoken=***"


def test_argv_is_not_parsed_by_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = run_tool(["echo", f"hello; touch {marker}"], timeout_seconds=10)
    assert result.ok
    assert result.tail == (f"hello; touch {marker}",)
    assert not marker.exists()


def test_env_replaces_the_environment_and_cwd_is_used(tmp_path: Path) -> None:
    code = "import os; print(sorted(k for k in os.environ if k != 'LC_CTYPE')); print(os.getcwd())"
    result = run_tool(
        [sys.executable, "-c", code], timeout_seconds=10, env={"ONLY": "1"}, cwd=tmp_path
    )
    assert result.tail == ("['ONLY']", str(tmp_path))


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    # Given a tool that starts a child which would outlive it, then hangs
    pidfile = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen(['sleep', '300'])\nopen({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "print('started', flush=True)\ntime.sleep(300)"
    )
    # When the limit passes
    with pytest.raises(BuildFailed) as info:
        run_tool(
            [sys.executable, "-c", code],
            timeout_seconds=1.5,
            timeout_error=BuildFailed,
            timeout_hint="Raise build.timeout_seconds.",
        )
    # Then a clear error says so, and the child is gone too
    assert "did not finish within 1.5s" in info.value.message
    assert info.value.hint == "Raise build.timeout_seconds."
    assert _dies(int(_wait_for_file(pidfile)))


def test_default_timeout_error_is_an_integration_error() -> None:
    with pytest.raises(IntegrationError, match="sleep did not finish"):
        run_tool(["sleep", "30"], timeout_seconds=0.5)


def test_should_stop_cancels_and_kills_the_tool(tmp_path: Path) -> None:
    # Given a long tool whose run becomes superseded once it has printed a line
    pidfile = tmp_path / "child.pid"
    code = (
        "import subprocess, time\n"
        f"p = subprocess.Popen(['sleep', '300'])\nopen({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "print('working', flush=True)\ntime.sleep(300)"
    )
    lines: list[str] = []
    with pytest.raises(Superseded, match="superseded"):
        run_tool(
            [sys.executable, "-c", code],
            timeout_seconds=120,
            on_line=lines.append,
            should_stop=lambda: "working" in lines,
        )
    assert lines == ["working"]
    assert _dies(int(_wait_for_file(pidfile)))


def test_a_missing_binary_is_tool_missing_with_an_install_hint() -> None:
    with pytest.raises(ToolMissing) as info:
        run_tool(["buildah"], timeout_seconds=5, env={"PATH": "/nonexistent"})
    assert "'buildah' is not installed" in info.value.message
    assert "apt-get install buildah" in (info.value.hint or "")
    with pytest.raises(ToolMissing) as info:
        run_tool(["no-such-tool-k8see"], timeout_seconds=5)
    assert "make bootstrap" in (info.value.hint or "")


def test_the_tool_dies_with_the_worker_that_started_it(tmp_path: Path) -> None:
    # Given a worker-like process running a long tool through run_tool (helm upgrade --wait)
    toolpid = tmp_path / "tool.pid"
    tool = f"import os, time\nopen({str(toolpid)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)"
    worker = (
        "import sys\n"
        "from k8see.integrations.process import run_tool\n"
        f"run_tool([sys.executable, '-c', {tool!r}], timeout_seconds=300)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", worker])
    try:
        pid = int(_wait_for_file(toolpid))
        assert _alive(pid)
        # When the worker is SIGKILLed (an OOM kill, the fault drill's kill)
        proc.kill()
        proc.wait(timeout=30)
        # Then the tool does not live on as an orphan
        assert _dies(pid)
    finally:
        proc.kill()
