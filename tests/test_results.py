"""The typed stage results (``k8see.results``).

Aspects covered:
- a result travels as the JSON the stage set, field for field (the wire, the environment
  record and ``k8see status --json`` keep their shape), and reads back equal;
- a run without a stage's result reads as an empty model (``of``) or None (``maybe``);
- a malformed result (not an object, a field of the wrong type) is refused with a
  ``PolicyError`` that names the stage and the field and never echoes the sent value;
- the stages' ``record_changes`` put on the record what they put there when results were
  plain dicts.
"""

from __future__ import annotations

from typing import Any

import pytest

from k8see.errors import PolicyError
from k8see.record import EnvironmentRecord
from k8see.results import (
    BuildResult,
    CommandResult,
    CommentResult,
    DeployResult,
    DestroyResult,
    ScanResult,
    StageResult,
    UntagResult,
    ValidateResult,
)
from k8see.run import Action, Run
from k8see.stages import build, comment, deploy, destroy, scan, untag, validate

SHA = "a" * 40
DIGEST = "sha256:" + "b" * 64

#: One result per stage as its stage writes it (keys and value types as on the wire).
WRITTEN: dict[type[StageResult], dict[str, Any]] = {
    ValidateResult: {
        "config": {"projectId": "shop", "ingress": {"enabled": True}},
        "project_id": "shop",
        "namespace": "shop-pr-5",
        "preview_url": "https://shop-pr-5.preview.test",
        "databases": ["postgresql"],
        "trigger_mode": "automatic",
        "config_path": "k8s-ee.yaml",
        "sha": SHA,
        "ref": "feature",
        "fork": False,
        "deployment_id": 42,
    },
    BuildResult: {
        "image": f"registry.test/acme/shop/shop@{DIGEST}",
        "repository": "registry.test/acme/shop/shop",
        "digest": DIGEST,
        "platforms": ["linux/amd64", "linux/arm64"],
        "seconds": 12.5,
        "tags": ["pr-5", f"sha-{SHA}"],
        "pushed_tags": ["pr-5", f"sha-{SHA}"],
        "cache_scope": "acme/shop",
        "cache_trusted": True,
    },
    ScanResult: {
        "image": f"registry.test/acme/shop/shop@{DIGEST}",
        "platforms": ["linux/amd64"],
        "scanners": ["vuln", "secret"],
        "counts": {"HIGH": 1},
        "total": 1,
        "top": [{"type": "vuln", "id": "CVE-1", "severity": "HIGH", "platforms": ["x"]}],
        "reports": {"linux/amd64": {"json": "/w/a.json", "sarif": "/w/a.sarif"}},
        "seconds": 3.0,
        "vulnerabilities": "scanned",
        "vulnerabilities_note": "",
        "vulnerability_db": {"updated_at": "2026-01-01T00:00:00Z"},
        "policy": "warn",
        "blocked": False,
        "code_scanning": {"state": "uploaded", "ids": ["1"]},
    },
    DeployResult: {
        "namespace": "shop-pr-5",
        "preview_url": "https://shop-pr-5.preview.test",
        "ingress": True,
        "release_revision": 3,
        "seconds": 40.25,
        "created": False,
        "applied": ["ResourceQuota/quota"],
        "recovered_release": "",
        "helm_api": {"requests": 10, "retries": 1, "retried": {"connection": 1}},
        "image": f"registry.test/acme/shop/shop@{DIGEST}",
    },
    DestroyResult: {
        "namespace": "shop-pr-5",
        "namespaces": ["shop-pr-5"],
        "deleted": True,
        "preserved": False,
        "removed": ["HelmRelease/app"],
        "unblocked": [],
        "skipped": [],
        "preserve_until": "",
        "helm_api": {"requests": 2, "retries": 0, "retried": {}},
        "seconds": 8.0,
    },
    UntagResult: {
        "repository": "registry.test/acme/shop/shop",
        "deleted": ["pr-5"],
        "failed": [],
        "absent": [],
        "errors": {},
        "seconds": 0.5,
    },
    CommentResult: {"comment_id": 7},
    CommandResult: {
        "command": "help",
        "args": [],
        "permission": "write",
        "forward": "",
        "reply_id": 9,
    },
}


def a_run(**results: Any) -> Run:
    return Run(
        repo="acme/shop",
        pr=5,
        sha=SHA,
        generation=1,
        action=Action.DEPLOY,
        ref="feature",
        results=results,
    )


@pytest.mark.parametrize("model", list(WRITTEN), ids=lambda m: m.stage)
def test_a_result_travels_as_the_json_its_stage_set(model: type[StageResult]) -> None:
    # Given a result as its stage writes it
    data = WRITTEN[model]
    # When it is parsed, written into a run, and that run crosses a task boundary
    written = model.parse(data).write(a_run())
    after = Run.from_json(written.to_json())
    # Then the JSON is the same, field for field, and reads back equal
    assert after.results == {model.stage: data}
    assert model.of(after) == model.parse(data)


