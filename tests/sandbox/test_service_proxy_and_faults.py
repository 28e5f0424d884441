"""Sandbox-only plumbing: the service proxy to registered backends, and fault injection.

Covers: GET and POST through ``services/{name}:{port}/proxy/{path}`` (also the ``{name}`` and
``http:{name}:{port}`` forms) reaching a real local HTTP server with path, query and body;
503 ``no endpoints available`` without a backend; 404 for an unknown service; a sequence of
injected 500 and 429 answers seen by the kubernetes client with the right reason (and
Retry-After on 429) and counted; an error rate of 1 failing every request until reset;
added latency leaving answers correct.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

pytestmark = [pytest.mark.timeout(60), pytest.mark.sandbox_only]


class Echo(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps(
            {"method": self.command, "path": self.path, "body": self.rfile.read(length).decode()}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def proxy(
    api: client.CoreV1Api, method: str, ns: str, ref: str, path: str, body: Any = None
) -> Any:
    url = f"/api/v1/namespaces/{ns}/services/{ref}/proxy/{path}"
    response = api.api_client.call_api(
        url,
        method,
        body=body,
        header_params={"Accept": "*/*", "Content-Type": "application/json"},
        auth_settings=["BearerToken"],
        _preload_content=False,
    )
    return response.status, response.data.decode()


def make_service(core: client.CoreV1Api, ns: str, name: str) -> None:
    spec = client.V1ServiceSpec(
        selector={"app": name}, ports=[client.V1ServicePort(name="http", port=80)]
    )
    core.create_namespaced_service(
        ns, client.V1Service(metadata=client.V1ObjectMeta(name=name), spec=spec)
    )


def test_proxy_forwards_to_registered_backend(
    kube_sandbox: Any, kube_api_client: Any, kube_namespace: str, echo_url: str
) -> None:
    core, ns = client.CoreV1Api(kube_api_client), kube_namespace
    make_service(core, ns, "web")
    kube_sandbox.register_service_backend(ns, "web", 80, echo_url)
    for ref in ("web:80", "web", "http:web:80"):
        status, text = proxy(core, "GET", ns, ref, "healthz?deep=1")
        assert status == 200 and json.loads(text) == {
            "method": "GET",
            "path": "/healthz?deep=1",
            "body": "",
        }
    status, text = proxy(core, "POST", ns, "web:80", "items", body={"a": 1})
    assert json.loads(text)["method"] == "POST" and json.loads(json.loads(text)["body"]) == {"a": 1}


def test_proxy_without_backend_is_503_and_unknown_service_404(
    kube_api_client: Any, kube_namespace: str
) -> None:
    core, ns = client.CoreV1Api(kube_api_client), kube_namespace
    make_service(core, ns, "lonely")
    with pytest.raises(client.ApiException) as unavailable:
        proxy(core, "GET", ns, "lonely:80", "")
    assert unavailable.value.status == 503
    assert (
        json.loads(unavailable.value.body)["message"]
        == 'no endpoints available for service "lonely:80"'
    )
    with pytest.raises(client.ApiException) as missing:
        proxy(core, "GET", ns, "nobody:80", "")
    assert missing.value.status == 404


def test_injected_sequence_is_seen_and_counted(
    kube_sandbox: Any, kube_api_client: Any, kube_namespace: str
) -> None:
    core = client.CoreV1Api(kube_api_client)
    before = dict(kube_sandbox.faults.injected_by_status)
    total = kube_sandbox.faults.injected
    try:
        # A 500 reaches the client as an ApiException with the Status reason.
        kube_sandbox.faults.sequence = [500]
        with pytest.raises(client.ApiException) as first:
            core.list_namespaced_config_map(kube_namespace)
        assert (first.value.status, json.loads(first.value.body)["reason"]) == (
            500,
            "InternalError",
        )
        # A 429 carries Retry-After and a TooManyRequests Status.
        kube_sandbox.faults.sequence = [429]
        url = f"{kube_sandbox.url}/api/v1/namespaces/{kube_namespace}/configmaps"
        with pytest.raises(urllib.error.HTTPError) as limited:
            urllib.request.urlopen(url, timeout=10)
        assert limited.value.code == 429 and limited.value.headers["Retry-After"] == "1"
        assert json.loads(limited.value.read())["reason"] == "TooManyRequests"
        # The kubernetes client (urllib3) honours Retry-After on 429 and succeeds on retry.
        kube_sandbox.faults.sequence = [429, None]
        assert core.list_namespaced_config_map(kube_namespace).items == []
    finally:
        kube_sandbox.faults.sequence = []
    assert kube_sandbox.faults.injected - total == 3
    assert kube_sandbox.faults.injected_by_status[429] - before.get(429, 0) == 2


def test_error_rate_and_latency(
    kube_sandbox: Any, kube_api_client: Any, kube_namespace: str
) -> None:
    core = client.CoreV1Api(kube_api_client)
    kube_sandbox.faults.error_rate = 1.0
    try:
        for _ in range(3):
            with pytest.raises(client.ApiException) as failed:
                core.list_namespaced_config_map(kube_namespace)
            assert failed.value.status in (500, 429)
    finally:
        kube_sandbox.faults.error_rate = 0.0
    kube_sandbox.faults.latency_seconds = 0.05
    try:
        assert core.list_namespaced_config_map(kube_namespace).items == []
    finally:
        kube_sandbox.faults.latency_seconds = 0.0
