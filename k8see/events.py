"""GitHub event → what k8see should do. Pure: no I/O, no clock, no settings.

The rules are the reference's (docs/configuration.md "Trigger modes"):

============================  ======================  ======================
event                         automatic               on-demand
============================  ======================  ======================
PR opened / reopened          deploy                  skip
PR synchronize (push)         deploy                  redeploy-if-exists
PR closed (merged or not)     destroy                 destroy
``/deploy-preview`` comment   deploy (the head now)   deploy
``/destroy-preview`` comment  skip                    destroy
``/help``, ``/preserve``,     command                 command
``/unpreserve``
============================  ======================  ======================

Three things differ from the reference on purpose. Commands are parsed from the first line of
the comment as an exact word (``/deploy-previewx`` and ``please /deploy-preview`` are not
commands), so ordinary conversation is skipped here, before anything touches Redis, and never
disturbs queued work. ``/deploy-preview`` counts in automatic mode too: it is how a maintainer
approves a fork PR's head (forks are never deployed automatically) and how anyone with write
access retries a failed deploy. And ``/help``, ``/preserve [hours]`` and ``/unpreserve`` are
decided as ``command``: the client sends them as one task that never bumps the PR's generation.
Workers check every command's author has write access before acting (``k8see.approvals``).

A comment carries no commit: a comment-triggered deploy has ``sha == ""`` and the worker
resolves the PR's head (and checks the PR is open) itself. Fork status is unknown for
comments (``is_fork is None``) for the same reason.

Everything taken from a payload is validated (``k8see.names``); a malformed payload of any
shape raises ``PolicyError``, never ``KeyError`` or ``TypeError``.

Why one module of about 500 lines: it is one pure function of the table above (``decide`` and
its flag, label and comment entry points), and the private payload readers at the bottom
(``_get``, ``_sha``, ``_ref``, ...) exist only to make that function's refusals specific. Kept
together, the rules and the checks of what they read are reviewed, and tested, as one thing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from k8see.errors import PolicyError
from k8see.names import check_pr, check_repo, check_sha
from k8see.run import Action

__all__ = [
    "COMMANDS",
    "PR_ACTIONS",
    "TRIGGER_MODES",
    "Decision",
    "decide",
    "decide_from_comment",
    "decide_from_flags",
    "decide_labelled",
    "parse_command",
]

TRIGGER_MODES = ("automatic", "on-demand")
PR_ACTIONS = ("opened", "reopened", "synchronize", "closed")
COMMANDS = ("deploy-preview", "destroy-preview", "preserve", "unpreserve", "help")
#: Longest ``/preserve`` the parser accepts; the platform's own maximum applies later.
MAX_PRESERVE_HOURS = 24 * 365
_LOGIN_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?$")
_REF_BAD = re.compile(r"[\x00-\x1f\x7f]")
_EVENT_HINT = (
    'Pass the GitHub event unchanged: --event-path "$GITHUB_EVENT_PATH" with --event-name '
    '"$GITHUB_EVENT_NAME" (pull_request or issue_comment).'
)


@dataclass(frozen=True)
class Decision:
    """What to do for one event.

    Attributes:
        action: deploy, destroy, redeploy-if-exists, command or skip.
        repo: ``owner/repo`` (validated).
        pr: PR number.
        sha: Head commit, 40 hex; ``""`` for comment-triggered runs (the worker resolves the
            head) and for a close without one.
        ref: Head branch, ``""`` when unknown.
        reason: One human sentence saying why, printed by ``k8see enqueue``.
        comment_id: The command comment, to react to; 0 when not from a comment.
        commenter: Login of the commenter; ``""`` when not from a comment.
        merged: For close events, whether the PR was merged; ``None`` otherwise.
        command: The parsed command without its slash, or ``""``.
        command_args: The command's arguments, e.g. ``("24",)`` for ``/preserve 24``.
        is_fork: Whether the PR's head is in another repository; ``None`` when unknown.
        mode: The trigger mode the decision was made under.
        event: What happened, e.g. ``pull_request:synchronize`` or
            ``issue_comment:/deploy-preview`` (the ``Run.trigger`` label).
    """

    action: Action
    repo: str
    pr: int
    sha: str
    ref: str
    reason: str
    comment_id: int = 0
    commenter: str = ""
    merged: bool | None = None
    command: str = ""
    command_args: tuple[str, ...] = ()
    is_fork: bool | None = None
    mode: str = "automatic"
    event: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape printed by ``k8see enqueue --dry-run``."""
        data = asdict(self)
        data["action"] = self.action.value
        data["command_args"] = list(self.command_args)
        return data


