"""The sandbox's pod runtime: really run the app image of a preview, with buildah.

The sandbox API server simulates pods. For the demo and the end-to-end tests the preview should
be the real built image answering real HTTP, so this runtime watches the sandbox over the
Kubernetes API (the same protocol a kubelet uses), and for each pod whose first container comes
from the local registry it pulls that image by digest with buildah (no daemon needed) and runs
its entrypoint from the mounted root filesystem, as the pod's user, with the pod's environment
(its ConfigMap ``envFrom`` included) and a free host port passed as ``PORT``. It then
registers that port as the backend of the Services selecting the pod, so the API server's
service proxy, the deploy stage's health check and a person's browser all reach the real app.

Each container runs in a private mount namespace with its root filesystem read-only when the
pod asks (``readOnlyRootFilesystem``), its emptyDir volumes writable, as the pod's user. What it
does not do, and says so: network, PID and user namespaces (the app shares the host's loopback,
which is how the service proxy reaches it), capabilities beyond dropping root, and the images
of database operators, which stay simulated.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from k8see.sandbox.kubeapi import KubeSandbox
from k8see.sandbox.platform import free_port, tool

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
PULL_RETRY_SECONDS = 10.0


@dataclass
class RunningPod:
    namespace: str
    name: str
    port: int
    container: str
    process: subprocess.Popen[bytes]
    labels: dict[str, str] = field(default_factory=dict)
    probe_path: str | None = None


#: Runs one container the way a kubelet would, without a daemon: in a private mount namespace,
#: the image's root filesystem bind-mounted (read-only when the container asks), its emptyDir
#: volumes mounted writable, /proc and a minimal /dev, then chroot to the pod's user.
#: Arguments: rootfs, read-only flag, uid:gid, host:path volume pairs, "--", the command.
_CONTAINER_SCRIPT = r"""
set -e
root="$1"; read_only="$2"; userspec="$3"; shift 3
volumes=""
while [ "$1" != "--" ]; do volumes="$volumes $1"; shift; done
shift
mkdir -p "$root/proc" "$root/dev" "$root/tmp"
for volume in $volumes; do mkdir -p "$root${volume#*:}"; done
mount --bind "$root" "$root"
if [ "$read_only" = 1 ]; then mount -o remount,bind,ro "$root"; fi
for volume in $volumes; do mount --bind "${volume%%:*}" "$root${volume#*:}"; done
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=755 tmpfs "$root/dev"
for node in null zero random urandom tty; do
  touch "$root/dev/$node" && mount --bind "/dev/$node" "$root/dev/$node"
