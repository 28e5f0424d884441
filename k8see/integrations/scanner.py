"""Trivy on a pushed image, for every platform built, summarised for the PR comment.

Why every platform: the reference scanned only the first one, so an arm64-only finding never
showed. Why ``--image-src remote``: the image is in the registry by digest, and workers need
neither a daemon nor the build's storage to scan it. Offline by default: the secret and
misconfig scanners ship their rules inside the binary (``--offline-scan``,
``--skip-db-update``, ``--skip-check-update``); the vulnerability scanner needs its database,
so it runs only when ``db_dir`` holds one (read in place, offline) or ``db_repository`` names
a reachable mirror of it. Otherwise the report says so (``vulnerabilities: "not-scanned"``
and a note why): a scan that could not look for vulnerabilities never reads as a clean one.

Each platform leaves a JSON report, a SARIF file (for code scanning) and a CycloneDX SBOM in
the run's workdir; the summary (counts by severity, top findings) is small enough for the
``Run`` and the PR comment. Finding details such as matched secret text are never copied
into the summary.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from k8see.errors import IntegrationError
from k8see.integrations.process import ToolResult, run_tool

__all__ = [
    "SEVERITIES",
    "Finding",
    "ScanReport",
    "scan_image",
    "severity_at_least",
    "vulnerabilities_scanned",
    "vulnerability_db",
]

log = logging.getLogger(__name__)

#: Most severe first; the order of counts in summaries.
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")
TOP_FINDINGS = 5
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: The two files of Trivy's vulnerability DB, as ``oras pull ghcr.io/aquasecurity/trivy-db:2``
#: unpacks them and as Trivy keeps them under ``<cache-dir>/db``.
DB_FILES = ("trivy.db", "metadata.json")
NOT_SCANNED_OFF = "the platform's scan.scanners leaves out vuln"
NOT_SCANNED_NO_DB = "no vulnerability database is configured (scan.db_dir or scan.db_repository)"
NOT_SCANNED_DB_MISSING = "the vulnerability database (scan.db_dir) is missing or unreadable"


@dataclass(frozen=True)
class Finding:
    """One finding, without its evidence (a secret's text stays in the report file)."""

    type: str
    id: str
    severity: str
    target: str
    title: str
    platforms: tuple[str, ...] = ()


@dataclass
class ScanReport:
    """The summary of a scan across platforms.

    Attributes:
        image: The scanned reference (by digest).
        platforms: The platforms scanned.
        scanners: The Trivy scanners that ran.
        counts: Unique findings by severity (a finding in both platforms counts once).
        top: The most severe findings, at most five.
        reports: Per platform, the paths of the JSON report, SARIF and SBOM.
        seconds: Wall time of all scans.
        vulnerabilities: ``"scanned"`` when Trivy looked for vulnerable packages, else
            ``"not-scanned"``: then ``counts`` cover only the other scanners.
        vulnerabilities_note: Why vulnerabilities were not scanned (empty when they were).
        vulnerability_db: When the DB used was built (``updated_at``, from its
            metadata.json), if it was read from ``db_dir``.
    """

    image: str
    platforms: list[str]
    scanners: list[str]
    counts: dict[str, int]
    top: list[Finding]
    reports: dict[str, dict[str, str]] = field(default_factory=dict)
    seconds: float = 0.0
    vulnerabilities: str = "scanned"
    vulnerabilities_note: str = ""
    vulnerability_db: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total"] = self.total
        return data


def severity_at_least(severity: str, threshold: str) -> bool:
    """True when ``severity`` is ``threshold`` or worse (UNKNOWN is never at least)."""
    if severity not in SEVERITIES[:-1] or threshold not in SEVERITIES:
        return False
    return SEVERITIES.index(severity) <= SEVERITIES.index(threshold)


def vulnerabilities_scanned(summary: dict[str, Any]) -> bool:
    """Whether a scan summary (``ScanReport.to_dict()``) covers vulnerable packages.

    Summaries from before ``vulnerabilities`` existed tell by their scanners: ``vuln`` was
    dropped from them when there was no DB.
    """
    state = summary.get("vulnerabilities")
    if isinstance(state, str):
        return state == "scanned"
    scanners = summary.get("scanners")
    return isinstance(scanners, list) and "vuln" in scanners


def vulnerability_db(db_dir: Path) -> dict[str, str] | None:
    """What we tell of the Trivy DB in ``db_dir``, or None when it holds no readable one.

    Returns:
        ``{"updated_at": ...}`` from its metadata.json (empty when the file has no date).
    """
    try:
        if not (db_dir / DB_FILES[0]).is_file():
            return None
        meta = json.loads((db_dir / DB_FILES[1]).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    updated = meta.get("UpdatedAt")
    return {"updated_at": str(updated)} if isinstance(updated, str) else {}


def scan_image(
    *,
    image_ref: str,
    platforms: Sequence[str],
    scanners: str,
    db_repository: str,
    ignore_unfixed: bool,
    timeout_seconds: float,
    workdir: Path,
    insecure: bool,
    username: str = "",
    password: str | None = None,
    sbom: bool = True,
    should_stop: Callable[[], bool] | None = None,
    on_line: Callable[[str], None] | None = None,
    binary: str = "trivy",
    path: str = DEFAULT_PATH,
    db_dir: str = "",
) -> ScanReport:
    """Scan ``image_ref`` (a digest reference) once per platform and summarise.

    Args:
        image_ref: ``host/repo@sha256:…`` of the manifest list.
        platforms: The platforms in it, each scanned.
        scanners: Trivy's comma list, e.g. ``"vuln,secret,misconfig"``. ``vuln`` is dropped
            (and the report says vulnerabilities were not scanned) when there is no database:
            ``db_dir`` empty or without one, and ``db_repository`` empty.
        db_repository: OCI location of Trivy's vulnerability DB (a mirror), or empty.
        ignore_unfixed: Leave out vulnerabilities that have no fix yet.
        timeout_seconds: For all platforms together.
        workdir: Where the cache and the reports go.
        insecure: The registry is plain HTTP (the local one).
        username: Registry user, if it needs auth.
        password: Registry password; passed through the environment, never argv.
        sbom: Also write a CycloneDX SBOM per platform.
        should_stop: Cancels the scan when it returns True.
        on_line: Receives Trivy's (redacted) output lines.
        binary: The trivy executable.
        path: PATH for trivy.
        db_dir: A folder holding Trivy's vulnerability DB (``trivy.db``, ``metadata.json``),
            read in place and offline; wins over ``db_repository``.

    Raises:
        IntegrationError: Trivy failed or its report is unreadable.
        ToolMissing: Trivy is not installed.
        Superseded: cancelled.
    """
    started = time.monotonic()
    deadline = started + timeout_seconds
    # Found where the worker finds its tools (.tools/bin); trivy itself gets a minimal env.
    binary = shutil.which(binary) or binary
    wanted = [s.strip() for s in scanners.split(",") if s.strip()]
    workdir.mkdir(parents=True, exist_ok=True)
    cache = workdir / "trivy-cache"
    db = vulnerability_db(Path(db_dir)) if db_dir else None
    note = ""
    if "vuln" not in wanted:
        note = NOT_SCANNED_OFF
    elif db_dir and db is None:
        note = NOT_SCANNED_DB_MISSING
        log.warning("The vulnerability database in %s is missing or unreadable.", db_dir)
    elif db is None and not db_repository:
        note = NOT_SCANNED_NO_DB
    if note:
        wanted = [s for s in wanted if s != "vuln"]
    elif db is not None:
        # Trivy reads its DB from <cache-dir>/db; the rest of the cache stays this scan's.
        cache.mkdir(parents=True, exist_ok=True)
        link = cache / "db"
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)  # a DB an earlier scan of this workdir downloaded
        elif link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(db_dir).resolve(), target_is_directory=True)
    env = {"PATH": path, "HOME": str(workdir), "TMPDIR": str(workdir)}
    if username and password:
        env |= {"TRIVY_USERNAME": username, "TRIVY_PASSWORD": password}
    secrets = [password] if password else []

    def trivy(args: list[str]) -> ToolResult:
        result = run_tool(
            [binary, *args],
            timeout_seconds=max(deadline - time.monotonic(), 0.1),
            env=env,
            should_stop=should_stop,
            on_line=on_line,
            redact=secrets,
        )
        if not result.ok:
            raise IntegrationError(
                f"Trivy could not scan {image_ref} (exit {result.returncode}).",
                hint="Last lines of its output:\n" + result.tail_text(15),
            )
        return result

    common = ["--image-src", "remote", "--cache-dir", str(cache), "--quiet"]
    if insecure:
        common.append("--insecure")
    if db_repository and db is None and not note:
        common += ["--db-repository", db_repository, "--skip-java-db-update"]
    else:
        common += ["--offline-scan", "--skip-db-update", "--skip-java-db-update"]
    common.append("--skip-check-update")

    findings: dict[tuple[str, str, str], Finding] = {}
    reports: dict[str, dict[str, str]] = {}
    for plat in platforms:
        stem = workdir / f"trivy-{plat.replace('/', '-')}"
        files = {"json": f"{stem}.json", "sarif": f"{stem}.sarif"}
        argv = ["image", *common, "--platform", plat, "--format", "json"]
        argv += ["--scanners", ",".join(wanted) or "none", "--output", files["json"]]
        if ignore_unfixed:
            argv.append("--ignore-unfixed")
        trivy([*argv, image_ref])
        report = _load(Path(files["json"]), image_ref)
        for finding in _findings(report):
            key = (finding.type, finding.id, finding.target)
            seen = findings.get(key)
            plats = (*seen.platforms, plat) if seen else (plat,)
            findings[key] = Finding(**{**asdict(finding), "platforms": plats})
        trivy(["convert", "--format", "sarif", "--output", files["sarif"], files["json"]])
        if sbom:
            files["sbom"] = f"{stem}.cdx.json"
            sbom_argv = ["image", *common, "--platform", plat, "--format", "cyclonedx"]
            trivy([*sbom_argv, "--output", files["sbom"], image_ref])
        reports[plat] = files

    counts = dict.fromkeys(SEVERITIES, 0)
    for finding in findings.values():
        counts[finding.severity if finding.severity in counts else "UNKNOWN"] += 1
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    top = sorted(findings.values(), key=lambda f: (rank.get(f.severity, 9), f.type, f.id))
    return ScanReport(
        image=image_ref,
        platforms=list(platforms),
        scanners=wanted,
        counts=counts,
        top=top[:TOP_FINDINGS],
        reports=reports,
        seconds=time.monotonic() - started,
        vulnerabilities="not-scanned" if note else "scanned",
        vulnerabilities_note=note,
        vulnerability_db=db or {},
    )


