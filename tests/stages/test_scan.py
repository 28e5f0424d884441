"""The scan stage with real Trivy: under warn the findings are reported and the run goes on;
under block a committed secret stops it with ScanBlocked naming the counts and findings
(never the secret itself); a clean image passes block; scanning off is recorded as skipped;
each platform's SARIF uploaded to code scanning (sandbox GitHub) even when blocked; a private
repository's refusal recorded as unavailable (auto), or not tried at all (public). With our
offline vulnerability DB (``scan.db_dir``): vulnerabilities reported with their severities
under warn, and a blocking severity stops the image naming the advisories; without a DB the
result, and the comment rendered from it, say vulnerabilities were not scanned."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from k8see.errors import ScanBlocked
from k8see.integrations.builders import BuildResult
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from k8see.stages import comment_body, scan
from k8see.stages.context import StageContext
from tests.conftest import require_tool
from tests.fixtures.github import SANDBOX_TOKEN
from tests.fixtures.images import LocalRegistry, fake_secrets
from tests.fixtures.vulndb import EXPECTED


def make_run(image: BuildResult) -> Run:
    return Run(repo="acme/app", pr=2, sha="f" * 40, generation=1, action=Action.DEPLOY).with_result(
        "build", {"image": image.image, "digest": image.digest, "platforms": list(image.platforms)}
    )


def make_ctx(registry: LocalRegistry, tmp_path: Path, **scan_settings: object) -> StageContext:
    require_tool("trivy")
    settings = PlatformSettings(
        registry={"type": "generic", "host": registry.host, "insecure": True},
        scan={"sbom": False, **scan_settings},
    )
    return StageContext(settings=settings, log=logging.getLogger("test.scan"), workdir=tmp_path)


def test_warn_reports_the_findings_and_goes_on(
    secret_image: BuildResult, registry: LocalRegistry, tmp_path: Path
) -> None:
    out = scan.scan_verified(make_run(secret_image), make_ctx(registry, tmp_path, policy="warn"))
    result = out.result("scan")
    assert result["blocked"] is False
    assert result["policy"] == "warn"
    assert result["counts"]["CRITICAL"] >= 2
    assert {f["id"] for f in result["top"]} >= {"github-pat", "aws-access-key-id"}
    assert result["seconds"] > 0
    assert set(result["reports"]) == {"linux/amd64", "linux/arm64"}
    json.dumps(result)  # JSON-safe for the Run


def test_block_stops_a_committed_secret_with_the_findings(
    secret_image: BuildResult, registry: LocalRegistry, tmp_path: Path
) -> None:
    ctx = make_ctx(registry, tmp_path, policy="block", block_severity="HIGH")
    with pytest.raises(ScanBlocked) as info:
        scan.scan_verified(make_run(secret_image), ctx)
    err = info.value
    assert "critical" in err.message and "HIGH and above" in err.message
    assert "github-pat in /app/settings.py" in (err.hint or "")
    assert "aws-access-key-id" in (err.hint or "")
    text = err.message + (err.hint or "")
    assert all(value not in text for value in fake_secrets().values())


def test_block_lets_a_clean_image_through(
    hello_image: BuildResult, registry: LocalRegistry, tmp_path: Path
) -> None:
    ctx = make_ctx(registry, tmp_path, policy="block", block_severity="CRITICAL")
    result = scan.scan_verified(make_run(hello_image), ctx).result("scan")
    assert result["blocked"] is False
    assert result["counts"]["CRITICAL"] == 0


def test_scanning_off_is_recorded_as_skipped(
    hello_image: BuildResult, registry: LocalRegistry, tmp_path: Path
) -> None:
    out = scan.scan_verified(make_run(hello_image), make_ctx(registry, tmp_path, enabled=False))
    assert out.result("scan") == {"skipped": True}


def test_sarif_goes_to_code_scanning_even_when_blocked(
    secret_image: BuildResult, registry: LocalRegistry, github: Any, tmp_path: Path
) -> None:
    # Given a public and a private repository on the sandbox GitHub
    github.add_repo("acme/app")
    github.add_repo("acme/private-app", private=True)
    require_tool("trivy")
    settings = PlatformSettings(
        registry={"type": "generic", "host": registry.host, "insecure": True},
        scan={"sbom": False, "policy": "block", "block_severity": "HIGH"},
        github={"api_url": github.url, "token": SANDBOX_TOKEN},
    )
    ctx = StageContext(settings=settings, log=logging.getLogger("test.scan"), workdir=tmp_path)
    # When the secret image is scanned for a PR of the public one (blocked by the policy)
    with pytest.raises(ScanBlocked):
        scan.scan_verified(make_run(secret_image), ctx)
    # Then both platforms' analyses were uploaded for the head commit and the PR ref
    uploads = github.state.sarifs["acme/app"]
    assert sorted(u["sarif"]["runs"][0]["automationDetails"]["id"] for u in uploads) == [
        "k8see-trivy/linux/amd64/",
        "k8see-trivy/linux/arm64/",
    ]
    assert {(u["commit_sha"], u["ref"]) for u in uploads} == {("f" * 40, "refs/pull/2/head")}
    rules = {r["id"] for u in uploads for r in u["sarif"]["runs"][0]["tool"]["driver"]["rules"]}
    assert "github-pat" in rules
    # and a private repository without code scanning refuses (auto: recorded as unavailable),
    # while "public" asks for the visibility first and does not try
    built = make_run(secret_image).result("build")
    private = Run(
        repo="acme/private-app", pr=2, sha="f" * 40, generation=1, action=Action.DEPLOY
    ).with_result("build", built)
    warn = settings.model_copy(update={"scan": settings.scan.model_copy(update={"policy": "warn"})})
    ctx.settings = warn
    assert scan.scan_verified(private, ctx).result("scan")["code_scanning"] == {
        "state": "unavailable"
    }
    assert ("POST", "/repos/acme/private-app/code-scanning/sarifs") in github.calls
    ctx.settings = warn.model_copy(
        update={"scan": warn.scan.model_copy(update={"upload_sarif": "public"})}
    )
    calls_before = len(github.calls)
    assert scan.scan_verified(private, ctx).result("scan")["code_scanning"] == {"state": "private"}
    assert github.calls[calls_before:] == [("GET", "/repos/acme/private-app")]
    assert "acme/private-app" not in github.state.sarifs


def _scan_row(result: dict[str, Any]) -> str:
    """The comment's "Security scan" cell for an environment record holding ``result``."""
    record = {"repo": "acme/app", "pr": 2, "status": "ready", "scan": result}
    body = comment_body.render(record, settings=PlatformSettings())
    (row,) = [ln for ln in body.splitlines() if ln.startswith("| Security scan |")]
    return row


