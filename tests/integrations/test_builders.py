"""Both builders (buildah; Docker through our own dockerd) with qemu and a real registry: a
two-platform manifest list pushed under every tag, the foreign-architecture RUN step executed
under emulation, build args set, a broken Dockerfile as BuildFailed with the output tail,
cancellation and the time limit killing the build, credentials kept out of output, a RUN
step that finds none of the worker's secrets (its env, /proc) in what it can read and sees
only buildah's PID namespace, and a worker without CAP_SYS_ADMIN told how to fix that."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from k8see.errors import BuildFailed, Superseded
from k8see.integrations.buildah import BuildahBuilder, write_registries_conf
from k8see.integrations.builders import Builder, BuildResult, RegistryAuth, parse_platforms
from k8see.settings import PlatformSettings
from k8see.stages.build import make_builder
from tests.conftest import free_port, require_tool, wait_for_port
from tests.fixtures.images import (
    HELLO_REPOSITORY,
    HELLO_SHA,
    DockerDaemon,
    LocalRegistry,
    read_image_file,
)


@pytest.fixture(params=["buildah", "docker"])
def builder(request: pytest.FixtureRequest) -> Builder:
    """Each test using it runs once per builder implementation."""
    return request.getfixturevalue(f"{request.param}_builder")  # type: ignore[no-any-return]


@pytest.fixture(params=["buildah", "docker"])
def built_hello(request: pytest.FixtureRequest) -> BuildResult:
    """examples/hello as each builder built it (once per session each)."""
    name = "hello_image" if request.param == "buildah" else "docker_hello_image"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def _build(
    builder: Builder,
    registry: LocalRegistry,
    context: Path,
    *,
    repository: str,
    platforms: tuple[str, ...] = ("linux/amd64",),
    timeout_seconds: float = 600,
    should_stop=lambda: False,
    lines: list[str] | None = None,
) -> BuildResult:
    return builder.build_and_push(
        context_dir=context,
        dockerfile=context / "Dockerfile",
        image=f"{registry.host}/{repository}",
        tags=["pr-1"],
        platforms=platforms,
        build_args={"GREETING": "hi"},
        timeout_seconds=timeout_seconds,
        should_stop=should_stop,
        on_line=(lines if lines is not None else []).append,
    )


def test_hello_is_a_two_platform_list_under_both_tags(
    hello_image: BuildResult, registry: LocalRegistry
) -> None:
    # (buildah; the Docker build is checked below, under its own tag)
    client = registry.client()
    repo = f"{registry.host}/{HELLO_REPOSITORY}"
    assert hello_image.image == f"{repo}@{hello_image.digest}"
    assert hello_image.platforms == ("linux/amd64", "linux/arm64")
    assert client.get_platforms(hello_image.image) == ["linux/amd64", "linux/arm64"]
    assert client.resolve_digest(f"{repo}:pr-1") == hello_image.digest
    assert client.resolve_digest(f"{repo}:sha-{HELLO_SHA}") == hello_image.digest


def test_the_run_step_executed_for_each_architecture(
    built_hello: BuildResult, registry: LocalRegistry
) -> None:
    # The RUN step wrote `uname -m`: aarch64 can only come from qemu on this amd64 host.
    client = registry.client()
    assert client.get_platforms(built_hello.image) == ["linux/amd64", "linux/arm64"]
    arch = {
        p: read_image_file(client, built_hello.image, p, "www/arch.txt").decode().strip()
        for p in built_hello.platforms
    }
    target = {
        p: read_image_file(client, built_hello.image, p, "www/targetarch.txt").decode().strip()
        for p in built_hello.platforms
    }
    assert arch == {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
    assert target == {"linux/amd64": "amd64", "linux/arm64": "arm64"}


def test_a_broken_dockerfile_is_build_failed_with_the_output_tail(
    builder: Builder, registry: LocalRegistry, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nRUN echo 'compiling the app' && echo 'error: missing semicolon' && exit 7\n"
    )
    lines: list[str] = []
    with pytest.raises(BuildFailed) as info:
        _build(builder, registry, tmp_path, repository="k8see-tests/broken/app", lines=lines)
    err = info.value
    assert "did not build for linux/amd64" in err.message
    assert "error: missing semicolon" in (err.hint or "")
    assert len((err.hint or "").splitlines()) <= 21
    assert any(line.startswith("[linux/amd64] ") for line in lines)
    assert registry.client().list_tags("k8see-tests/broken/app") == []


def test_cancellation_kills_the_build(
    builder: Builder, registry: LocalRegistry, tmp_path: Path
) -> None:
    # Given a build whose RUN step would take five minutes
    # (the marker is printed by the step, not spelled in it, so the step has surely begun;
    # a random duration tells our sleep from one of a concurrent test session)
    seconds = random.randint(3000, 99999)
    (tmp_path / "Dockerfile").write_text(
        f"FROM busybox\nRUN X=sleeping && echo started-$X && sleep {seconds}\n"
    )
    lines: list[str] = []
    # When the run is superseded once the step has started
    with pytest.raises(Superseded):
        _build(
            builder,
            registry,
            tmp_path,
            repository="k8see-tests/cancelled/app",
            lines=lines,
            should_stop=lambda: any("started-sleeping" in line for line in lines),
        )
    # Then nothing was pushed and the RUN step's sleep is not left running
    assert registry.client().list_tags("k8see-tests/cancelled/app") == []
    assert not [p for p in Path("/proc").glob("[0-9]*") if _cmdline(p) == f"sleep\x00{seconds}\x00"]


def test_the_time_limit_stops_the_build(
    builder: Builder, registry: LocalRegistry, tmp_path: Path
) -> None:
    seconds = random.randint(3000, 99999)
    (tmp_path / "Dockerfile").write_text(f"FROM busybox\nRUN sleep {seconds}\n")
    with pytest.raises(BuildFailed) as info:
        _build(
            builder,
            registry,
            tmp_path,
            repository="k8see-tests/slow/app",
            timeout_seconds=3,
        )
    assert "did not finish within 3s" in info.value.message
    assert "build.timeout_seconds" in (info.value.hint or "")
    assert not [p for p in Path("/proc").glob("[0-9]*") if _cmdline(p) == f"sleep\x00{seconds}\x00"]


def test_credentials_go_through_an_auth_file_not_argv(
    registry: LocalRegistry, buildah_storage: Path, tmp_path: Path
) -> None:
    # The local registry has no auth, so the push succeeds either way; what we check is that
    # the password appears in no output line and that the build still works with auth set.
    password = "s3cr3t-Registry-Passw0rd"
    conf = write_registries_conf(
        tmp_path / "registries.conf", mirrors={"docker.io": registry.host}, insecure=[registry.host]
    )
    builder = BuildahBuilder(
        storage_dir=buildah_storage,
        registries_conf=conf,
        insecure_registries=[registry.host],
        auth=[RegistryAuth(host=registry.host, username="bot", password=password)],
    )
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM busybox\nRUN echo {password}\n")
    lines: list[str] = []
    result = _build(builder, registry, ctx, repository="k8see-tests/auth/app", lines=lines)
    assert result.digest.startswith("sha256:")
    assert any("***" in line for line in lines)
    assert not any(password in line for line in lines)


def test_platform_lists_are_validated() -> None:
    assert parse_platforms("linux/amd64, linux/arm64,linux/amd64") == ("linux/amd64", "linux/arm64")
    with pytest.raises(BuildFailed, match="not valid"):
        parse_platforms("linux/amd64,windows/amd64")
    with pytest.raises(BuildFailed, match="not valid"):
        parse_platforms("")


def _cmdline(proc_dir: Path) -> str:
    try:
        return (proc_dir / "cmdline").read_text()
    except OSError:
        return ""


def test_the_built_hello_serves_health_read_only_as_non_root(
    hello_image: BuildResult, docker_daemon: DockerDaemon
) -> None:
    # Given the buildah-built image, run by digest the way the app chart runs it: read-only
    # root filesystem, user 1001, PORT from the environment
    import docker

    client = docker.DockerClient(base_url=docker_daemon.base_url, version="auto")
    port = free_port()
    container = client.containers.run(
        hello_image.image,
        detach=True,
        read_only=True,
        user="1001",
        environment={"PORT": str(port)},
        network_mode="host",
        platform="linux/amd64",
    )
    try:
        wait_for_port(port, timeout_seconds=30)
        # Then /health and / answer 200, and the process is not root
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10)
        index = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
        assert health.status == 200
        assert health.read() == b"ok\n"
        assert b"Hello from a k8see preview environment" in index.read()
        container.reload()
        assert container.attrs["Config"]["User"] == "1001"
        assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
    finally:
        container.remove(force=True)
        client.close()


#: A build step that writes everything a build could learn about the worker's environment:
#: its own variables, those of every process it can see in /proc, and their command lines.
SNOOP_DOCKERFILE = """FROM busybox
RUN env > /k8see-env.txt; \\
    for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < "$f"; echo; done \\
      > /k8see-procenv.txt 2>/dev/null; \\
    for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < "$f"; echo; done \\
      > /k8see-cmdline.txt 2>/dev/null; \\
    ls /proc > /k8see-proc.txt; true