def decide(*, event_name: str, payload: Any, trigger: str) -> Decision:
    """Decide from a GitHub webhook payload (``$GITHUB_EVENT_PATH``).

    Args:
        event_name: ``pull_request`` (or ``pull_request_target``) or ``issue_comment``.
        payload: The parsed event JSON, of any shape.
        trigger: The repository's trigger mode, ``automatic`` or ``on-demand``.

    Raises:
        PolicyError: an unknown event or mode, or a payload missing what the event needs.
    """
    _check_mode(trigger)
    if not isinstance(payload, Mapping):
        raise PolicyError("The GitHub event payload is not a JSON object.", hint=_EVENT_HINT)
    try:
        if event_name in ("pull_request", "pull_request_target"):
            return _from_pull_request(payload, trigger)
        if event_name == "issue_comment":
            return _from_issue_comment(payload, trigger)
    except PolicyError as exc:
        exc.hint = exc.hint or _EVENT_HINT
        raise
    raise PolicyError(
        f"k8see does not handle {_short(event_name)} events.",
        hint="Trigger the workflow on pull_request [opened, reopened, synchronize, closed] and "
        "issue_comment [created].",
    )


def decide_labelled(
    *,
    event_name: str = "",
    payload: Any = None,
    repo: str | None = None,
    pr: int | None = None,
    action: str | None = None,
    sha: str | None = None,
    ref: str | None = None,
    comment: str | None = None,
    commenter: str | None = None,
    mode: str | None = None,
) -> tuple[Decision, str]:
    """The decision for an event and its trigger label (``Run.trigger``), from either form.

    Either ``event_name`` with its webhook ``payload``, or flags: ``repo`` and ``pr`` with
    ``action`` (and ``sha``, ``ref``) or with a ``comment`` (and ``commenter``). ``mode`` is
    the repository's trigger mode when the caller read it, else ``None``: the decision is
    then made under the mode in which the event counts, and the workers, which read the
    repository's ``k8s-ee.yaml`` themselves, decide again from the label. Shared by
    ``k8see enqueue`` and ``k8see api`` (webhooks and ``POST /v1/enqueue``).

    Raises:
        PolicyError: an unknown event or mode, missing flags, or a malformed payload.
    """
    if event_name:
        assumed = mode or ("on-demand" if event_name == "issue_comment" else "automatic")
        decision = decide(event_name=event_name, payload=payload, trigger=assumed)
        fields = payload if isinstance(payload, Mapping) else {}
        if event_name == "issue_comment":
            comment_part = fields.get("comment")
            body = comment_part.get("body") if isinstance(comment_part, Mapping) else None
            first = body.splitlines()[0].strip() if isinstance(body, str) and body else ""
            return decision, f"issue_comment:{first}"
        what = fields.get("action")
        return decision, f"{event_name}:{what if isinstance(what, str) else ''}"
    if not repo or not pr:
        raise PolicyError(
            "Say which event to enqueue.",
            hint="Use --event-path with --event-name, or --repo, --pr and --action (or --comment).",
        )
    if comment is not None:
        decision = decide_from_comment(
            repo=repo, pr=pr, body=comment, trigger=mode or "on-demand", commenter=commenter or ""
        )
        return decision, f"issue_comment:{comment.splitlines()[0].strip() if comment else ''}"
    if not action:
        raise PolicyError(
            "--action is required with --repo and --pr.",
            hint="One of opened, reopened, synchronize, closed.",
        )
    decision = decide_from_flags(
        repo=repo, pr=pr, action=action, sha=sha or "", ref=ref or "", trigger=mode or "automatic"
    )
    return decision, f"pull_request:{action}"


def decide_from_flags(
    *, repo: str, pr: int, action: str, sha: str, ref: str, trigger: str
) -> Decision:
    """Decide from ``k8see enqueue --repo --pr --action --sha [--ref]``.

    ``sha`` is required except for ``closed``.

    Raises:
        PolicyError: a malformed repository, PR, SHA, ref, action or trigger mode.
    """
    _check_mode(trigger)
    if action not in PR_ACTIONS:
        raise PolicyError(
            f"PR action {_short(action)} is not one of {', '.join(PR_ACTIONS)}.",
            hint="Pass --action opened, reopened, synchronize or closed.",
        )
    return _pull_request_decision(
        repo=check_repo(_text(repo, "repository")),
        pr=check_pr(pr),
        action=action,
        sha=_sha(sha, required=action != "closed"),
        ref=_ref(ref),
        trigger=trigger,
        merged=None,
        is_fork=None,
    )


