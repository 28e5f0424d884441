"""``k8see enqueue``: decide what a GitHub event asks for, queue it, and follow the run.

The event is read by ``event_input`` and sent straight to Redis (``k8see.client``) or through
the API's workflow door (``api_door``). This is the workflow's cold start: it imports no worker
code (an import contract holds it), and nothing heavy before a command needs it.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from k8see.cli import api_door, event_input
from k8see.cli.common import (
    EXIT_UNREACHABLE,
    EXIT_USER_ERROR,
    EXIT_WAIT_TIMEOUT,
    fail,
    guard,
    platform_settings,
)
from k8see.errors import IntegrationError

__all__ = ["enqueue"]


@click.command()
@click.option("--event-path", type=click.Path(dir_okay=False), help="GitHub event JSON.")
@click.option("--event-name", help="pull_request or issue_comment (default $GITHUB_EVENT_NAME).")
@click.option("--repo", help="OWNER/REPO, when not reading an event.")
@click.option("--pr", type=int, help="PR number.")
@click.option(
    "--action", "pr_action", type=click.Choice(["opened", "reopened", "synchronize", "closed"])
)
@click.option("--sha", help="Head commit SHA (40 hex).")
@click.option("--ref", help="Head branch name.")
@click.option("--comment", help="A PR comment body, e.g. /deploy-preview.")
@click.option("--commenter", help="Login of the comment's author.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="k8s-ee.yaml in the checkout, relative to the repository root (config-path): its "
    "trigger mode is read here, and the workers read the file at that path.",
)
@click.option(
    "--platforms",
    default="",
    help="Build only these of the platform's platforms, e.g. linux/amd64 (default: all).",
)
@click.option(
    "--source",
    default="",
    hidden=True,
    help="Ignored: workers fetch sources from GitHub, or from their own "
    "K8SEE_BUILD__LOCAL_SOURCE_ROOT; a message never chooses where.",
)
@click.option("--dry-run", is_flag=True, help="Print the decision as JSON; enqueue nothing.")
@click.option("--wait", is_flag=True, help="Follow the run until ready or destroyed.")
@click.option(
    "--timeout",
    type=float,
    default=1800.0,
    show_default=True,
    help="Seconds --wait follows the run.",
)
@click.option(
    "--api",
    "api_url",
    help="Send the event to this k8see API (https://...) with the job's GitHub Actions OIDC "
    "token (needs `permissions: id-token: write`) instead of writing to Redis.",
)
@click.option(
    "--audience",
    default="k8see",
    show_default=True,
    help="The OIDC token's audience with --api (the platform's api.oidc_audience).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@guard
def enqueue(
    event_path: str | None,
    event_name: str | None,
    repo: str | None,
    pr: int | None,
    pr_action: str | None,
    sha: str | None,
    ref: str | None,
    comment: str | None,
    commenter: str | None,
    config_path: str | None,
    platforms: str,
    source: str,
    dry_run: bool,
    wait: bool,
    timeout: float,
    api_url: str | None,
    audience: str,
    as_json: bool,
) -> None:
    """Decide what a GitHub event asks for and queue it."""
    repository_path = event_input.repository_path(config_path)
    mode = event_input.trigger_mode(config_path)
    decision, trigger = event_input.decide(
        event_path=event_path,
        event_name=event_name,
        repo=repo,
        pr=pr,
        action=pr_action,
        sha=sha,
        ref=ref,
        comment=comment,
        commenter=commenter,
        mode=mode,
    )
    summary = {
        "action": decision.action.value,
        "repo": decision.repo,
        "pr": decision.pr,
        "sha": decision.sha,
        "reason": decision.reason,
    }
    if dry_run or decision.action.value == "skip":
        click.echo(json.dumps(summary) if (dry_run or as_json) else f"skip: {decision.reason}")
        return
    from k8see.client import POLL_SECONDS, follow

    if source:
        click.echo(
            "Warning: --source is ignored; workers read sources from GitHub or from their "
            "K8SEE_BUILD__LOCAL_SOURCE_ROOT setting.",
            err=True,
        )
    if api_url:
        settings = None
        request = event_input.api_request(
            event_path=event_path,
            event_name=event_name,
            flags={"repo": repo, "pr": pr, "action": pr_action, "sha": sha, "ref": ref,
                   "comment": comment, "commenter": commenter, "mode": mode},
            config_path=repository_path,
            platforms=platforms,
        )  # fmt: skip
        try:
            sent = api_door.send(api_url, audience=audience, request=request)
        except IntegrationError as exc:
            fail(exc, code=EXIT_UNREACHABLE, as_json=as_json)
    else:
        from k8see.client import enqueue as send

        settings = platform_settings()
        sent = api_door.Sent.of(
            send(
                decision,
                settings=settings,
                trigger=trigger,
                config_path=repository_path,
                platforms=platforms,
            )
        )
    if sent.duplicate_of:
        summary["duplicate_of"] = sent.duplicate_of
    summary["run_id"] = sent.run_id
    if sent.progress:
        # The enqueue credential reads this run's progress through this token, and nothing else.
        summary["progress"] = sent.progress
    if not wait or decision.action.value == "command":
        # A command (/help, /preserve, ...) is answered on the PR; there is no run to follow.
        shown = f"{sent.run_id} progress {sent.progress}" if sent.progress else sent.run_id
        click.echo(json.dumps(summary) if as_json else shown)
        return
    if not as_json:
        click.echo(f"run {sent.run_id}: {decision.action.value} {decision.repo}#{decision.pr}")
        if sent.progress:
            click.echo(f"progress {sent.progress}")
    started = time.monotonic()

    def progress(record: dict[str, Any]) -> None:
        if record.get("run_id") not in (sent.run_id, None) and not sent.progress:
            return
        stage = record.get("stage") or ""
        line = f"  {time.monotonic() - started:6.1f}s  {record.get('status', '?'):<11} {stage}"
        # With --json, stdout is the one JSON object; people still see the progress.
        click.echo(line, err=as_json)

    outcome = follow(
        settings=settings,
        repo=decision.repo,
        pr=decision.pr,
        run_id=sent.run_id,
        generation=sent.generation,
        timeout_seconds=timeout,
        on_change=progress,
        authorizing=sent.authorizing,
        look=sent.look,
        poll_seconds=sent.poll_seconds or POLL_SECONDS,
        progress=sent.progress,
    )
    summary.update(status=outcome.status, preview_url=outcome.record.get("preview_url"))
    if as_json:
        error = outcome.record.get("error")
        click.echo(json.dumps({**summary, "error": error, "timed_out": outcome.timed_out}))
    elif outcome.skipped:
        click.echo(f"skipped: {outcome.record.get('reason', '')}")
    elif outcome.ok:
        url = outcome.record.get("preview_url")
        click.echo(f"{outcome.status}" + (f": {url}" if url and outcome.status == "ready" else ""))
    if outcome.ok:
        return
    error = outcome.record.get("error") or {}
    if outcome.timed_out:
        message = f"Gave up following after {timeout:.0f}s (status {outcome.status})."
    elif outcome.superseded:
        message = "A newer event replaced this run."
    else:
        message = str(error.get("message") or f"The run ended as {outcome.status}.")
    click.echo(f"Error: {message}", err=True)
    if error.get("hint") and not outcome.timed_out:
        click.echo(f"Hint: {error['hint']}", err=True)
    if outcome.timed_out:
        click.echo(
            "Hint: the run goes on without you; follow it with `k8see status --pr "
            f"{decision.pr} --repo {decision.repo}`, or raise --timeout.",
            err=True,
        )
    sys.exit(EXIT_WAIT_TIMEOUT if outcome.timed_out else EXIT_USER_ERROR)
