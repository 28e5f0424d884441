"""scan_image with the real Trivy binary against images in the local registry: secrets found
in every platform, counts and top findings without the secret text, reports (JSON, SARIF,
CycloneDX) kept, a clean image, and failures as IntegrationError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k8see.errors import IntegrationError
from k8see.integrations.builders import BuildResult
from k8see.integrations.scanner import scan_image, severity_at_least
from tests.conftest import TOOLS_BIN, require_tool
from tests.fixtures.images import LocalRegistry, fake_secrets


def _scan(image: BuildResult, workdir: Path, lines: list[str] | None = None):
    require_tool("trivy")
    return scan_image(
        image_ref=image.image,
        platforms=image.platforms,
        scanners="secret,misconfig",
        db_repository="",
        ignore_unfixed=True,
        timeout_seconds=300,
        workdir=workdir,
        insecure=True,
        on_line=(lines if lines is not None else []).append,
        path=f"{TOOLS_BIN}:/usr/bin:/bin",
    )


def test_committed_secrets_are_found_for_every_platform(
    secret_image: BuildResult, tmp_path: Path
) -> None:
    # Given an image whose source holds a GitHub token and an AWS key id
    # When it is scanned
    report = _scan(secret_image, tmp_path)
    # Then both are found, once each, in both platforms
    secrets = {f.id: f for f in report.top if f.type == "secret"}
    assert {"github-pat", "aws-access-key-id"} <= set(secrets)
    assert secrets["github-pat"].target == "/app/settings.py"
    assert secrets["github-pat"].platforms == ("linux/amd64", "linux/arm64")
    assert report.counts["CRITICAL"] >= 2
    assert report.total == sum(report.counts.values())
    assert report.platforms == ["linux/amd64", "linux/arm64"]
    # And the summary never carries the secret values
    summary = json.dumps(report.to_dict())
    assert all(value not in summary for value in fake_secrets().values())
    # And every platform left a JSON report, a SARIF file and a CycloneDX SBOM
    for plat in report.platforms:
        files = report.reports[plat]
        assert json.loads(Path(files["json"]).read_text())["ArtifactName"] == secret_image.image
        assert json.loads(Path(files["sarif"]).read_text())["version"] == "2.1.0"
        assert json.loads(Path(files["sbom"]).read_text())["bomFormat"] == "CycloneDX"


def test_the_example_app_is_clean(hello_image: BuildResult, tmp_path: Path) -> None:
    report = _scan(hello_image, tmp_path)
    assert [f for f in report.top if f.type == "secret"] == []
    assert report.counts["CRITICAL"] == 0
    assert report.scanners == ["secret", "misconfig"]


def test_vuln_is_dropped_without_a_db_mirror(hello_image: BuildResult, tmp_path: Path) -> None:
    require_tool("trivy")
    report = scan_image(
        image_ref=hello_image.image,
        platforms=["linux/amd64"],
        scanners="vuln,secret",
        db_repository="",
        ignore_unfixed=True,
        timeout_seconds=300,
        workdir=tmp_path,
        insecure=True,
        sbom=False,
        path=f"{TOOLS_BIN}:/usr/bin:/bin",
    )
    assert report.scanners == ["secret"]
    assert "sbom" not in report.reports["linux/amd64"]


def test_a_missing_image_is_an_integration_error(registry: LocalRegistry, tmp_path: Path) -> None:
    require_tool("trivy")
    with pytest.raises(IntegrationError, match="Trivy could not scan") as info:
        scan_image(
            image_ref=f"{registry.host}/k8see-tests/absent/app@sha256:" + "0" * 64,
            platforms=["linux/amd64"],
            scanners="secret",
            db_repository="",
            ignore_unfixed=True,
            timeout_seconds=120,
            workdir=tmp_path,
            insecure=True,
            path=f"{TOOLS_BIN}:/usr/bin:/bin",
        )
    assert info.value.hint


def test_severity_thresholds() -> None:
    assert severity_at_least("CRITICAL", "HIGH")
    assert severity_at_least("HIGH", "HIGH")
    assert not severity_at_least("MEDIUM", "HIGH")
    assert not severity_at_least("UNKNOWN", "LOW")
