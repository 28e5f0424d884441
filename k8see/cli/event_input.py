"""What ``k8see enqueue`` reads from a workflow step: the GitHub event (a file or flags) and
the repository's ``k8s-ee.yaml`` (for its trigger mode and its path in the repository).

Kept apart from ``submit`` so the command module stays a thin layer of options and output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from k8see.errors import K8seeError, PolicyError

__all__ = ["api_request", "decide", "repository_path", "trigger_mode"]


def trigger_mode(config_path: str | None) -> str | None:
    """The repository's trigger mode, or None when there is no readable, valid config.

    An invalid ``k8s-ee.yaml`` must not stop the event: a close still has to destroy, and a
    push has to reach the workers, whose validate stage reports the error on the PR (comment
    and commit status) with its line and hint. The enqueuer only warns.
    """
    if not config_path:
        return None
    from k8see.config import load_repo_config

    try:
        return str(load_repo_config(Path(config_path), filename=config_path).trigger)
    except K8seeError as exc:
        click.echo(
            f"Warning: {exc.message} Queued anyway; the workers report the error on the PR.",
            err=True,
        )
        return None


def repository_path(config_path: str | None) -> str:
    """``--config`` as a path inside the repository (the workers' ``config-path``)."""
    if not config_path:
        return ""
    path = Path(os.path.normpath(config_path))
    workspace = os.environ.get("GITHUB_WORKSPACE")
    if path.is_absolute() and workspace and path.is_relative_to(Path(workspace).resolve()):
        path = path.relative_to(Path(workspace).resolve())
    from k8see.names import check_config_path

    return check_config_path(path.as_posix())


def decide(
    *,
    event_path: str | None,
    event_name: str | None,
    repo: str | None,
    pr: int | None,
    action: str | None,
    sha: str | None,
    ref: str | None,
    comment: str | None,
    commenter: str | None,
    mode: str | None,
) -> tuple[Any, str]:
    """The decision and the trigger label workers re-decide from."""
    from k8see import events

    if event_path:
        name = event_name or os.environ.get("GITHUB_EVENT_NAME") or ""
        if not name:
            raise click.UsageError(
                f"The event name is missing: {event_path} holds an event's payload, not its "
                "name.\nHint: pass --event-name pull_request (or issue_comment), or run in a "
                "GitHub Actions step, which sets GITHUB_EVENT_NAME."
            )
        try:
            payload = json.loads(Path(event_path).read_text())
        except (OSError, ValueError) as exc:
            raise PolicyError(
                f"Cannot read the GitHub event at {event_path}: {exc}.",
                hint='Pass --event-path "$GITHUB_EVENT_PATH" from a workflow step.',
            ) from exc
        except RecursionError:
            # json recurses once per level: 100,000 '[' exhaust the stack before any check.
            raise PolicyError(
                f"The GitHub event at {event_path} is nested too deeply to be a GitHub event.",
                hint='Pass --event-path "$GITHUB_EVENT_PATH", the file GitHub Actions wrote.',
            ) from None
        # Without the repository's config the enqueuer cannot know the trigger mode: it
        # assumes the mode under which the event counts and the worker re-decides.
        return events.decide_labelled(event_name=name, payload=payload, mode=mode)
    return events.decide_labelled(
        repo=repo,
        pr=pr,
        action=action,
        sha=sha,
        ref=ref,
        comment=comment,
        commenter=commenter,
        mode=mode,
    )


def api_request(
    *,
    event_path: str | None,
    event_name: str | None,
    flags: dict[str, Any],
    config_path: str,
    platforms: str,
) -> dict[str, Any]:
    """The body of ``POST /v1/enqueue`` for what ``decide`` just decided (it read the event).

    The API decides again from the same input, so it can check the event's repository
    against the token's.
    """
    extra = {"config_path": config_path, "platforms": platforms, "mode": flags.get("mode")}
    if event_path:
        name = event_name or os.environ.get("GITHUB_EVENT_NAME") or ""
        payload = json.loads(Path(event_path).read_text())
        return {"event_name": name, "payload": payload, **extra}
    return {**{k: v for k, v in flags.items() if v is not None}, **extra}
