"""The Run record: JSON round trip, immutability, results added without mutation."""

from __future__ import annotations

import dataclasses

import pytest

from k8see.run import Action, Run

SHA = "a" * 40


def test_run_round_trips_through_json() -> None:
    run = Run(repo="a/b", pr=7, sha=SHA, generation=3, action=Action.DEPLOY, ref="feat/x")
    run = run.with_result("build", {"digest": "sha256:" + "b" * 64})
    again = Run.from_json(run.to_json())
    assert again == run
    assert again.action is Action.DEPLOY


def test_with_result_returns_a_new_run_and_leaves_the_old_one() -> None:
    run = Run(repo="a/b", pr=7, sha=SHA, generation=1, action=Action.DEPLOY)
    later = run.with_result("scan", {"counts": {"HIGH": 1}})
    assert run.results == {} and later.result("scan") == {"counts": {"HIGH": 1}}
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.pr = 8  # type: ignore[misc]


def test_unknown_fields_in_a_message_are_ignored() -> None:
    data = Run(repo="a/b", pr=1, sha=SHA, generation=1, action=Action.DESTROY).to_dict()
    data["added_in_a_later_version"] = True
    assert Run.from_dict(data).action is Action.DESTROY
