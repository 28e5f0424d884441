"""The scan stage: Trivy on the built image, every platform, and the scan policy.

Input: the ``BuildResult`` (image by digest, platforms), believed only as far as the
registry confirms it (``provenance.verified_image``): the image must lie under the run's own
repository path and be what the registry has for this run's ``pr-<N>`` and ``sha-<sha>``
tags, so a message cannot have the platform's credentials pull, and code scanning show,
another repository's image. ``scan_verified`` is the scan proper, for an image the caller
vouches for (``k8see build``). Output: a ``ScanResult`` (``k8see.results``)
= counts by severity, the top findings, report paths, ``policy``, ``blocked``, ``seconds``
and ``vulnerabilities`` (``"scanned"``, or ``"not-scanned"`` with ``vulnerabilities_note``
when the platform has no vulnerability DB: then the counts cover secrets and
misconfigurations only, and every summary says so); ``{"skipped": true}`` when scanning is
off. Under ``policy: block`` a finding at
or above ``block_severity`` raises ``ScanBlocked`` (a user error: the PR comment shows the
counts and the findings that blocked it). Under ``warn`` (the reference's behaviour) the
findings are reported and the deploy goes on. Either way each platform's SARIF goes to GitHub
code scanning (``scan.upload_sarif``; the result's ``code_scanning``), best-effort.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from k8see.errors import GitHubError, K8seeError, PlatformError, ScanBlocked
from k8see.integrations.codescanning import repo_is_public, upload_sarif
from k8see.integrations.github import make_client
from k8see.integrations.registry_access import registry_credentials
from k8see.integrations.scanner import (
    SEVERITIES,
    ScanReport,
    scan_image,
    severity_at_least,
    vulnerabilities_scanned,
)
from k8see.record import EnvironmentRecord
from k8see.results import BuildResult, ScanResult
from k8see.run import Run
from k8see.stages import provenance
from k8see.stages.context import StageContext


def run(run: Run, ctx: StageContext) -> Run:
    """Scan the run's built image, once the registry confirms it, and apply the scan policy.

    Raises:
        Refused: the image is not this run's build of its own repository.
        ScanBlocked: the policy blocks what the scan found.
    """
    if not ctx.settings.scan.enabled:
        return scan_verified(run, ctx)
    build = BuildResult.of(run)
    if not build.image:
        raise PlatformError(
            "The scan stage has no built image to scan.",
            hint="This run skipped build; enqueue the PR again.",
        )
    image = provenance.verified_image(run, ctx, make_client(ctx.settings, log=ctx.log), build=build)
    return scan_verified(build.with_fields(**image).write(run), ctx)


def scan_verified(run: Run, ctx: StageContext) -> Run:
    """Scan the ``BuildResult``'s image, which the caller vouches for, and apply the
    platform's scan policy."""
    settings = ctx.settings.scan
    if not settings.enabled:
        ctx.log.info("Scanning is disabled; the image is not scanned.")
        return ScanResult(skipped=True).write(run)
    build = BuildResult.of(run)
    if not build.image:
        raise PlatformError(
            "The scan stage has no built image to scan.",
            hint="This run skipped build; enqueue the PR again.",
        )
    reg = ctx.settings.registry
    username, password, _expires = registry_credentials(ctx.settings)
    report = scan_image(
        image_ref=build.image,
        platforms=list(build.platforms or []),
        scanners=settings.scanners,
        db_repository=settings.db_repository,
        db_dir=settings.db_dir,
        ignore_unfixed=settings.ignore_unfixed,
        timeout_seconds=settings.timeout_seconds,
        workdir=ctx.workdir / "scan",
        insecure=reg.insecure,
        username=username,
        password=password or None,
        sbom=settings.sbom,
        should_stop=ctx.should_stop,
        on_line=ctx.record_log,
    )
    blocking = [f for f in report.top if severity_at_least(f.severity, settings.block_severity)]
    blocked = settings.policy == "block" and bool(blocking)
    summary = summarize(report, policy=settings.policy, blocked=blocked)
    # Before the policy decides: blocked findings belong in the Security tab too.
    summary["code_scanning"] = upload_to_code_scanning(run, ctx, report.reports)
    ctx.log.info(
        "Scan of %s found %d issue(s) (%s) in %.1fs.",
        report.image,
        report.total,
        counts_text(report.counts),
        report.seconds,
    )
    if report.vulnerabilities != "scanned":
        ctx.log.warning("Vulnerabilities were not scanned: %s.", report.vulnerabilities_note)
    if blocked:
        raise ScanBlocked(
            f"The image scan found {counts_text(report.counts)}; the scan policy blocks "
            f"{settings.block_severity} and above, so the image is not deployed.",
            hint="Fix these findings and push again:\n"
            + "\n".join(
                f"- {f.severity} {f.type} {f.id} in {f.target}: {f.title}" for f in blocking
            ),
        )
    return ScanResult.parse(summary).write(run)


