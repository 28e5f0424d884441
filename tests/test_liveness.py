"""Heartbeat files (k8see.liveness): the liveness signal of a worker and of beat.

A real ``k8see worker`` and a real ``k8see beat`` against a real Redis touch their heartbeat
file from their main loop; the platform chart's own probe command (rendered by helm, run by
sh) passes on it. Stopping the main process (SIGSTOP: a hung loop, while the pool's children
and the process itself still exist) leaves the file stale and the same probe fails; the
process resumed, the heartbeat comes back.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, require_tool

CHART = ROOT / "charts" / "k8see-platform"
#: Seconds between touches in these tests, and the probe's window for them.
INTERVAL = 0.5
MAX_AGE = 3


def k8see() -> str:
    return str(Path(sys.executable).with_name("k8see"))


@contextlib.contextmanager
def running(argv: list[str], redis_url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "K8SEE_REDIS__URL": redis_url}
    with log.open("wb") as out:
        proc = subprocess.Popen([k8see(), *argv], env=env, cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def probe_command(component: str, heartbeat: Path) -> list[str]:
    """The chart's liveness probe of ``component`` (``worker-default`` or ``beat``), reading
    ``heartbeat`` with a window of MAX_AGE seconds instead of the chart's default."""
    out = subprocess.run([require_tool("helm"), "template", "k8see", str(CHART), "-f",
                          str(CHART / "ci" / "default-values.yaml")], capture_output=True,
                         text=True, timeout=120, check=True)  # fmt: skip
    name = f"k8see-k8see-platform-{component}"
    (deployment,) = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "Deployment"
                     and d["metadata"]["name"] == name]  # fmt: skip
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command: list[str] = container["livenessProbe"]["exec"]["command"]
    assert "/tmp/k8see-heartbeat" in command[-1] and "-lt 120" in command[-1]
    script = command[-1].replace("/tmp/k8see-heartbeat", str(heartbeat))
    return [*command[:-1], re.sub(r"-lt \d+", f"-lt {MAX_AGE}", script)]


def probe_passes(command: list[str]) -> bool:
    return subprocess.run(command, capture_output=True, timeout=10).returncode == 0


def wait_for(path: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no heartbeat file; the process said:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def touches(path: Path, seconds: float) -> bool:
    """Whether the file's modification time moves within ``seconds``."""
    before = path.stat().st_mtime_ns
    time.sleep(seconds)
    return path.stat().st_mtime_ns != before


def check_stale_when_stopped(
    proc: subprocess.Popen[bytes], heartbeat: Path, probe: list[str]
) -> None:
    assert touches(heartbeat, 2.5), "the running process does not touch its heartbeat file"
    assert probe_passes(probe)
    # A hung main loop: the process is still there, its loop does not turn.
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(0.5)  # a touch under way lands
    assert not touches(heartbeat, MAX_AGE + 1.5)
    assert not probe_passes(probe), "the probe passes on a stale heartbeat"
    os.kill(proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 20
    while not probe_passes(probe):
        assert time.monotonic() < deadline, "the heartbeat did not come back after SIGCONT"
        time.sleep(0.3)


def test_a_worker_touches_its_heartbeat_until_its_main_loop_stops(
    redis_url: str, tmp_path: Path
) -> None:
    heartbeat, log = tmp_path / "heartbeat", tmp_path / "worker.log"
    probe = probe_command("worker-default", heartbeat)
    argv = ["worker", "--pool", "maintenance", "--concurrency", "1", "--heartbeat-file",
            str(heartbeat), "--heartbeat-interval", str(INTERVAL)]  # fmt: skip
    with running(argv, redis_url, log) as proc:
        assert not probe_passes(probe)  # no file yet: not alive
        wait_for(heartbeat, proc, log)
        check_stale_when_stopped(proc, heartbeat, probe)


def test_beat_touches_its_heartbeat_until_its_loop_stops(redis_url: str, tmp_path: Path) -> None:
    heartbeat, log = tmp_path / "heartbeat", tmp_path / "beat.log"
    probe = probe_command("beat", heartbeat)
    argv = ["beat", "--heartbeat-file", str(heartbeat), "--heartbeat-interval", str(INTERVAL),
            "-s", str(tmp_path / "schedule")]  # fmt: skip
    with running(argv, redis_url, log) as proc:
        wait_for(heartbeat, proc, log)
        check_stale_when_stopped(proc, heartbeat, probe)