done
exec chroot --userspec="$userspec" "$root" "$@"
"""


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command and args; unknown references stay."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), text)


class PodRuntime:
    """Runs local-registry images of sandbox pods; ``start()``/``stop()``."""

    def __init__(self, *, kube: KubeSandbox, registry_host: str, workdir: Path):
        self.kube = kube
        self.registry_host = registry_host
        self.workdir = workdir
        self.pods: dict[tuple[str, str], RunningPod] = {}
        self._failed: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pod-runtime", daemon=True)
        self._session = requests.Session()

    @property
    def _buildah(self) -> list[str]:
        return [
            tool("buildah"),
            "--root",
            str(self.workdir / "storage"),
            "--runroot",
            str(self.workdir / "run"),
            "--storage-driver",
            "vfs",
        ]

    def start(self) -> PodRuntime:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # From now on the sandbox waits for this runtime's verdict on these pods' readiness.
        self.kube.use_pod_runtime(f"{self.registry_host}/")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for pod in list(self.pods.values()):
            self._kill(pod)

    def address(self, namespace: str) -> str | None:
        """The local URL where the app of ``namespace`` answers, if it runs."""
        for pod in self.pods.values():
            if pod.namespace == namespace and pod.process.poll() is None:
                return f"http://127.0.0.1:{pod.port}"
        return None

    def _get(self, path: str) -> dict[str, Any]:
        resp = self._session.get(f"{self.kube.url}{path}", timeout=10)
        resp.raise_for_status()
        data = resp.json()
        return data if isinstance(data, dict) else {}

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self._sync()
            except (requests.RequestException, OSError, subprocess.SubprocessError):
                log.debug("Pod runtime sync failed; retrying.", exc_info=True)

    def _sync(self) -> None:
        pods = self._get("/api/v1/pods").get("items", [])
        live = set()
        for pod in pods:
            meta = pod.get("metadata", {})
            key = (meta.get("namespace", ""), meta.get("name", ""))
            containers = pod.get("spec", {}).get("containers") or []
            if not containers or meta.get("deletionTimestamp"):
                continue
            image = str(containers[0].get("image", ""))
            if not image.startswith(f"{self.registry_host}/"):
                continue
            live.add(key)
            failed_at = self._failed.get(key)
            if failed_at is not None and time.monotonic() - failed_at < PULL_RETRY_SECONDS:
                continue
            if key not in self.pods:
                self._run(pod, containers[0])
        for key in set(self.pods) - live:
            self._kill(self.pods.pop(key))
        for pod in self.pods.values():
            self._probe(pod)
        self._register_services()

    def _probe(self, pod: RunningPod) -> None:
        """Report the real container's state: exited, or its readiness probe's answer."""
        code = pod.process.poll()
        if code is not None:
            self.kube.report_pod(
                pod.namespace,
                pod.name,
                ready=False,
                exit_code=code,
                message=f"the container exited with code {code}",
            )
            return
        if pod.probe_path is None:
            self.kube.report_pod(pod.namespace, pod.name, ready=True)
            return
        try:
            answer = self._session.get(
                f"http://127.0.0.1:{pod.port}{pod.probe_path}", timeout=1, allow_redirects=False
            )
            ready, message = 200 <= answer.status_code < 400, f"HTTP {answer.status_code}"
        except requests.RequestException as exc:
            ready, message = False, f"readiness probe failed: {type(exc).__name__}"
        self.kube.report_pod(pod.namespace, pod.name, ready=ready, message=message)

    def _run(self, pod: dict[str, Any], container: dict[str, Any]) -> None:
        meta = pod["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        image = container["image"]
        ctr = f"k8see-{namespace}-{name}"[:120]
        subprocess.run([*self._buildah, "rm", ctr], capture_output=True, check=False)
        pulled = subprocess.run(
            [
                *self._buildah,
                "from",
                "--name",
                ctr,
                "--tls-verify=false",
                "--pull=missing",
                f"docker://{image}",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if pulled.returncode != 0:
            log.warning(
                "Pod %s/%s: cannot pull %s: %s",
                namespace,
                name,
                image,
                pulled.stderr.strip()[-300:],
            )
            self.kube.report_pod(
                namespace, name, ready=False, exit_code=-1, message=f"cannot pull {image}"
            )
            self._failed[(namespace, name)] = time.monotonic()
            return
        inspected = subprocess.run(
            [*self._buildah, "inspect", "--type", "container", ctr],
            capture_output=True,
            text=True,
            check=True,
        )
        config = (json.loads(inspected.stdout).get("OCIv1") or {}).get("config") or {}
        port = free_port()
        env = {**self._env_from(namespace, container), "PORT": str(port)}
        # Like the kubelet: command/args replace the image's entrypoint/cmd; $(VAR) expands.
        parts = [
            *(container.get("command") or config.get("Entrypoint") or []),
            *(container.get("args") or config.get("Cmd") or []),
        ]
        command = [_expand(str(part), env) for part in parts]
        rootfs = subprocess.run(
            [*self._buildah, "mount", ctr], capture_output=True, text=True, check=True
        ).stdout.strip()
        pod_ctx = pod.get("spec", {}).get("securityContext") or {}
        ctr_ctx = container.get("securityContext") or {}
        user = ctr_ctx.get("runAsUser", pod_ctx.get("runAsUser", 0))
        group = ctr_ctx.get("runAsGroup", pod_ctx.get("runAsGroup", user))
        read_only = "1" if ctr_ctx.get("readOnlyRootFilesystem") else "0"
        volumes = self._empty_dirs(pod, container)
        argv = [
            tool("unshare"), "-m", "--propagation", "private", "--",
            "sh", "-c", _CONTAINER_SCRIPT, "k8see-pod", rootfs, read_only, f"{user}:{group}",
            *volumes, "--", *command,
        ]  # fmt: skip
        # The image's environment, then the pod's: passed as the process environment, so no
        # value (a database password from a Secret, say) appears on a command line.
        image_env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
        proc_env = {**image_env, **env}
        logfile = (self.workdir / f"{namespace}-{name}.log").open("ab")
        process = subprocess.Popen(
            argv, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True, env=proc_env
        )
        logfile.close()
        labels = dict(meta.get("labels") or {})
        probe = (container.get("readinessProbe") or {}).get("httpGet") or {}
        self.pods[(namespace, name)] = RunningPod(
            namespace, name, port, ctr, process, labels, probe.get("path") if probe else None
        )
        log.info("Pod %s/%s runs %s on 127.0.0.1:%d.", namespace, name, image, port)

    def _empty_dirs(self, pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
        """``host:path`` pairs: a fresh host directory for each emptyDir the container mounts."""
        meta = pod["metadata"]
        empty = {v["name"] for v in pod.get("spec", {}).get("volumes") or [] if "emptyDir" in v}
        pairs = []
        for mount in container.get("volumeMounts") or []:
            if mount.get("name") not in empty or ":" in str(mount.get("mountPath", ":")):
                continue
            host = self.workdir / "volumes" / f"{meta['namespace']}-{meta['name']}" / mount["name"]
            host.mkdir(parents=True, exist_ok=True)
            host.chmod(0o1777)  # like an emptyDir with fsGroup: writable by the pod's user
            pairs.append(f"{host}:{mount['mountPath']}")
        return pairs

    def _env_from(self, namespace: str, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            ref = (source.get("configMapRef") or {}).get("name")
            if ref:
                try:
                    data = self._get(f"/api/v1/namespaces/{namespace}/configmaps/{ref}")
                except requests.RequestException:
                    continue
                env.update({k: str(v) for k, v in (data.get("data") or {}).items()})
        for item in container.get("env") or []:
            if "value" in item:
                env[str(item["name"])] = str(item["value"])
        return env

    def _register_services(self) -> None:
        namespaces = {pod.namespace for pod in self.pods.values()}
        for namespace in namespaces:
            services = self._get(f"/api/v1/namespaces/{namespace}/services").get("items", [])
            for service in services:
                selector = service.get("spec", {}).get("selector") or {}
                target = next(
                    (
                        p
                        for p in self.pods.values()
                        if p.namespace == namespace
                        and selector
                        and all(p.labels.get(k) == v for k, v in selector.items())
                    ),
                    None,
                )
                if target is None:
                    continue
                for port in service.get("spec", {}).get("ports") or []:
                    self.kube.register_service_backend(
                        namespace,
                        service["metadata"]["name"],
                        int(port["port"]),
                        f"http://127.0.0.1:{target.port}",
                    )

    def _kill(self, pod: RunningPod) -> None:
        if pod.process.poll() is None:
            try:
                os.killpg(pod.process.pid, signal.SIGTERM)
                pod.process.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(pod.process.pid, signal.SIGKILL)
        subprocess.run([*self._buildah, "umount", pod.container], capture_output=True, check=False)
        subprocess.run([*self._buildah, "rm", pod.container], capture_output=True, check=False)
        shutil.rmtree(self.workdir / "volumes" / f"{pod.namespace}-{pod.name}", ignore_errors=True)
