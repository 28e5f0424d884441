"""The whole platform on one machine, for ``make demo``, ``k8see sandbox up`` and the tests.

Starts a real redis-server, a real registry, a real Kubernetes cluster (``cluster``: control
plane and node, or one handed in) with the platform chart's service accounts and RBAC, the
GitHub stand-in (in this process, over HTTP) and, on request, real Celery worker pools and
Flower as child processes with the environment that points k8see at all of them: each pool
talks to Kubernetes as its own service account, never as an admin. ``stop()`` ends what it
started.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from k8see import redis_acl
from k8see.app import QUEUES
from k8see.errors import ToolMissing
from k8see_sandbox.github import GitHubSandbox

if TYPE_CHECKING:
    from k8see_sandbox.cluster import LocalCluster
    from k8see_sandbox.cluster.identities import PoolIdentities
    from k8see_sandbox.reconciler import OperatorStandIn

ROOT = Path(__file__).resolve().parents[2]
SANDBOX_TOKEN = "sandbox-token"
SANDBOX_DOMAIN = "preview.k8see.test"
POOLS = QUEUES
#: Redis persistence, as the platform chart and docker-compose.yml run it (tests/test_compose.py
#: holds them to it): every write reaches the append-only file before Redis replies, so a
#: killed redis-server loses nothing it acknowledged; the file is fsynced once a second, so a
#: lost node loses at most about a second (docs/operations.md, "Drills").
REDIS_PERSISTENCE = ("--appendonly", "yes", "--appendfsync", "everysec")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, *, timeout_seconds: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_seconds}s")


def tool(name: str, *candidates: str) -> str:
    for candidate in (name, *candidates):
        found = shutil.which(
            candidate, path=f"{ROOT / '.tools' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        )
        if found:
            return found
    raise ToolMissing(f"{name} is not installed.", hint="Run `make bootstrap`.")


@dataclass
class Platform:
    """The sandbox platform; ``start()`` it, read ``env()``, ``stop()`` it."""

    workdir: Path
    #: A started cluster to use (the tests' session cluster); None starts one of its own.
    cluster: LocalCluster | None = None
    own_cluster: bool = False
    identities: PoolIdentities | None = None
    github: GitHubSandbox | None = None
    redis_port: int = 0
    #: A password per Redis ACL role (``k8see.redis_acl``), made at the first start.
    redis_passwords: dict[str, str] = field(default_factory=dict)
    registry_port: int = 0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, IO[bytes]] = field(default_factory=dict)
    #: The database operators' stand-in, once ``start_operators()`` ran.
    operators: OperatorStandIn | None = None
    operator_crds: list[str] = field(default_factory=list)

    @property
    def redis_url(self) -> str:
        """The admin credential (the sandbox's operator: the CLI, the demo's look-ups)."""
        return self.role_url("admin")

    def role_url(self, role: str) -> str:
        """The Redis URL of one role's ACL user: ``worker``, ``beat``, ``enqueue``, ..."""
        return redis_acl.url_for(
            f"redis://127.0.0.1:{self.redis_port}/0", role, self.redis_passwords[role]
        )

    @property
    def registry_host(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    @property
    def kubeconfig(self) -> Path:
        """The cluster-admin kubeconfig: for the demo and tests to look, never for the pools."""
        assert self.cluster is not None, "the platform is not started"
        return Path(self.cluster.admin_kubeconfig)

    def write_env_file(self) -> Path:
        """``<workdir>/env``: ``export`` lines of ``env()`` a shell can ``source``.

        Each value is shell-quoted: the namespace bindings are JSON, whose double quotes an
        unquoted ``export`` would strip.
        """
        env_file = self.workdir / "env"
        env_file.write_text(
            "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env().items())
        )
        return env_file

    def start(self) -> Platform:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start_redis()
        self._start_registry()
        self._push_mirror()
        self._start_cluster()
        self.github = GitHubSandbox(token=SANDBOX_TOKEN)
        self.github.start()
        return self

    def _start_cluster(self) -> None:
        from k8see_sandbox.cluster import LocalCluster, identities

        if self.cluster is None:
            self.cluster = LocalCluster().start()
            self.own_cluster = True
        self.cluster.trust_registry(self.registry_host)
        self.identities = identities.install(
            self.cluster, helm=tool("helm"), kubectl=tool("kubectl"), pools=POOLS
        )

    def start_operators(self) -> None:
        """Install the database operators' CRDs and start the reconciler standing in for the
        operators (``k8see_sandbox.crds``, ``k8see_sandbox.reconciler``)."""
        from kubernetes import config

        from k8see_sandbox import crds
        from k8see_sandbox.cluster.images import TESTAPP_IMAGE
        from k8see_sandbox.reconciler import OperatorStandIn

        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        self.operator_crds = crds.install(api, crds.DATABASE_CRDS)
        self.operators = OperatorStandIn(api, image=TESTAPP_IMAGE).start()

    def _stop_operators(self) -> None:
        if self.operators is None:
            return
        self.operators.stop()
        if not self.own_cluster:  # a shared cluster gets back what it had
            from k8see_sandbox import crds

            crds.uninstall(self.operators.api, self.operator_crds)
        self.operators.api.close()
        self.operators = None

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.logs[name] = log
        self.processes[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )

    def _start_redis(self) -> None:
        self.redis_port = self.redis_port or free_port()  # a restart keeps the port
        data = self.workdir / "redis"
        data.mkdir(exist_ok=True)
        # ACLs on, as in production: the default user unusable, one user per role.
        self.redis_passwords = self.redis_passwords or {
            role: secrets.token_hex(16) for role in redis_acl.ROLES
        }
        aclfile = data / "users.acl"
        aclfile.write_text(redis_acl.aclfile(self.redis_passwords))
        aclfile.chmod(0o600)
        self._spawn(
            "redis",
            [
                tool("redis-server"),
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *REDIS_PERSISTENCE,
                "--dir",
                str(data),
                "--protected-mode",
                "no",
                "--aclfile",
                str(aclfile),
            ],
        )
        wait_for_port(self.redis_port)

    def _start_registry(self) -> None:
        self.registry_port = free_port()
        storage = self.workdir / "registry"
        storage.mkdir(exist_ok=True)
        config = self.workdir / "registry.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage:\n  filesystem: {{rootdirectory: {storage}}}\n  delete: {{enabled: true}}\n"
            f"http: {{addr: '127.0.0.1:{self.registry_port}'}}\n"
        )
        self._spawn("registry", [tool("docker-registry", "registry"), "serve", str(config)])
        wait_for_port(self.registry_port)

    def _push_mirror(self) -> None:
        """Fill the registry with the busybox base image, so ``FROM busybox`` builds offline."""
        from k8see.integrations.registry import OciRegistry
        from k8see_sandbox.mirror import push_mirror

        registry = OciRegistry(host=self.registry_host, insecure=True)
        try:
            push_mirror(registry, mirror_dir=ROOT / ".tools" / "mirror")
        finally:
            registry.close()

    def _registries_conf(self) -> Path:
        """Builds resolve ``FROM busybox`` (docker.io) to the local registry's mirror."""
        from k8see.integrations.buildah import write_registries_conf

        return write_registries_conf(
            self.workdir / "registries.conf",
            mirrors={"docker.io": self.registry_host},
            insecure=[self.registry_host],
        )

    @property
    def sources(self) -> Path:
        """The local git repositories the workers build from (``<owner>/<name>``)."""
        return self.workdir / "sources"

    def env(self) -> dict[str, str]:
        """The variables that point k8see (client, workers, CLI) at this platform."""
        assert self.github is not None
        return {
            "K8SEE_BUILD__REGISTRIES_CONF": str(self._registries_conf()),
            "K8SEE_REDIS__URL": self.redis_url,
            "K8SEE_DEPLOY__KUBECONFIG": str(self.kubeconfig),
            "K8SEE_DEPLOY__DOMAIN": SANDBOX_DOMAIN,
            "K8SEE_GITHUB__API_URL": self.github.url,
            "K8SEE_GITHUB__TOKEN": SANDBOX_TOKEN,
            "K8SEE_GITHUB__SERVER_URL": "http://github.sandbox.invalid",
            "K8SEE_REGISTRY__TYPE": "generic",
            "K8SEE_REGISTRY__HOST": self.registry_host,
            "K8SEE_REGISTRY__INSECURE": "true",
            "K8SEE_BUILD__WORKDIR": str(self.workdir / "work"),
            # Workers read PR sources from local git repositories, <sources>/<owner>/<name>.
            "K8SEE_BUILD__LOCAL_SOURCE_ROOT": str(self.sources),
            "K8SEE_POLICY__ALLOWLIST_PATH": str(ROOT / "config" / "allowed-orgs.json"),
            **(self.identities.env if self.identities else {}),
        }

    def process_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        path = f"{ROOT / '.tools' / 'bin'}{os.pathsep}{Path(sys.executable).parent}"
        return {
            **os.environ,
            **self.env(),
            **(extra or {}),
            "PATH": f"{path}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def start_workers(
        self,
        *,
        pools: tuple[str, ...] = POOLS,
        extra_env: dict[str, str] | None = None,
        kubeconfigs: dict[str, Path] | None = None,
    ) -> None:
        """One real Celery worker process per pool, as in production.

        Args:
            pools: The pools to start.
            extra_env: Variables every pool gets on top of ``env()``.
            kubeconfigs: Per pool, a kubeconfig to use instead of the pool's own (a test
                pointing a pool at a fault-injecting proxy with the same token, say).
        """
        k8see = str(Path(sys.executable).parent / "k8see")
        assert self.identities is not None
        for pool in pools:
            # Each pool as its own service account; the build pool mounts none on a cluster,
            # so it gets a kubeconfig that does not exist (any API call fails, with a hint).
            kubeconfig = (kubeconfigs or {}).get(pool) or self.identities.kubeconfigs.get(pool)
            env = self.process_env(
                {
                    **(extra_env or {}),
                    "K8SEE_DEPLOY__KUBECONFIG": str(
                        kubeconfig or self.workdir / f"no-kubernetes-for-{pool}"
                    ),
                    "K8SEE_REDIS__URL": self.role_url("worker"),
                }
            )
            self._spawn(
                f"worker-{pool}", [k8see, "--log-format", "full", "worker", "--pool", pool], env=env
            )

    def start_beat(self) -> None:
        k8see = str(Path(sys.executable).parent / "k8see")
        self._spawn(
            "beat",
            [k8see, "beat", "-s", str(self.workdir / "beat-schedule")],
            env=self.process_env({"K8SEE_REDIS__URL": self.role_url("beat")}),
        )

    def start_flower(self, *, port: int, basic_auth: str) -> None:
        k8see = str(Path(sys.executable).parent / "k8see")
        env = self.process_env(
            {"FLOWER_BASIC_AUTH": basic_auth, "K8SEE_REDIS__URL": self.role_url("flower")}
        )
        self._spawn("flower", [k8see, "flower", "--port", str(port)], env=env)
        wait_for_port(port, timeout_seconds=30)

    def start_api(self, *, port: int, webhook_secret: str) -> str:
        """``k8see api`` on loopback ``port``, trusting the GitHub stand-in as the App (this
        webhook secret) and as the Actions OIDC issuer; its URL."""
        assert self.github is not None
        k8see = str(Path(sys.executable).parent / "k8see")
        env = self.process_env(
            {
                "K8SEE_API__WEBHOOK_SECRETS": json.dumps([webhook_secret]),
                "K8SEE_API__OIDC_ISSUER": self.github.url,
            }
        )
        self._spawn("api", [k8see, "--log-format", "full", "api", "--port", str(port)], env=env)
        wait_for_port(port, timeout_seconds=30)
        return f"http://127.0.0.1:{port}"

    def stop_process(self, name: str, *, timeout_seconds: float = 30.0) -> None:
        """End one started process (SIGTERM to its group, SIGKILL after the timeout)."""
        proc = self.processes.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.logs.pop(name).close()

    def stop_workers(self) -> None:
        """Stop every worker pool (a warm shutdown); ``start_workers`` starts them again."""
        for name in [n for n in self.processes if n.startswith("worker-")]:
            self.stop_process(name)

    def restart_redis(self, *, kill: bool = False) -> None:
        """Stop redis-server (it flushes its append-only file) and start it again on the same
        port and data directory, as a restarted Redis pod with a persistent volume would.

        Args:
            kill: SIGKILL it instead (a crash, an OOM kill): Redis writes nothing on its way
                out, so only what its append-only file already holds comes back.
        """
        if kill:
            proc = self.processes["redis"]
            proc.kill()
            proc.wait()
        self.stop_process("redis")
        self._start_redis()

    def stop(self) -> None:
        self._stop_operators()
        for proc in reversed(list(self.processes.values())):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in self.processes.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()
        for log in self.logs.values():
            log.close()
        if self.cluster is not None and self.own_cluster:
            self.cluster.stop()
        if self.github:
            self.github.stop()