def upload_to_code_scanning(
    run: Run, ctx: StageContext, reports: dict[str, dict[str, str]]
) -> dict[str, Any]:
    """Upload each platform's SARIF for the PR's head commit; best-effort (only warns).

    Returns:
        ``{"state": "uploaded", "ids": [...]}``, ``{"state": "off" | "private" |
        "unavailable"}`` or ``{"state": "failed", "error": "..."}`` (no credential in it).
    """
    mode = ctx.settings.scan.upload_sarif
    if mode == "never" or not reports:
        return {"state": "off"}
    try:
        client = make_client(ctx.settings, log=ctx.log)
        if mode == "public" and not repo_is_public(client, run.repo):
            return {"state": "private"}
        ids = [
            upload_sarif(
                client,
                repo=run.repo,
                sha=run.sha,
                ref=f"refs/pull/{run.pr}/head",
                sarif_file=Path(files["sarif"]),
                category=f"k8see-trivy/{plat}",
            )
            for plat, files in sorted(reports.items())
            if files.get("sarif")
        ]
    except GitHubError as exc:
        if exc.status in (403, 404):  # code scanning is not available for this repository
            ctx.log.info("Code scanning is not available for %s: %s", run.repo, exc.message)
            return {"state": "unavailable"}
        ctx.log.warning("The SARIF upload to code scanning failed: %s", exc.message)
        return {"state": "failed", "error": exc.message}
    except K8seeError as exc:
        ctx.log.warning("The SARIF upload to code scanning failed: %s", exc.message)
        return {"state": "failed", "error": exc.message}
    except (OSError, ValueError) as exc:  # an unreadable or invalid SARIF file
        ctx.log.warning("The SARIF report could not be read: %s", type(exc).__name__)
        return {"state": "failed", "error": f"unreadable SARIF ({type(exc).__name__})"}
    ctx.log.info("Uploaded %d SARIF report(s) to code scanning.", len(ids))
    return {"state": "uploaded", "ids": ids}


def summarize(report: ScanReport, *, policy: str, blocked: bool) -> dict[str, Any]:
    """The JSON kept in the Run and the environment record (no finding evidence)."""
    data = report.to_dict()
    data["seconds"] = round(report.seconds, 3)
    data["policy"] = policy
    data["blocked"] = blocked
    return data


def counts_text(counts: dict[str, int]) -> str:
    parts = [f"{counts.get(s, 0)} {s.lower()}" for s in SEVERITIES if counts.get(s)]
    return ", ".join(parts) if parts else "no issues"


def summary_text(summary: dict[str, Any]) -> str:
    """One line for a scan summary: the counts, and first whether vulnerabilities were not
    scanned (so "no issues" never reads as a clean vulnerability scan)."""
    if summary.get("skipped"):
        return "skipped (scanning is off)"
    counts = summary.get("counts") if isinstance(summary.get("counts"), dict) else {}
    found = counts_text(counts or {})
    if vulnerabilities_scanned(summary):
        return found
    note = summary.get("vulnerabilities_note") or "no vulnerability database"
    scanners = ", ".join(str(s) for s in summary.get("scanners") or []) or "no scanner"
    return f"vulnerabilities NOT scanned ({note}); {scanners}: {found}"


def record_changes(run: Run, before: EnvironmentRecord) -> dict[str, Any]:
    """The scan's summary, on the environment record."""
    return {"scan": ScanResult.of(run).to_json()}
