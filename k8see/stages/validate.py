"""validate: fetch the source at the head SHA, load ``k8s-ee.yaml``, apply platform policy.

Workers never trust the enqueuer: this stage resolves the head SHA itself when a comment
started the run, fetches the source, re-validates the config, checks the allowlist, and
re-decides the action with the repository's real trigger mode (the enqueuer may not know it).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from k8see import names
from k8see.config import load_repo_config
from k8see.config.policy import check_allowed
from k8see.errors import PolicyError, Stopped
from k8see.events import decide_from_comment, decide_from_flags
from k8see.integrations import kube, source
from k8see.integrations.github import make_client
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from k8see.stages.context import StageContext

CONFIG_FILE = "k8s-ee.yaml"
SOURCE_TIMEOUT_SECONDS = 120


def source_dir(settings: PlatformSettings, repo: str, sha: str) -> Path:
    """Where a worker keeps the source of ``repo`` at ``sha`` (the same path on every worker)."""
    root = Path(settings.build.workdir or Path(tempfile.gettempdir()) / "k8see-work")
    owner, name = names.check_repo(repo).lower().split("/")
    return root / "src" / f"{owner}__{name}" / names.check_sha(sha)


def ensure_source(run: Run, ctx: StageContext) -> Path:
    """Fetch the source at ``run.sha`` unless this worker already has it."""
    github = None if _is_local(run.source) else make_client(ctx.settings, log=ctx.log)
    return source.fetch_source(
        repo=run.repo,
        sha=run.sha,
        dest_dir=source_dir(ctx.settings, run.repo, run.sha),
        source=run.source,
        github=github,
        timeout_seconds=SOURCE_TIMEOUT_SECONDS,
    )


def run(run: Run, ctx: StageContext) -> Run:
    """Validate the run's repository at its head SHA and record the validated config."""
    settings = ctx.settings
    check_allowed(run.repo, allowlist_path=settings.policy.allowlist_path)
    if not run.sha:
        run = _resolve_head(run, ctx)

    directory = ensure_source(run, ctx)
    config = load_repo_config(directory / CONFIG_FILE, filename=CONFIG_FILE)
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
        "sha": run.sha,
        "ref": run.ref,
    }
    ctx.log.info("Config of %s at %s is valid (projectId %s).", run.repo, run.sha[:12], project_id)
    return run.with_result("validate", result)


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


def _resolve_head(run: Run, ctx: StageContext) -> Run:
    """A comment carries no SHA: read the PR's head from GitHub; the PR must be open."""
    pull = make_client(ctx.settings, log=ctx.log).get_pull(run.repo, run.pr)
    if pull.state != "open":
        raise PolicyError(
            f"PR #{run.pr} is not open, so it cannot be deployed.",
            hint="Reopen the pull request, then comment /deploy-preview again.",
        )
    sha = names.check_sha(pull.head_sha)
    return dataclasses.replace(run, sha=sha, ref=pull.head_ref or run.ref)


def _is_local(location: str) -> bool:
    return location.startswith("file://") or location.startswith("/")
