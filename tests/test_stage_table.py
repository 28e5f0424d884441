"""The stage table (``k8see/stage_table.py``) is the one place a stage is described.

Covers: every row's module has the stage contract (``run``; ``record_changes`` where the stage
changes the record); the chains, routes and the reporting stage follow from the rows; the task
module registers exactly one task per row on ``StageTask``; a row cannot replace one of
k8see's own stages. ``tests/worker/test_stage_task.py`` runs a stage added by one row.
"""

from __future__ import annotations

import importlib

import pytest

from k8see import pipeline, stage_table
from k8see.app import routes
from k8see.run import Status
from k8see.settings import load_settings
from k8see.stage_table import StageSpec


def test_every_row_names_a_module_with_the_stage_contract() -> None:
    for name in stage_table.names():
        row = stage_table.spec(name)
        module = importlib.import_module(row.module)
        assert callable(getattr(module, "run", None)), f"{row.module} has no run()"
        changes = getattr(module, "record_changes", None)
        assert changes is None or callable(changes)
        assert row.time_limit(load_settings()) > 0


def test_the_chains_routes_and_reporter_follow_from_the_rows() -> None:
    assert pipeline.DEPLOY_STAGES == ("validate", "build", "scan", "deploy", "comment")
    assert pipeline.DESTROY_STAGES == ("destroy", "untag", "comment")
    assert pipeline.COMMAND_DESTROY_STAGES == ("validate", "destroy", "untag", "comment")
    assert stage_table.REPORTER == "comment"
    for name in stage_table.names():
        row = stage_table.spec(name)
        assert routes()[row.task_name] == row.queue
    # Only cluster stages hold the lease; only deploy stages stop at a close
    assert {n for n in stage_table.names() if stage_table.spec(n).holds_lease} == {
        "deploy",
        "destroy",
    }
    assert {n for n in stage_table.names() if stage_table.spec(n).stopped_by_close} == {
        "validate",
        "build",
        "scan",
        "deploy",
    }


def test_the_task_module_registers_one_task_per_row() -> None:
    from k8see import tasks
    from k8see.worker.stage_task import StageTask

    assert set(tasks.STAGE_TASKS) == set(stage_table.names())
    for name, task in tasks.STAGE_TASKS.items():
        assert task.name == f"k8see.{name}" and isinstance(task, StageTask)


def test_a_row_cannot_replace_or_remove_one_of_k8sees_own() -> None:
    clash = StageSpec("deploy", queue="default", module="tests.worker.noop_stage",
                      time_limit=lambda _: 1, running=Status.DEPLOYING)  # fmt: skip
    with pytest.raises(ValueError, match="in the table already"):
        stage_table.add(clash)
    with pytest.raises(ValueError, match="one of k8see's own"):
        stage_table.remove("deploy")
    with pytest.raises(KeyError, match="the stages are validate, build"):
        stage_table.spec("nope")
