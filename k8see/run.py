"""The ``Run``: the only thing that crosses a Celery task boundary.

A ``Run`` is frozen and JSON round-trips. It carries identifiers and small results (a digest,
counts, durations), never secrets, file contents or logs. Each stage returns a new ``Run``
with its result added (``with_result``).
"""

from __future__ import annotations

import enum
import json
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any


class Action(enum.StrEnum):
    """What an accepted event asks k8see to do."""

    DEPLOY = "deploy"
    DESTROY = "destroy"
    #: on-demand mode: a push redeploys only if an environment exists (docs/configuration.md
    #: "Trigger modes").
    REDEPLOY_IF_EXISTS = "redeploy-if-exists"
    SKIP = "skip"
    #: a PR command answered outside the deploy pipeline (/help, /preserve, /unpreserve); it
    #: never bumps the PR's generation, so it cannot disturb queued work.
    COMMAND = "command"


class Status(enum.StrEnum):
    """An environment's user-facing state (docs/architecture.md, "A run's path")."""

    QUEUED = "queued"
    VALIDATING = "validating"
    BUILDING = "building"
    SCANNING = "scanning"
    DEPLOYING = "deploying"
    #: Over a capacity ceiling: the run waits in the fair queue (``k8see.capacity``).
    WAITING = "waiting"
    READY = "ready"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"
    PRESERVED = "preserved"
    SKIPPED = "skipped"


#: The statuses after which nothing more happens for a run.
TERMINAL = frozenset(
    {
        Status.READY,
        Status.FAILED,
        Status.SUPERSEDED,
        Status.DESTROYED,
        Status.PRESERVED,
        Status.SKIPPED,
    }
)


@dataclass(frozen=True)
class Run:
    """One pass of a pipeline for one PR.

    Attributes:
        run_id: Unique id of this run, printed by ``k8see enqueue``.
        repo: ``owner/repo``.
        pr: PR number.
        sha: Head commit (40 hex), or ``""`` for a destroy that needs none.
        generation: The PR's generation when this run was enqueued; a newer one supersedes.
        action: What to do.
        ref: Head branch name, for labels and the comment.
        trigger: Who or what started the run, e.g. ``pull_request:synchronize``.
        config_path: ``k8s-ee.yaml``'s path in the repository (``config-path``); ``""`` is
            ``k8s-ee.yaml`` at the root. Workers check it again (``names.check_config_path``).
        platforms: The platforms the repository asks to build (``platforms`` input), a subset
            of the platform's ``build.platforms``; ``""`` builds all of those.
        comment_id: The command comment to react to, if a PR comment started the run.
        commenter: Login of the command comment's author as the sender claims it; workers
            read the real author of ``comment_id`` from GitHub and never believe this.
        merged: For destroy runs from a close event: whether the PR was merged.
        enqueued_at: Unix time of the enqueue, for queue-wait metrics.
        results: Per-stage results, keyed by stage name (small JSON values only). Stages
            read and write them through their typed models (``k8see.results``), which
            refuse a malformed result.
    """

    repo: str
    pr: int
    sha: str
    generation: int
    action: Action
    ref: str = ""
    trigger: str = ""
    config_path: str = ""
    platforms: str = ""
    comment_id: int = 0
    commenter: str = ""
    merged: bool = False
    enqueued_at: float = 0.0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    results: dict[str, Any] = field(default_factory=dict)

    def with_result(self, stage: str, result: dict[str, Any]) -> Run:
        """A new ``Run`` with ``result`` recorded for ``stage``."""
        return replace(self, results={**self.results, stage: result})

    def result(self, stage: str) -> dict[str, Any]:
        value = self.results.get(stage)
        return dict(value) if isinstance(value, dict) else {}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["action"] = self.action.value
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["action"] = Action(kwargs["action"])
        kwargs["results"] = dict(kwargs.get("results") or {})
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> Run:
        return cls.from_dict(json.loads(text))
