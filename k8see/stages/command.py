"""command: every PR comment command is authorized here first, outside the deploy pipeline.

The client sends these as one ``k8see.command`` task that never bumps the PR's generation, so
a command cannot supersede or disturb queued work. Here the worker reads the comment from
GitHub by its id (``trust.authorize_command``): it must be on the PR and say the command, and
its author, as GitHub reports it, must have write access (others get a polite reply). The
message's ``commenter`` is never believed. Then it reacts 👀, and:

- ``/help`` is answered with a reply comment listing the commands and the repository's trigger
  mode (from the last validated run, else read from ``k8s-ee.yaml`` at the PR's head);
- ``/preserve`` and ``/unpreserve`` are authorized only: the result names the task that handles
  them (``k8see.preserve``, in ``k8see.jobs.preserve``), which the task layer sends the run to;
- ``/deploy-preview`` and ``/destroy-preview`` are authorized only: the task layer then admits
  the run (generation, close mark, chain), so a refused command changes nothing at all.
"""

from __future__ import annotations

import dataclasses

from k8see import approvals, names
from k8see.errors import ConfigError, GitHubError, PolicyError
from k8see.events import parse_command
from k8see.integrations.github import GitHubClient, make_client
from k8see.results import CommandResult
from k8see.run import Run
from k8see.settings import PlatformSettings
from k8see.stages import trust
from k8see.stages.context import StageContext

__all__ = ["FORWARD", "help_text", "run"]

#: Commands this stage only authorizes, and the task that carries them out. ``admit`` means
#: the task layer admits the run as the PR's latest (pipeline.admit), starting its chain.
FORWARD = {
    "preserve": "k8see.preserve",
    "unpreserve": "k8see.preserve",
    "deploy-preview": "admit",
    "destroy-preview": "admit",
}


def run(run: Run, ctx: StageContext) -> Run:
    """Authorize the command, then answer ``/help`` or name the task for the others.

    Raises:
        Refused: the commenter lacks write access (the reply is already posted).
        PolicyError: the comment is not a command this stage handles.
    """
    command, args, _ = parse_command(run.trigger.partition(":")[2])
    if command not in ("help", *FORWARD):
        raise PolicyError(f"{run.trigger[:80]!r} is not a command this task handles.")
    github = make_client(ctx.settings, log=ctx.log)
    author = trust.authorize_command(github, run, ctx)
    run = dataclasses.replace(run, commenter=author.author)
    if run.comment_id:
        try:
            github.add_reaction(run.repo, run.comment_id, "eyes")
        except GitHubError as exc:
            ctx.log.warning("The 👀 reaction on comment %s failed: %s", run.comment_id, exc)
    result = CommandResult(
        command=command,
        args=list(args),
        permission=author.permission,
        forward=FORWARD.get(command, ""),
    )
    if command == "help":
        mode = _trigger_mode(run, ctx, github)
        reply_id = approvals.reply(
            github,
            repo=run.repo,
            pr=run.pr,
            comment_id=run.comment_id,
            text=help_text(mode=mode, settings=ctx.settings),
        )
        result = result.with_fields(reply_id=reply_id)
    return result.write(run)


def help_text(*, mode: str, settings: PlatformSettings) -> str:
    """The ``/help`` answer: every command, what it does under this repository's mode."""
    if mode == "automatic":
        how = (
            "This repository uses trigger mode **automatic**: every push to the pull request "
            "deploys it, and closing the pull request destroys the environment."
        )
    elif mode == "on-demand":
        how = (
            "This repository uses trigger mode **on-demand**: nothing is deployed until "
            "someone comments `/deploy-preview`; later pushes redeploy while the environment "
            "exists, and closing the pull request destroys it."
        )
    else:
        how = f"The trigger mode of this repository could not be read ({mode})."
    cleanup = settings.cleanup
    return "\n".join(
        [
            "## 🤖 k8see commands",
            "",
            how,
            "",
            "| Command | What it does |",
            "|---------|--------------|",
            "| `/deploy-preview` | Deploy the pull request's current head (on-demand mode, a "
            "retry, or a maintainer's approval of a fork's head commit). |",
            "| `/destroy-preview` | Destroy the environment now (on-demand mode). |",
            f"| `/preserve [hours]` | Keep the environment after the pull request closes, for "
            f"`hours` (default {cleanup.preserve_default_hours}, at most "
            f"{cleanup.preserve_max_hours}). |",
            "| `/unpreserve` | Drop the preserve; cleanup removes the environment as usual. |",
            "| `/help` | This message. |",
            "",
            "The command must be the first word of the comment's first line. Commands count only "
            "from people with write access to the repository. Pull requests from forks are "
            "never deployed automatically: a maintainer's `/deploy-preview` approves exactly the "
            "head commit of that moment, and each new push needs a new approval.",
        ]
    )


def _trigger_mode(run: Run, ctx: StageContext, github: GitHubClient) -> str:
    known = ctx.record.trigger_mode
    if known in ("automatic", "on-demand"):
        return known
    pull = github.get_pull(run.repo, run.pr)
    sha = names.check_sha(pull.head_sha)
    try:
        directory = trust.checkout(dataclasses.replace(run, sha=sha), ctx, github)
        return str(trust.load_config(run, directory, ctx.settings)[1].trigger)
    except (ConfigError, PolicyError) as exc:
        ctx.log.info("/help could not read the trigger mode: %s", exc.message)
        return f"{run.config_path or names.DEFAULT_CONFIG_PATH} at {sha[:12]} is not valid"
