"""The ``k8see`` command: one click group, its commands in modules by concern.

- ``submit``: ``enqueue`` (the event, read by ``event_input``; ``--api`` sends through
  ``api_door``, which also holds ``k8see api``);
- ``local``: ``validate``, ``schema``, ``render``, ``build`` (this machine, no platform);
- ``records``: ``status``;
- ``processes``: ``worker``, ``beat``, ``flower``, ``metrics`` (they only pick queues and
  options, then hand over to Celery's own worker, beat and Flower);
- ``operate``: ``cleanup``, ``redis-acl``, ``doctor``;
- ``common``: the exit codes, the error guard and the settings every command shares;
- plugins (``sandbox``, ``demo`` from k8see-sandbox) come through the ``k8see.commands``
  entry points, loaded only when asked for.

Heavy imports happen inside the commands that need them, so ``k8see enqueue`` starts fast. A
``K8seeError`` prints ``Error: …`` and ``Hint: …``, never a traceback. The command modules never
import each other (import-linter).
"""

from __future__ import annotations

from typing import Any

import click

from k8see.cli.api_door import api
from k8see.cli.common import (
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    EXIT_USER_ERROR,
    EXIT_WAIT_TIMEOUT,
    guard,
)
from k8see.cli.local import build_command, render, schema, validate
from k8see.cli.operate import cleanup_cmd, doctor, redis_acl_cmd
from k8see.cli.processes import POOLS, beat, flower, metrics_cmd, worker
from k8see.cli.records import status
from k8see.cli.submit import enqueue

__all__ = [
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "EXIT_USER_ERROR",
    "EXIT_WAIT_TIMEOUT",
    "PLUGIN_GROUP",
    "POOLS",
    "main",
]

EPILOG = """\b
Examples:
  k8see enqueue --event-path "$GITHUB_EVENT_PATH" --config k8s-ee.yaml --wait
  k8see enqueue --repo acme/shop --pr 42 --action opened --sha <40-hex> --dry-run
  k8see validate k8s-ee.yaml
  k8see render . --pr 42 --repo acme/shop
  k8see build . --pr 42 --repo acme/shop --registry 127.0.0.1:5000 --insecure
  k8see status --repo acme/shop --json
  k8see doctor --json
  k8see worker --pool build

\b
Exit codes:
  0  done: queued, valid, skipped, or the followed run is ready
  1  the input is wrong, or the followed run failed
  2  the command line is wrong
  3  Redis (or, with --api, the k8see API) is unreachable
  4  --wait gave up following before the run ended
"""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


#: The entry-point group other distributions add commands to. k8see-sandbox (``sandbox/``,
#: installed by ``make bootstrap`` in a source checkout, never by ``pip install k8see``) adds
#: ``k8see sandbox`` and ``k8see demo``; k8see itself never imports it.
PLUGIN_GROUP = "k8see.commands"


class _PluginGroup(click.Group):
    """k8see's commands, and installed plugins' commands loaded only when one is asked for or
    the commands are listed (``--help``): ``k8see enqueue`` and the workers never scan the
    entry points (about 35 ms with k8see-sandbox installed)."""

    def _plugins(self) -> dict[str, Any]:
        from importlib.metadata import entry_points

        return {entry.name: entry for entry in entry_points(group=PLUGIN_GROUP)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugins()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and (entry := self._plugins().get(cmd_name)) is not None:
            command = _load_plugin(entry)
            self.add_command(command, cmd_name)
        return command


def _load_plugin(entry: Any) -> click.Command:
    """A plugin's command, with the same error handling as ours: a missing tool or CRD is a
    message with a hint, never a traceback."""
    command = entry.load()
    if not isinstance(command, click.Command):
        raise TypeError(f"entry point {entry.value} of {PLUGIN_GROUP} is not a click command")
    subcommands = command.commands.values() if isinstance(command, click.Group) else ()
    for each in (command, *subcommands):
        if each.callback is not None:
            each.callback = guard(each.callback)
    return command


@click.group(
    cls=_PluginGroup,
    context_settings={"auto_envvar_prefix": "K8SEE", "help_option_names": ["-h", "--help"]},
    epilog=EPILOG,
)
@click.version_option(package_name="k8see", prog_name="k8see")
@click.option(
    "--log-format",
    type=click.Choice(["plain", "full", "json"]),
    default="plain",
    show_default=True,
    help="Log line format.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
)
def main(log_format: str, log_level: str) -> None:
    """k8see: a preview environment for every pull request."""
    from k8see.logs import configure

    configure(fmt=log_format, level=log_level.upper())


for _command in (
    enqueue,
    validate,
    schema,
    render,
    build_command,
    status,
    worker,
    beat,
    flower,
    cleanup_cmd,
    metrics_cmd,
    redis_acl_cmd,
    doctor,
    api,
):
    main.add_command(_command)
