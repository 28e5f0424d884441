"""The sticky PR comment's body, rendered from the environment record (no I/O).

The body follows the reference's format (docs/github.md "The sticky comment": marker first, a
heading and a ``Property | Value`` table per status, a ``---`` footer) and goes past its gaps: every
status has a body (queued through deploying, superseded, skipped), and it shows the image digest,
databases with the environment variables they inject, scan counts, stage timings, expiry and
preserve details, "Merged" from the record, and on failure the stage, the error, its hint and the
log tail.

Everything user-controlled (branch names, error texts, log lines, logins) is escaped so it
cannot break the table, inject HTML or links, or mention people.

Not a stage: the comment stage (``k8see.stages.comment``) upserts what ``render`` returns; this
module is pure, so tests and other readers render a record without GitHub.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from k8see import stage_table
from k8see.integrations.scanner import vulnerabilities_scanned
from k8see.run import Status
from k8see.settings import PlatformSettings

__all__ = [
    "DATABASE_ENV",
    "IN_PROGRESS",
    "VIEWS",
    "code",
    "duration",
    "render",
    "text",
    "timestamp",
]

#: heading, Status cell
VIEWS: dict[str, tuple[str, str]] = {
    Status.QUEUED: ("⏳ Preview Environment Queued", "⏳ Queued"),
    Status.VALIDATING: ("🔎 Preview Environment Validating", "🔎 Validating configuration"),
    Status.BUILDING: ("🔨 Preview Environment Building", "🔨 Building image"),
    Status.SCANNING: ("🛡️ Preview Environment Scanning", "🛡️ Scanning image"),
    Status.DEPLOYING: ("📦 Preview Environment Deploying", "📦 Deploying"),
    Status.WAITING: ("⏸️ Preview Environment Waiting for Capacity", "⏸️ Waiting for capacity"),
    Status.READY: ("🚀 Preview Environment Ready", "✅ Deployed"),
    Status.FAILED: ("⚠️ Preview Environment Failed", "❌ Deployment Failed"),
    Status.SUPERSEDED: ("⏭️ Preview Environment Superseded", "⏭️ Superseded by a newer commit"),
    Status.DESTROYING: ("🧹 Preview Environment Being Destroyed", "🧹 Destroying"),
    Status.DESTROYED: ("🗑️ Preview Environment Destroyed", "🏁 Cleaned up"),
    Status.PRESERVED: ("🔒 Preview Environment Preserved", "🔒 Preserved"),
    Status.SKIPPED: ("⏸️ Preview Environment Not Deployed", "⏸️ Skipped"),
}
IN_PROGRESS = {
    Status.QUEUED,
    Status.VALIDATING,
    Status.BUILDING,
    Status.SCANNING,
    Status.DEPLOYING,
    Status.WAITING,
    Status.DESTROYING,
}

#: The environment variables each database gives the app (names only; values are Secrets).
DATABASE_ENV: dict[str, tuple[str, ...]] = {
    "postgresql": ("DATABASE_URL", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"),
    "mongodb": ("MONGODB_URI",),
    "redis": ("REDIS_URL", "REDIS_HOST", "REDIS_PASSWORD"),
    "minio": ("MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_BUCKET"),
    "mariadb": ("MYSQL_URL", "MYSQL_HOST", "MYSQL_USER", "MYSQL_PASSWORD", "MYSQL_DATABASE"),
}
SEVERITIES = (("CRITICAL", "🔴"), ("HIGH", "🟠"), ("MEDIUM", "🟡"), ("LOW", "🔵"))
LOG_TAIL_LINES = 30
FOOTER = "---\n<sub>🤖 Managed by k8see</sub>"
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>])")


# -- escaping --------------------------------------------------------------------------------


def text(value: Any, *, limit: int = 500) -> str:
    """Free text for a table cell or paragraph: no HTML, no markdown, no table break, no @."""
    flat = " ".join(str(value).split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    # Markdown first, then HTML: the other way round, an entity's ``#`` (``&#x27;``) got a
    # backslash and GitHub showed ``&\#x27;``. Quotes need no entity outside an attribute.
    escaped = html.escape(_MD_SPECIAL.sub(r"\\\1", flat), quote=False)
    return escaped.replace("@", "@\u200b")  # a zero-width space: shown as @, never a mention


def code(value: Any) -> str:
    """An inline code cell safe for any content (``<code>`` with entities, not backticks)."""
    flat = " ".join(str(value).split())[:250]
    return f"<code>{html.escape(flat, quote=True).replace('|', '&#124;')}</code>"


def timestamp(value: Any = None) -> str:
    """``YYYY-MM-DD HH:MM:SS UTC`` (the reference's form) from an ISO string, or now."""
    moment = _parse(value) or datetime.now(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def duration(seconds: Any) -> str:
    try:
        total = float(seconds)
    except (TypeError, ValueError):
        return "—"
    if total < 60:
        return f"{total:.1f}s"
    minutes, secs = divmod(round(total), 60)
    return f"{minutes}m {secs:02d}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60:02d}m"


def _dict(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


# -- pieces ----------------------------------------------------------------------------------


def _link(url: str, label: str) -> str:
    return f'<a href="{html.escape(url, quote=True)}" target="_blank">{label}</a>'


def _dashboard(record: dict[str, Any], namespace: str, settings: PlatformSettings) -> str | None:
    """The platform's dashboard of this environment, if it configured one."""
    template = settings.metrics.dashboard_url
    if not template:
        return None
    fields = {"namespace": namespace, "repo": record.get("repo") or "", "pr": record.get("pr")}
    url = template.format(**{k: quote(str(v or ""), safe="") for k, v in fields.items()})
    return _link(url, "📊 Dashboard")


def _digest(record: dict[str, Any]) -> str | None:
    digest = record.get("digest")
    if not isinstance(digest, str) or not digest:
        return None
    algo, _, hexpart = digest.partition(":")
    short = f"{algo}:{hexpart[:12]}" if hexpart else digest[:19]
    return code(short)


def _databases(record: dict[str, Any]) -> str | None:
    names = record.get("databases")
    if not isinstance(names, list) or not names:
        return None
    overrides = _dict(record, "database_env")
    parts = []
    for name in names:
        env = overrides.get(name) or DATABASE_ENV.get(str(name), ())
        hint = ", ".join(f"`{v}`" for v in env if re.fullmatch(r"[A-Z_][A-Z0-9_]*", str(v)))
        parts.append(f"{text(name)} ({hint})" if hint else text(name))
    return "<br>".join(parts)


def _scan(record: dict[str, Any]) -> str | None:
    scan = _dict(record, "scan")
    if not scan:
        return None
    if scan.get("skipped"):
        return "⏭️ Skipped"
    counts = scan.get("counts") if isinstance(scan.get("counts"), dict) else {}
    cells = [
        f"{icon} {int((counts or {}).get(sev) or 0)} {sev.lower()}" for sev, icon in SEVERITIES
    ]
    verdict = " — ⛔ blocked by the scan policy" if scan.get("blocked") else ""
    if vulnerabilities_scanned(scan):
        return " · ".join(cells) + verdict
    # Zero counts without a vulnerability scan must not read as a clean image.
    note = scan.get("vulnerabilities_note") or "no vulnerability database"
    scanners = [str(s) for s in scan.get("scanners") or [] if s != "vuln"]
    covered = f"{text(', '.join(scanners))}: " if scanners else ""
    return (
        f"⚠️ **Vulnerabilities not scanned** ({text(note)})<br>"
        + covered
        + " · ".join(cells)
        + verdict
    )


def _untagged(record: dict[str, Any]) -> str | None:
    """One line for the image tags deleted on close (the untag stage), if it did anything."""
    done = _dict(record, "untagged")
    deleted = [str(t) for t in done.get("deleted") or []]
    failed = [str(t) for t in done.get("failed") or []]
    if not deleted and not failed:
        return None
    parts = [f"🧹 {len(deleted)} tag(s) deleted"] if deleted else []
    if failed:
        shown = ", ".join(code(t[:19]) for t in failed[:3]) + (" …" if len(failed) > 3 else "")
        parts.append(f"⚠️ {len(failed)} could not be deleted ({shown}; see the worker logs)")
    return " · ".join(parts)


def _unblocked(record: dict[str, Any]) -> str | None:
    """The objects whose finalizers destroy removed so the namespace could go, if any.

    Their operator never finished them (not installed, or broken): worth knowing for whoever
    runs it, since whatever those finalizers were meant to clean up outside the cluster
    (a bucket, a backup) was not.
    """
    objects = [str(o) for o in record.get("unblocked") or []]
    if not objects:
        return None
    shown = ", ".join(code(o) for o in objects[:5]) + (" …" if len(objects) > 5 else "")
    return f"⚠️ {len(objects)} object(s) stuck on a finalizer: {shown}"


def _timings(record: dict[str, Any]) -> list[str]:
    timings = record.get("timings")
    if not isinstance(timings, dict) or not timings:
        return []
    order = stage_table.names()
    ordered = sorted(timings, key=lambda s: (order.index(s) if s in order else 99, s))
    total = sum(float(v) for v in timings.values() if isinstance(v, int | float))
    rows = [f"| {text(stage)} | {duration(timings[stage])} |" for stage in ordered]
    return [
        f"<details><summary>⏱️ Stage timings (total {duration(total)})</summary>",
        "",
        "| Stage | Duration |",
        "|-------|----------|",
        *rows,
        "",
        "</details>",
    ]


def _failure(record: dict[str, Any]) -> list[str]:
    error = _dict(record, "error")
    if not error:
        return ["The run failed without an error record; see the worker logs."]
    lines = ["### What went wrong", "", text(error.get("message") or "The run failed.", limit=1000)]
    where = _dict(error, "where")
    if where and (where.get("file") or where.get("field")):
        spot = str(where.get("file") or "")
        if where.get("line"):
            spot += f":{where['line']}"
        field = f" field {code(where['field'])}" if where.get("field") else ""
        lines += ["", f"**Where:** {code(spot) if spot else ''}{field}".rstrip()]
    if error.get("hint"):
        lines += ["", f"**How to fix:** {text(error['hint'], limit=1000)}"]
    tail = [str(x) for x in (error.get("log_tail") or []) if x is not None][-LOG_TAIL_LINES:]
    if tail:
        body = "\n".join(line[:300] for line in tail)
        longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
        fence = "`" * max(3, longest + 1)  # longer than any backtick run: it cannot be closed
        lines += [
            "",
            "<details><summary>📜 Last log lines</summary>",
            "",
            f"{fence}text",
            body,
            fence,
            "",
            "</details>",
        ]
    return lines


# -- render ----------------------------------------------------------------------------------


def render(record: dict[str, Any], *, settings: PlatformSettings) -> str:
    """The whole comment body for the record's current status."""
    secret = settings.github.token.get_secret_value() if settings.github.token else ""
    if secret:
        record = _redact(record, secret)
    status = str(record.get("status") or Status.QUEUED)
    heading, status_cell = VIEWS.get(status, (f"Preview Environment: {text(status)}", text(status)))
    ns = record.get("namespace") if isinstance(record.get("namespace"), str) else ""
    sha, ref = record.get("sha"), record.get("ref")
    error = _dict(record, "error")
    merged = "Yes" if record.get("merged") else "No"
    if status == Status.WAITING and isinstance(record.get("capacity_position"), int):
        # The platform is full: the deploy waits its turn (docs/operations.md "Capacity").
        status_cell = f"{status_cell}: position {record['capacity_position']}"
    rows: list[tuple[str, str | None]] = [("Status", status_cell)]
    if status == Status.FAILED:
        rows.append(("Failed stage", text(error.get("stage")) if error.get("stage") else None))
    if status == Status.READY and record.get("preview_url"):
        rows.append(("Preview URL", _link(str(record["preview_url"]), "🌐 Open Preview")))
    elif status == Status.READY and record.get("ingress") is False:
        rows.append(("Preview URL", "none: `ingress.enabled` is false in k8s-ee.yaml"))
    if ns and status in (Status.READY, Status.FAILED):
        rows.append(("Dashboard", _dashboard(record, ns, settings)))
    rows.append(("Namespace", f"`{ns}`" if ns else None))
    if status in (Status.DESTROYED, Status.PRESERVED):
        rows.append(("Merged", merged))
        label = "Destroyed" if status == Status.DESTROYED else "PR Closed"
        rows.append((label, timestamp(record.get("updated_at"))))
        rows.append(("Images", _untagged(record)))
        rows.append(("Finalizers removed", _unblocked(record)))
    else:
        rows.append(("Commit", code(sha) if sha else None))
        rows.append(("Branch", code(ref) if ref else None))
        rows.append(("Image", _digest(record)))
        if status == Status.READY:
            platforms = record.get("platforms")
            if isinstance(platforms, list) and platforms:
                rows.append(("Platforms", ", ".join(code(p) for p in platforms)))
            rows.append(("Databases", _databases(record)))
            rows.append(("Expires", _expiry(record, settings)))
        rows.append(("Security scan", _scan(record)))
        rows.append(("Updated", timestamp(record.get("updated_at"))))
    if record.get("preserve_until"):
        rows.append(("Preserved until", timestamp(record["preserve_until"])))
        if record.get("preserved_by"):
            rows.append(("Preserved by", text(f"@{record['preserved_by']}")))
    lines = [
        settings.github.comment_marker,
        f"## {heading}",
        "",
        "| Property | Value |",
        "|----------|-------|",
        *(f"| {name} | {value} |" for name, value in rows if value),
        "",
    ]
    lines += _notes(status, record)
    if status == Status.FAILED:
        lines += [*_failure(record), ""]
    timings = _timings(record)
    if timings and status not in (Status.DESTROYED, Status.PRESERVED):
        lines += [*timings, ""]
    if record.get("run_id"):
        lines += [
            f"<sub>Run {code(record['run_id'])} · `k8see status --pr {record.get('pr')}`</sub>",
            "",
        ]
    lines.append(FOOTER)
    return "\n".join(lines)


def _redact(value: Any, secret: str) -> Any:
    """The record with the platform's own token masked, wherever a stage let it slip in."""
    if isinstance(value, str):
        return value.replace(secret, "***")
    if isinstance(value, dict):
        return {k: _redact(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secret) for v in value]
    return value


def _expiry(record: dict[str, Any], settings: PlatformSettings) -> str:
    idle = timedelta(hours=settings.cleanup.ttl_hours)
    updated = _parse(record.get("updated_at"))
    when = f" or {timestamp((updated + idle).isoformat())} if not redeployed" if updated else ""
    return f"When the PR closes{when}"


def _notes(status: str, record: dict[str, Any]) -> list[str]:
    if status in IN_PROGRESS:
        return ["This comment is updated as the run progresses.", ""]
    if status == Status.SUPERSEDED:
        return ["A newer commit replaced this run; this comment follows the newest one.", ""]
    if status == Status.PRESERVED:
        return [
            "The environment was preserved and will remain active until the preserve expires.",
            "The preserve-expiry job will clean it up automatically.",
            "",
        ]
    if status == Status.SKIPPED and record.get("reason"):
        return [text(record["reason"]), ""]
    return []