"""

#: The builder runs in its own worker-like process whose environment holds these at exec time
#: (as a worker pod's does), so /proc/<pid>/environ would show them to a step that can see it.
WORKER_SCRIPT = """
import json, sys
from pathlib import Path
from k8see.integrations.buildah import BuildahBuilder
from k8see.integrations.builders import RegistryAuth
args = json.loads(sys.argv[1])
builder = BuildahBuilder(storage_dir=Path(args["storage"]), registries_conf=Path(args["conf"]),
    insecure_registries=[args["host"]],
    auth=[RegistryAuth(host=args["host"], username="bot", password=args["password"])])
ctx = Path(args["ctx"])
result = builder.build_and_push(context_dir=ctx, dockerfile=ctx / "Dockerfile",
    image=args["host"] + "/k8see-tests/snoop/app", tags=["pr-1"], platforms=["linux/amd64"],
    build_args={}, timeout_seconds=600, should_stop=lambda: False, on_line=lambda line: None)
print(result.image)
"""


def test_a_run_step_sees_no_worker_credentials(
    registry: LocalRegistry, buildah_builder: BuildahBuilder, buildah_storage: Path, tmp_path: Path
) -> None:
    # Given a worker process holding cluster, GitHub, AWS and registry secrets in its env
    secrets = {
        "KUBECONFIG": "/var/run/k8see/kubeconfig-" + "Zq7" * 4,
        "K8SEE_GITHUB__TOKEN": "ghp_" + "workerTOKENvalue" * 2,
        "K8SEE_REGISTRY__PASSWORD": "reg-" + "Passw0rdValue" * 2,
        "AWS_SECRET_ACCESS_KEY": "aws/" + "SecretKeyValue" * 3,
        "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks/" + "tokenFile" * 2,
    }
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(SNOOP_DOCKERFILE)
    args = {
        "storage": str(buildah_storage),
        "conf": str(buildah_builder.registries_conf),
        "host": registry.host,
        "password": secrets["K8SEE_REGISTRY__PASSWORD"],
        "ctx": str(ctx),
    }
    env = {**os.environ, **secrets}
    # When the PR's Dockerfile builds there, with a step that dumps what it can see
    done = subprocess.run(
        [sys.executable, "-c", WORKER_SCRIPT, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    image = done.stdout.strip().splitlines()[-1]
    client = registry.client()
    seen = {
        name: read_image_file(client, image, "linux/amd64", f"/k8see-{name}.txt").decode()
        for name in ("env", "procenv", "cmdline", "proc")
    }
    client.close()
    # Then the step's files hold none of the values and none of the variables' names
    # (the dumps worked: the step's own variables, and its own processes' environ and command
    # lines, are there; reading another process's environ needs CAP_SYS_PTRACE, which a step
    # lacks, but any command line is readable to whoever can see the process)
    assert "PATH=" in seen["env"]
    assert "HOSTNAME=" in seen["procenv"]
    assert "/bin/sh -c env > /k8see-env.txt" in seen["cmdline"]
    for text in seen.values():
        for name, value in secrets.items():
            assert value not in text, f"{name}'s value is visible to a RUN step"
        assert "KUBECONFIG=" not in text
        assert "K8SEE_" not in text
        assert "AWS_" not in text
    # And the step is in buildah's own PID namespace: buildah is PID 1 and every process it
    # sees is buildah's or the step's, never the worker running buildah nor this test
    # (the worker's command line even holds the registry password: see WORKER_SCRIPT's argv)
    pids = sorted(int(name) for name in seen["proc"].split() if name.isdigit())
    commands = [line.split() for line in seen["cmdline"].splitlines() if line.strip()]
    own = Path(f"/proc/{os.getpid()}/cmdline").read_text().replace("\\0", " ").strip()
    assert "import BuildahBuilder" not in seen["cmdline"], "the worker is visible to a RUN step"
    assert own not in seen["cmdline"], "the test process is visible to a RUN step"
    assert pids[0] == 1 and Path(commands[0][0]).name == "buildah", seen["cmdline"]
    names = {Path(c[0]).name for c in commands}
    assert names <= {"buildah", "buildah-chroot-runtime", "buildah-chroot-exec", "sh"}, names
    assert len(pids) <= 10, f"a RUN step sees {len(pids)} processes"


#: A worker-like process that builds and prints the error it got as JSON.
FAILING_WORKER_SCRIPT = """
import json, sys
from pathlib import Path
from k8see.errors import K8seeError
from k8see.integrations.buildah import BuildahBuilder
args = json.loads(sys.argv[1])
builder = BuildahBuilder(storage_dir=Path(args["storage"]), registries_conf=Path(args["conf"]),
    insecure_registries=[args["host"]])
