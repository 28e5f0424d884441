"""``k8see status``: the environment records of one repository, or one submission's run.

The admin credential lists every repository; the enqueue credential reads only the progress of
its own submissions (docs/security.md).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from k8see.cli.common import EXIT_USAGE, guard, platform_settings

__all__ = ["STATUS_COLUMNS", "status"]

STATUS_COLUMNS = ("repo", "pr", "status", "stage", "sha", "preview_url", "updated_at")


@click.command()
@click.option("--repo", help="Only this OWNER/REPO (required without the admin credential).")
@click.option("--pr", type=int, help="Only this PR.")
@click.option(
    "--progress",
    "token",
    help="Only the run of this submission: the progress token `k8see enqueue` printed (all "
    "the enqueue credential may read).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@guard
def status(repo: str | None, pr: int | None, token: str | None, as_json: bool) -> None:
    """Show the environment records of one repository (--repo), or one submission's run
    (--progress).

    Every repository's records are listed only for the admin credential: a K8SEE_REDIS__URL
    whose Redis ACL user is redis.admin_username. The enqueue credential reads nothing but
    the progress of its own submissions.

    \b
    Example:
      k8see status --repo acme/shop --pr 42 --json
      k8see status --progress "$TOKEN"
    """
    from urllib.parse import unquote, urlsplit

    from k8see import names, redis_acl, state
    from k8see.redis_connect import connect

    settings = platform_settings()
    if token is not None:
        client = connect(settings.redis)
        found = state.read_progress(client, token=token)
        record = found.get("record")
        records = [record] if isinstance(record, dict) else []
        _show(records, as_json=as_json)
        if not records:
            outcome = found.get("outcome") or {}
            message = outcome.get("message") if isinstance(outcome, dict) else None
            click.echo(
                f"Not admitted: {message}." if message
                else "No progress yet (not admitted, unknown token, or expired).",
                err=True,
            )  # fmt: skip
        return
    if redis_acl.role_of(settings.redis.url) == "enqueue":
        click.echo("Error: the enqueue credential reads only its own submissions.", err=True)
        click.echo(
            "Hint: pass --progress TOKEN, the token `k8see enqueue` printed for the run.", err=True
        )
        sys.exit(EXIT_USAGE)
    if repo is None:
        user = unquote(urlsplit(settings.redis.url).username or "")
        if user != settings.redis.admin_username:
            click.echo(
                "Error: k8see status shows one repository: pass --repo OWNER/REPO.", err=True
            )
            click.echo(
                "Hint: listing every repository needs the admin credential, a "
                "K8SEE_REDIS__URL whose Redis user is redis.admin_username "
                f"({settings.redis.admin_username}).",
                err=True,
            )
            sys.exit(EXIT_USAGE)
    else:
        repo = names.check_repo(repo)
    client = connect(settings.redis)
    records = [state.public(r) for r in state.list_records(client, repo=repo, pr=pr)]
    _show(records, as_json=as_json)


def _show(records: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(records, indent=2, sort_keys=True))
        return
    if not records:
        click.echo("No environments.")
        return
    rows = [[_cell(r, c) for c in STATUS_COLUMNS] for r in records]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(STATUS_COLUMNS)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(STATUS_COLUMNS, widths, strict=True)))
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(record: dict[str, Any], column: str) -> str:
    value = record.get(column)
    if column == "sha" and value:
        return str(value)[:12]
    if column == "stage" and record.get("status") in ("ready", "destroyed", "preserved"):
        return ""
    if column == "status" and value == "waiting" and record.get("capacity_position"):
        return f"waiting (position {record['capacity_position']})"  # the capacity queue
    return "" if value is None else str(value)
