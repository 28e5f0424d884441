"""The sandbox as a process: ``python -m k8see.sandbox.kubeapi`` (what ``k8see sandbox apiserver``
runs), and its state file.

Covers: ``--port 0 --kubeconfig PATH`` printing ``listening on URL`` and writing a kubeconfig
kubectl can use; SIGTERM ending it with exit code 0; ``--state-file`` keeping objects across a
restart; a wrong bearer token answered 401; discovery answering legacy JSON to the aggregated
discovery Accept header kubectl sends; /openapi/v2 as protobuf and /openapi/v3 advertising
fieldValidation.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_tool

pytestmark = [pytest.mark.timeout(60), pytest.mark.sandbox_only]


def start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "k8see.sandbox.kubeapi",
            "--port",
            "0",
            "--kubeconfig",
            str(tmp_path / "kc"),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on http://127.0.0.1:"), line + (
        proc.stderr.read() if proc.stderr else ""
    )
    return proc, line.split()[-1]


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=20)


def kubectl(tmp_path: Path, *args: str) -> str:
    env = {"KUBECONFIG": str(tmp_path / "kc"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [require_tool("kubectl"), *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_serves_until_sigterm_and_keeps_state(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    proc, url = start(tmp_path, "--state-file", str(state))
    try:
        config = yaml.safe_load((tmp_path / "kc").read_text())
        assert (
            config["current-context"] == "sandbox"
            and config["clusters"][0]["cluster"]["server"] == url
        )
        kubectl(tmp_path, "create", "configmap", "kept", "-n", "default", "--from-literal=a=b")
    finally:
        assert stop(proc) == 0
    proc, _ = start(tmp_path, "--state-file", str(state))
    try:
        assert json.loads(
            kubectl(tmp_path, "get", "configmap", "kept", "-n", "default", "-o", "json")
        )["data"] == {"a": "b"}
    finally:
        assert stop(proc) == 0


def get(url: str, *, accept: str = "application/json", token: str | None = None) -> Any:
    headers = {"Accept": accept}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)


def test_protocol_details(kube_sandbox: Any) -> None:
    url = kube_sandbox.url
    with pytest.raises(urllib.error.HTTPError) as denied:
        get(f"{url}/api/v1/namespaces", token="wrong")
    assert denied.value.code == 401
    assert get(f"{url}/api/v1/namespaces", token=kube_sandbox.token).status == 200
    aggregated = (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
    )
    response = get(f"{url}/apis", accept=aggregated)
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.read())["kind"] == "APIGroupList"
    proto = get(
        f"{url}/openapi/v2", accept="application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
    )
    assert proto.read().startswith(b"\n\x032.0")
    root = json.loads(get(f"{url}/openapi/v3").read())
    doc = json.loads(get(url + root["paths"]["apis/apps/v1"]["serverRelativeURL"]).read())
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
