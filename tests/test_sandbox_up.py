"""`k8see sandbox up` starts the stand-ins and a real Redis and registry, prints the
environment that points k8see at them, and stops everything on SIGTERM.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests

from tests.conftest import require_tool

pytestmark = pytest.mark.timeout(120)


def _read_env(proc: subprocess.Popen[str], deadline: float) -> dict[str, str]:
    env: dict[str, str] = {}
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("export "):
            key, _, value = line[len("export ") :].strip().partition("=")
            env[key] = shlex.split(value)[0]
        if line.startswith("# also written to"):
            return env
    raise AssertionError(f"sandbox up printed no environment: {env}")


def _python_after_sourcing(env_file: Path, code: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by Python in a shell that sourced ``env_file`` (no K8SEE_* inherited)."""
    return subprocess.run(
        ["bash", "-c", f'source "{env_file}" && "{sys.executable}" -c "{code}"'],
        env={k: v for k, v in os.environ.items() if not k.startswith("K8SEE_")},
        capture_output=True,
        text=True,
    )


def test_sandbox_up_serves_until_terminated(tmp_path: Path) -> None:
    for tool in ("redis-server", "docker-registry", "kube-apiserver", "kubelet"):
        require_tool(tool)
    proc = subprocess.Popen(
        [sys.executable, "-m", "k8see", "sandbox", "up", "--dir", str(tmp_path / "sb")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        env = _read_env(proc, time.monotonic() + 120)
        # Then every printed address answers with the real protocol
        assert redis.Redis.from_url(env["K8SEE_REDIS__URL"]).ping()
        from kubernetes import client, config

        # The cluster answers, over TLS, to the identity the kubeconfig holds
        api = config.new_client_from_config(env["K8SEE_DEPLOY__KUBECONFIG"])
        assert client.VersionApi(api).get_code().major == "1"
        api.close()
        headers = {"Authorization": f"Bearer {env['K8SEE_GITHUB__TOKEN']}"}
        assert requests.get(
            f"{env['K8SEE_GITHUB__API_URL']}/rate_limit", headers=headers, timeout=5
        ).status_code in (200, 404)
        registry = env["K8SEE_REGISTRY__HOST"]
        assert requests.get(f"http://{registry}/v2/", timeout=5).status_code == 200
        assert (tmp_path / "sb" / "env").read_text().count("export ") == len(env)
        # The env file, sourced by a shell, gives k8see every value intact (the namespace
        # bindings are JSON, which an unquoted export used to strip of its quotes)
        assert any(v.startswith("{") for v in env.values())
        env_file = tmp_path / "sb" / "env"
        sourced = _python_after_sourcing(
            env_file, "import json, os; print(json.dumps(dict(os.environ)))"
        )
        assert sourced.returncode == 0, sourced.stderr
        seen = json.loads(sourced.stdout)
        assert {k: seen.get(k) for k in env} == env
        settings = _python_after_sourcing(
            env_file, "from k8see.settings import load_settings; load_settings()"
        )
        assert settings.returncode == 0, settings.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    # And what it started is gone
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(env["K8SEE_REDIS__URL"], socket_connect_timeout=1).ping()
