"""validate: authorize, fetch the source at the head SHA, load ``k8s-ee.yaml``, apply policy.

Workers never trust the enqueuer. In order, this stage:

1. checks the platform allowlist (fail closed; the refusal says where to ask for access);
2. for a command comment, reads the comment from GitHub by its id and checks its author (as
   GitHub reports it, never as the message says) has write access (``trust``: others get a
   polite reply and the run stops as ``Refused``, leaving the environment as it was);
3. for a deploy, reads the PR from GitHub: a comment's run resolves the head SHA (the PR must
   be open); an event's run must name the PR's current head (an older commit stops as
   ``Stale``); a fork PR runs only at the one SHA a maintainer approved with
   ``/deploy-preview``, and only if the fork was not pushed after the approving comment;
4. fetches the source at that SHA (from where the worker's settings say), re-validates the
   config and re-decides the action with the repository's real trigger mode (the enqueuer
   may not know it); the result carries ``fork`` when the PR was read;
5. reports on GitHub: a failing ``k8see/validate`` commit status when the config is refused
   (``github.commit_status: always`` also posts success), and for a deploy a Deployment in
   ``preview/<namespace>`` (``github.deployments``; the comment stage finishes it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from redis.exceptions import RedisError

from k8see import approvals, names
from k8see.config.policy import check_allowed
from k8see.errors import GitHubError, PolicyError, Stopped, UserError
from k8see.events import decide_from_comment, decide_from_flags
from k8see.integrations import kube
from k8see.integrations.github import GitHubClient, make_client
from k8see.record import EnvironmentRecord
from k8see.redis_connect import connect
from k8see.results import ValidateResult
from k8see.run import Action, Run
from k8see.stages import trust
from k8see.stages.context import StageContext

#: The commit status context of this stage, shown in the PR's checks.
STATUS_CONTEXT = "k8see/validate"


def run(run: Run, ctx: StageContext) -> Run:
    """Validate the run's repository at its head SHA and record the validated config."""
    settings = ctx.settings
    _check_allowed(run, ctx)
    github = make_client(settings, log=ctx.log)
    command = None
    if run.trigger.startswith("issue_comment:"):
        # Authorized again, from GitHub: a ``command`` result in the message proves nothing.
        command = trust.authorize_command(github, run, ctx)
        run = dataclasses.replace(run, commenter=command.author)
        try:
            github.add_reaction(run.repo, run.comment_id, "eyes")
        except GitHubError as exc:  # a courtesy: the command still runs
            ctx.log.warning("The 👀 reaction on comment %s failed: %s", run.comment_id, exc)
    deploying = run.action is not Action.DESTROY
    fork: bool | None = None
    if deploying or not run.sha:
        run, fork = _check_pull(run, ctx, github, deploying=deploying, command=command)
    if not deploying:  # a /destroy-preview: validate only reads the trigger mode
        return _validate(run, ctx, github, fork=fork)
    try:
        run = _validate(run, ctx, github, fork=fork)
    except UserError as exc:
        _commit_status(github, run, ctx, "failure", exc.message)
        raise
    if settings.github.commit_status == "always":
        _commit_status(
            github, run, ctx, "success", f"{ValidateResult.of(run).config_path} is valid."
        )
    return _start_deployment(github, run, ctx)


def _validate(run: Run, ctx: StageContext, github: GitHubClient, *, fork: bool | None) -> Run:
    settings = ctx.settings
    directory = trust.checkout(run, ctx, github)
    config_path, config = trust.load_config(run, directory, settings)
    action = _redecide(run, config.trigger)
    if action is Action.SKIP:
        raise Stopped(
            f"Nothing to do: this repository uses trigger '{config.trigger}' and the event "
            f"was {run.trigger}."
        )
    project_id = config.project_id
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
    result = ValidateResult(
        config=config.to_dict(),
        project_id=project_id,
        namespace=namespace,
        preview_url=names.preview_url(project_id, run.pr, settings.deploy.domain),
        databases=config.enabled_databases(),
        trigger_mode=config.trigger,
        config_path=config_path,
        sha=run.sha,
        ref=run.ref,
    )
    if fork is not None:
        result = result.with_fields(fork=fork)
    ctx.log.info("Config of %s at %s is valid (projectId %s).", run.repo, run.sha[:12], project_id)
    return result.write(run)