def decide_from_comment(
    *, repo: str, pr: int, body: str, trigger: str, commenter: str, comment_id: int = 0
) -> Decision:
    """Decide from a PR comment body (``issue_comment`` or ``k8see enqueue --comment``).

    Raises:
        PolicyError: a malformed repository, PR, commenter, comment id or trigger mode.
    """
    _check_mode(trigger)
    repo = check_repo(_text(repo, "repository"))
    pr = check_pr(pr)
    commenter = _text(commenter, "commenter")
    if commenter and not _LOGIN_RE.fullmatch(commenter):
        raise PolicyError(f"Commenter {_short(commenter)} is not a GitHub login.")
    if isinstance(comment_id, bool) or not isinstance(comment_id, int) or comment_id < 0:
        raise PolicyError(f"Comment id {comment_id!r} is not a non-negative integer.")
    command, args, problem = parse_command(_text(body, "comment body"))
    base = Decision(
        action=Action.SKIP,
        repo=repo,
        pr=pr,
        sha="",
        ref="",
        reason="The comment is not a command.",
        comment_id=comment_id,
        commenter=commenter,
        mode=trigger,
        event="issue_comment:",
    )
    if not command:
        return replace(base, reason=problem) if problem else base
    base = replace(base, command=command, command_args=args, event=f"issue_comment:/{command}")
    if command == "deploy-preview":
        return replace(
            base,
            action=Action.DEPLOY,
            reason=f"/deploy-preview on PR #{pr}: deploy its current head.",
        )
    if command == "destroy-preview":
        if trigger == "automatic":
            return replace(
                base,
                reason="/destroy-preview is ignored in automatic mode: closing the PR destroys.",
            )
        return replace(
            base, action=Action.DESTROY, reason=f"/destroy-preview on PR #{pr}: destroy."
        )
    return replace(
        base,
        action=Action.COMMAND,
        reason=f"/{command} on PR #{pr}: answered by the workers, queued work is untouched.",
    )


def parse_command(body: str) -> tuple[str, tuple[str, ...], str]:
    """``(command, args, problem)`` from the first line of a comment.

    The command is the first word, exactly; ``command`` is ``""`` when the comment is not one
    and ``problem`` then says why when it looked like one.
    """
    first = body.lstrip("\ufeff").split("\n", 1)[0].strip()
    words = first.split()
    if not words or not words[0].startswith("/"):
        return "", (), ""
    name, args = words[0][1:], tuple(words[1:])
    if name not in COMMANDS:
        return "", (), ""
    if name != "preserve":
        return name, (), ""
    if not args:
        return name, (), ""
    hours = args[0]
    if len(args) > 1 or not hours.isascii() or not hours.isdigit():
        return (
            "",
            (),
            f"/preserve takes a whole number of hours, e.g. /preserve 24 (got {_short(first)}).",
        )
    if not 1 <= int(hours) <= MAX_PRESERVE_HOURS:
        return "", (), f"/preserve takes between 1 and {MAX_PRESERVE_HOURS} hours."
    return name, (str(int(hours)),), ""


def _from_pull_request(payload: Mapping[str, Any], trigger: str) -> Decision:
    action = _get(payload, "action", kind=str)
    pull = _get(payload, "pull_request", kind=Mapping)
    number = _get(pull, "number", kind=int, where="pull_request.number")
    repo = _repo_of(payload, pull)
    if action not in PR_ACTIONS:
        return Decision(
            action=Action.SKIP,
            repo=repo,
            pr=check_pr(number),
            sha="",
            ref="",
            reason=f"pull_request {_short(action)} does not change the environment.",
            mode=trigger,
            event=f"pull_request:{action}"[:80],
        )
    head = _get(pull, "head", kind=Mapping, where="pull_request.head")
    sha = _opt(head, "sha", str) or ""
    merged = _opt(pull, "merged", bool) if action == "closed" else None
    head_repo = _opt(head, "repo", Mapping)
    base_repo = _opt(_opt(pull, "base", Mapping) or {}, "repo", Mapping)
    head_name = _opt(head_repo or {}, "full_name", str)
    base_name = _opt(base_repo or {}, "full_name", str) or repo
    # A deleted fork leaves head.repo null: treat it as a fork, the safe side.
    is_fork = head_name is None or head_name.lower() != base_name.lower()
    return _pull_request_decision(
        repo=repo,
        pr=check_pr(number),
        action=action,
        sha=_sha(sha, required=action != "closed"),
        ref=_ref(_opt(head, "ref", str) or ""),
        trigger=trigger,
        merged=merged,
        is_fork=is_fork,
    )