def _load(path: Path, image_ref: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IntegrationError(f"Trivy's report for {image_ref} is unreadable.") from exc
    if not isinstance(data, dict):
        raise IntegrationError(f"Trivy's report for {image_ref} is not a JSON object.")
    return data


def _findings(report: dict[str, Any]) -> list[Finding]:
    """Vulnerabilities, failed misconfiguration checks and secrets of one Trivy report."""
    out = []
    for result in report.get("Results") or []:
        target = str(result.get("Target", ""))
        for vuln in result.get("Vulnerabilities") or []:
            title = (
                vuln.get("Title") or f"{vuln.get('PkgName', '')} {vuln.get('InstalledVersion', '')}"
            )
            out.append(_finding("vulnerability", vuln.get("VulnerabilityID"), vuln, target, title))
        for mis in result.get("Misconfigurations") or []:
            if mis.get("Status", "FAIL") == "FAIL":
                out.append(_finding("misconfig", mis.get("ID"), mis, target, mis.get("Title")))
        for sec in result.get("Secrets") or []:
            out.append(_finding("secret", sec.get("RuleID"), sec, target, sec.get("Title")))
    return out


def _finding(kind: str, ident: Any, raw: dict[str, Any], target: str, title: Any) -> Finding:
    return Finding(
        type=kind,
        id=str(ident or "?"),
        severity=str(raw.get("Severity") or "UNKNOWN").upper(),
        target=target,
        title=str(title or "")[:200],
    )
