"""What runs on this machine, without the platform: ``validate``, ``schema``, ``render`` and
``build`` (a preview build and scan, reproduced exactly as the build pool runs it)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from k8see.cli.common import guard, platform_settings
from k8see.errors import PolicyError

__all__ = ["build_command", "render", "schema", "validate"]


@click.command()
@click.argument("path", default="k8s-ee.yaml", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the config with defaults as JSON.")
@guard
def validate(path: str, as_json: bool) -> None:
    """Validate a k8s-ee.yaml."""
    from k8see.admission import admit
    from k8see.config import load_repo_config

    config = load_repo_config(Path(path), filename=path)
    # The platform's limits, as far as this machine's settings know them.
    admit(config, platform_settings().deploy, config_file=path)
    if as_json:
        click.echo(json.dumps(config.to_dict(), indent=2))
    else:
        dbs = ", ".join(config.enabled_databases()) or "none"
        click.echo(
            f"{path} is valid: projectId {config.to_dict()['projectId']}, "
            f"trigger {config.trigger}, databases {dbs}."
        )


@click.command()
def schema() -> None:
    """Print the JSON Schema of k8s-ee.yaml."""
    from k8see.config.model import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@click.command()
@click.argument("path", default=".", type=click.Path(exists=True))
@click.option("--pr", type=click.IntRange(min=1), required=True, help="The PR number.")
@click.option(
    "--repo", default="local/preview", show_default=True, help="OWNER/REPO (labels only)."
)
@click.option("--sha", default="0" * 40, help="Commit shown in labels and COMMIT_SHA.")
@click.option("--ref", default="main", show_default=True, help="Branch shown in labels.")
@guard
def render(path: str, pr: int, repo: str, sha: str, ref: str) -> None:
    """Print every manifest a deploy would apply, offline, as one YAML stream.

    PATH is a k8s-ee.yaml or the directory holding it. The order is the deploy's: namespace,
    quota, limits, network policies, pull secret, then the app release's templates. Secret
    values are blanked; the image is shown by tag, since nothing is built.

    \b
    Example:
      k8see render examples/postgres-app --pr 42 --repo acme/shop
    """
    import yaml

    from k8see.admission import admit
    from k8see.config import load_repo_config
    from k8see.manifests.release import offline_run, render_manifests

    file = Path(path) / "k8s-ee.yaml" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise PolicyError(
            f"There is no {file}.", hint="Give the path of a k8s-ee.yaml or of its directory."
        )
    settings = platform_settings()
    config = load_repo_config(file, filename=str(file))
    admit(config, settings.deploy, config_file=str(file))
    run = offline_run(config, repo=repo, pr=pr, sha=sha, ref=ref, settings=settings)
    docs = render_manifests(run, settings=settings)
    click.echo(yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True), nl=False)


@click.command("build")
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=False))
@click.option("--pr", type=click.IntRange(min=1), required=True, help="The PR number.")
@click.option("--repo", required=True, help="OWNER/REPO: names the image repository.")
@click.option("--registry", "registry_host", required=True, help="HOST[:PORT] to push to.")
@click.option("--platforms", help="Comma list (default: the platform setting).")
@click.option("--insecure", is_flag=True, help="Plain HTTP to the registry (a local one).")
@click.option("--sha", help="Commit for the sha-* tag (default: PATH's git HEAD).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@guard
def build_command(
    path: str,
    pr: int,
    repo: str,
    registry_host: str,
    platforms: str | None,
    insecure: bool,
    sha: str | None,
    as_json: bool,
) -> None:
    """Build, push and scan PATH exactly as the build pool would, to reproduce a preview build.

    Runs the build and scan stages on this machine (buildah or docker, per the platform
    settings, with K8SEE_REGISTRY__USERNAME/PASSWORD as the login) and prints the image by
    digest, its platforms and the scan summary. A scan policy of ``block`` fails it the same
    way a deploy would be stopped.

    \b
    Example:
      k8see build examples/hello --pr 42 --repo acme/shop --registry 127.0.0.1:5000 --insecure
    """
    import logging
    import subprocess
    import tempfile

    from k8see.config import load_repo_config
    from k8see.integrations.oci import parse_ref
    from k8see.manifests.release import offline_run
    from k8see.results import BuildResult, ScanResult
    from k8see.stages import build as build_stage
    from k8see.stages import scan as scan_stage
    from k8see.stages.context import StageContext

    source = Path(path).resolve()
    if not (source / "k8s-ee.yaml").is_file():
        raise PolicyError(f"There is no k8s-ee.yaml in {source}.", hint="Give the app's root.")
    parse_ref(f"{registry_host}/probe/probe:probe")  # a RegistryError with a hint if invalid
    if sha is None:
        head = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        sha = head.stdout.strip() if head.returncode == 0 else ""
        if not sha:
            raise PolicyError(f"{source} is not a git checkout.", hint="Pass --sha <40 hex>.")
    settings = platform_settings()
    same = registry_host == settings.registry.host
    kind = "ecr" if ".dkr.ecr." in registry_host else settings.registry.type if same else "generic"
    kind = "ghcr" if registry_host == "ghcr.io" else kind
    registry = settings.registry.model_copy(
        update={"host": registry_host, "insecure": insecure, "type": kind}
    )
    build_group = settings.build.model_copy(
        update={"platforms": platforms or settings.build.platforms}
    )
    # A local reproduction never uploads to the repository's code scanning.
    scan_group = settings.scan.model_copy(update={"upload_sarif": "never"})
    settings = settings.model_copy(
        update={"registry": registry, "build": build_group, "scan": scan_group}
    )
    config = load_repo_config(source / "k8s-ee.yaml", filename="k8s-ee.yaml")
    run = offline_run(config, repo=repo, pr=pr, sha=sha, ref="local", settings=settings)
    with tempfile.TemporaryDirectory(prefix="k8see-build-") as workdir:
        ctx = StageContext(
            settings=settings,
            log=logging.getLogger("k8see.build"),
            workdir=Path(workdir),
            record_log=lambda line: click.echo(line, err=True),
        )
        # This machine's checkout, vouched for by whoever runs the command (not a message).
        built_run = build_stage.build_checkout(
            run, ctx, source_dir=source, config=config, fork=None
        )
        run = scan_stage.scan_verified(built_run, ctx)
    built, scanned = BuildResult.of(run), ScanResult.of(run).to_json()
    if as_json:
        out = {"image": built.image, "platforms": built.platforms, "scan": scanned}
        click.echo(json.dumps({**out, "tags": built.tags}, sort_keys=True))
        return
    click.echo(f"Image:     {built.image}")
    click.echo(f"Platforms: {', '.join(built.platforms or [])}")
    click.echo(f"Tags:      {', '.join(built.tags or [])}")
    verdict = scan_stage.summary_text(scanned)
    click.echo(f"Scan:      {verdict} (policy {settings.scan.policy})")
