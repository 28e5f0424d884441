"""The environment record as stages read it (``k8see/record.py``).

Covers: the record reads back exactly as stored (fields stages do not read kept, none added);
no record is an empty one; a field of a type the platform never writes is refused with a
``PlatformError`` naming the field and never its value.
"""

from __future__ import annotations

import pytest

from k8see.errors import PlatformError
from k8see.record import EnvironmentRecord


def test_the_record_reads_back_as_stored() -> None:
    raw = {
        "repo": "acme/shop", "pr": 7, "generation": 3, "status": "ready", "sha": "a" * 40,
        "pushed_tags": ["pr-7", "sha-" + "a" * 40], "comment_id": 12,
        "timings": {"build": 4.5}, "scan": {"counts": {"HIGH": 1}},
    }  # fmt: skip
    record = EnvironmentRecord.of(raw)
    assert record.status == "ready" and record.pushed_tags[0] == "pr-7"
    assert record.comment_id == 12 and record.trigger_mode is None
    assert record.as_dict() == raw


def test_no_record_is_an_empty_one() -> None:
    assert EnvironmentRecord.of(None).as_dict() == {}
    assert EnvironmentRecord.of({}).pushed_tags == []
    # what a build that reported no tags writes (found by the failover drill)
    assert EnvironmentRecord.of({"pushed_tags": None}).pushed_tags == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pushed_tags", "ghp_secretvalue-not-a-list"),
        ("pushed_tags", [{"tag": "ghp_secretvalue"}]),
        ("comment_id", "ghp_secretvalue"),
        ("error", ["ghp_secretvalue"]),
    ],
)
def test_a_malformed_field_is_refused_by_name_not_value(field: str, value: object) -> None:
    with pytest.raises(PlatformError) as caught:
        EnvironmentRecord.of({"repo": "acme/shop", field: value})
    text = f"{caught.value.message} {caught.value.hint}"
    assert field in caught.value.message and "secretvalue" not in text


def test_the_record_is_read_only() -> None:
    record = EnvironmentRecord.of({"status": "ready"})
    with pytest.raises(ValueError):
        record.status = "failed"  # type: ignore[misc]