def run_forever(workdir: Path) -> int:
    """``k8see sandbox up``: start everything, print the env, serve until interrupted."""
    interrupt_on_signals()
    platform = Platform(workdir=workdir.resolve())
    try:
        platform.start()
        platform.start_operators()
        env_file = platform.write_env_file()
        print("# k8see sandbox (a local Kubernetes cluster; GitHub is a stand-in). Use it with:")
        print(env_file.read_text(), end="")
        print(f"# also written to {env_file}; Ctrl-C stops everything.", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        return 0
    finally:
        ignore_signals()
        platform.stop()


#: The signals that end the sandbox and the demo: Ctrl-C, ``kill``, a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def interrupt_on_signals() -> None:
    """Make SIGTERM and SIGHUP raise ``KeyboardInterrupt``, as Ctrl-C (SIGINT) does.

    Python's default for SIGTERM and SIGHUP ends the process at once: no ``finally`` runs, and
    every process the platform started (each in a session of its own, so the signal never
    reaches them) keeps running. With this, whoever stops ``make demo`` or ``k8see sandbox
    up`` (a terminal closing, ``kill``, a CI job's timeout) gets the same clean stop as Ctrl-C.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)
    _term_when_parent_dies()


#: From <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1


def _term_when_parent_dies() -> None:
    """Ask Linux for SIGTERM when the parent process dies (best-effort, Linux only).

    ``make demo`` killed with SIGTERM dies without passing the signal on to its recipe, so
    the demo would run on, orphaned, with nobody left to press Ctrl-C. With this the demo
    hears its parent's death as a SIGTERM and stops cleanly.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def ignore_signals() -> None:
    """While the platform stops: a second Ctrl-C or SIGTERM must not cut its stop short
    (which would leave the processes not yet stopped behind). Each stop step is bounded
    (SIGKILL after a timeout), so the stop ends anyway."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def serve_until_signalled(stop: Callable[[], None]) -> None:
    """Wait for SIGINT or SIGTERM, then ``stop()``. The signals are blocked only now, so the
    children started before keep the default handlers."""
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        signal.sigwait(stop_signals)
    finally:
        stop()
