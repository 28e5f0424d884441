"""The org/repository allowlist (docs/configuration.md "Platform allowlist"), failing closed.

Covered: the three modes; organizations and single repositories; case-insensitive matching;
an empty allowlist denies everyone; a missing, unreadable, non-JSON or invalid file refuses
everyone (the reference failed open); refusals say who to ask and which file to change; the
committed default file allows the demo org only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from k8see.config import check_allowed, load_allowlist
from k8see.errors import PolicyError
from k8see.settings import PolicySettings

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, **data: Any) -> Path:
    path = tmp_path / "allowed-orgs.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("repo", "allowed"),
    [
        ("acme/shop", True),
        ("ACME/Shop", True),
        ("AcMe/other", True),
        ("solo/app", True),
        ("Solo/App", True),
        ("solo/other", False),
        ("evil/shop", False),
        ("acme-x/shop", False),
    ],
)
def test_allowlist_mode(tmp_path: Path, repo: str, allowed: bool) -> None:
    path = write(tmp_path, mode="allowlist", organizations=["Acme"], repositories=["solo/APP"])
    assert load_allowlist(path).allows(repo) is allowed
    if allowed:
        check_allowed(repo, allowlist_path=path)
    else:
        with pytest.raises(PolicyError) as info:
            check_allowed(repo, allowlist_path=path)
        org = repo.split("/")[0]
        assert (
            info.value.message == f"Organization '{org}' is not allowed to use this k8see platform."
        )
        assert info.value.hint is not None
        assert f"ask the platform team to add the org '{org}'" in info.value.hint
        assert str(path) in info.value.hint


@pytest.mark.parametrize(
    ("repo", "allowed"),
    [
        ("acme/shop", False),
        ("ACME/x", False),
        ("other/blocked", False),
        ("OTHER/Blocked", False),
        ("other/fine", True),
        ("someone/app", True),
    ],
)
def test_denylist_mode(tmp_path: Path, repo: str, allowed: bool) -> None:
    path = write(tmp_path, mode="denylist", organizations=["acme"], repositories=["other/blocked"])
    assert load_allowlist(path).allows(repo) is allowed
    if not allowed:
        with pytest.raises(PolicyError, match="denylist"):
            check_allowed(repo, allowlist_path=path)


def test_disabled_mode_allows_everyone(tmp_path: Path) -> None:
    path = write(tmp_path, mode="disabled", organizations=["acme"])
    check_allowed("anyone/anything", allowlist_path=path)


def test_empty_allowlist_denies_everyone(tmp_path: Path) -> None:
    path = write(tmp_path, mode="allowlist", organizations=[])
    with pytest.raises(PolicyError):
        check_allowed("acme/shop", allowlist_path=path)


def test_missing_file_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        check_allowed("acme/shop", allowlist_path=tmp_path / "nope.json")
    assert "missing, so no repository is allowed" in info.value.message
    assert info.value.hint is not None and "platform team" in info.value.hint


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[]",
        '"allowlist"',
        '{"mode": "allowlist"}',
        '{"mode": "open", "organizations": []}',
        '{"mode": "allowlist", "organizations": ["-bad"]}',
        '{"mode": "allowlist", "organizations": ["' + "a" * 40 + '"]}',
        '{"mode": "allowlist", "organizations": [], "repositories": ["noslash"]}',
        '{"mode": "allowlist", "organizations": [], "extra": 1}',
        '{"mode": "allowlist", "organizations": "acme"}',
    ],
)
def test_invalid_file_fails_closed(tmp_path: Path, text: str) -> None:
    path = tmp_path / "allowed-orgs.json"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        check_allowed("acme/shop", allowlist_path=path)
    assert "so no repository is allowed" in info.value.message
    assert info.value.where is not None and info.value.where.file == str(path)


def test_json_error_has_its_line(tmp_path: Path) -> None:
    path = tmp_path / "allowed-orgs.json"
    path.write_text('{\n  "mode": "allowlist",\n  "organizations": [,]\n}\n')
    with pytest.raises(PolicyError) as info:
        load_allowlist(path)
    assert info.value.where is not None and info.value.where.line == 3


def test_malformed_repository_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, mode="disabled", organizations=[])
    for repo in ("acme", "acme/shop/x", "acme/sh op", "../x"):
        with pytest.raises(PolicyError):
            check_allowed(repo, allowlist_path=path)


def test_reference_file_format_is_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        **{
            "$schema": "./allowed-orgs.schema.json",
            "mode": "allowlist",
            "description": "who may use it",
            "organizations": ["edgebr", "genesluna", "koder-cat"],
            "repositories": [],
        },
    )
    check_allowed("koder-cat/k8s-ephemeral-environments", allowlist_path=path)


def test_committed_default_allows_the_demo_org_only() -> None:
    path = ROOT / PolicySettings().allowlist_path
    allowlist = load_allowlist(path)
    assert allowlist.mode == "allowlist"
    assert allowlist.organizations == ["k8see-demo"]
    check_allowed("k8see-demo/hello", allowlist_path=path)
    with pytest.raises(PolicyError):
        check_allowed("someone-else/hello", allowlist_path=path)
