"""validate: authorize, fetch the source at the head SHA, load ``k8s-ee.yaml``, apply policy.

Workers never trust the enqueuer. In order, this stage:

1. checks the platform allowlist (fail closed; the refusal says where to ask for access);
2. for a command comment, checks the commenter has write access (``approvals.authorize``:
   others get a polite reply and the run stops as ``Refused``, leaving the environment as it
   was), then reacts 👀;
3. for a deploy, reads the PR from GitHub: a comment's run resolves the head SHA (the PR must
   be open); a fork PR runs only at the one SHA a maintainer approved with ``/deploy-preview``;
4. fetches the source at that SHA, re-validates the config and re-decides the action with the
   repository's real trigger mode (the enqueuer may not know it); the result carries ``fork``
   when the PR was read (the build stage treats a PR whose fork status is unknown as a fork);
5. reports on GitHub: a ``k8see/validate`` commit status, and for a deploy a Deployment in
   ``preview/<namespace>`` marked ``in_progress`` (the comment stage finishes it).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import redis

from k8see import approvals, names
from k8see.config import load_repo_config
from k8see.config.policy import check_allowed
from k8see.errors import ConfigError, GitHubError, PolicyError, Stopped, UserError, Where
from k8see.events import decide_from_comment, decide_from_flags, parse_command
from k8see.integrations import kube, source
from k8see.integrations.github import GitHubClient, make_client
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from k8see.stages.context import StageContext

SOURCE_TIMEOUT_SECONDS = 120
#: The commit status context of this stage, shown in the PR's checks.
STATUS_CONTEXT = "k8see/validate"


def _inside(directory: Path, config_path: str) -> Path:
    """The config file in the source tree; a symlink out of the tree is refused."""
    path = directory / config_path
    if not path.resolve().is_relative_to(directory.resolve()):
        raise ConfigError(
            f"{config_path} leads outside the repository through a symbolic link.",
            hint=f"Commit {config_path} as a regular file.",
            where=Where(file=config_path),
        )
    return path


def source_dir(settings: PlatformSettings, repo: str, sha: str) -> Path:
    """Where a worker keeps the source of ``repo`` at ``sha`` (the same path on every worker)."""
    root = Path(settings.build.workdir or Path(tempfile.gettempdir()) / "k8see-work")
    owner, name = names.check_repo(repo).lower().split("/")
    return root / "src" / f"{owner}__{name}" / names.check_sha(sha)


def ensure_source(run: Run, ctx: StageContext) -> Path:
    """Fetch the source at ``run.sha`` unless this worker already has it."""
    github = None if _is_local(run.source) else make_client(ctx.settings, log=ctx.log)
    dest_dir = source_dir(ctx.settings, run.repo, run.sha)
    if max_idle := ctx.settings.build.source_max_idle_hours:
        source.collect_idle(dest_dir.parent.parent, max_idle_seconds=max_idle * 3600)
    return source.fetch_source(
        repo=run.repo,
        sha=run.sha,
        dest_dir=dest_dir,
        source=run.source,
        github=github,
        timeout_seconds=SOURCE_TIMEOUT_SECONDS,
    )


def run(run: Run, ctx: StageContext) -> Run:
    """Validate the run's repository at its head SHA and record the validated config."""
    settings = ctx.settings
    _check_allowed(run, ctx)
    github = make_client(settings, log=ctx.log)
    if run.trigger.startswith("issue_comment:") and not run.result("command").get("permission"):
        # Commands are authorized by the command task before they are admitted; this covers
        # runs enqueued without it (older clients, replays).
        _authorize(run, ctx, github)
    deploying = run.action is not Action.DESTROY
    fork: bool | None = None
    if deploying or not run.sha:
        run, fork = _check_pull(run, ctx, github, deploying=deploying)
    if not deploying:  # a /destroy-preview: validate only reads the trigger mode
        return _validate(run, ctx, fork=fork)
    try:
        run = _validate(run, ctx, fork=fork)
    except UserError as exc:
        _commit_status(github, run, ctx, "failure", exc.message)
        raise
    _commit_status(
        github, run, ctx, "success", f"{run.result('validate')['config_path']} is valid."
    )
    return _start_deployment(github, run, ctx)


def _validate(run: Run, ctx: StageContext, *, fork: bool | None) -> Run:
    settings = ctx.settings
    directory = ensure_source(run, ctx)
    config_path = names.check_config_path(run.config_path)
    config = load_repo_config(_inside(directory, config_path), filename=config_path)
    action = _redecide(run, config.trigger)
    if action is Action.SKIP:
        raise Stopped(
            f"Nothing to do: this repository uses trigger '{config.trigger}' and the event "
            f"was {run.trigger}."
        )
    data = config.to_dict()
    project_id = str(data["projectId"])
    namespace = names.namespace(project_id, run.pr)
    if action is Action.REDEPLOY_IF_EXISTS:
        api = kube.make_api(settings)
        if not kube.find_namespaces(api=api, repo=run.repo, pr=run.pr):
            raise Stopped(
                "On-demand mode: no environment exists for this PR, so the push is not "
                "deployed. Comment /deploy-preview to create one."
            )
        action = Action.DEPLOY
    run = dataclasses.replace(run, action=action)
    result: dict[str, Any] = {
        "config": data,
        "project_id": project_id,
        "namespace": namespace,
        "preview_url": names.preview_url(project_id, run.pr, settings.deploy.domain),
        "databases": config.enabled_databases(),
        "source_dir": str(directory),
        "trigger_mode": config.trigger,
        "config_path": config_path,
        "sha": run.sha,
        "ref": run.ref,
    }
    if fork is not None:
        result["fork"] = fork
    ctx.log.info("Config of %s at %s is valid (projectId %s).", run.repo, run.sha[:12], project_id)
    return run.with_result("validate", result)


