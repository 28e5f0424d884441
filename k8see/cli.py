"""The ``k8see`` command.

Subcommands: enqueue, validate, schema, render, status, worker, beat, flower, api, sandbox,
demo. Process subcommands only pick queues and options, then hand over to Celery's own worker,
beat and Flower. Heavy imports happen inside the commands that need them, so ``k8see enqueue``
starts fast. A ``K8seeError`` prints ``Error: …`` and ``Hint: …``, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from k8see import cli_input
from k8see.cli_api import api
from k8see.errors import IntegrationError, K8seeError, PolicyError, UserError

#: Exit codes, listed in ``--help`` and docs/operations.md (a test keeps the three in step).
EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
#: ``enqueue --wait`` stopped following before the run ended; the run itself goes on.
EXIT_WAIT_TIMEOUT = 4

#: Queues and default concurrency of each worker pool (concurrency from settings).
POOLS = {
    "default": ("default",),
    "build": ("build",),
    "deploy": ("deploy",),
    "maintenance": ("maintenance",),
    "all": ("default", "build", "deploy", "maintenance"),
}

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


REDIS_HINT = "check K8SEE_REDIS__URL, or start the sandbox with `k8see sandbox up`."
SETTINGS_HINT = (
    "check the K8SEE_* variables (and K8SEE_SETTINGS_FILE); every setting is listed in "
    "docs/configuration.md."
)
REPLICA_HINT = (
    "run the same enqueue again: a retry of one event is queued exactly once. If no replica "
    "is up, see docs/operations.md, High availability (K8SEE_REDIS__MIN_REPLICA_ACKS=0 "
    "accepts events without a replica)."
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _fail(error: K8seeError, *, code: int = EXIT_USER_ERROR, as_json: bool = False) -> NoReturn:
    """Print the error for people on stderr (and, with ``--json``, for machines on stdout)."""
    click.echo(f"Error: {error.message}", err=True)
    if error.where:
        click.echo(f"Where: {error.where}", err=True)
    if error.hint:
        click.echo(f"Hint: {error.hint}", err=True)
    if as_json:
        click.echo(json.dumps({"error": error.to_dict(), "exit_code": code}))
    sys.exit(code)


def _settings() -> Any:
    from k8see.settings import load_settings

    return load_settings(os.environ.get("K8SEE_SETTINGS_FILE") or None)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn k8see and connection errors into one readable message and an exit code.

    A command called with ``--json`` also gets the error as one JSON object on stdout, so a
    script that parses stdout never reads nothing.
    """

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import redis
        from kombu.exceptions import OperationalError
        from pydantic import ValidationError

        from k8see.redis_connect import NotReplicated

        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except K8seeError as exc:
            _fail(exc, as_json=as_json)
        except redis.exceptions.NoPermissionError as exc:
            refused = UserError(
                f"Redis refused this credential ({exc}).",
                hint="Each Redis user may do only what its role needs: the enqueue credential "
                "submits events and reads the progress of its own submissions (`k8see status "
                "--progress TOKEN`, the token `k8see enqueue` printed). Listing records needs "
                "the admin credential; docs/security.md lists who may do what.",
            )
            _fail(refused, as_json=as_json)
        except ValidationError as exc:
            # Settings from the environment or K8SEE_SETTINGS_FILE; the input is left out,
            # because it can be a URL with a password in it.
            where = ", ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3]
            )
            error = IntegrationError(
                f"The platform settings are invalid ({where}).", hint=SETTINGS_HINT
            )
            _fail(error, code=EXIT_USAGE, as_json=as_json)
        except NotReplicated as exc:
            error = IntegrationError(
                f"Redis took the event, but {exc}; a failover now could lose it.",
                hint=REPLICA_HINT,
            )
            _fail(error, code=EXIT_UNREACHABLE, as_json=as_json)
        except (redis.exceptions.ConnectionError, OperationalError) as exc:
            error = IntegrationError(f"cannot reach Redis ({exc}).", hint=REDIS_HINT)
            _fail(error, code=EXIT_UNREACHABLE, as_json=as_json)
        except redis.exceptions.TimeoutError as exc:
            # Something accepted the connection but never answered: a wrong port, a proxy
            # whose backend is gone, or a Redis stuck loading. As unreachable as a refusal.
            hint = f"{REDIS_HINT} Check that it is Redis listening there."
            error = IntegrationError(f"Redis did not answer in time ({exc}).", hint=hint)
            _fail(error, code=EXIT_UNREACHABLE, as_json=as_json)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


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
            each.callback = _guard(each.callback)
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


# --- enqueue -------------------------------------------------------------------------------