def test_warn_reports_vulnerabilities_from_the_local_db(
    vulnerable_image: BuildResult, vuln_db: Path, registry: LocalRegistry, tmp_path: Path
) -> None:
    # Given the platform's DB folder and the default scanners (vuln, secret, misconfig)
    ctx = make_ctx(registry, tmp_path, policy="warn", db_dir=str(vuln_db))
    # When the vulnerable image is scanned
    result = scan.scan_verified(make_run(vulnerable_image), ctx).result("scan")
    # Then the result counts each severity and the deploy goes on
    assert result["vulnerabilities"] == "scanned"
    assert result["counts"] == EXPECTED
    assert result["blocked"] is False
    assert scan.summary_text(result) == "1 critical, 2 high, 1 medium, 1 low"
    json.dumps(result)
    # And the comment shows the counts as a real vulnerability scan
    assert _scan_row(result) == (
        "| Security scan | 🔴 1 critical · 🟠 2 high · 🟡 1 medium · 🔵 1 low |"
    )


def test_block_at_high_stops_the_vulnerable_image_naming_the_advisories(
    vulnerable_image: BuildResult, vuln_db: Path, registry: LocalRegistry, tmp_path: Path
) -> None:
    ctx = make_ctx(registry, tmp_path, policy="block", block_severity="HIGH", db_dir=str(vuln_db))
    with pytest.raises(ScanBlocked) as info:
        scan.scan_verified(make_run(vulnerable_image), ctx)
    err = info.value
    assert "1 critical, 2 high, 1 medium, 1 low" in err.message
    assert "HIGH and above" in err.message
    hint = err.hint or ""
    for ident in ("CVE-2099-10001", "CVE-2099-10002", "CVE-2099-10003"):
        assert ident in hint
    # Findings below the blocking severity are counted but do not block
    assert "CVE-2099-10004" not in hint and "CVE-2099-10005" not in hint


def test_without_a_db_the_result_and_comment_say_vulnerabilities_were_not_scanned(
    vulnerable_image: BuildResult, registry: LocalRegistry, tmp_path: Path
) -> None:
    # Given no vulnerability DB (the default settings) and an image with vulnerable packages
    ctx = make_ctx(registry, tmp_path, policy="block", block_severity="LOW")
    # When it is scanned
    result = scan.scan_verified(make_run(vulnerable_image), ctx).result("scan")
    # Then nothing was counted, and the result carries that vulnerabilities were not scanned
    assert result["counts"] == dict.fromkeys(EXPECTED, 0)
    assert result["vulnerabilities"] == "not-scanned"
    assert "no vulnerability database is configured" in result["vulnerabilities_note"]
    assert result["scanners"] == ["secret", "misconfig"]
    # And the summary line and the PR comment say so instead of a bare "0 critical"
    assert scan.summary_text(result).startswith("vulnerabilities NOT scanned (no vulnerability")
    row = _scan_row(result)
    assert "⚠️ **Vulnerabilities not scanned** (no vulnerability database is configured" in row
    assert "secret, misconfig: 🔴 0 critical" in row