def _check_allowed(run: Run, ctx: StageContext) -> None:
    """The allowlist, with the platform's own access-request address in the refusal."""
    try:
        check_allowed(run.repo, allowlist_path=ctx.settings.policy.allowlist_path)
    except PolicyError as exc:
        url = ctx.settings.policy.access_request_url
        if url:
            exc.hint = f"{exc.hint or ''} To request access, open {url}".strip()
        raise


def _check_pull(
    run: Run,
    ctx: StageContext,
    github: GitHubClient,
    *,
    deploying: bool,
    command: trust.Command | None,
) -> tuple[Run, bool]:
    """Read the PR: a command deploys its head of now, an event only the head it names, and a
    fork only the commit a maintainer approved.

    Returns:
        The run (its head resolved) and whether the PR comes from a fork.
    """
    pull = trust.pull_of(github, run)
    if command is not None or not run.sha:
        # A comment carries no commit; whatever commit the message names is not believed.
        if deploying and pull.state != "open":
            raise PolicyError(
                f"PR #{run.pr} is not open, so it cannot be deployed.",
                hint="Reopen the pull request, then comment /deploy-preview again.",
            )
        run = dataclasses.replace(
            run, sha=names.check_sha(pull.head_sha), ref=pull.head_ref or run.ref
        )
    elif deploying:
        trust.require_head(github, run, ctx, pull)
    if not deploying or not pull.fork:
        return run, pull.fork
    store = connect(ctx.settings.redis)
    try:
        if command is not None:
            # An authorized /deploy-preview approves the head of the moment it was written.
            trust.check_fork_push(github, run, ctx, pull, command)
            approvals.approve(store, repo=run.repo, pr=run.pr, sha=run.sha, by=command.author)
            ctx.log.info("Fork PR #%s: %s approved %s.", run.pr, command.author, run.sha[:12])
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
    """A GitHub Deployment (``in_progress`` with ``github.deployments: progress``); its id
    rides in the result for the comment stage, which gives it its final status.

    One request when this commit's deployment was never asked for: a Redis marker set before
    the create says whether an earlier attempt (a redelivery, or a ``/deploy-preview`` of
    the same head) may have made one, and only then is GitHub searched first.
    """
    mode = ctx.settings.github.deployments
    if mode == "off":
        return run
    result = ValidateResult.of(run)
    environment = deployment_environment(str(result.namespace))
    try:
        deployment = github.create_deployment(
            run.repo,
            sha=run.sha,
            environment=environment,
            description="k8see preview",
            reuse=not _first_deployment(run, ctx, environment),
        )
        if mode == "progress":
            github.set_deployment_status(
                run.repo, deployment, "in_progress", description="Building and deploying."
            )
    except GitHubError as exc:
        ctx.log.warning("The GitHub deployment for %s failed: %s", environment, exc)
        return run
    return result.with_fields(deployment_id=deployment).write(run)


#: How long validate remembers that a commit's deployment was asked for.
DEPLOYMENT_MARKER_SECONDS = 7 * 86400


def _first_deployment(run: Run, ctx: StageContext, environment: str) -> bool:
    """True once per commit and environment (Redis ``SET NX``); False if Redis cannot say."""
    key = f"k8see:deployment-asked:{run.repo.lower()}:{environment}:{run.sha}"
    store = connect(ctx.settings.redis)
    try:
        return bool(store.set(key, "1", nx=True, ex=DEPLOYMENT_MARKER_SECONDS))
    except (RedisError, OSError) as exc:
        ctx.log.warning("Redis did not answer (%s); looking for the deployment first.", exc)
        return False
    finally:
        store.close()


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


def record_changes(run: Run, before: EnvironmentRecord) -> dict[str, Any]:
    """What a validated run puts on the environment record: where it will live, and why."""
    result = ValidateResult.of(run)
    return {
        "project_id": result.project_id,
        "namespace": result.namespace,
        "preview_url": result.preview_url,
        "databases": list(result.databases),
        "sha": result.sha or run.sha,
        "ref": result.ref or run.ref,
        "trigger_mode": result.trigger_mode,
        "error": None,
    }
