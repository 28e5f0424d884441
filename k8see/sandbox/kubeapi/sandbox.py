"""``KubeSandbox``: the sandbox API server as one object to start, point clients at, and stop.

It owns the store, the HTTP server thread and the controller thread, writes a kubeconfig for
real clients, and optionally loads and saves its state to a JSON file (``make demo`` keeps a
cluster across runs that way).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Any

import yaml

from k8see.sandbox.kubeapi.api import Api
from k8see.sandbox.kubeapi.controllers import Controllers, ControllerSettings
from k8see.sandbox.kubeapi.faults import Faults
from k8see.sandbox.kubeapi.resources import ResourceRegistry
from k8see.sandbox.kubeapi.server import Context, SandboxHTTPServer
from k8see.sandbox.kubeapi.store import Store

log = logging.getLogger(__name__)
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")
#: Namespaces every cluster starts with.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class KubeSandbox:
    """A Kubernetes API stand-in on 127.0.0.1 for kubectl, helm and the kubernetes client.

    Args:
        port: TCP port; 0 picks a free one (read ``url`` after ``start``).
        ready_delay_seconds: how long simulated pods take to become Ready.
        crash_image_pattern: regex; pods whose image matches never become Ready
            (CrashLoopBackOff), so ``helm --atomic`` failures can be tested.
        pull_fail_image_pattern: regex; matching images wait in ImagePullBackOff.
        state_file: JSON file to load at start and save at stop (and periodically).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        ready_delay_seconds: float = 0.2,
        crash_image_pattern: str | None = None,
        pull_fail_image_pattern: str | None = None,
        state_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.port = port
        self.state_file = Path(state_file) if state_file else None
        self.store = Store()
        self.registry = ResourceRegistry()
        self.api = Api(store=self.store, registry=self.registry)
        self.faults = Faults()
        self.token = secrets.token_hex(16)
        self.context = Context(api=self.api, faults=self.faults, token=self.token)
        self.controllers = Controllers(
            api=self.api,
            settings=ControllerSettings(
                ready_delay_seconds=ready_delay_seconds,
                crash_image_pattern=crash_image_pattern,
                pull_fail_image_pattern=pull_fail_image_pattern,
            ),
            on_tick=self._maybe_save,
        )
        self._httpd: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._saved_rv = -1

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the sandbox is not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> KubeSandbox:
        """Load state, listen, and start the controllers; returns once requests are served."""
        self._load()
        self._httpd = SandboxHTTPServer(("127.0.0.1", self.port), self.context)
        self.context.address = f"127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="kube-sandbox-http", daemon=True
        )
        self._thread.start()
        self.controllers.start()
        log.info("Sandbox Kubernetes API listening on %s.", self.url)
        return self

    def stop(self) -> None:
        """Stop serving (open watches end), stop the controllers, save the state if asked."""
        self.context.stopping.set()
        self.store.wake()
        self.controllers.stop()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._save()

    def __enter__(self) -> KubeSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def register_service_backend(
        self, namespace: str, service: str, port: int | str, url: str
    ) -> None:
        """Forward the service proxy for ``service:port`` in ``namespace`` to ``url``."""
        self.context.backends[(namespace, service, str(port))] = url

    def use_pod_runtime(self, image_prefix: str) -> None:
        """Pods whose image starts with ``image_prefix`` are run for real by a pod runtime,
        which reports their readiness with ``report_pod``."""
        self.controllers.kubelet.runtime_prefix = image_prefix

    def report_pod(
        self,
        namespace: str,
        name: str,
        *,
        ready: bool,
        message: str = "",
        exit_code: int | None = None,
    ) -> None:
        """The pod runtime's verdict on a real container (its readiness probe, or its exit)."""
        from k8see.sandbox.kubeapi.pods import Verdict

        key = (namespace, name)
        verdict = Verdict(ready=ready, message=message, exit_code=exit_code)
        if self.controllers.kubelet.verdicts.get(key) != verdict:
            self.controllers.kubelet.verdicts[key] = verdict
            self.controllers.api.store.wake()

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> Path:
        """Write a kubeconfig with context ``sandbox`` (current) and a bearer-token user."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "sandbox", "cluster": {"server": self.url}}],
            "users": [{"name": "sandbox", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "sandbox",
                    "context": {"cluster": "sandbox", "user": "sandbox", "namespace": "default"},
                }
            ],
            "current-context": "sandbox",
            "preferences": {},
        }
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(config, sort_keys=False))
        target.chmod(0o600)
        return target

    # -- state ---------------------------------------------------------------------------

    def _load(self) -> None:
        if self.state_file and self.state_file.exists():
            data: dict[str, Any] = json.loads(self.state_file.read_text())
            self.store.load(data)
            for crd in self.store.list(CRDS):
                self.registry.register_crd(crd)
            self._saved_rv = self.store.resource_version
            log.info("Sandbox state loaded from %s.", self.state_file)
        ns_rt = self.registry.by_key(("", "namespaces"))
        assert ns_rt is not None
        for name in SYSTEM_NAMESPACES:
            if self.store.get(ns_rt.key, "", name) is None:
                self.api.create(ns_rt, "", {"metadata": {"name": name}})
        if self.store.get(("", "services"), "default", "kubernetes") is None:
            svc_rt = self.registry.by_key(("", "services"))
            assert svc_rt is not None
            self.api.create(
                svc_rt,
                "default",
                {
                    "metadata": {
                        "name": "kubernetes",
                        "labels": {"component": "apiserver", "provider": "kubernetes"},
                    },
                    "spec": {
                        "ports": [{"name": "https", "port": 443, "targetPort": 6443}],
                        "clusterIP": "10.96.0.1",
                    },
                },
            )

        ep_rt = self.registry.by_key(("", "endpoints"))
        if ep_rt is not None and self.store.get(ep_rt.key, "default", "kubernetes") is None:
            # NetworkPolicies allow egress to the API by these addresses (reference §3.4).
            subset = {
                "addresses": [{"ip": "10.0.0.10"}],
                "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
            }
            self.api.create(
                ep_rt, "default", {"metadata": {"name": "kubernetes"}, "subsets": [subset]}
            )

    def _maybe_save(self) -> None:
        if self.state_file and self.store.resource_version != self._saved_rv:
            self._save()

    def _save(self) -> None:
        if not self.state_file:
            return
        data = self.store.dump()
        tmp = self.state_file.with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data))
        tmp.replace(self.state_file)
        self._saved_rv = int(data["resourceVersion"])
