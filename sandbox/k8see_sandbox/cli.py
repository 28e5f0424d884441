"""The sandbox commands of ``k8see``: local stand-ins for a cluster and GitHub, and the demo.

Kept apart from ``k8see.cli`` because they serve the tests and ``make demo``, not the platform;
``k8see.cli`` registers them on its group from the ``k8see.commands`` entry points of this
distribution (``sandbox/pyproject.toml``). Each imports ``k8see_sandbox`` lazily, so the
client's commands never load the stand-ins.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
def sandbox() -> None:
    """A local cluster and the GitHub stand-in (tests and the demo)."""


@sandbox.command("cluster")
def sandbox_cluster() -> None:
    """Run a local Kubernetes cluster (control plane and one node) until interrupted."""
    from k8see_sandbox.cluster import LocalCluster
    from k8see_sandbox.platform import interrupt_on_signals, serve_until_signalled

    interrupt_on_signals()  # a SIGTERM during the start stops what started (LocalCluster.start)
    cluster = LocalCluster().start()
    click.echo(f"export KUBECONFIG={cluster.admin_kubeconfig}  # cluster-admin; Ctrl-C stops it")
    serve_until_signalled(cluster.stop)


@sandbox.command("github")
@click.option("--port", type=int, default=0, show_default=True)
def sandbox_github(port: int) -> None:
    """Serve the sandbox GitHub API."""
    from k8see_sandbox.github import main as serve

    sys.exit(serve(["--port", str(port)]))


@sandbox.command("up")
@click.option(
    "--dir",
    "workdir",
    default=".sandbox",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where state, logs and the env file go.",
)
def sandbox_up(workdir: str) -> None:
    """Start Redis, the Kubernetes and GitHub stand-ins and a registry; print their env."""
    from k8see_sandbox.platform import run_forever

    sys.exit(run_forever(Path(workdir)))


@click.command()
@click.option("--example", default="hello", show_default=True, help="Which examples/<app>.")
@click.option("--keep", is_flag=True, help="Leave the platform running afterwards.")
@click.option(
    "--dir", "workdir", default=".sandbox", show_default=True, type=click.Path(file_okay=False)
)
@click.option(
    "--front-door",
    type=click.Choice(["app", "workflow", "redis"]),
    default="app",
    show_default=True,
    help="How the events arrive: the GitHub App's webhook, a workflow's OIDC token (both "
    "through `k8see api`), or straight to Redis.",
)
def demo(example: str, keep: bool, workdir: str, front_door: str) -> None:
    """Run the main job on the local sandbox: open a PR, see it ready, close it."""
    from k8see_sandbox.demo import run_demo

    code = run_demo(example=example, keep=keep, workdir=Path(workdir), front_door=front_door)
    sys.exit(code)
