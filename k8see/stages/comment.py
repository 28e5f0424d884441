"""The comment stage: upsert the one sticky PR comment, react, finish the GitHub Deployment.

The body is ``comment_body.render`` of the environment record as the stage started
(``ctx.record``), completed with the run's own identifiers; this module is the stage's I/O:
GitHub's comment (found by its hidden marker, so a second delivery edits it), the reaction on
the command comment, and the GitHub Deployment validate started.
"""

from __future__ import annotations

from typing import Any

from k8see.errors import GitHubError, PolicyError
from k8see.integrations.github import GitHubClient, make_client
from k8see.record import EnvironmentRecord
from k8see.results import CommentResult, ValidateResult
from k8see.run import Action, Run, Status
from k8see.stages.comment_body import render
from k8see.stages.context import StageContext

__all__ = ["record_changes", "run"]


def _reaction(status: str, run: Run) -> str | None:
    if status == Status.READY:
        return "rocket"
    if status in (Status.DESTROYED, Status.PRESERVED):
        return "+1"
    if status == Status.FAILED and run.action is Action.DESTROY:
        return "-1"
    return None


def run(run: Run, ctx: StageContext) -> Run:
    """Upsert the sticky comment from ``ctx.record``, react to the command comment."""
    record: dict[str, Any] = ctx.record.as_dict()
    for key, value in (
        ("repo", run.repo),
        ("pr", run.pr),
        ("sha", run.sha),
        ("ref", run.ref),
        ("run_id", run.run_id),
    ):
        if not record.get(key) and value:
            record[key] = value
    if record.get("merged") is None and run.merged:
        record["merged"] = True
    status = str(record.get("status") or Status.QUEUED)
    body = render(record, settings=ctx.settings)
    client = make_client(ctx.settings, log=ctx.log)
    marker = ctx.settings.github.comment_marker
    comment_id = _write_comment(client, run, body, marker, record.get("comment_id"), ctx)
    reaction = _reaction(status, run)
    if run.comment_id and reaction:
        try:
            client.add_reaction(run.repo, run.comment_id, reaction)
        except GitHubError as exc:  # a reaction is a courtesy: the comment already landed
            ctx.log.warning("Reaction %s on comment %s failed: %s", reaction, run.comment_id, exc)
    _update_deployment(client, run, record, status, ctx)
    return CommentResult(comment_id=comment_id).write(run)


def _write_comment(
    client: GitHubClient, run: Run, body: str, marker: str, known: Any, ctx: StageContext
) -> int:
    """Update the sticky comment the record names (one request); search and upsert when the
    record names none or GitHub no longer has it (deleted by hand)."""
    if not body.startswith(marker):
        body = f"{marker}\n{body}"
    comment_id = _int(known)
    if comment_id:
        try:
            client.update_comment(run.repo, comment_id, body)
            return comment_id
        except GitHubError as exc:
            if exc.status not in (404, 410):
                raise
            ctx.log.info("Comment %s is gone (%s); looking for the sticky one.", comment_id, exc)
    return client.upsert_comment(run.repo, run.pr, body, marker=marker)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _update_deployment(
    client: GitHubClient, run: Run, record: dict[str, Any], status: str, ctx: StageContext
) -> None:
    """Finish the GitHub Deployment validate started, so the PR shows "View deployment".

    Frugal: validate passes the deployment's id along, so a deploy's outcome is one call; a
    destroy finds the environment's newest deployment (one call) and retires it (one call).
    Runs that stopped before validate created a deployment (config errors) post nothing here:
    the ``k8see/validate`` commit status already says what failed.
    """
    environment = f"preview/{record.get('namespace') or f'pr-{run.pr}'}"
    try:
        if status in (Status.READY, Status.FAILED) and run.action is not Action.DESTROY:
            deployment = _deployment_id(run, ctx)
            if not deployment:
                return
            if status == Status.READY:
                url = str(record.get("preview_url") or "")
                client.set_deployment_status(
                    run.repo, deployment, "success", environment_url=url, description="Ready."
                )
            else:
                error = record.get("error")
                failed = (error.get("stage") if isinstance(error, dict) else None) or "a stage"
                client.set_deployment_status(
                    run.repo, deployment, "failure", description=f"Failed in {failed}."
                )
        elif status == Status.DESTROYED:  # a preserved environment still answers
            latest = client.latest_deployment(run.repo, environment=environment)
            if latest is not None:
                client.set_deployment_status(
                    run.repo, latest, "inactive", description="Environment destroyed."
                )
    except GitHubError as exc:  # the comment is the record users read; the badge is extra
        ctx.log.warning("GitHub deployment status for %s failed: %s", environment, exc)


def _deployment_id(run: Run, ctx: StageContext) -> int:
    """The GitHub Deployment validate started, if the message's validate result names one.

    The comment reports whatever happened, so a malformed result only skips the badge.
    """
    try:
        return ValidateResult.of(run).deployment_id or 0
    except PolicyError as exc:
        ctx.log.warning("No GitHub deployment status: %s", exc.message)
        return 0


def record_changes(run: Run, before: EnvironmentRecord) -> dict[str, Any]:
    """The sticky comment's id, and the status it showed (the watchdog re-sends a comment
    whose status is not the record's)."""
    return {
        "comment_id": CommentResult.of(run).comment_id,
        "commented": before.status,
    }
