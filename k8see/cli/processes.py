"""The long-running processes: ``worker``, ``beat``, ``flower`` and ``metrics``.

They only pick queues and options, then hand over to Celery's own worker, beat and Flower
(the same command lines the Procfile and the platform chart may use directly).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from k8see.app import QUEUES
from k8see.cli.common import EXIT_UNREACHABLE, EXIT_USAGE, platform_settings

__all__ = ["POOLS", "beat", "flower", "metrics_cmd", "worker"]

#: The queues each worker pool consumes: one pool per queue of the app, or all of them.
POOLS: dict[str, tuple[str, ...]] = {**{queue: (queue,) for queue in QUEUES}, "all": QUEUES}

_HEARTBEAT_FILE = click.option(
    "--heartbeat-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Touch this file from the main loop every --heartbeat-interval seconds: a liveness "
    "probe reads its age (k8see.liveness; the platform chart's probes).",
)
_HEARTBEAT_INTERVAL = click.option(
    "--heartbeat-interval",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds between two touches of --heartbeat-file.",
)


def _heartbeat(path: Path | None, interval_seconds: float) -> None:
    """Configure the heartbeat file on the app Celery loads (``-A k8see.app``)."""
    if path is None:
        return
    from k8see import liveness
    from k8see.app import app

    liveness.configure(app, path, interval_seconds)


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--pool", type=click.Choice(sorted(POOLS)), default="default", show_default=True)
@click.option("--concurrency", type=int, help="Override the pool's concurrency.")
@_HEARTBEAT_FILE
@_HEARTBEAT_INTERVAL
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(
    pool: str,
    concurrency: int | None,
    heartbeat_file: Path | None,
    heartbeat_interval: float,
    celery_args: tuple[str, ...],
) -> None:
    """Run a worker pool (celery worker with the pool's queues and concurrency)."""
    settings = platform_settings()
    _heartbeat(heartbeat_file, heartbeat_interval)
    per_pool = {
        "default": settings.queues.default_concurrency,
        "build": settings.queues.build_concurrency,
        "deploy": settings.queues.deploy_concurrency,
        "maintenance": settings.queues.maintenance_concurrency,
    }
    count = concurrency or (sum(per_pool.values()) if pool == "all" else per_pool[pool])
    # Before any task runs: a build step of the same user must not read this process's env.
    from k8see.hardening import deny_same_user_inspection

    if not deny_same_user_inspection():
        click.echo("Warning: the worker could not make itself non-dumpable.", err=True)
    # Prefork children write their metrics here and the main process serves them (k8see.metrics).
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        import tempfile

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="k8see-metrics-")
    _celery(
        [
            "worker",
            "-Q",
            ",".join(POOLS[pool]),
            "-c",
            str(count),
            "-n",
            f"{pool}@%h",
            "-E",
            "--loglevel",
            "INFO",
            *celery_args,
        ]
    )


@click.command(context_settings={"ignore_unknown_options": True})
@_HEARTBEAT_FILE
@_HEARTBEAT_INTERVAL
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(
    heartbeat_file: Path | None, heartbeat_interval: float, celery_args: tuple[str, ...]
) -> None:
    """Run the scheduler of the maintenance jobs."""
    scheduler: list[str] = []
    if heartbeat_file is not None:
        _heartbeat(heartbeat_file, heartbeat_interval)
        scheduler = ["--scheduler", "k8see.liveness.HeartbeatScheduler"]
    _celery(["beat", "--loglevel", "INFO", *scheduler, *celery_args])


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", type=int, default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Serve Flower without authentication (a laptop only: Flower can revoke tasks).",
)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(port: int, address: str, insecure_no_auth: bool, flower_args: tuple[str, ...]) -> None:
    """Run Flower, the admins' dashboard; authentication is required.

    Basic auth from FLOWER_BASIC_AUTH=user:password (or --basic-auth=...), or GitHub OAuth from
    FLOWER_AUTH_PROVIDER=flower.views.auth.GithubLoginHandler, FLOWER_AUTH (an email regex),
    FLOWER_OAUTH2_KEY, FLOWER_OAUTH2_SECRET and FLOWER_OAUTH2_REDIRECT_URI.
    """
    given = " ".join(flower_args)
    basic = os.environ.get("FLOWER_BASIC_AUTH") or "--basic-auth" in given
    oauth = (os.environ.get("FLOWER_AUTH_PROVIDER") or "--auth_provider" in given) and (
        os.environ.get("FLOWER_AUTH") or "--auth=" in given
    )
    if not (basic or oauth or insecure_no_auth):
        click.echo("Error: Flower would start without authentication.", err=True)
        click.echo(
            "Hint: set FLOWER_BASIC_AUTH=user:password, or GitHub OAuth (FLOWER_AUTH_PROVIDER, "
            "FLOWER_AUTH, FLOWER_OAUTH2_KEY/SECRET/REDIRECT_URI); --insecure-no-auth only on a "
            "laptop.",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    # Show each task's arguments (its argsrepr: repo#PR, generation, commit) in the task list.
    columns = (
        []
        if "tasks_columns" in given or os.environ.get("FLOWER_TASKS_COLUMNS")
        else ["--tasks_columns=name,args,state,received,started,runtime,worker,uuid"]
    )
    # /metrics behind the same authentication as the pages (k8see.dashboard).
    from k8see.dashboard import protect_metrics

    protect_metrics()
    _celery(["flower", f"--port={port}", f"--address={address}", *columns, *flower_args])


@click.command("metrics")
@click.option("--port", type=int, default=9808, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True)
def metrics_cmd(port: int, address: str) -> None:
    """Serve /metrics for the workers sharing PROMETHEUS_MULTIPROC_DIR, plus the record gauges."""
    import signal

    from k8see.metrics import serve

    settings = platform_settings()
    if not serve(port=port, redis_settings=settings.redis, address=address):
        click.echo(f"Error: cannot listen on {address}:{port}.", err=True)
        sys.exit(EXIT_UNREACHABLE)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})


def _celery(argv: list[str]) -> NoReturn:
    """Hand over to Celery's own command line with k8see's app."""
    from celery.bin.celery import main as celery_main

    # Celery's start-up banner is printed, not logged: with JSON logs it would be the only
    # lines that are not JSON, so -q leaves it out.
    json_logs = click.get_current_context().find_root().params.get("log_format") == "json"
    sys.argv = ["celery", "-A", "k8see.app", *(["-q"] if json_logs else []), *argv]
    sys.exit(celery_main())
