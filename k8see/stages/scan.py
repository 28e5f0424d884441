"""The scan stage: Trivy on the built image, every platform, and the scan policy.

Input: ``run.result("build")`` (image by digest, platforms). Output: ``run.result("scan")``
= counts by severity, the top findings, report paths, ``policy``, ``blocked`` and
``seconds``; ``{"skipped": true}`` when scanning is off. Under ``policy: block`` a finding at
or above ``block_severity`` raises ``ScanBlocked`` (a user error: the PR comment shows the
counts and the findings that blocked it). Under ``warn`` (the reference's behaviour) the
findings are reported and the deploy goes on.
"""

from __future__ import annotations

from typing import Any

from k8see.errors import PlatformError, ScanBlocked
from k8see.integrations.registry_access import registry_credentials
from k8see.integrations.scanner import SEVERITIES, ScanReport, scan_image, severity_at_least
from k8see.run import Run
from k8see.stages.context import StageContext


def run(run: Run, ctx: StageContext) -> Run:
    """Scan the built image and apply the platform's scan policy."""
    settings = ctx.settings.scan
    if not settings.enabled:
        ctx.log.info("Scanning is disabled; the image is not scanned.")
        return run.with_result("scan", {"skipped": True})
    build = run.result("build")
    if not build.get("image"):
        raise PlatformError(
            "The scan stage has no built image to scan.",
            hint="This run skipped build; enqueue the PR again.",
        )
    reg = ctx.settings.registry
    username, password, _expires = registry_credentials(ctx.settings)
    report = scan_image(
        image_ref=str(build["image"]),
        platforms=[str(p) for p in build.get("platforms") or []],
        scanners=settings.scanners,
        db_repository=settings.db_repository,
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
    ctx.log.info(
        "Scan of %s found %d issue(s) (%s) in %.1fs.",
        report.image,
        report.total,
        counts_text(report.counts),
        report.seconds,
    )
    if blocked:
        raise ScanBlocked(
            f"The image scan found {counts_text(report.counts)}; the scan policy blocks "
            f"{settings.block_severity} and above, so the image is not deployed.",
            hint="Fix these findings and push again:\n"
            + "\n".join(
                f"- {f.severity} {f.type} {f.id} in {f.target}: {f.title}" for f in blocking
            ),
        )
    return run.with_result("scan", summary)


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
