"""The build stage end to end with real buildah and a real registry: the validated config
becomes a two-platform image tagged pr-N and sha-<sha>, pinned by digest; paths that leave
the checkout are refused with the field named; a broken Dockerfile is BuildFailed with the
output tail; a superseded run kills its build; a custom repository must be on our registry."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from k8see.config.model import ImageConfig, RepoConfig
from k8see.errors import BuildFailed, ConfigError, PlatformError, PolicyError, Superseded
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from k8see.stages import build
from k8see.stages.context import StageContext
from tests.fixtures.images import HELLO_DIR, DockerDaemon, LocalRegistry

SHA = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture
def settings(
    registry: LocalRegistry, mirror_env: dict[str, str], buildah_storage: Path
) -> PlatformSettings:
    return PlatformSettings(
        registry={"type": "generic", "host": registry.host, "insecure": True},
        build={
            "storage_dir": str(buildah_storage),
            "registries_conf": mirror_env["CONTAINERS_REGISTRIES_CONF"],
            "timeout_seconds": 600,
        },
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A checkout holding examples/hello under app/."""
    shutil.copytree(HELLO_DIR, tmp_path / "src" / "app")
    return tmp_path / "src"


def make_run(source: Path, image: dict[str, Any] | None = None, repo: str = "Acme/Hello") -> Run:
    config = {
        "projectId": "hello",
        "image": image or {"context": "app", "dockerfile": "Dockerfile"},
    }
    return Run(repo=repo, pr=5, sha=SHA, generation=1, action=Action.DEPLOY).with_result(
        "validate",
        {
            "config": config,
            "project_id": "hello",
            "namespace": "hello-pr-5",
            "source_dir": str(source),
        },
    )


def _build(run: Run, ctx: StageContext) -> Run:
    """The build proper on the test's checkout (``build.run`` fetches its own from GitHub)."""
    validated = run.result("validate")
    return build.build_checkout(
        run,
        ctx,
        source_dir=Path(validated["source_dir"]),
        config=unchecked_config(validated["config"]),
        fork=validated.get("fork"),
    )


def unchecked_config(data: dict[str, Any]) -> RepoConfig:
    """``data`` as a ``RepoConfig`` without the model's checks, so the hostile paths and
    repositories below reach the build's own checks (its defence behind the model's)."""
    return RepoConfig.model_construct(
        project_id=data["projectId"], image=ImageConfig.model_construct(**data.get("image", {}))
    )


def make_ctx(settings: PlatformSettings, tmp_path: Path, lines: list[str], stop=lambda: False):
    return StageContext(
        settings=settings,
        log=logging.getLogger("test.build"),
        workdir=tmp_path / "work",
        should_stop=stop,
        record_log=lines.append,
    )


def test_the_image_is_built_for_both_platforms_and_pinned_by_digest(
    settings: PlatformSettings, source: Path, registry: LocalRegistry, tmp_path: Path
) -> None:
    lines: list[str] = []
    out = _build(make_run(source), make_ctx(settings, tmp_path, lines))
    result = out.result("build")
    repository = f"{registry.host}/acme/hello/hello"
    assert result["repository"] == repository
    assert result["image"] == f"{repository}@{result['digest']}"
    assert result["tags"] == ["pr-5", f"sha-{SHA}"]
    assert result["platforms"] == ["linux/amd64", "linux/arm64"]
    assert result["seconds"] > 0
    client = registry.client()
    assert client.resolve_digest(f"{repository}:pr-5") == result["digest"]
    assert client.resolve_digest(f"{repository}:sha-{SHA}") == result["digest"]
    assert client.get_platforms(result["image"]) == ["linux/amd64", "linux/arm64"]
    assert any(line.startswith("[linux/arm64] ") for line in lines)
    assert out.result("validate")  # earlier results are kept


@pytest.mark.parametrize(
    ("image", "field"),
    [
        ({"context": "../outside"}, "image.context"),
        ({"context": "/etc"}, "image.context"),
        ({"context": "app", "dockerfile": "../../Dockerfile"}, "image.dockerfile"),
        ({"context": "app", "dockerfile": "/etc/passwd"}, "image.dockerfile"),
        ({"context": "link"}, "image.context"),
        ({"context": "app", "dockerfile": "Dockerfile.missing"}, "image.dockerfile"),
    ],
)
def test_paths_outside_the_checkout_are_refused(
    settings: PlatformSettings, source: Path, tmp_path: Path, image: dict[str, str], field: str
) -> None:
    (source / "link").symlink_to(tmp_path)  # a symlink out of the checkout
    with pytest.raises(ConfigError) as info:
        _build(make_run(source, image), make_ctx(settings, tmp_path, []))
    assert info.value.where is not None
    assert info.value.where.field == field
    assert info.value.hint


