"""Where a stage's config and image come from when a message cannot be believed.

Deploy and scan act on what validate and build produced, but a ``Run``'s results are written
by whoever sends the message (docs/security.md, docs/architecture.md "Trust"). Rather than
carry a signature (a key every worker would hold, and a second channel to rotate), they
re-derive:

- ``verified_config`` reads the PR from GitHub (open, this commit at its head, a fork's
  approval), fetches the source itself and validates ``k8s-ee.yaml`` again, and returns the
  same fields validate records;
- ``verified_image`` accepts the build's image only under the repository's own registry path,
  and only by the digest the registry has for this PR's tag (``pr-<N>``, which only builds of
  this PR push, each of the head verified on GitHub); the image is then named by that path and
  digest, never by the message's text. ``sha-<sha>`` is not required to match: two PRs of one
  commit build it twice, and builds are not bit-for-bit reproducible, so the last build of
  either would refuse the other's deploy.

Both refuse through ``trust.refuse`` (a WARNING in the worker log and one notice on the PR).
"""

from __future__ import annotations

from dataclasses import dataclass

from k8see import approvals, names
from k8see.config import RepoConfig
from k8see.config.policy import check_allowed
from k8see.errors import ConfigError, PlatformError, RegistryError, Where
from k8see.integrations.github import GitHubClient
from k8see.integrations.oci import parse_ref
from k8see.integrations.registry_access import registry_host, tag_digest
from k8see.redis_connect import connect
from k8see.results import BuildResult, ValidateResult
from k8see.run import Run
from k8see.settings import PlatformSettings
from k8see.stages import trust
from k8see.stages.context import StageContext

__all__ = [
    "VerifiedConfig",
    "image_repository",
    "require_approval",
    "verified_config",
    "verified_image",
]


def require_approval(github: GitHubClient, run: Run, settings: PlatformSettings) -> None:
    """A fork PR's commit runs only if it is the one a maintainer approved.

    Raises:
        Refused: the approval is missing or names another commit.
    """
    store = connect(settings.redis)
    try:
        approved = approvals.approved_sha(store, repo=run.repo, pr=run.pr)
    finally:
        store.close()
    if approved != run.sha:
        approvals.refuse_fork(github, repo=run.repo, pr=run.pr, sha=run.sha, approved=approved)


@dataclass(frozen=True)
class VerifiedConfig:
    """A run's config as the worker derived it itself.

    Attributes:
        config: ``k8s-ee.yaml`` from the worker's checkout, validated and admitted.
        result: What validate records for it: ``config`` (as JSON), ``project_id``,
            ``namespace``, ``preview_url``, ``databases``, ``config_path``, ``fork``, ``sha``.
    """

    config: RepoConfig
    result: ValidateResult


def verified_config(run: Run, ctx: StageContext, github: GitHubClient) -> VerifiedConfig:
    """What validate records for this run, derived again from GitHub and the worker's checkout.

    Raises:
        PolicyError: the repository is not allowed, or GitHub does not know the PR.
        Stale: the run's commit is not the PR's head.
        Refused: the PR is not open, or a fork commit no maintainer approved.
        ConfigError: ``k8s-ee.yaml`` at that commit is invalid.
    """
    settings = ctx.settings
    check_allowed(run.repo, allowlist_path=settings.policy.allowlist_path)
    pull = trust.pull_of(github, run)
    trust.require_head(github, run, ctx, pull)
    if pull.fork:
        require_approval(github, run, settings)
    directory = trust.checkout(run, ctx, github)
    config_path, config = trust.load_config(run, directory, settings)
    project_id = config.project_id
    result = ValidateResult(
        config=config.to_dict(),
        project_id=project_id,
        namespace=names.namespace(project_id, run.pr),
        preview_url=names.preview_url(project_id, run.pr, settings.deploy.domain),
        databases=config.enabled_databases(),
        config_path=config_path,
        fork=pull.fork,
        sha=run.sha,
    )
    return VerifiedConfig(config=config, result=result)


def verified_image(
    run: Run,
    ctx: StageContext,
    github: GitHubClient | None,
    *,
    build: BuildResult,
    repository: str = "",
) -> dict[str, str]:
    """The build's image, believed only if the registry says this run's build pushed it.

    Args:
        build: The message's build result (only its image and digest are read).
        repository: The image repository the verified config derives (deploy); empty to
            accept any repository under the run's own registry path (scan, which has no
            config).

    Returns:
        ``{"image": "<repository>@<digest>", "repository", "digest"}``.

    Raises:
        Refused: the image lies outside the repository's path, or neither tag of this run
            names its digest.
    """
    settings = ctx.settings
    host = registry_host(settings)
    own = f"{host}/{names.image_path(run.repo)}/"
    claimed = build.image or ""
    try:
        ref = parse_ref(claimed)
    except RegistryError:
        ref = None
    path = f"{ref.host}/{ref.repository}" if ref else ""
    digest = ref.reference if ref and ref.reference.startswith("sha256:") else ""
    digest = build.digest or digest
    wanted = repository or path
    if ref is None or path != wanted or not path.startswith(own):
        trust.refuse(
            github,
            run,
            ctx,
            f"The image {claimed[:120]!r} is not one k8see built for {run.repo}: images of this "
            f"repository live under {own}" + (f" at {repository}." if repository else "."),
            "Push again to build and deploy the PR's head.",
        )
    for tag in (names.image_tag(run.pr),):
        try:
            found = tag_digest(settings, f"{path}:{tag}")
        except RegistryError as exc:
            if "does not exist" not in exc.message:
                raise
            found = ""
        if found != digest:
            trust.refuse(
                github,
                run,
                ctx,
                f"The image {path}@{digest[:19] or '(no digest)'} is not the build of "
                f"{run.sha[:12]} for PR #{run.pr}: the registry's {tag} is "
                f"{found[:19] or 'missing'}.",
                "Push again to build and deploy the PR's head.",
            )
    return {"image": f"{path}@{digest}", "repository": path, "digest": digest}


def image_repository(
    settings: PlatformSettings,
    repo: str,
    project_id: str,
    custom: object = None,
    *,
    host: str | None = None,
    config_file: str = names.DEFAULT_CONFIG_PATH,
) -> str:
    """The image repository: ``image.repository`` if set, else the platform's naming.

    A custom repository must be on the platform's registry, under the repository's own path
    (``<host>/<owner>/<repo>/...``): builds push with the platform's credentials, which must
    not be pointed at another registry, or at another repository's images, by a pull
    request. ``host`` is the registry host when already resolved (ECR derives it from the
    AWS account).

    Raises:
        ConfigError: the custom repository is invalid or outside the repository's path.
    """
    host = host or settings.registry.host
    if not custom:
        return names.image_repository(host, repo, project_id)
    value = str(custom)
    where = Where(file=config_file, field="image.repository")
    try:
        ref = parse_ref(f"{value}:probe")
    except PlatformError as exc:
        raise ConfigError(
            f"image.repository {value!r} is not a valid image repository.",
            hint=f"Use lowercase HOST/PATH, e.g. '{host}/owner/app', or leave it out.",
            where=where,
        ) from exc
    own = f"{host}/{names.image_path(repo)}"
    if ref.host != host:
        raise ConfigError(
            f"image.repository {value!r} is not on this platform's registry {host}.",
            hint=f"Use a repository under {own}/, or leave image.repository out.",
            where=where,
        )
    if not value.startswith(own + "/"):
        raise ConfigError(
            f"image.repository {value!r} is outside {repo}'s own path {own}/ on the registry.",
            hint=f"Use a repository under {own}/, or leave image.repository out.",
            where=where,
        )
    return value
