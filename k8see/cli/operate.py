"""The operators' one-off commands: ``cleanup`` (the stale-environment reconciler, now),
``redis-acl`` (Redis's aclfile, one user per role) and ``doctor`` (the cluster and the deploy
credentials can do what k8see needs)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from k8see.cli.common import EXIT_OK, EXIT_USAGE, EXIT_USER_ERROR, guard, platform_settings

__all__ = ["cleanup_cmd", "doctor", "redis_acl_cmd"]


@click.command("cleanup")
@click.option("--dry-run", is_flag=True, help="Report what would be destroyed; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@guard
def cleanup_cmd(dry_run: bool, as_json: bool) -> None:
    """Run the stale-environment reconciler once, now (the beat job runs it every 15 minutes)."""
    from k8see.jobs.cleanup import run_cleanup
    from k8see.jobs.connections import redis_client
    from k8see.jobs.registry_gc import run_registry_gc

    settings = platform_settings()
    client = redis_client(settings)
    report = run_cleanup(settings=settings, client=client, dry_run=dry_run)
    report["registry"] = run_registry_gc(settings=settings, client=client, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(report, sort_keys=True, default=str))
        return
    verb = "would destroy" if dry_run else "destroying"
    for entry in report["destroyed"]:
        where = f"{entry['repo']}#{entry['pr']}"
        click.echo(f"{verb} {entry['namespace']} ({where}): {entry['reason']}")
    kept = ", ".join(f"{n} {reason}" for reason, n in sorted(report["kept"].items()))
    click.echo(f"checked {report['checked']} namespaces; kept: {kept or 'none'}")
    for name in report["vanished"]:
        marked = "would mark" if dry_run else "marked"
        click.echo(f"record {name}: namespace gone, {marked} destroyed")
    click.echo(f"GitHub calls: {report['github_calls']}")


@click.command("redis-acl")
@click.option(
    "--rules",
    "rules_only",
    is_flag=True,
    help="Print each role's rules only (`<role> <rules>` per line, no passwords).",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the aclfile here (mode 0600) instead of printing it.",
)
def redis_acl_cmd(rules_only: bool, output: str | None) -> None:
    """Write Redis's aclfile: the default user unusable and one user per role (k8see.redis_acl).

    Each role's password comes from K8SEE_REDIS_PASSWORD_<ROLE> (ENQUEUE, WORKER, BEAT,
    FLOWER, SCALER, PROBE, ADMIN); a role without one gets no user. The file holds SHA-256
    hashes only.

    \b
    Example:
      K8SEE_REDIS_PASSWORD_WORKER=... k8see redis-acl --output /acl/users.acl
    """
    from k8see import redis_acl

    if rules_only:
        text = redis_acl.rules_file()
    else:
        passwords = {
            role: os.environ[f"K8SEE_REDIS_PASSWORD_{role.upper()}"]
            for role in redis_acl.ROLES
            if os.environ.get(f"K8SEE_REDIS_PASSWORD_{role.upper()}")
        }
        if not passwords:
            click.echo("Error: no K8SEE_REDIS_PASSWORD_<ROLE> is set.", err=True)
            click.echo(
                "Hint: set one per role that connects, e.g. K8SEE_REDIS_PASSWORD_WORKER, "
                "..._BEAT, ..._FLOWER, ..._ENQUEUE and ..._ADMIN.",
                err=True,
            )
            sys.exit(EXIT_USAGE)
        text = redis_acl.aclfile(passwords)
    if output is None:
        click.echo(text, nl=False)
        return
    path = Path(output)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


@click.command()
@click.option("--namespace", default="k8see-doctor-pr-0", help="Where PR rights are checked.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@guard
def doctor(namespace: str, as_json: bool) -> None:
    """Check the cluster serves the operators' kinds k8see's options need, and the deploy
    credentials may do what the deploy pool does. Exits 1 when something is missing."""
    from k8see.doctor import check

    report = check(platform_settings(), namespace=namespace)
    click.echo(json.dumps(report.to_dict(), sort_keys=True) if as_json else report.text())
    sys.exit(EXIT_OK if report.ok else EXIT_USER_ERROR)
