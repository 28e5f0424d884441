"""``LocalCluster``: start the control plane and the node, hand out kubeconfigs, stop cleanly."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from k8see_sandbox.cluster import images, node
from k8see_sandbox.cluster.pki import Pki
from k8see_sandbox.platform import free_port, tool, wait_for_port

log = logging.getLogger(__name__)

NODE_NAME = "k8see-node"
SERVICE_CIDR = "10.96.0.0/16"
#: The issuer of service-account tokens, as on most clusters.
ISSUER = "https://kubernetes.default.svc.cluster.local"
START_TIMEOUT_SECONDS = 120.0
#: Where kube-controller-manager's host-path provisioner makes volumes (fixed in its code).
HOSTPATH_VOLUMES = "/tmp/hostpath_pv/"


@dataclass
class LocalCluster:
    """A single-node Kubernetes cluster of real components under ``workdir``.

    ``start()`` returns once the node is Ready; ``admin_kubeconfig`` is a cluster-admin
    (``system:masters``) identity for setting up tests and the demo, never for the pools,
    which get service-account tokens (``service_account_kubeconfig``).
    """

    #: Where its state lives; None: a new folder under the system's temporary directory,
    #: removed at ``stop()`` (the kubelet mounts below it, which test tools must not meet).
    workdir: Path | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, IO[bytes]] = field(default_factory=dict)
    slot: node.Slot | None = None
    api_port: int = 0
    image_digests: dict[str, str] = field(default_factory=dict)
    dns: Any = None

    @property
    def server(self) -> str:
        assert self.slot is not None, "the cluster is not started"
        return f"https://{self.slot.node_ip}:{self.api_port}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def containerd_address(self) -> str:
        return str(self.root / "containerd" / "containerd.sock")

    # -- start ---------------------------------------------------------------------------

    def __post_init__(self) -> None:
        self.own_workdir = self.workdir is None
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=node.WORKDIR_PREFIX))

    @property
    def root(self) -> Path:
        assert self.workdir is not None
        return self.workdir

    def start(self) -> LocalCluster:
        started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        node.raise_inotify_limits()
        self.slot = node.claim_slot()
        try:
            self.pki = Pki(self.root / "pki")
            self._start_etcd()
            self._start_apiserver()
            self._start_controllers()
            self._start_node()
            self._wait_node_ready(started)
            self._default_storage_class()
        except BaseException:
            self.stop()
            raise
        log.info("Local cluster up at %s in %.1fs.", self.server, time.monotonic() - started)
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        log_file = (self.root / f"{name}.log").open("ab")
        self.logs[name] = log_file
        self.processes[name] = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        assert self.slot is not None
        self.slot.record(self.processes[name].pid, str(self.root))

    def _check_alive(self, name: str) -> None:
        proc = self.processes[name]
        if proc.poll() is not None:
            tail = (self.root / f"{name}.log").read_text(errors="replace")[-3000:]
            hint = ""
            if "too many open files" in tail:
                hint = (
                    "\nHint: the inotify limits are exhausted (several clusters at once?): raise "
                    "fs.inotify.max_user_instances, e.g. `sysctl -w "
                    f"fs.inotify.max_user_instances={node.INOTIFY_INSTANCES}`."
                )
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}{hint}")

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn(
            "etcd",
            [
                tool("etcd"),
                "--name=local",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=local=http://127.0.0.1:{peer}",
                # A test cluster: speed over durability across a machine crash.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        wait_for_port(client, timeout_seconds=30)

    def _start_apiserver(self) -> None:
        assert self.slot is not None
        pki = self.pki
        self.api_port = free_port()
        serving = pki.issue(
            "apiserver",
            common_name="kube-apiserver",
            hosts=(
                self.slot.node_ip,
                "127.0.0.1",
                "10.96.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            server=True,
        )
        kubelet_client = pki.issue(
            "apiserver-kubelet-client",
            common_name="kube-apiserver-kubelet-client",
            organizations=("system:masters",),
        )
        sa = pki.service_account_keys()
        self._spawn(
            "kube-apiserver",
            [
                tool("kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={self.slot.node_ip}",
                f"--advertise-address={self.slot.node_ip}",
                f"--secure-port={self.api_port}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={pki.ca.cert}",
                f"--kubelet-client-certificate={kubelet_client.cert}",
                f"--kubelet-client-key={kubelet_client.key}",
                "--authorization-mode=Node,RBAC",
                "--kubelet-preferred-address-types=InternalIP",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={sa.cert}",
                f"--service-account-signing-key-file={sa.key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--profiling=false",
                "--event-ttl=1h",
            ],
        )
        self.pki.client_kubeconfig(
            self.admin_kubeconfig,
            server=self.server,
            pair=pki.issue("admin", common_name="k8see-admin", organizations=("system:masters",)),
        )
        self._wait_ready("kube-apiserver", "/readyz")

    def _wait_ready(self, name: str, path: str) -> None:
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        admin = self.pki.issue("admin", common_name="k8see-admin")
        context.load_cert_chain(admin.cert, admin.key)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            self._check_alive(name)
            try:
                with urllib.request.urlopen(self.server + path, context=context, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready after {START_TIMEOUT_SECONDS:.0f}s")
            time.sleep(0.2)

    def _component_kubeconfig(self, name: str, user: str, groups: tuple[str, ...] = ()) -> Path:
        pair = self.pki.issue(name, common_name=user, organizations=groups)
        return self.pki.client_kubeconfig(
            self.root / f"{name}.kubeconfig", server=self.server, pair=pair
        )

    def _start_controllers(self) -> None:
        pki = self.pki
        cm = self._component_kubeconfig("controller-manager", "system:kube-controller-manager")
        self._spawn(
            "kube-controller-manager",
            [
                tool("kube-controller-manager"),
                f"--kubeconfig={cm}",
                f"--authentication-kubeconfig={cm}",
                f"--authorization-kubeconfig={cm}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={pki.service_account_keys().key}",
                f"--root-ca-file={pki.ca.cert}",
                f"--cluster-signing-cert-file={pki.ca.cert}",
                f"--cluster-signing-key-file={pki.ca.key}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--kube-api-qps=100",
                "--kube-api-burst=200",
                # Volumes: claims of the default StorageClass get a folder under /tmp/hostpath_pv
                # (the built-in single-node provisioner), removed with the claim.
                "--enable-hostpath-provisioner=true",
                "--profiling=false",
            ],
        )
        scheduler = self._component_kubeconfig("scheduler", "system:kube-scheduler")
        self._spawn(
            "kube-scheduler",
            [
                tool("kube-scheduler"),
                f"--kubeconfig={scheduler}",
                f"--authentication-kubeconfig={scheduler}",
                f"--authorization-kubeconfig={scheduler}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )

    def _start_node(self) -> None:
        assert self.slot is not None
        config = node.write_containerd_config(
            self.root, slot=self.slot, pause_image=images.PAUSE_IMAGES[0]
        )
        self._spawn("containerd", [tool("containerd"), "--config", str(config)])
        deadline = time.monotonic() + 30
        while not Path(self.containerd_address).exists():
            self._check_alive("containerd")
            if time.monotonic() > deadline:
                raise TimeoutError("containerd did not open its socket in 30s")
            time.sleep(0.1)
        self._start_dns()
        self.image_digests = images.import_images(
            ctr=tool("ctr"),
            address=self.containerd_address,
            pause=Path(tool("pause")).resolve(),
            testapp=Path(tool("testapp")).resolve(),
            workdir=self.root,
        )
        pki = self.pki
        serving = pki.issue(
            "kubelet-serving", common_name=NODE_NAME, hosts=(self.slot.node_ip,), server=True
        )
        kubeconfig = self._component_kubeconfig(
            "kubelet", f"system:node:{NODE_NAME}", ("system:nodes",)
        )
        kubelet_config = node.write_kubelet_config(
            self.root / "kubelet" / "config.yaml",
            slot=self.slot,
            port=free_port(),
            healthz_port=free_port(),
            ca_file=pki.ca.cert,
            tls_cert=serving.cert,
            tls_key=serving.key,
            runtime_endpoint=f"unix://{self.containerd_address}",
        )
        self._spawn(
            "kubelet",
            [
                tool("kubelet"),
                f"--config={kubelet_config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.root / 'kubelet' / 'root'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.slot.node_ip}",
                "--v=1",
            ],
        )

    def _start_dns(self) -> None:
        """The cluster DNS the kubelet points pods at (``dns.ClusterDns``), in this process."""
        from kubernetes import config

        from k8see_sandbox.cluster.dns import ClusterDns

        assert self.slot is not None
        api = config.new_client_from_config(config_file=str(self.admin_kubeconfig))
        self.dns = ClusterDns(api, address=self.slot.node_ip).start()

    def _wait_node_ready(self, started: float) -> None:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(self.admin_kubeconfig))
        core = client.CoreV1Api(api)
        deadline = started + START_TIMEOUT_SECONDS
        try:
            while True:
                for name in self.processes:
                    self._check_alive(name)
                try:
                    status = core.read_node(NODE_NAME).status
                    ready = [c for c in status.conditions or [] if c.type == "Ready"]
                    if ready and ready[0].status == "True":
                        return
                except client.ApiException as exc:
                    if exc.status != 404:
                        raise
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {NODE_NAME} not Ready in {START_TIMEOUT_SECONDS}s")
                time.sleep(0.5)
        finally:
            api.close()

    def _default_storage_class(self) -> None:
        """``standard``, the default StorageClass, served by the host-path provisioner."""
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(self.admin_kubeconfig))
        try:
            client.StorageV1Api(api).create_storage_class(
                {
                    "metadata": {
                        "name": "standard",
                        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                    },
                    "provisioner": "kubernetes.io/host-path",
                    "reclaimPolicy": "Delete",
                }
            )
        finally:
            api.close()

    # -- identities ------------------------------------------------------------------------

    def token_kubeconfig(self, path: Path, token: str) -> Path:
        """A kubeconfig that authenticates with a bearer ``token``."""
        return self.pki.kubeconfig(path, server=self.server, user={"token": token})

    def service_account_kubeconfig(
        self, path: Path, *, namespace: str, name: str, expiration_seconds: int = 86400
    ) -> Path:
        """A kubeconfig holding a TokenRequest token of service account ``namespace/name``,
        as a pod of that service account would have."""
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(self.admin_kubeconfig))
        try:
            request = client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
            )
            answer: Any = client.CoreV1Api(api).create_namespaced_service_account_token(
                name, namespace, request
            )
        finally:
            api.close()
        return self.token_kubeconfig(path, answer.status.token)

    def trust_registry(self, host: str) -> None:
        """Let the node pull images from the plain-HTTP registry at ``host``."""
        node.trust_registry(self.root, host)

    # -- stop ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the node (its pods' processes and mounts too), then the control plane."""
        volumes = self._provisioned_volumes()
        self._drain()
        self._terminate("kubelet", timeout_seconds=10)
        if self.slot is not None:
            node.kill_cgroup(self.slot.cgroup_root)
        self._kill_shims()
        self._terminate("containerd", timeout_seconds=10)
        node.unmount_under(self.root)
        if self.dns is not None:
            self.dns.stop()
            self.dns = None
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            self._terminate(name, timeout_seconds=15)
        for log_file in self.logs.values():
            log_file.close()
        self.logs.clear()
        if self.slot is not None:
            node.remove_cgroup(self.slot.cgroup_root)
            subprocess.run(["ip", "link", "del", self.slot.bridge], capture_output=True)
            self.slot.release()
            self.slot = None
        for folder in volumes:  # the provisioner had no time to delete them
            shutil.rmtree(folder, ignore_errors=True)
        if self.own_workdir:
            shutil.rmtree(self.root, ignore_errors=True)

    def _provisioned_volumes(self) -> list[str]:
        """The folders of the volumes the host-path provisioner made for this cluster."""
        if not self.admin_kubeconfig.exists() or "kube-apiserver" not in self.processes:
            return []
        from kubernetes import client, config

        try:
            api = config.new_client_from_config(config_file=str(self.admin_kubeconfig))
        except Exception:  # noqa: BLE001 - a half-started cluster made no volume
            return []
        try:
            volumes = client.CoreV1Api(api).list_persistent_volume().items
        except (client.ApiException, OSError):
            return []
        finally:
            api.close()
        return [
            v.spec.host_path.path
            for v in volumes
            if v.spec.host_path and v.spec.host_path.path.startswith(HOSTPATH_VOLUMES)
        ]

    def _drain(self, timeout_seconds: float = 15.0) -> None:
        """Delete every pod at once and give the kubelet a moment to tear them down, so the
        CNI plugin releases their network namespaces and addresses as on a real node."""
        if "kubelet" not in self.processes or not self.admin_kubeconfig.exists():
            return
        from kubernetes import client, config

        try:
            api = config.new_client_from_config(config_file=str(self.admin_kubeconfig))
        except Exception:  # noqa: BLE001 - a half-started cluster has nothing to drain
            return
        core = client.CoreV1Api(api)
        try:
            for pod in core.list_pod_for_all_namespaces().items:
                core.delete_namespaced_pod(
                    pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
                )
            deadline = time.monotonic() + timeout_seconds
            while core.list_pod_for_all_namespaces(limit=1).items:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        except (client.ApiException, OSError):
            pass
        finally:
            api.close()

    def _terminate(self, name: str, *, timeout_seconds: float) -> None:
        proc = self.processes.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _kill_shims(self) -> None:
        node.kill_shims(self.containerd_address)