def _pull_request_decision(
    *,
    repo: str,
    pr: int,
    action: str,
    sha: str,
    ref: str,
    trigger: str,
    merged: bool | None,
    is_fork: bool | None,
) -> Decision:
    if action == "closed":
        what = Action.DESTROY
        reason = f"PR #{pr} was {'merged' if merged else 'closed'}: destroy its environment."
    elif trigger == "automatic":
        what = Action.DEPLOY
        reason = f"PR #{pr} {action} in automatic mode: deploy {sha[:12]}."
    elif action == "synchronize":
        what = Action.REDEPLOY_IF_EXISTS
        reason = (
            f"Push to PR #{pr} in on-demand mode: redeploy {sha[:12]} only if an environment "
            "exists."
        )
    else:
        what = Action.SKIP
        reason = f"PR #{pr} {action} in on-demand mode: nothing until /deploy-preview."
    return Decision(
        action=what,
        repo=repo,
        pr=pr,
        sha=sha,
        ref=ref,
        reason=reason,
        merged=merged,
        is_fork=is_fork,
        mode=trigger,
        event=f"pull_request:{action}",
    )


def _from_issue_comment(payload: Mapping[str, Any], trigger: str) -> Decision:
    issue = _get(payload, "issue", kind=Mapping)
    number = check_pr(_get(issue, "number", kind=int, where="issue.number"))
    repo = _repo_of(payload, None)
    action = _opt(payload, "action", str) or "created"
    skip = Decision(
        action=Action.SKIP,
        repo=repo,
        pr=number,
        sha="",
        ref="",
        reason=f"#{number} is an issue, not a pull request.",
        mode=trigger,
        event="issue_comment:",
    )
    if not issue.get("pull_request"):
        return skip
    if action != "created":
        return replace(
            skip, reason=f"Only new comments are commands (this one was {_short(action)})."
        )
    comment = _get(payload, "comment", kind=Mapping)
    body = _opt(comment, "body", str) or ""
    comment_id = _opt(comment, "id", int) or 0
    user = _opt(comment, "user", Mapping) or {}
    decision = decide_from_comment(
        repo=repo,
        pr=number,
        body=body,
        trigger=trigger,
        commenter=_opt(user, "login", str) or "",
        comment_id=comment_id,
    )
    if decision.command == "deploy-preview" and _opt(issue, "state", str) == "closed":
        return replace(
            decision,
            action=Action.SKIP,
            reason=f"PR #{number} is closed; reopen it to deploy a preview.",
        )
    return decision


def _repo_of(payload: Mapping[str, Any], pull: Mapping[str, Any] | None) -> str:
    repository = _opt(payload, "repository", Mapping)
    name = _opt(repository or {}, "full_name", str)
    if name is None and pull is not None:
        base = _opt(pull, "base", Mapping) or {}
        name = _opt(_opt(base, "repo", Mapping) or {}, "full_name", str)
    if name is None:
        raise PolicyError("The GitHub event names no repository.", hint=_EVENT_HINT)
    return check_repo(name)


def _get(data: Mapping[str, Any], key: str, *, kind: type, where: str | None = None) -> Any:
    value = data.get(key)
    if value is None:
        raise PolicyError(f"The GitHub event has no {where or key}.", hint=_EVENT_HINT)
    if not _is(value, kind):
        raise PolicyError(
            f"The GitHub event's {where or key} is not {_kind_name(kind)}.", hint=_EVENT_HINT
        )
    return value


def _opt(data: Mapping[str, Any], key: str, kind: type) -> Any:
    value = data.get(key) if isinstance(data, Mapping) else None
    return value if value is not None and _is(value, kind) else None


def _is(value: Any, kind: type) -> bool:
    if kind is int and isinstance(value, bool):
        return False
    return isinstance(value, kind)


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "a number", bool: "a boolean"}.get(kind, "an object")


def _check_mode(trigger: Any) -> None:
    if trigger not in TRIGGER_MODES:
        raise PolicyError(
            f"Unknown trigger value {_short(trigger)}.",
            hint="Set trigger: automatic or trigger: on-demand in k8s-ee.yaml.",
        )


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise PolicyError(f"The {what} must be text, not {type(value).__name__}.")
    return str(value)


def _sha(value: Any, *, required: bool) -> str:
    sha = _text(value, "commit SHA")
    if not sha and not required:
        return ""
    if not sha:
        raise PolicyError(
            "A head commit SHA is required for this event.",
            hint="Pass --sha with the PR's head SHA (github.event.pull_request.head.sha).",
        )
    return check_sha(sha)


def _ref(value: Any) -> str:
    ref = _text(value, "branch name")
    if len(ref) > 255 or _REF_BAD.search(ref):
        raise PolicyError(
            f"Branch name {_short(ref)} is not valid.",
            hint="Pass the PR's head branch (github.head_ref).",
        )
    return ref


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return repr(text)