def test_only_the_fields_a_stage_set_travel() -> None:
    skipped = UntagResult(skipped="preserved", deleted=[], failed=[], seconds=0.0)
    assert skipped.to_json() == {
        "skipped": "preserved",
        "deleted": [],
        "failed": [],
        "seconds": 0.0,
    }
    assert ScanResult(skipped=True).to_json() == {"skipped": True}
    # with_fields adds to what travels, leaving the rest as it was
    validated = ValidateResult.parse({"namespace": "shop-pr-5"}).with_fields(deployment_id=3)
    assert validated.to_json() == {"namespace": "shop-pr-5", "deployment_id": 3}


def test_a_missing_result_is_empty() -> None:
    assert BuildResult.maybe(a_run()) is None
    assert BuildResult.of(a_run()) == BuildResult()
    assert BuildResult.of(a_run()).to_json() == {}
    assert ValidateResult.of(a_run()).databases == []


@pytest.mark.parametrize(
    ("model", "sent", "field"),
    [
        (BuildResult, "an image", "it is a str, not an object"),
        (BuildResult, ["x"], "it is a list, not an object"),
        (BuildResult, {"image": 5}, "image"),
        (BuildResult, {"platforms": "linux/amd64"}, "platforms"),
        (ValidateResult, {"config": "projectId: victim"}, "config"),
        (ValidateResult, {"deployment_id": "42"}, "deployment_id"),
        (DestroyResult, {"preserved": "yes"}, "preserved"),
        (UntagResult, {"errors": {"pr-5": 1}}, "errors.pr-5"),
    ],
)
def test_a_malformed_result_is_refused_naming_the_field(
    model: type[StageResult], sent: Any, field: str
) -> None:
    # Given a message whose result for a stage has the wrong shape
    run = a_run(**{model.stage: sent})
    # When a stage reads it
    with pytest.raises(PolicyError) as refused:
        model.of(run)
    # Then it is refused with a sentence naming the stage and the field, and a hint
    message = refused.value.message
    assert message.startswith(f"The run's {model.stage} result is malformed: ")
    assert field in message
    assert refused.value.hint and "push again" in refused.value.hint


def test_a_refusal_never_echoes_what_was_sent() -> None:
    secret = "ghp_" + "s" * 36
    with pytest.raises(PolicyError) as refused:
        BuildResult.of(a_run(build={"image": [secret], "digest": {secret: secret}}))
    assert secret not in refused.value.message
    assert "image" in refused.value.message and "digest" in refused.value.message


def test_record_changes_read_the_typed_results() -> None:
    # Given a run carrying every result as its stage writes it
    run = a_run(**{model.stage: data for model, data in WRITTEN.items()})
    # Then each stage puts on the record what it did when results were plain dicts
    assert validate.record_changes(run, EnvironmentRecord()) == {
        "project_id": "shop",
        "namespace": "shop-pr-5",
        "preview_url": "https://shop-pr-5.preview.test",
        "databases": ["postgresql"],
        "sha": SHA,
        "ref": "feature",
        "trigger_mode": "automatic",
        "error": None,
    }
    built = WRITTEN[BuildResult]
    assert build.record_changes(run, EnvironmentRecord()) == {
        key: built[key] for key in ("image", "digest", "platforms", "pushed_tags")
    }
    assert scan.record_changes(run, EnvironmentRecord()) == {"scan": WRITTEN[ScanResult]}
    assert deploy.record_changes(run, EnvironmentRecord()) == {
        "status": "ready",
        "preview_url": "https://shop-pr-5.preview.test",
        "ingress": True,
        "helm_api": WRITTEN[DeployResult]["helm_api"],
        "error": None,
    }
    assert destroy.record_changes(run, EnvironmentRecord()) == {
        "status": "destroyed",
        "merged": False,
        "unblocked": [],
        "error": None,
    }
    assert untag.record_changes(run, EnvironmentRecord()) == {
        "untagged": {"deleted": ["pr-5"], "failed": []}
    }
    assert comment.record_changes(run, EnvironmentRecord(status="ready")) == {
        "comment_id": 7,
        "commented": "ready",
    }


def test_record_changes_of_a_run_without_results_keep_their_defaults() -> None:
    run = a_run()
    assert validate.record_changes(run, EnvironmentRecord())["databases"] == []
    assert validate.record_changes(run, EnvironmentRecord())["sha"] == SHA
    assert build.record_changes(run, EnvironmentRecord()) == dict.fromkeys(
        ("image", "digest", "platforms", "pushed_tags")
    )
    assert scan.record_changes(run, EnvironmentRecord()) == {"scan": {}}
    assert deploy.record_changes(run, EnvironmentRecord())["ingress"] is True
    assert untag.record_changes(run, EnvironmentRecord()) == {
        "untagged": {"deleted": [], "failed": []}
    }
    assert comment.record_changes(run, EnvironmentRecord()) == {
        "comment_id": None,
        "commented": None,
    }
