"""The pipeline's stages, one row each: everything the rest of k8see knows about a stage.

A stage is its module (``run(run, ctx) -> Run`` and, if it changes the environment record,
``record_changes(run, before) -> dict``; see ``k8see.stages``) and one ``StageSpec`` row in
``STAGES``. The Celery routes (``k8see.app``), the task of each stage (``k8see.tasks``), the
chains (``k8see.pipeline``), the time limits the watchdog reads, the close rule
(``k8see.controls``) and the order of the PR comment's timings all come from this table, so
adding a stage is writing its module and its row (``tests/test_stage_table.py`` proves it).

This module imports no stage code: the enqueue client and the API read it to route messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from k8see.run import Status
from k8see.settings import PlatformSettings

#: The chains a stage can belong to (``k8see.pipeline.chain_for``).
DEPLOY = "deploy"
DESTROY = "destroy"
#: A destroy asked for by a comment is checked first: the repository's trigger mode decides
#: whether the command counts (automatic mode ignores it), and only the worker can read it.
COMMAND_DESTROY = "command-destroy"


@dataclass(frozen=True)
class StageSpec:
    """One stage of the pipeline.

    Attributes:
        name: The stage's name; its task is ``k8see.<name>``.
        queue: The queue, and so the worker pool, that runs it.
        module: Where its ``run`` (and ``record_changes``) live; imported by workers only.
        time_limit: Its soft time limit in seconds, from the settings; the hard limit is
            ``k8see.pipeline.HARD_LIMIT_GRACE_SECONDS`` later.
        limit_setting: The setting that raises the limit, named in the error when it is hit.
        running: The record's status while it runs; None for stages that run after the
            record went terminal (untag, comment), which a redelivery must not stop.
        holds_lease: It changes the cluster, so it holds the PR's lease while it runs.
        claimed: One delivery at a time runs it (``coordination.claim_stage``).
        stopped_by_close: A close of the PR after the run was queued stops it (close wins).
        timed: Its duration goes to the record's timings.
        gated: Capacity admission decides before it runs (``k8see.capacity_gate.gate``).
        counts_capacity: Its outcome changes the capacity in use (``capacity_gate.after``).
        reports: The stage that tells the PR: it is sent when another stage fails, and it
            passes on a run that stopped without acting.
        chains: The chains it is part of, in the order of ``STAGES``.
    """

    name: str
    queue: str
    module: str
    time_limit: Callable[[PlatformSettings], int]
    limit_setting: str | None = None
    running: Status | None = None
    holds_lease: bool = False
    claimed: bool = True
    stopped_by_close: bool = False
    timed: bool = True
    gated: bool = False
    counts_capacity: bool = False
    reports: bool = False
    chains: frozenset[str] = field(default_factory=frozenset)

    @property
    def task_name(self) -> str:
        return f"k8see.{self.name}"


def _destroy_limit(settings: PlatformSettings) -> int:
    # helm uninstall, the namespace wait, then up to a minute after unblocking leftovers and
    # a minute after forcing an empty namespace (namespace_removal).
    deploy = settings.deploy
    return deploy.uninstall_timeout_seconds + deploy.destroy_timeout_seconds + 180


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        "validate", queue="default", module="k8see.stages.validate",
        time_limit=lambda _: 180, running=Status.VALIDATING, stopped_by_close=True,
        chains=frozenset({DEPLOY, COMMAND_DESTROY}),
    ),
    StageSpec(
        "build", queue="build", module="k8see.stages.build",
        time_limit=lambda s: s.build.timeout_seconds,
        limit_setting="K8SEE_BUILD__TIMEOUT_SECONDS", running=Status.BUILDING,
        stopped_by_close=True, chains=frozenset({DEPLOY}),
    ),
    StageSpec(
        "scan", queue="build", module="k8see.stages.scan",
        time_limit=lambda s: s.scan.timeout_seconds,
        limit_setting="K8SEE_SCAN__TIMEOUT_SECONDS", running=Status.SCANNING,
        stopped_by_close=True, chains=frozenset({DEPLOY}),
    ),
    StageSpec(
        "deploy", queue="deploy", module="k8see.stages.deploy",
        time_limit=lambda s: s.deploy.helm_timeout_seconds + 120,
        limit_setting="K8SEE_DEPLOY__HELM_TIMEOUT_SECONDS", running=Status.DEPLOYING,
        holds_lease=True, stopped_by_close=True, gated=True, counts_capacity=True,
        chains=frozenset({DEPLOY}),
    ),
    StageSpec(
        "destroy", queue="deploy", module="k8see.stages.destroy", time_limit=_destroy_limit,
        running=Status.DESTROYING, holds_lease=True, counts_capacity=True,
        chains=frozenset({DESTROY, COMMAND_DESTROY}),
    ),
    # Registry work with the build pool's registry credentials (deletes the PR's tags),
    # best-effort after the destroy.
    StageSpec(
        "untag", queue="build", module="k8see.stages.untag", time_limit=lambda _: 180,
        chains=frozenset({DESTROY, COMMAND_DESTROY}),
    ),
    # Not claimed: it is sent again for one run on purpose (a failure, the watchdog), and
    # upserting the comment twice is harmless.
    StageSpec(
        "comment", queue="default", module="k8see.stages.comment", time_limit=lambda _: 120,
        claimed=False, timed=False, reports=True,
        chains=frozenset({DEPLOY, DESTROY, COMMAND_DESTROY}),
    ),
)  # fmt: skip

_BY_NAME: dict[str, StageSpec] = {spec.name: spec for spec in STAGES}
#: The stage that reports a run's outcome on the PR.
REPORTER: str = next(spec.name for spec in STAGES if spec.reports)


def spec(name: str) -> StageSpec:
    """The row of stage ``name``; ``KeyError`` names the stages there are."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no stage {name!r}; the stages are {', '.join(_BY_NAME)}") from None


def names() -> tuple[str, ...]:
    """Every stage's name, in pipeline order."""
    return tuple(_BY_NAME)


def chain(kind: str) -> tuple[str, ...]:
    """The stages of chain ``kind`` (``DEPLOY``, ``DESTROY``, ``COMMAND_DESTROY``), in order."""
    return tuple(spec.name for spec in _BY_NAME.values() if kind in spec.chains)


def routes() -> dict[str, str]:
    """The queue of every stage's task."""
    return {spec.task_name: spec.queue for spec in _BY_NAME.values()}


def add(row: StageSpec) -> None:
    """Add a stage to the table (a plugin's, or a test's), before the app is created."""
    if row.name in _BY_NAME:
        raise ValueError(f"stage {row.name!r} is in the table already")
    _BY_NAME[row.name] = row


def remove(name: str) -> None:
    """Take a stage ``add`` added out of the table again (tests)."""
    if any(row.name == name for row in STAGES):
        raise ValueError(f"stage {name!r} is one of k8see's own")
    _BY_NAME.pop(name, None)
