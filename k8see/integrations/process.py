"""Run an external binary (buildah, trivy, helm) the way every integration needs it.

Why one function: each tool run needs the same four guarantees, and getting them right once is
cheaper than getting them almost right in every caller.

* argv only, never a shell, so no value from a pull request is ever parsed by ``sh``;
* the tool runs in its own process group, which is killed as a whole on timeout or when the
  run is cancelled (``should_stop``), so buildah's children and qemu do not linger;
* output is read line by line while the tool runs (one thread, ``selectors``), redacted of the
  given secret values, and handed to ``on_line`` for live logs; the last lines are kept for
  error messages;
* a missing binary is a ``ToolMissing`` with the command that installs it;
* the tool dies with the worker process that started it (util-linux ``setpriv --pdeathsig``):
  a pool process killed mid-``helm upgrade --atomic`` (OOM, SIGKILL) must not leave that helm
  running, or its rollback could undo the release the redelivered task is deploying.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from k8see.errors import IntegrationError, K8seeError, Superseded, ToolMissing

__all__ = ["ToolResult", "redact_text", "run_tool"]

#: How often the loop checks ``should_stop`` and the deadline while the tool is quiet.
POLL_SECONDS = 0.2
#: After SIGTERM to the process group, how long before SIGKILL.
KILL_GRACE_SECONDS = 5.0
#: One line of tool output longer than this is cut (progress bars, base64 blobs).
MAX_LINE_CHARS = 4000
REDACTED = "***"

#: A prefix that makes the tool get SIGKILL when the thread that started it exits (the kernel's
#: parent-death signal, kept across ``execve``); empty where util-linux's setpriv is missing.
_SETPRIV = shutil.which("setpriv")
_DIE_WITH_PARENT: tuple[str, ...] = (_SETPRIV, "--pdeathsig", "KILL", "--") if _SETPRIV else ()

#: How to get each tool we call; anything else gets the generic hint.
INSTALL_HINTS = {
    "buildah": "Run `make bootstrap`, or `apt-get install buildah` on the worker.",
    "trivy": "Run `make bootstrap`: it puts trivy into .tools/bin.",
    "helm": "Run `make bootstrap`: it puts helm into .tools/bin.",
    "kubectl": "Run `make bootstrap`: it puts kubectl into .tools/bin.",
    "docker": "Run `make bootstrap`, or `apt-get install docker.io` on the worker.",
}


@dataclass(frozen=True)
class ToolResult:
    """What a finished tool run left behind.

    Attributes:
        argv: The command as run, with secret values redacted.
        returncode: The exit status (negative: killed by that signal).
        tail: The last lines of combined stdout/stderr, redacted.
        seconds: Wall time of the run.
    """

    argv: tuple[str, ...]
    returncode: int
    tail: tuple[str, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail_text(self, lines: int = 20) -> str:
        """The last ``lines`` lines as one string, for a hint or a log."""
        return "\n".join(self.tail[-lines:])


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret value replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def run_tool(
    argv: Sequence[str],
    *,
    timeout_seconds: float,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_line: Callable[[str], None] | None = None,
    redact: Iterable[str] = (),
    tail_lines: int = 50,
    timeout_error: type[K8seeError] = IntegrationError,
    timeout_hint: str | None = None,
) -> ToolResult:
    """Run ``argv`` to completion and return its exit status and output tail.

    A non-zero exit is not an error here: callers know what it means for their tool (a
    failed Dockerfile is the user's problem, a failed push the platform's).

    Args:
        argv: The command; ``argv[0]`` is looked up on ``PATH`` (``env``'s, if given).
        timeout_seconds: Wall-time limit; the whole process group is killed when it passes.
        env: The complete environment of the tool (not merged with ours), so callers decide
            exactly what an untrusted build can see. ``None`` inherits this process's.
        cwd: Working directory of the tool.
        should_stop: Polled about every 0.2 s; when it returns True the tool is killed.
        on_line: Receives each output line, already redacted, as it arrives.
        redact: Secret values that must never appear in lines, tails or error messages.
        tail_lines: How many last lines to keep.
        timeout_error: The error class raised on timeout (e.g. ``BuildFailed`` when the
            user's build is what took too long).
        timeout_hint: The hint of that error.

    Returns:
        The finished run.

    Raises:
        ToolMissing: ``argv[0]`` is not installed.
        Superseded: ``should_stop`` returned True; the tool was killed.
        K8seeError: ``timeout_error`` when the limit passed; the tool was killed.
    """
    secrets = tuple(s for s in redact if s)
    shown = tuple(redact_text(a, secrets) for a in argv)
    binary = _resolve(argv[0], env)
    started = time.monotonic()
    deadline = started + timeout_seconds
    tail: deque[str] = deque(maxlen=tail_lines)

    def emit(raw: bytes) -> None:
        line = redact_text(raw.decode("utf-8", "replace").rstrip("\r"), secrets)
        line = line[:MAX_LINE_CHARS]
        tail.append(line)
        if on_line is not None:
            on_line(line)

    proc = subprocess.Popen(
        [*_DIE_WITH_PARENT, binary, *argv[1:]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env) if env is not None else None,
        cwd=str(cwd) if cwd is not None else None,
        start_new_session=True,  # its own process group: we can kill it and its children
    )
    assert proc.stdout is not None
    stopped_by: str | None = None
    try:
        stopped_by = _pump(proc, emit=emit, deadline=deadline, should_stop=should_stop)
    finally:
        if proc.poll() is None:
            _kill_group(proc)
        proc.stdout.close()
    seconds = time.monotonic() - started
    name = Path(argv[0]).name
    if stopped_by == "stop":
        raise Superseded(
            f"{name} was stopped after {seconds:.1f}s because the run was superseded or closed.",
        )
    if stopped_by == "timeout":
        raise timeout_error(
            f"{name} did not finish within {timeout_seconds:g}s and was stopped.",
            hint=timeout_hint,
        )
    return ToolResult(argv=shown, returncode=proc.returncode, tail=tuple(tail), seconds=seconds)


def _resolve(name: str, env: Mapping[str, str] | None) -> str:
    path = env.get("PATH") if env is not None else None
    found = shutil.which(name, path=path)
    if found is None:
        base = Path(name).name
        raise ToolMissing(
            f"The tool {base!r} is not installed on this worker.",
            hint=INSTALL_HINTS.get(base, "Run `make bootstrap` to install the project's tools."),
        )
    return found


def _pump(
    proc: subprocess.Popen[bytes],
    *,
    emit: Callable[[bytes], None],
    deadline: float,
    should_stop: Callable[[], bool] | None,
) -> str | None:
    """Forward output until the tool exits; return "stop"/"timeout" if we must kill it."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    pending = b""
    eof = False
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while not eof:
            if should_stop is not None and should_stop():
                return "stop"
            if time.monotonic() >= deadline:
                return "timeout"
            if not sel.select(timeout=POLL_SECONDS):
                continue
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                eof = True
            pending += chunk
            *lines, pending = pending.replace(b"\r\n", b"\n").split(b"\n")
            for raw in lines:
                emit(raw)
        if pending:
            emit(pending)
    # Output closed: the tool (or its last child holding the pipe) is done; reap it, still
    # honouring the deadline and cancellation in case it lingers.
    while proc.poll() is None:
        if should_stop is not None and should_stop():
            return "stop"
        if time.monotonic() >= deadline:
            return "timeout"
        try:
            proc.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            continue
    return None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the tool's process group, then SIGKILL whatever is left in it.

    The group outlives its leader while children remain, so the final SIGKILL is sent even
    when the leader exited on SIGTERM: a build's qemu or RUN children must not linger.
    """
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_GRACE_SECONDS)
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