def test_a_broken_dockerfile_fails_with_the_last_lines(
    settings: PlatformSettings, source: Path, tmp_path: Path
) -> None:
    (source / "app" / "Dockerfile").write_text(
        "FROM busybox\nRUN echo 'npm ERR! missing script: build' && false\n"
    )
    lines: list[str] = []
    with pytest.raises(BuildFailed) as info:
        _build(make_run(source), make_ctx(settings, tmp_path, lines))
    assert "npm ERR! missing script: build" in (info.value.hint or "")
    assert any("npm ERR!" in line for line in lines)


def test_a_superseded_run_stops_its_build(
    settings: PlatformSettings, source: Path, tmp_path: Path
) -> None:
    (source / "app" / "Dockerfile").write_text(
        "FROM busybox\nRUN X=long && echo begin-$X-step && sleep 302\n"
    )
    lines: list[str] = []
    stop = lambda: any("begin-long-step" in line for line in lines)  # noqa: E731
    with pytest.raises(Superseded):
        _build(make_run(source), make_ctx(settings, tmp_path, lines, stop))


def test_a_custom_repository_must_be_on_the_platform_registry(
    settings: PlatformSettings, source: Path, tmp_path: Path
) -> None:
    image = {"context": "app", "repository": "evil.example.com/steal/creds"}
    with pytest.raises(ConfigError, match="not on this platform's registry") as info:
        _build(make_run(source, image), make_ctx(settings, tmp_path, []))
    assert info.value.where is not None and info.value.where.field == "image.repository"
    with pytest.raises(ConfigError, match="not a valid image repository"):
        _build(
            make_run(source, {**image, "repository": "Not A Repo"}),
            make_ctx(settings, tmp_path, []),
        )


def test_the_docker_builder_builds_the_same_list(
    settings: PlatformSettings,
    source: Path,
    registry: LocalRegistry,
    docker_daemon: DockerDaemon,
    tmp_path: Path,
) -> None:
    # Given the platform set to the Docker builder (the session's own dockerd)
    docker_settings = settings.model_copy(
        update={
            "build": settings.build.model_copy(
                update={
                    "builder": "docker",
                    "docker_host": docker_daemon.base_url,
                    "docker_network": "host",  # the test daemon has no bridge
                }
            )
        }
    )
    lines: list[str] = []
    result = _build(make_run(source), make_ctx(docker_settings, tmp_path, lines)).result("build")
    # Then the registry holds the same shape of result: a two-platform list under both tags
    client = registry.client()
    assert client.get_platforms(result["image"]) == ["linux/amd64", "linux/arm64"]
    assert client.resolve_digest(f"{result['repository']}:sha-{SHA}") == result["digest"]
    assert any(line.startswith("[linux/arm64] ") for line in lines)


def test_an_unreachable_docker_daemon_is_a_platform_error(
    settings: PlatformSettings, source: Path, tmp_path: Path
) -> None:
    docker_settings = settings.model_copy(
        update={
            "build": settings.build.model_copy(
                update={"builder": "docker", "docker_host": f"unix://{tmp_path}/none.sock"}
            )
        }
    )
    with pytest.raises(PlatformError, match=r"Docker daemon .* is not reachable") as info:
        _build(make_run(source), make_ctx(docker_settings, tmp_path, []))
    assert "build.builder" in (info.value.hint or "")


def test_a_repository_may_build_fewer_platforms(
    settings: PlatformSettings, source: Path, registry: LocalRegistry, tmp_path: Path
) -> None:
    # Given a run whose workflow asks for linux/amd64 only (the platforms input)
    run = replace(make_run(source), platforms="linux/amd64")
    # Then only that platform is built and pushed
    result = _build(run, make_ctx(settings, tmp_path, [])).result("build")
    assert result["platforms"] == ["linux/amd64"]
    assert registry.client().get_platforms(result["image"]) == ["linux/amd64"]
    # And a platform the platform does not build is refused before anything runs
    with pytest.raises(PolicyError) as refused:
        _build(replace(make_run(source), platforms="linux/s390x"), make_ctx(settings, tmp_path, []))
    assert "linux/s390x" in refused.value.message
    assert "linux/amd64, linux/arm64" in (refused.value.hint or "")