ctx = Path(args["ctx"])
try:
    builder.build_and_push(context_dir=ctx, dockerfile=ctx / "Dockerfile",
        image=args["host"] + "/k8see-tests/nocap/app", tags=["pr-1"], platforms=["linux/amd64"],
        build_args={}, timeout_seconds=600, should_stop=lambda: False, on_line=lambda line: None)
except K8seeError as exc:
    print(json.dumps({"type": type(exc).__name__, **exc.to_dict()}))
"""


def test_a_worker_without_cap_sys_admin_gets_a_platform_error_with_a_hint(
    registry: LocalRegistry, buildah_builder: BuildahBuilder, buildah_storage: Path, tmp_path: Path
) -> None:
    # Given a worker that lacks CAP_SYS_ADMIN (dropped from its bounding set, as a pod's
    # default capabilities lack it), so it cannot create a PID namespace
    setpriv = require_tool("setpriv")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN true\n")
    args = {
        "storage": str(buildah_storage),
        "conf": str(buildah_builder.registries_conf),
        "host": registry.host,
        "ctx": str(ctx),
    }
    # When it builds with build.pid_namespace on (the default)
    drop = [setpriv, "--bounding-set=-sys_admin"]
    done = subprocess.run(
        [*drop, sys.executable, "-c", FAILING_WORKER_SCRIPT, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Then it is one platform error saying why and what to change, not a traceback
    assert done.returncode == 0, done.stderr[-2000:]
    error = json.loads(done.stdout.strip().splitlines()[-1])
    assert error["type"] == "IntegrationError"
    assert "PID namespace" in error["message"]
    assert "Operation not permitted" in error["message"]
    assert "CAP_SYS_ADMIN" in error["hint"]
    assert "build.pid_namespace" in error["hint"]
    assert registry.client().list_tags("k8see-tests/nocap/app") == []


def test_builds_get_their_own_pid_namespace_by_default(tmp_path: Path) -> None:
    settings = PlatformSettings()
    assert settings.build.pid_namespace is True
    builder = make_builder(settings, workdir=tmp_path)
    assert isinstance(builder, BuildahBuilder)
    assert builder.pid_namespace is True