def _check_allowed(run: Run, ctx: StageContext) -> None:
    """The allowlist, with the platform's own access-request address in the refusal."""
    try:
        check_allowed(run.repo, allowlist_path=ctx.settings.policy.allowlist_path)
    except PolicyError as exc:
        url = ctx.settings.policy.access_request_url
        if url:
            exc.hint = f"{exc.hint or ''} To request access, open {url}".strip()
        raise


def _authorize(run: Run, ctx: StageContext, github: GitHubClient) -> None:
    """A command counts only from someone with write access; 👀 says it was accepted."""
    command, _, _ = parse_command(run.trigger.partition(":")[2])
    approvals.authorize(
        github,
        repo=run.repo,
        pr=run.pr,
        commenter=run.commenter,
        command=command or "deploy-preview",
        comment_id=run.comment_id,
        log=ctx.log,
    )
    if run.comment_id:
        try:
            github.add_reaction(run.repo, run.comment_id, "eyes")
        except GitHubError as exc:  # a courtesy: the command still runs
            ctx.log.warning("The 👀 reaction on comment %s failed: %s", run.comment_id, exc)


def _check_pull(
    run: Run, ctx: StageContext, github: GitHubClient, *, deploying: bool
) -> tuple[Run, bool]:
    """Read the PR: resolve a comment's head, and run a fork only at its approved SHA.

    Returns:
        The run (its head resolved) and whether the PR comes from a fork.
    """
    try:
        pull = github.get_pull(run.repo, run.pr)
    except GitHubError as exc:
        if exc.status != 404:
            raise
        raise PolicyError(
            f"PR #{run.pr} of {run.repo} was not found on GitHub.",
            hint="Check the PR exists and k8see's GitHub App is installed on the repository.",
        ) from None
    if not run.sha:
        if deploying and pull.state != "open":
            raise PolicyError(
                f"PR #{run.pr} is not open, so it cannot be deployed.",
                hint="Reopen the pull request, then comment /deploy-preview again.",
            )
        run = dataclasses.replace(
            run, sha=names.check_sha(pull.head_sha), ref=pull.head_ref or run.ref
        )
    if not deploying or not pull.fork:
        return run, pull.fork
    store = redis.Redis.from_url(ctx.settings.redis.url)
    try:
        if run.trigger.startswith("issue_comment:"):
            # An authorized /deploy-preview approves exactly the head it just resolved.
            approvals.approve(store, repo=run.repo, pr=run.pr, sha=run.sha, by=run.commenter)
            ctx.log.info("Fork PR #%s: %s approved %s.", run.pr, run.commenter, run.sha[:12])
            return run, True
        approved = approvals.approved_sha(store, repo=run.repo, pr=run.pr)
    finally:
        store.close()
    if approved != run.sha:
        approvals.refuse_fork(github, repo=run.repo, pr=run.pr, sha=run.sha, approved=approved)
    return run, True


def _commit_status(
    github: GitHubClient, run: Run, ctx: StageContext, state: str, description: str
) -> None:
    if not run.sha:
        return
    try:
        github.set_commit_status(
            run.repo, run.sha, state, context=STATUS_CONTEXT, description=description
        )
    except GitHubError as exc:  # a badge: the PR comment is the record users read
        ctx.log.warning("The %s commit status failed: %s", STATUS_CONTEXT, exc)


def _start_deployment(github: GitHubClient, run: Run, ctx: StageContext) -> Run:
    """A GitHub Deployment marked in_progress; its id rides in the result for the comment."""
    result = run.result("validate")
    environment = deployment_environment(str(result["namespace"]))
    try:
        deployment = github.create_deployment(
            run.repo, sha=run.sha, environment=environment, description="k8see preview"
        )
        github.set_deployment_status(
            run.repo, deployment, "in_progress", description="Building and deploying."
        )
    except GitHubError as exc:
        ctx.log.warning("The GitHub deployment for %s failed: %s", environment, exc)
        return run
    return run.with_result("validate", {**result, "deployment_id": deployment})


def deployment_environment(namespace: str) -> str:
    """The GitHub environment name of a PR's preview (the comment stage uses the same rule)."""
    return f"preview/{namespace}"


def _redecide(run: Run, trigger_mode: str) -> Action:
    """The action for this run's event under the repository's real trigger mode."""
    event, _, what = run.trigger.partition(":")
    if event == "issue_comment":
        decision = decide_from_comment(
            repo=run.repo, pr=run.pr, body=what, trigger=trigger_mode, commenter=""
        )
    elif event == "pull_request":
        decision = decide_from_flags(
            repo=run.repo, pr=run.pr, action=what, sha=run.sha, ref=run.ref, trigger=trigger_mode
        )
    else:  # manual runs (k8see enqueue --action ... without an event) keep their action
        return run.action
    if decision.action is Action.SKIP:
        return Action.SKIP
    return decision.action


def _is_local(location: str) -> bool:
    return location.startswith("file://") or location.startswith("/")
