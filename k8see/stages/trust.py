"""What a stage may believe about a run: what GitHub and its own settings say, never the message.

Anyone who can reach Redis can send any message to any task (docs/security.md;
docs/architecture.md, "Trust"), so a ``Run`` only *asks*. The stages that act on a PR check
the ask here first:

- ``pull_of`` reads the PR from GitHub; ``require_head`` lets a deploy run only the PR's
  current head while the PR is open (an older commit stops as ``Stale``);
- ``authorize_command`` reads the command comment by its id: its author, the PR it is on,
  its body, and the author's permission all come from GitHub, never from the message;
- ``check_fork_push`` refuses an approval when the fork was pushed after the maintainer's
  comment, so the commit approved is the one that was at the head when it was written;
- ``may_destroy`` believes a close only when GitHub says the PR is closed;
- ``checkout`` puts the source at the run's commit where the worker decides, from GitHub or
  the worker's ``build.local_source_root``.

Every refusal is logged and, where a PR is involved, answered with one notice comment on the
PR (``REFUSAL_MARKER``, updated in place so a flood of forged messages adds one comment).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from k8see import admission, approvals, names
from k8see.config import RepoConfig, load_repo_config
from k8see.errors import ConfigError, GitHubError, PolicyError, Refused, Stale, Where
from k8see.events import parse_command
from k8see.integrations import source
from k8see.integrations.github import GitHubClient, Pull
from k8see.run import Run
from k8see.settings import PlatformSettings
from k8see.stages.context import StageContext

__all__ = [
    "REFUSAL_MARKER",
    "Command",
    "authorize_command",
    "check_fork_push",
    "checkout",
    "load_config",
    "may_destroy",
    "pull_of",
    "refuse",
    "require_head",
    "source_dir",
]

#: The one comment per PR that says why k8see refused a request about it.
REFUSAL_MARKER = "<!-- k8see-refusal -->"
SOURCE_TIMEOUT_SECONDS = 120
#: Maintenance destroys decided by age or a preserve's end rather than by the PR's state.
AGE_REASONS = frozenset({"stale", "preserve-expired", "unpreserved"})


@dataclass(frozen=True)
class Command:
    """A PR command as GitHub reports it."""

    name: str
    author: str
    permission: str
    #: When the comment was written (Unix time, GitHub's clock).
    created_at: float


def refuse(
    github: GitHubClient | None, run: Run, ctx: StageContext, message: str, hint: str
) -> NoReturn:
    """Log ``message``, say it on the PR (best effort), and stop the run as ``Refused``."""
    ctx.log.warning("Refused: %s", message)
    if github is not None:
        text = f"## 🛑 k8see refused a request\n\n{message}\n\n{hint}"
        body = f"{REFUSAL_MARKER}\n{text}\n\n{approvals.FOOTER}"
        try:
            github.upsert_comment(run.repo, run.pr, body, marker=REFUSAL_MARKER)
        except GitHubError as exc:  # the worker log already has it
            ctx.log.warning("The refusal notice on %s#%s failed: %s", run.repo, run.pr, exc)
    raise Refused(message, hint=hint)


def pull_of(github: GitHubClient, run: Run) -> Pull:
    """The run's PR as GitHub reports it.

    Raises:
        PolicyError: GitHub does not know the PR.
    """
    try:
        return github.get_pull(run.repo, run.pr)
    except GitHubError as exc:
        if exc.status != 404:
            raise
        raise PolicyError(
            f"PR #{run.pr} of {run.repo} was not found on GitHub.",
            hint="Check the PR exists and k8see's GitHub App is installed on the repository.",
        ) from None


def require_head(github: GitHubClient, run: Run, ctx: StageContext, pull: Pull) -> None:
    """A deploy runs only while the PR is open, and only the commit at its head.

    Raises:
        Refused: GitHub says the PR is not open.
        Stale: ``run.sha`` is not the PR's head on GitHub.
    """
    if pull.state != "open":
        refuse(
            github,
            run,
            ctx,
            f"PR #{run.pr} is {pull.state} on GitHub, so commit {run.sha[:12]} is not deployed.",
            "Reopen the pull request to deploy it again.",
        )
    if pull.head_sha != run.sha:
        message = (
            f"Commit {run.sha[:12] or '(none)'} is not the head of PR #{run.pr} on GitHub "
            f"(the head is {pull.head_sha[:12]}); only the current head is deployed."
        )
        ctx.log.info("Skipped: %s", message)
        raise Stale(message, hint="Push again, or comment /deploy-preview to deploy the head.")


def authorize_command(github: GitHubClient, run: Run, ctx: StageContext) -> Command:
    """The run's command, authorized from GitHub alone.

    The comment is read by its id: it must be on this PR and its first line must be the
    command the run asks for. Its author is GitHub's, and so is the author's permission
    (``approvals.authorize``: write access or a polite refusal). The message's ``commenter``
    is never believed.

    Raises:
        Refused: no comment id, a comment elsewhere or saying something else, or an author
            without write access.
    """
    asked, _, _ = parse_command(run.trigger.partition(":")[2])
    if not asked:
        refuse(
            github,
            run,
            ctx,
            f"The request {run.trigger[:80]!r} names no PR command.",
            "Commands come from PR comments: /deploy-preview, /destroy-preview, /help.",
        )
    if run.comment_id <= 0:
        refuse(
            github,
            run,
            ctx,
            f"/{asked} on PR #{run.pr} arrived without the id of its comment, so its author "
            "cannot be checked.",
            "Enqueue comment commands from the issue_comment event (--event-path), which "
            "carries the comment's id.",
        )
    try:
        comment = github.get_comment(run.repo, run.comment_id)
    except GitHubError as exc:
        if exc.status != 404:
            raise
        refuse(
            github,
            run,
            ctx,
            f"Comment {run.comment_id} does not exist in {run.repo}.",
            "Comment the command on the pull request again.",
        )
    said, _, _ = parse_command(comment.body)
    if comment.issue != run.pr or said != asked:
        refuse(
            github,
            run,
            ctx,
            f"Comment {run.comment_id} is not a /{asked} on PR #{run.pr}.",
            "Comment the command on the pull request itself.",
        )
    if run.commenter and run.commenter.lower() != comment.author.lower():
        ctx.log.warning(
            "The request named %r as the author of comment %s; GitHub says %r.",
            run.commenter,
            run.comment_id,
            comment.author,
        )
    permission = approvals.authorize(
        github,
        repo=run.repo,
        pr=run.pr,
        commenter=comment.author,
        command=asked,
        comment_id=run.comment_id,
        log=ctx.log,
    )
    return Command(asked, comment.author, permission, comment.created_at)


def check_fork_push(
    github: GitHubClient, run: Run, ctx: StageContext, pull: Pull, command: Command
) -> None:
    """An approval covers the head of the moment the maintainer wrote: not a later push.

    GitHub sets the head repository's ``pushed_at`` itself; a push after the comment was
    written (or a fork whose push time GitHub does not report) means the head may not be the
    commit the maintainer reviewed.

    Raises:
        Refused: the fork was pushed after the comment, or its push time is unknown.
    """
    if pull.head_pushed_at <= 0:
        when = "GitHub does not report when the fork was last pushed"
    elif pull.head_pushed_at > command.created_at:
        when = (
            f"the fork was pushed at {_iso(pull.head_pushed_at)}, after @{command.author}'s "
            f"/{command.name} at {_iso(command.created_at)}"
        )
    else:
        return
    refuse(
        github,
        run,
        ctx,
        f"Commit {pull.head_sha[:12]} of PR #{run.pr} is not approved: {when}, so the head may "
        "not be the commit that was reviewed.",
        "Review the pull request's current head, then comment /deploy-preview again.",
    )


def may_destroy(github: GitHubClient, run: Run, ctx: StageContext) -> str:
    """Why this destroy may run, from GitHub; refuses otherwise.

    A command is authorized (``authorize_command``); an age-based maintenance destroy
    (``AGE_REASONS``) is the platform's own decision; any other request, a close event
    included, is believed only when GitHub says the PR is closed (or no longer exists).

    Raises:
        Refused: the PR is open and nothing authorized destroying it.
    """
    event, _, what = run.trigger.partition(":")
    if event == "issue_comment":
        command = authorize_command(github, run, ctx)
        return f"/{command.name} by {command.author}"
    if event == "maintenance" and what in AGE_REASONS:
        return f"maintenance: {what}"
    try:
        pull = github.get_pull(run.repo, run.pr)
    except GitHubError as exc:
        if exc.status != 404:
            raise
        return "the PR no longer exists on GitHub"
    if pull.state == "open":
        refuse(
            github,
            run,
            ctx,
            f"PR #{run.pr} is open on GitHub, so its environment was not destroyed "
            f"(the request said {run.trigger[:60]!r}).",
            "Close the pull request, or comment /destroy-preview (on-demand mode).",
        )
    return "the PR is closed on GitHub"


def source_dir(settings: PlatformSettings, repo: str, sha: str) -> Path:
    """Where a worker keeps the source of ``repo`` at ``sha``: derived from the worker's
    settings and the validated name and commit only."""
    root = Path(settings.build.workdir or Path(tempfile.gettempdir()) / "k8see-work")
    owner, name = names.check_repo(repo).lower().split("/")
    return root / "src" / f"{owner}__{name}" / names.check_sha(sha)


def checkout(run: Run, ctx: StageContext, github: GitHubClient) -> Path:
    """The source of ``run.repo`` at ``run.sha``, fetched unless this worker has it already.

    It comes from GitHub, or from ``<build.local_source_root>/<owner>/<name>`` when the
    worker's settings say so (the sandbox); the message has no say in either.
    """
    settings = ctx.settings
    dest_dir = source_dir(settings, run.repo, run.sha)
    if max_idle := settings.build.source_max_idle_hours:
        source.collect_idle(dest_dir.parent.parent, max_idle_seconds=max_idle * 3600)
    local = settings.build.local_source_root
    where = str(Path(local) / names.check_repo(run.repo)) if local else "github"
    return source.fetch_source(
        repo=run.repo,
        sha=run.sha,
        dest_dir=dest_dir,
        source=where,
        github=None if local else github,
        timeout_seconds=SOURCE_TIMEOUT_SECONDS,
    )


def load_config(run: Run, directory: Path, settings: PlatformSettings) -> tuple[str, RepoConfig]:
    """``k8s-ee.yaml`` (at the run's checked ``config_path``) from the worker's own checkout,
    admitted by the platform's limits (``admission``: ingress annotations, quota ceilings).

    Raises:
        ConfigError: the file is missing, invalid, a link out of the tree, or asks for more
            than the platform allows.
    """
    config_path = names.check_config_path(run.config_path)
    path = directory / config_path
    if not path.resolve().is_relative_to(directory.resolve()):
        raise ConfigError(
            f"{config_path} leads outside the repository through a symbolic link.",
            hint=f"Commit {config_path} as a regular file.",
            where=Where(file=config_path),
        )
    config = load_repo_config(path, filename=config_path)
    admission.admit(config, settings.deploy, config_file=config_path)
    return config_path, config


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
