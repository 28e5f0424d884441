"""scan_image with the real Trivy binary against images in the local registry: secrets found
in every platform, counts and top findings without the secret text, reports (JSON, SARIF,
CycloneDX) kept, a clean image, and failures as IntegrationError. Vulnerabilities with our
own offline DB (``scan.db_dir``): counted per severity, read-only; without a usable DB (none
configured, a folder without one, vuln not asked for) the report says they were not scanned."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from k8see.errors import IntegrationError
from k8see.integrations.builders import BuildResult
from k8see.integrations.scanner import (
    NOT_SCANNED_DB_MISSING,
    NOT_SCANNED_NO_DB,
    NOT_SCANNED_OFF,
    ScanReport,
    scan_image,
    severity_at_least,
    vulnerabilities_scanned,
)
from tests.conftest import TOOLS_BIN, require_tool
from tests.fixtures.images import LocalRegistry, fake_secrets
from tests.fixtures.vulndb import ADVISORIES, EXPECTED, EXPECTED_IDS


def _scan(
    image: BuildResult,
    workdir: Path,
    lines: list[str] | None = None,
    *,
    scanners: str = "secret,misconfig",
    db_dir: str = "",
    sbom: bool = True,
) -> ScanReport:
    require_tool("trivy")
    return scan_image(
        image_ref=image.image,
        platforms=image.platforms,
        scanners=scanners,
        db_repository="",
        db_dir=db_dir,
        ignore_unfixed=True,
        timeout_seconds=300,
        workdir=workdir,
        insecure=True,
        sbom=sbom,
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
    # and the report says so: zero counts here are no clean vulnerability scan
    assert report.vulnerabilities == "not-scanned"
    assert report.vulnerabilities_note == NOT_SCANNED_NO_DB
    assert not vulnerabilities_scanned(report.to_dict())


def test_a_local_db_finds_each_vulnerability_with_its_severity(
    vulnerable_image: BuildResult, vuln_db: Path, tmp_path: Path
) -> None:
    # Given our offline DB and an Alpine image with packages its advisories hit
    before = hashlib.sha256((vuln_db / "trivy.db").read_bytes()).hexdigest()
    lines: list[str] = []
    # When both platforms are scanned with every scanner
    report = _scan(
        vulnerable_image,
        tmp_path,
        lines,
        scanners="vuln,secret,misconfig",
        db_dir=str(vuln_db),
    )
    # Then exactly the advisories for installed versions below the fix are found, once each,
    # with the DB's severities, in both platforms
    assert report.vulnerabilities == "scanned" and report.vulnerabilities_note == ""
    assert report.scanners == ["vuln", "secret", "misconfig"]
    assert report.counts == EXPECTED
    severity = {a["id"]: a["severity"] for a in ADVISORIES}
    vulns = [f for f in report.top if f.type == "vulnerability"]
    assert {f.id for f in vulns} == EXPECTED_IDS
    assert all(f.severity == severity[f.id] for f in vulns)
    assert all(f.platforms == ("linux/amd64", "linux/arm64") for f in vulns)
    assert [f.severity for f in report.top] == ["CRITICAL", "HIGH", "HIGH", "MEDIUM", "LOW"]
    assert report.vulnerability_db["updated_at"].startswith("20")
    assert vulnerabilities_scanned(report.to_dict())
    # And the JSON report names the package, installed and fixed versions
    raw = json.loads(Path(report.reports["linux/amd64"]["json"]).read_text())
    (os_result,) = [r for r in raw["Results"] if r.get("Class") == "os-pkgs"]
    assert os_result["Target"].endswith("(alpine 3.22.1)")
    found = {(v["PkgName"], v["InstalledVersion"], v["FixedVersion"]) for v in
             os_result["Vulnerabilities"]}  # fmt: skip
    assert ("k8see-vulnerable", "1.0.0-r0", "1.0.1-r0") in found
    assert ("k8see-other", "2.1.0-r3", "3.0.0-r0") in found
    # And the DB was only read
    assert hashlib.sha256((vuln_db / "trivy.db").read_bytes()).hexdigest() == before


def test_a_clean_image_with_a_db_is_a_clean_vulnerability_scan(
    hello_image: BuildResult, vuln_db: Path, tmp_path: Path
) -> None:
    report = _scan(hello_image, tmp_path, scanners="vuln,secret", db_dir=str(vuln_db), sbom=False)
    assert report.vulnerabilities == "scanned"
    assert report.counts == dict.fromkeys(EXPECTED, 0)
    # A second scan in the same workdir (a redelivered stage) links the DB again and agrees
    again = _scan(hello_image, tmp_path, scanners="vuln,secret", db_dir=str(vuln_db), sbom=False)
    assert (again.vulnerabilities, again.counts) == (report.vulnerabilities, report.counts)


@pytest.mark.parametrize("case", ["no-db", "empty-folder", "vuln-off"])
def test_without_a_usable_db_vulnerabilities_are_not_scanned(
    case: str, vulnerable_image: BuildResult, tmp_path: Path
) -> None:
    # Given the vulnerable image and no DB: none configured, a folder without one, or a
    # platform that leaves vuln out of its scanners
    empty = tmp_path / "empty-db"
    empty.mkdir()
    scanners, db_dir, note = {
        "no-db": ("vuln,secret", "", NOT_SCANNED_NO_DB),
        "empty-folder": ("vuln,secret", str(empty), NOT_SCANNED_DB_MISSING),
        "vuln-off": ("secret", "", NOT_SCANNED_OFF),
    }[case]
    # When it is scanned
    report = _scan(
        vulnerable_image, tmp_path / "scan", scanners=scanners, db_dir=db_dir, sbom=False
    )
    # Then nothing is counted, and the report says vulnerabilities were not scanned, and why
    assert report.counts == dict.fromkeys(EXPECTED, 0)
    assert report.scanners == ["secret"]
    assert report.vulnerabilities == "not-scanned"
    assert report.vulnerabilities_note == note
    assert report.to_dict()["vulnerabilities"] == "not-scanned"


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