@main.command()
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
@_guard
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
    repository_path = cli_input.repository_path(config_path)
    mode = cli_input.trigger_mode(config_path)
    decision, trigger = cli_input.decide(
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
        from k8see import cli_api

        settings = None
        request = cli_input.api_request(
            event_path=event_path,
            event_name=event_name,
            flags={"repo": repo, "pr": pr, "action": pr_action, "sha": sha, "ref": ref,
                   "comment": comment, "commenter": commenter, "mode": mode},
            config_path=repository_path,
            platforms=platforms,
        )  # fmt: skip
        try:
            sent = cli_api.send(api_url, audience=audience, request=request)
        except IntegrationError as exc:
            _fail(exc, code=EXIT_UNREACHABLE, as_json=as_json)
    else:
        from k8see.cli_api import Sent
        from k8see.client import enqueue as send

        settings = _settings()
        sent = Sent.of(
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


# --- config ----------------------------------------------------------------------------------


@main.command()
@click.argument("path", default="k8s-ee.yaml", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the config with defaults as JSON.")
@_guard
def validate(path: str, as_json: bool) -> None:
    """Validate a k8s-ee.yaml."""
    from k8see.admission import admit
    from k8see.config import load_repo_config

    config = load_repo_config(Path(path), filename=path)
    # The platform's limits, as far as this machine's settings know them.
    admit(config, _settings().deploy, config_file=path)
    if as_json:
        click.echo(json.dumps(config.to_dict(), indent=2))
    else:
        dbs = ", ".join(config.enabled_databases()) or "none"
        click.echo(
            f"{path} is valid: projectId {config.to_dict()['projectId']}, "
            f"trigger {config.trigger}, databases {dbs}."
        )


@main.command()
def schema() -> None:
    """Print the JSON Schema of k8s-ee.yaml."""
    from k8see.config.model import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@main.command()
@click.argument("path", default=".", type=click.Path(exists=True))
@click.option("--pr", type=click.IntRange(min=1), required=True, help="The PR number.")
@click.option(
    "--repo", default="local/preview", show_default=True, help="OWNER/REPO (labels only)."
)
@click.option("--sha", default="0" * 40, help="Commit shown in labels and COMMIT_SHA.")
@click.option("--ref", default="main", show_default=True, help="Branch shown in labels.")
@_guard
def render(path: str, pr: int, repo: str, sha: str, ref: str) -> None:
    """Print every manifest a deploy would apply, offline, as one YAML stream.

    PATH is a k8s-ee.yaml or the directory holding it. The order is the deploy's: namespace,
    quota, limits, network policies, pull secret, then the app release's templates. Secret
    values are blanked; the image is shown by tag, since nothing is built.

    \b
    Example:
      k8see render examples/postgres-app --pr 42 --repo acme/shop
    """
    import yaml

    from k8see.admission import admit
    from k8see.config import load_repo_config
    from k8see.manifests.release import offline_run, render_manifests

    file = Path(path) / "k8s-ee.yaml" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise PolicyError(
            f"There is no {file}.", hint="Give the path of a k8s-ee.yaml or of its directory."
        )
    settings = _settings()
    config = load_repo_config(file, filename=str(file))
    admit(config, settings.deploy, config_file=str(file))
    run = offline_run(config, repo=repo, pr=pr, sha=sha, ref=ref, settings=settings)
    docs = render_manifests(run, settings=settings)
    click.echo(yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True), nl=False)


@main.command("build")
@click.argument("path", default=".", type=click.Path(exists=True, file_okay=False))
@click.option("--pr", type=click.IntRange(min=1), required=True, help="The PR number.")
@click.option("--repo", required=True, help="OWNER/REPO: names the image repository.")
@click.option("--registry", "registry_host", required=True, help="HOST[:PORT] to push to.")
@click.option("--platforms", help="Comma list (default: the platform setting).")
@click.option("--insecure", is_flag=True, help="Plain HTTP to the registry (a local one).")
@click.option("--sha", help="Commit for the sha-* tag (default: PATH's git HEAD).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_guard
def build_command(
    path: str,
    pr: int,
    repo: str,
    registry_host: str,
    platforms: str | None,
    insecure: bool,
    sha: str | None,
    as_json: bool,
) -> None:
    """Build, push and scan PATH exactly as the build pool would, to reproduce a preview build.

    Runs the build and scan stages on this machine (buildah or docker, per the platform
    settings, with K8SEE_REGISTRY__USERNAME/PASSWORD as the login) and prints the image by
    digest, its platforms and the scan summary. A scan policy of ``block`` fails it the same
    way a deploy would be stopped.

    \b
    Example:
      k8see build examples/hello --pr 42 --repo acme/shop --registry 127.0.0.1:5000 --insecure
    """
    import logging
    import subprocess
    import tempfile

    from k8see.config import load_repo_config
    from k8see.integrations.registry import parse_ref
    from k8see.manifests.release import offline_run
    from k8see.stages import build as build_stage
    from k8see.stages import scan as scan_stage
    from k8see.stages.context import StageContext

    source = Path(path).resolve()
    if not (source / "k8s-ee.yaml").is_file():
        raise PolicyError(f"There is no k8s-ee.yaml in {source}.", hint="Give the app's root.")
    parse_ref(f"{registry_host}/probe/probe:probe")  # a RegistryError with a hint if invalid
    if sha is None:
        head = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        sha = head.stdout.strip() if head.returncode == 0 else ""
        if not sha:
            raise PolicyError(f"{source} is not a git checkout.", hint="Pass --sha <40 hex>.")
    settings = _settings()
    same = registry_host == settings.registry.host
    kind = "ecr" if ".dkr.ecr." in registry_host else settings.registry.type if same else "generic"
    kind = "ghcr" if registry_host == "ghcr.io" else kind
    registry = settings.registry.model_copy(
        update={"host": registry_host, "insecure": insecure, "type": kind}
    )
    build_group = settings.build.model_copy(
        update={"platforms": platforms or settings.build.platforms}
    )
    # A local reproduction never uploads to the repository's code scanning.
    scan_group = settings.scan.model_copy(update={"upload_sarif": "never"})
    settings = settings.model_copy(
        update={"registry": registry, "build": build_group, "scan": scan_group}
    )
    config = load_repo_config(source / "k8s-ee.yaml", filename="k8s-ee.yaml")
    run = offline_run(config, repo=repo, pr=pr, sha=sha, ref="local", settings=settings)
    with tempfile.TemporaryDirectory(prefix="k8see-build-") as workdir:
        ctx = StageContext(
            settings=settings,
            log=logging.getLogger("k8see.build"),
            workdir=Path(workdir),
            record_log=lambda line: click.echo(line, err=True),
        )
        # This machine's checkout, vouched for by whoever runs the command (not a message).
        built_run = build_stage.build_checkout(
            run, ctx, source_dir=source, config=config.to_dict(), fork=None
        )
        run = scan_stage.scan_verified(built_run, ctx)
    built, scanned = run.result("build"), run.result("scan")
    if as_json:
        out = {"image": built["image"], "platforms": built["platforms"], "scan": scanned}
        click.echo(json.dumps({**out, "tags": built["tags"]}, sort_keys=True))
        return
    click.echo(f"Image:     {built['image']}")
    click.echo(f"Platforms: {', '.join(built['platforms'])}")
    click.echo(f"Tags:      {', '.join(built['tags'])}")
    verdict = scan_stage.summary_text(scanned)
    click.echo(f"Scan:      {verdict} (policy {settings.scan.policy})")


# --- status ----------------------------------------------------------------------------------

STATUS_COLUMNS = ("repo", "pr", "status", "stage", "sha", "preview_url", "updated_at")


@main.command()
@click.option("--repo", help="Only this OWNER/REPO (required without the admin credential).")
@click.option("--pr", type=int, help="Only this PR.")
@click.option(
    "--progress",
    "token",
    help="Only the run of this submission: the progress token `k8see enqueue` printed (all "
    "the enqueue credential may read).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@_guard
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

    settings = _settings()
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


# --- processes -------------------------------------------------------------------------------

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


@main.command(context_settings={"ignore_unknown_options": True})
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
    settings = _settings()
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


@main.command(context_settings={"ignore_unknown_options": True})
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


@main.command(context_settings={"ignore_unknown_options": True})
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


@main.command("cleanup")
@click.option("--dry-run", is_flag=True, help="Report what would be destroyed; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@_guard
def cleanup_cmd(dry_run: bool, as_json: bool) -> None:
    """Run the stale-environment reconciler once, now (the beat job runs it every 15 minutes)."""
    from k8see.jobs.cleanup import run_cleanup
    from k8see.jobs.connections import redis_client
    from k8see.jobs.registry_gc import run_registry_gc

    settings = _settings()
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


@main.command("metrics")
@click.option("--port", type=int, default=9808, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True)
def metrics_cmd(port: int, address: str) -> None:
    """Serve /metrics for the workers sharing PROMETHEUS_MULTIPROC_DIR, plus the record gauges."""
    import signal

    from k8see.metrics import serve

    settings = _settings()
    if not serve(port=port, redis_settings=settings.redis, address=address):
        click.echo(f"Error: cannot listen on {address}:{port}.", err=True)
        sys.exit(EXIT_UNREACHABLE)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})


@main.command("redis-acl")
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
    FLOWER, SCALER, ADMIN); a role without one gets no user. The file holds SHA-256 hashes only.

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


@main.command()
@click.option("--namespace", default="k8see-doctor-pr-0", help="Where PR rights are checked.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@_guard
def doctor(namespace: str, as_json: bool) -> None:
    """Check the cluster serves the operators' kinds k8see's options need, and the deploy
    credentials may do what the deploy pool does. Exits 1 when something is missing."""
    from k8see.doctor import check

    report = check(_settings(), namespace=namespace)
    click.echo(json.dumps(report.to_dict(), sort_keys=True) if as_json else report.text())
    sys.exit(EXIT_OK if report.ok else EXIT_USER_ERROR)


def _celery(argv: list[str]) -> NoReturn:
    """Hand over to Celery's own command line with k8see's app."""
    from celery.bin.celery import main as celery_main

    # Celery's start-up banner is printed, not logged: with JSON logs it would be the only
    # lines that are not JSON, so -q leaves it out.
    json_logs = click.get_current_context().find_root().params.get("log_format") == "json"
    sys.argv = ["celery", "-A", "k8see.app", *(["-q"] if json_logs else []), *argv]
    sys.exit(celery_main())


main.add_command(api)

if __name__ == "__main__":  # pragma: no cover
    main()
